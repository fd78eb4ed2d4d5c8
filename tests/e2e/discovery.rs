//! DNS discovery: a server named by a hostname follows the name's answers (every address a
//! server, re-resolved as the TTL expires), without failed requests and keeping the state
//! of addresses that stay.

use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which instances served the requests made while `until` was false, and how many failed.
#[derive(Default)]
struct Traffic {
    served: Mutex<BTreeMap<String, u64>>,
    failed: Mutex<Vec<String>>,
}

impl Traffic {
    fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.served.lock().expect("served"))
    }
}

/// Waits until `check` holds of what was served since the last call, or panics.
async fn until_served(
    traffic: &Traffic,
    what: &str,
    check: impl Fn(&BTreeMap<String, u64>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    traffic.take();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = traffic.take();
        if check(&seen) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last served {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostname_upstream_follows_its_dns_answers_without_failed_requests() {
    let [one, two, three] = [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
    ];
    let a = backend_at("a", "127.0.0.1:0".parse().expect("addr")).await;
    let port = a.addr.port();
    let b = backend_at("b", SocketAddr::new(two.into(), port)).await;
    let c = backend_at("c", SocketAddr::new(three.into(), port)).await;
    let dns = TestDns::start(&[one]);
    let edge = Edge::start(
        &format!("resolver = [\"{}\"]\ndns_min_ttl = \"1s\"", dns.addr),
        &format!(
            r#"
[upstreams.app]
servers = [{{ addr = "app.edge.test:{port}" }}]
[[routes]]
path = "/"
upstream = "app"
"#
        ),
    );

    // Requests without pause for the whole test, on kept-alive connections.
    let traffic = Arc::new(Traffic::default());
    let running = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (traffic, running, url) = (traffic.clone(), running.clone(), edge.url("/x"));
        clients.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            while running.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        *traffic
                            .served
                            .lock()
                            .expect("served")
                            .entry(instance(&body))
                            .or_default() += 1;
                    }
                    Ok(r) => traffic
                        .failed
                        .lock()
                        .expect("failed")
                        .push(r.status().to_string()),
                    Err(e) => traffic.failed.lock().expect("failed").push(e.to_string()),
                }
            }
        }));
    }

    until_served(&traffic, "only a at first", |s| s.keys().eq(["a"])).await;
    let status = admin_json(&edge, "/status").await;
    let first_label = format!("app.edge.test:{port} (127.0.0.1)");
    assert_eq!(
        status["upstreams"]["app"]["servers"][0]["addr"],
        first_label.as_str()
    );

    // Scaled out: every address becomes a server.
    dns.set(&[one, two]);
    until_served(&traffic, "a and b after the answer grew", |s| {
        s.keys().eq(["a", "b"])
    })
    .await;

    // Moved: a leaves, c joins; b keeps its state.
    let b_label = format!("app.edge.test:{port} (127.0.0.2)");
    let b_requests = |status: &serde_json::Value| {
        status["upstreams"]["app"]["servers"]
            .as_array()
            .expect("servers")
            .iter()
            .find(|s| s["addr"] == b_label.as_str())
            .and_then(|s| s["attempts"].as_u64())
    };
    let before = b_requests(&admin_json(&edge, "/status").await).expect("b listed");
    dns.set(&[two, three]);
    until_served(&traffic, "b and c after the answer moved", |s| {
        s.keys().eq(["b", "c"])
    })
    .await;
    let after = b_requests(&admin_json(&edge, "/status").await).expect("b still listed");
    assert!(
        after > before,
        "b's counters were kept ({before} then {after})"
    );

    // The resolver goes silent: the addresses last known keep serving.
    dns.mute.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    until_served(&traffic, "b and c while DNS is down", |s| {
        s.keys().eq(["b", "c"])
    })
    .await;

    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }
    let failed = traffic.failed.lock().expect("failed").clone();
    assert!(failed.is_empty(), "failed requests: {failed:?}");

    let status = admin_json(&edge, "/status").await;
    let servers: BTreeSet<String> = status["upstreams"]["app"]["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| s["addr"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        servers,
        BTreeSet::from([b_label.clone(), format!("app.edge.test:{port} (127.0.0.3)")])
    );
    let dns_events = status["reloads"]["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .filter(|e| e["trigger"] == "DNS")
        .count();
    assert_eq!(dns_events, 2, "{}", status["reloads"]);
    assert!(dns
        .queries
        .lock()
        .expect("queries")
        .iter()
        .all(|q| q == "app.edge.test"));
    drop((a, b, c));
}
