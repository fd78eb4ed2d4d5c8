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
        TestConfig::new()
            .upstream("app", [a.addr, b.addr])
            .with_servers("max_fails", 1)
            .with_servers("fail_timeout", "2s")
            .route("/", "app"),
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
    wait_until(
        Duration::from_secs(10),
        "the server is not up again after fail_timeout",
        async || server(&edge, "app", 0).await["up"] == true,
    )
    .await;
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
    let (dead1, dead2) = (dead_port(0), dead_port(1));
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream(
                "app",
                [format!("127.0.0.1:{dead1}"), format!("127.0.0.1:{dead2}")],
            )
            .with("connect_timeout", "2s")
            .route("/", "app"),
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
        TestConfig::new()
            .upstream("app", [dropper.addr, good.addr])
            .with_servers("max_fails", 0)
            .route("/", "app"),
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
        TestConfig::new()
            .upstream("app", [d1.addr, d2.addr, d3.addr])
            .with("next_upstream_tries", 2)
            .with_servers("max_fails", 0)
            .route("/", "app"),
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

/// Opens a connection, sends `request`, reads up to `read` bytes of the answer (waiting at
/// most `wait`), and hangs up with whatever is left unread.
fn hang_up(edge: std::net::SocketAddr, request: &[u8], read: usize, wait: Duration) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(edge).expect("connect");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    stream.write_all(request).expect("write");
    let mut got = 0;
    let mut buf = [0u8; 4096];
    while got < read {
        match stream.read(&mut buf[..(read - got).min(4096)]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    // Unread data makes the close a reset, as a client that gives up does.
    drop(stream);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_hang_up_count_against_no_server_and_are_logged_499() {
    let a = backend("a").await;
    let b = backend("b").await;
    let (_dir, log, logging) = access_log_file();
    let edge = Edge::start(
        &logging,
        TestConfig::new()
            .upstream("app", [a.addr, b.addr])
            .with("balance", "least_conn")
            .with_servers("max_fails", 1)
            .with_servers("fail_timeout", "30s")
            .route("/", "app"),
    );
    let http = edge.http;
    let stages: Vec<(&str, Vec<u8>, usize, Duration)> = vec![
        // Before the request has gone upstream whole: the body stops short.
        (
            "body cut short",
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc".to_vec(),
            0,
            Duration::from_millis(100),
        ),
        // While the upstream is answering.
        (
            "waiting for the upstream",
            b"GET /slow?sleep_ms=600 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            1,
            Duration::from_millis(150),
        ),
        // While the response is being written.
        (
            "reading the response",
            b"GET /big?bytes=16000000 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            64 * 1024,
            Duration::from_secs(5),
        ),
    ];
    let mut clients = Vec::new();
    for round in 0..4 {
        for (_, request, read, wait) in &stages {
            let (request, read, wait) = (request.clone(), *read, *wait);
            clients.push(std::thread::spawn(move || {
                hang_up(http, &request, read, wait)
            }));
        }
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let requests = clients.len();
    for c in clients {
        c.join().expect("client");
    }
    // The edge has noticed every hang-up and finished with it: each request logged, and no
    // server holding one.
    wait_until(
        Duration::from_secs(10),
        "a request the client left is still going on",
        async || {
            let status = admin_json(&edge, "/status").await;
            let servers = status["upstreams"]["app"]["servers"].as_array().cloned();
            let idle = servers
                .unwrap_or_default()
                .iter()
                .all(|s| s["in_flight"] == 0);
            idle && logged_lines(&log).len() >= requests
        },
    )
    .await;

    let status = admin_json(&edge, "/status").await;
    for server in status["upstreams"]["app"]["servers"]
        .as_array()
        .expect("servers")
    {
        // "up", or "up (unprobed)" for a server whose every request was cut off by its
        // client: a hang-up is no verdict either way.
        let state = server["state"].as_str().expect("state");
        assert!(state.starts_with("up"), "{status}");
        assert_eq!(server["fails"], 0, "{status}");
        assert_eq!(server["failures"], 0, "{status}");
        assert_eq!(server["in_flight"], 0, "{status}");
    }
    let c = reqwest::Client::new();
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (status, body) = get_json(&c, &edge.url("/after"), &[]).await;
        assert_eq!(status, 200, "{body}");
        served.insert(instance(&body));
    }
    assert_eq!(served.len(), 2, "both servers stay in rotation: {served:?}");

    // Each hang-up is in the access log as 499, and counted.
    let closed = logged_lines(&log)
        .iter()
        .filter(|l| l["status"] == 499)
        .count();
    assert!(closed >= 8, "499 lines: {closed}");
    let (text, m) = scrape(&edge).await;
    let counted = value(&m, "edge_client_closed_requests_total", &[]);
    assert_eq!(counted as usize, closed, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_hangs_up_while_its_server_works_frees_the_server_at_once() {
    let app = backend("app").await;
    let (_dir, log, logging) = access_log_file();
    let edge = Edge::start(
        &logging,
        TestConfig::new()
            .upstream("app", [app.addr])
            .with("balance", "least_conn")
            .route("/", "app"),
    );
    let http = edge.http;
    let client = std::thread::spawn(move || {
        hang_up(
            http,
            b"GET /slow?sleep_ms=5000 HTTP/1.1\r\nHost: a\r\n\r\n",
            1,
            Duration::from_millis(300),
        )
    });
    client.join().expect("client");
    // Long before the server's 5 s are up.
    left_and_freed(
        &edge,
        &log,
        "/slow",
        "app",
        Duration::from_secs(3),
        "the server is still held for a client that left",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_timeout_on_a_kept_alive_connection_is_a_504_not_a_silent_retry() {
    let app = backend("app").await;
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("app", [app.addr])
            .with("read_timeout", "500ms")
            .route("/", "app"),
    );
    // Fill the pool with kept-alive connections.
    let c = reqwest::Client::new();
    let url = edge.url("/warm");
    let warm: Vec<_> = (0..8).map(|_| get_json(&c, &url, &[])).collect();
    for r in futures_util::future::join_all(warm).await {
        assert_eq!(r.0, 200);
    }
    let attempts = async || {
        admin_json(&edge, "/status").await["upstreams"]["app"]["servers"][0]["attempts"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = attempts().await;
    let started = Instant::now();
    let (status, body) = get_json(&client(), &edge.url("/slow?sleep_ms=3000"), &[]).await;
    assert_eq!(status, 504, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        attempts().await - before,
        1,
        "the slow request was sent once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_while_a_body_is_slow_to_come_frees_the_server_at_once() {
    let stall = stalling_backend();
    let (_dir, log, logging) = access_log_file();
    let edge = Edge::start(
        &logging,
        TestConfig::new()
            .upstream("app", [stall])
            .with("read_timeout", "20s")
            .route("/", "app"),
    );
    let http = edge.http;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut client = std::net::TcpStream::connect(http).expect("connect");
        client
            .write_all(b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("write");
        let mut buf = [0u8; 512];
        let n = client.read(&mut buf).expect("the head and the first bytes");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    })
    .await
    .expect("client");
    left_and_freed(
        &edge,
        &log,
        "/stall",
        "app",
        Duration::from_secs(3),
        "the server is still held",
    )
    .await;
}
