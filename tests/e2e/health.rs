//! Active health probing and the edge's own /health.

use crate::support::*;
use services::HealthOverride;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unhealthy_servers_leave_after_fall_and_return_after_rise_degraded_ones_stay() {
    let a = backend("a").await;
    let b = backend("b").await;
    let edge = Edge::start(
        "",
        &format!(
            r#"
[upstreams.app]
servers = [{{ addr = "{}" }}, {{ addr = "{}" }}]
health = {{ path = "/health", interval = "100ms", timeout = "1s", rise = 2, fall = 2, start_period = "0s" }}
[[routes]]
path = "/"
upstream = "app"
"#,
            a.addr, b.addr
        ),
    );
    assert_eq!(served_by(&edge, 10).await.len(), 2);

    a.set_health(HealthOverride::Unhealthy);
    wait_until("a is out", async || {
        !admin_json(&edge, "/status").await["upstreams"]["app"]["servers"][0]["probe_up"]
            .as_bool()
            .unwrap_or(true)
    })
    .await;
    assert_eq!(
        served_by(&edge, 20).await,
        BTreeSet::from(["b".to_string()])
    );

    b.set_health(HealthOverride::Degraded);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = admin_json(&edge, "/status").await;
    assert_eq!(status["upstreams"]["app"]["servers"][1]["probe_up"], true);
    assert_eq!(status["upstreams"]["app"]["servers"][1]["degraded"], true);

    a.set_health(HealthOverride::Healthy);
    wait_until("a is back", async || {
        served_by(&edge, 6).await.contains("a")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_health_is_degraded_while_an_upstream_has_no_usable_server() {
    let a = backend("a").await;
    let edge = Edge::start(
        "",
        &format!(
            r#"
[upstreams.app]
servers = [{{ addr = "{}" }}]
health = {{ interval = "100ms", fall = 1, rise = 1, start_period = "0s" }}
[[routes]]
path = "/"
upstream = "app"
"#,
            a.addr
        ),
    );
    let health = admin_json(&edge, "/health").await;
    assert_eq!(health["status"], "healthy");
    assert!(health["timestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(health["metadata"]["uptime"].is_u64());

    a.set_health(HealthOverride::Unhealthy);
    wait_until("the edge is degraded", async || {
        admin_json(&edge, "/health").await["status"] == "degraded"
    })
    .await;
    let health = admin_json(&edge, "/health").await;
    assert_eq!(health["checks"]["app"], "unhealthy");

    a.set_health(HealthOverride::Auto);
    wait_until("the edge is healthy again", async || {
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
        &format!(
            r#"
[upstreams.app]
servers = [{{ addr = "{}" }}]
health = {{ interval = "100ms", fall = 1, start_period = "2s" }}
[[routes]]
path = "/"
upstream = "app"
"#,
            a.addr
        ),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(admin_json(&edge, "/health").await["status"], "healthy");
    wait_until("the start period is over", async || {
        admin_json(&edge, "/health").await["status"] == "degraded"
    })
    .await;
}
