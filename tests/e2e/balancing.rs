//! Balancing as nginx does it: weighted round robin, least_conn, ip_hash.

use crate::support::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Two servers `a` and `b` of upstream `app` (routed for every path), balanced by `balance`
/// with these weights.
fn two_servers(balance: &str, a: SocketAddr, b: SocketAddr, weights: [i64; 2]) -> TestConfig {
    TestConfig::new()
        .upstream("app", [a, b])
        .with("balance", balance)
        .weights(weights)
        .route("/", "app")
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_splits_three_to_one_for_weights_three_and_one() {
    let a = backend("a").await;
    let b = backend("b").await;
    let edge = Edge::start("", two_servers("round_robin", a.addr, b.addr, [3, 1]));
    let c = reqwest::Client::new();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..400 {
        let (status, body) = get_json(&c, &edge.url("/api/content/x"), &[]).await;
        assert_eq!(status, 200);
        *counts.entry(instance(&body)).or_default() += 1;
    }
    let a_share = counts["a"];
    assert!((292..=308).contains(&a_share), "3:1 within 2%: {counts:?}");
    assert_eq!(a_share + counts["b"], 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn least_conn_sends_new_requests_away_from_a_server_holding_slow_ones() {
    let a = backend("a").await;
    let b = backend("b").await;
    let edge = Edge::start("", two_servers("least_conn", a.addr, b.addr, [1, 1]));
    // Slow enough to outlast the fast ones on a loaded machine; the test waits for it to be
    // in flight (least_conn's own count, in /status) rather than for a fixed time.
    let slow_url = edge.url("/slow?sleep_ms=8000");
    let slow = tokio::spawn(async move { get_json(&client(), &slow_url, &[]).await });
    wait_until(
        Duration::from_secs(10),
        "the slow request never got in flight",
        async || {
            let status = admin_json(&edge, "/status").await;
            let servers = status["upstreams"]["app"]["servers"].as_array().cloned();
            servers
                .unwrap_or_default()
                .iter()
                .any(|s| s["in_flight"] == 1)
        },
    )
    .await;
    let c = client();
    let mut fast = Vec::new();
    for _ in 0..10 {
        let (status, body) = get_json(&c, &edge.url("/fast"), &[]).await;
        assert_eq!(status, 200);
        fast.push(instance(&body));
    }
    let (status, body) = slow.await.expect("slow request");
    assert_eq!(status, 200);
    let busy = instance(&body);
    assert!(
        fast.iter().all(|i| *i != busy),
        "fast requests avoided {busy}: {fast:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_hash_keeps_a_client_on_one_server_until_that_server_is_down() {
    let a = backend("a").await;
    let b = backend("b").await;
    let edge = Edge::start(
        table! { trusted_proxies = vec!["127.0.0.1/32"] },
        TestConfig::new()
            .upstream("app", [a.addr, b.addr])
            .with("balance", "ip_hash")
            .with_servers("max_fails", 1)
            .with_servers("fail_timeout", "30s")
            .route("/", "app"),
    );
    let c = reqwest::Client::new();
    let as_client = |ip: String| vec![("x-forwarded-for".to_string(), ip)];
    let ask = |ip: String| {
        let c = c.clone();
        let url = edge.url("/api/ai/job");
        async move {
            let headers = as_client(ip);
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let (status, body) = get_json(&c, &url, &headers).await;
            assert_eq!(status, 200);
            instance(&body)
        }
    };

    let home = ask("203.0.113.10".into()).await;
    for i in 0..100 {
        // same /24, any last octet: same server
        assert_eq!(ask(format!("203.0.113.{}", i % 250)).await, home);
    }
    // Clients in different /24s spread over both servers.
    let mut seen = std::collections::HashSet::new();
    let mut other_client = None;
    for n in 0..40 {
        let ip = format!("198.51.{n}.7");
        let server = ask(ip.clone()).await;
        if server != home {
            other_client = Some((ip, server.clone()));
        }
        seen.insert(server);
    }
    assert_eq!(seen.len(), 2, "two /24s landed on different servers");
    let (other_ip, other_home) = other_client.expect("a client on the other server");

    // Take the first client's server down: it moves; the other client stays where it was.
    let (down, _up) = if home == "a" { (a, b) } else { (b, a) };
    down.shutdown().await;
    let moved = ask("203.0.113.10".into()).await;
    assert_ne!(moved, home);
    assert_eq!(ask(other_ip).await, other_home);
}
