//! Failures: dead servers cost no idempotent request, come back after fail_timeout, and an
//! upstream with nothing alive answers a JSON 502 at once.

use crate::support::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_costs_no_get_and_returns_after_fail_timeout() {
    let a = backend("a").await;
    let b = backend("b").await;
    let a_addr = a.addr;
    let edge = Edge::start(
        "",
        &format!(
            r#"
[upstreams.app]
servers = [{{ addr = "{}", max_fails = 1, fail_timeout = "2s" }}, {{ addr = "{}", max_fails = 1, fail_timeout = "2s" }}]
[[routes]]
path = "/"
upstream = "app"
"#,
            a.addr, b.addr
        ),
    );
    let c = reqwest::Client::new();
    for _ in 0..10 {
        assert_eq!(get_json(&c, &edge.url("/warm"), &[]).await.0, 200);
    }
    a.shutdown().await;
    let mut served_by_b = 0;
    for _ in 0..100 {
        let (status, body) = get_json(&c, &edge.url("/during"), &[]).await;
        assert_eq!(status, 200, "no GET fails while a server is dead: {body}");
        served_by_b += u32::from(instance(&body) == "b");
    }
    assert_eq!(served_by_b, 100);

    // Bring it back where it was; after fail_timeout it takes traffic again.
    let a = backend_at("a", a_addr).await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let mut back = 0;
    for _ in 0..20 {
        let (status, body) = get_json(&c, &edge.url("/after"), &[]).await;
        assert_eq!(status, 200);
        back += u32::from(instance(&body) == "a");
    }
    assert!(back >= 8, "the server is back in rotation: {back} of 20");
    drop(a);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_servers_down_gives_a_json_502_within_the_connect_timeout() {
    let dead1 = free_port();
    let dead2 = free_port();
    let edge = Edge::start(
        "",
        &format!(
            r#"
[upstreams.app]
connect_timeout = "2s"
servers = [{{ addr = "127.0.0.1:{dead1}" }}, {{ addr = "127.0.0.1:{dead2}" }}]
[[routes]]
path = "/"
upstream = "app"
"#
        ),
    );
    let c = client();
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = get_json(&c, &edge.url("/x"), &[]).await;
        assert_eq!(status, 502);
        assert_eq!(body["error"], "bad_gateway");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_post_is_not_resent_but_a_failed_get_is() {
    let dropper = dropper();
    let good = backend("good").await;
    let edge = Edge::start(
        "",
        &format!(
            r#"
[upstreams.app]
servers = [{{ addr = "{}", max_fails = 0 }}, {{ addr = "{}", max_fails = 0 }}]
[[routes]]
path = "/"
upstream = "app"
"#,
            dropper.addr, good.addr
        ),
    );
    let c = client();
    // Round robin alternates; try until the dropper has been hit by each method.
    let mut post_failures = 0;
    for _ in 0..4 {
        let before = dropper.requests.load(Ordering::SeqCst);
        let resp = c
            .post(edge.url("/orders"))
            .body("{\"n\":1}")
            .send()
            .await
            .expect("request");
        let hit_dropper = dropper.requests.load(Ordering::SeqCst) > before;
        if hit_dropper {
            assert_eq!(
                resp.status().as_u16(),
                502,
                "a POST the server may have seen is not resent"
            );
            post_failures += 1;
        } else {
            assert_eq!(resp.status().as_u16(), 200);
        }
    }
    assert!(post_failures >= 1);
    let before_good = good.requests();
    for _ in 0..4 {
        let (status, _) = get_json(&c, &edge.url("/orders"), &[]).await;
        assert_eq!(status, 200, "a GET is retried on the next server");
    }
    assert_eq!(good.requests() - before_good, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn next_upstream_tries_bounds_the_attempts() {
    let d1 = dropper();
    let d2 = dropper();
    let d3 = dropper();
    let edge = Edge::start(
        "",
        &format!(
            r#"
[upstreams.app]
next_upstream_tries = 2
servers = [{{ addr = "{}", max_fails = 0 }}, {{ addr = "{}", max_fails = 0 }}, {{ addr = "{}", max_fails = 0 }}]
[[routes]]
path = "/"
upstream = "app"
"#,
            d1.addr, d2.addr, d3.addr
        ),
    );
    let (status, _) = get_json(&client(), &edge.url("/x"), &[]).await;
    assert_eq!(status, 502);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let total: u64 = [&d1, &d2, &d3]
        .iter()
        .map(|d| d.requests.load(Ordering::SeqCst))
        .sum();
    assert_eq!(total, 2, "two attempts in all");
}
