//! Active health probing and the edge's own /health.

use crate::support::*;
use services::HealthOverride;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The instances that answered `n` requests through `edge`.
async fn served_by(edge: &Edge, n: usize) -> BTreeSet<String> {
    let c = reqwest::Client::new();
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let (status, body) = get_json(&c, &edge.url("/x"), &[]).await;
        assert_eq!(status, 200);
        seen.insert(instance(&body));
    }
    seen
}

/// How long a probed server may take to change state: a few probe intervals, with room for
/// a loaded machine.
const PROBED: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn unhealthy_servers_leave_after_fall_and_return_after_rise_degraded_ones_stay() {
    let a = backend("a").await;
    let b = backend("b").await;
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("app", [a.addr, b.addr])
            .with(
                "health",
                table! {
                    path = "/health",
                    interval = "100ms",
                    timeout = "1s",
                    rise = 2,
                    fall = 2,
                    start_period = "0s",
                },
            )
            .route("/", "app"),
    );
    assert_eq!(served_by(&edge, 10).await.len(), 2);

    a.set_health(HealthOverride::Unhealthy);
    wait_until(PROBED, "a is not out", async || {
        server(&edge, "app", 0).await["probe_up"] == false
    })
    .await;
    assert_eq!(
        served_by(&edge, 20).await,
        BTreeSet::from(["b".to_string()])
    );

    b.set_health(HealthOverride::Degraded);
    wait_until(PROBED, "b is not seen degraded", async || {
        server(&edge, "app", 1).await["degraded"] == true
    })
    .await;
    // A time wait, not a state wait: `fall` (2) more probes, 100 ms apart, must not take a
    // degraded server out.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let degraded = server(&edge, "app", 1).await;
    assert_eq!(degraded["probe_up"], true, "{degraded}");
    assert_eq!(degraded["degraded"], true, "{degraded}");

    a.set_health(HealthOverride::Healthy);
    wait_until(PROBED, "a is not back", async || {
        served_by(&edge, 6).await.contains("a")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_health_is_degraded_while_an_upstream_has_no_usable_server() {
    let a = backend("a").await;
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("app", [a.addr])
            .with(
                "health",
                table! { interval = "100ms", fall = 1, rise = 1, start_period = "0s" },
            )
            .route("/", "app"),
    );
    let health = admin_json(&edge, "/health").await;
    assert_eq!(health["status"], "healthy");
    assert!(health["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(health["metadata"]["uptime"].is_u64());

    a.set_health(HealthOverride::Unhealthy);
    wait_until(PROBED, "the edge is not degraded", async || {
        admin_json(&edge, "/health").await["status"] == "degraded"
    })
    .await;
    let health = admin_json(&edge, "/health").await;
    assert_eq!(health["checks"]["app"], "unhealthy");

    a.set_health(HealthOverride::Auto);
    wait_until(PROBED, "the edge is not healthy again", async || {
        admin_json(&edge, "/health").await["status"] == "healthy"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_server_is_not_taken_out_during_its_start_period() {
    let a = backend("a").await;
    a.set_health(HealthOverride::Unhealthy);
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("app", [a.addr])
            .with(
                "health",
                table! { interval = "100ms", fall = 1, start_period = "2s" },
            )
            .route("/", "app"),
    );
    // A probe has failed (the server is checked: no longer "up (unprobed)"), and with
    // `fall = 1` it would have taken the server out but for the start period.
    wait_until(
        Duration::from_secs(2),
        "no probe within the start period",
        async || server(&edge, "app", 0).await["checked"] == true,
    )
    .await;
    assert_eq!(admin_json(&edge, "/health").await["status"], "healthy");
    wait_until(PROBED, "the start period is not over", async || {
        admin_json(&edge, "/health").await["status"] == "degraded"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_of_servers_named_by_dns_keep_strict_backends_in_rotation() {
    let dns = TestDns::start(&[std::net::Ipv4Addr::LOCALHOST]);
    let a = StrictBackend::start("a").await;
    let b = StrictBackend::start("b").await;
    let literal = StrictBackend::start("literal").await;
    let (pa, pb) = (a.addr.port(), b.addr.port());
    let health = table! {
        path = "/health",
        interval = "100ms",
        timeout = "1s",
        rise = 1,
        fall = 1,
        start_period = "0s",
    };
    let edge = Edge::start(
        table! { resolver = vec![dns.addr.to_string()], dns_min_ttl = "1s" },
        TestConfig::new()
            .upstream(
                "app",
                [
                    format!("content-manager:{pa}"),
                    format!("content-manager:{pb}"),
                ],
            )
            .with("health", health.clone())
            .upstream("literal", [literal.addr])
            .with("health", health)
            .route("/literal/", "literal")
            .route("/", "app"),
    );
    wait_until(PROBED, "the servers are not probed", async || {
        a.hosts_for("/health").len() >= 3 && b.hosts_for("/health").len() >= 3
    })
    .await;
    // Probes name the server as configured, never by its display label.
    for (backend, port) in [(&a, pa), (&b, pb)] {
        let hosts = backend.hosts_for("/health");
        assert!(
            hosts
                .iter()
                .all(|h| *h == format!("content-manager:{port}")),
            "{hosts:?}"
        );
    }
    let hosts = literal.hosts_for("/health");
    assert!(!hosts.is_empty());
    assert!(
        hosts.iter().all(|h| *h == literal.addr.to_string()),
        "{hosts:?}"
    );
    assert_eq!(server(&edge, "app", 0).await["state"], "up");
    assert_eq!(server(&edge, "app", 1).await["state"], "up");

    // Every request is served, by both servers.
    let seen = served_by(&edge, 20).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(a.requests() + b.requests(), 20);

    // A chunked `unhealthy` takes the server out after `fall`.
    a.set_unhealthy();
    wait_until(PROBED, "a is not out", async || {
        server(&edge, "app", 0).await["state"] == "down (active probe)"
    })
    .await;
    assert_eq!(
        served_by(&edge, 10).await,
        BTreeSet::from(["b".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_answered_by_half_a_response_and_silence_is_down_within_its_timeout() {
    let half = scripted_backend(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"status\":"
            .to_vec(),
        true,
    );
    let started = Instant::now();
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("app", [half])
            .with(
                "health",
                table! {
                    path = "/health",
                    interval = "100ms",
                    timeout = "500ms",
                    rise = 1,
                    fall = 1,
                    start_period = "0s",
                },
            )
            .route("/", "app"),
    );
    wait_until(PROBED, "the server is not out", async || {
        server(&edge, "app", 0).await["state"] == "down (active probe)"
    })
    .await;
    // The edge's start, one sync of the probers (250 ms) and one probe's timeout, with room.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        admin_json(&edge, "/health").await["checks"]["app"],
        "unhealthy"
    );
}
