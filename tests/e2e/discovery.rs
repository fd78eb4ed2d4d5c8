//! DNS discovery: a server named by a hostname follows the name's answers (every address a
//! server, re-resolved as the TTL expires), without failed requests and keeping the state
//! of addresses that stay.

use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which instances served the requests made so far, and the failed ones.
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

/// Waits until `expected` are the instances serving: 20 requests in a row served by them
/// alone, and by each of them (a request served by another starts the count again).
async fn until_served(traffic: &Traffic, what: &str, expected: &[&str]) {
    traffic.take();
    wait_until(Duration::from_secs(20), what, async || {
        let served = traffic.served.lock().expect("served").clone();
        if !served.keys().all(|k| expected.contains(&k.as_str())) {
            traffic.take();
            return false;
        }
        served.keys().eq(expected) && served.values().sum::<u64>() >= 20
    })
    .await;
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
    // At info: the end of a DNS outage is said there.
    let edge = Edge::start_with_env(
        table! { resolver = vec![dns.addr.to_string()], dns_min_ttl = "1s" },
        TestConfig::new()
            .upstream("app", [format!("app.edge.test:{port}")])
            .route("/", "app"),
        &[("RUST_LOG", "info")],
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

    until_served(&traffic, "only a at first", &["a"]).await;
    let status = admin_json(&edge, "/status").await;
    let first_label = format!("app.edge.test:{port} (127.0.0.1)");
    assert_eq!(
        status["upstreams"]["app"]["servers"][0]["addr"],
        first_label.as_str()
    );

    // Scaled out: every address becomes a server.
    dns.set(&[one, two]);
    until_served(&traffic, "a and b after the answer grew", &["a", "b"]).await;

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
    until_served(&traffic, "b and c after the answer moved", &["b", "c"]).await;
    let after = b_requests(&admin_json(&edge, "/status").await).expect("b still listed");
    assert!(
        after > before,
        "b's counters were kept ({before} then {after})"
    );

    // The resolver goes silent: once a lookup has failed, the addresses last known keep
    // serving.
    let failed_lookups = || edge.log().matches("upstream name does not resolve").count();
    let before = failed_lookups();
    dns.mute.store(true, Ordering::Relaxed);
    wait_until(
        Duration::from_secs(20),
        "no failed lookup logged",
        async || failed_lookups() > before,
    )
    .await;
    until_served(&traffic, "b and c while DNS is down", &["b", "c"]).await;
    // The outage's end is said (its failed lookups once, `discovery::tests`).
    dns.mute.store(false, Ordering::Relaxed);
    wait_until(Duration::from_secs(20), "the end said", async || {
        edge.log().contains("upstream name resolves again")
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

/// A resolver that takes every question and answers none (UDP and TCP on one port): a DNS
/// server that is down or not ready yet, as at a cluster's boot.
struct SilentResolver {
    addr: SocketAddr,
    _udp: std::net::UdpSocket,
    _tcp: std::net::TcpListener,
}

impl SilentResolver {
    fn start() -> SilentResolver {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let addr = udp.local_addr().expect("addr");
        let tcp = std::net::TcpListener::bind(addr).expect("tcp on the same port");
        SilentResolver {
            addr,
            _udp: udp,
            _tcp: tcp,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resolver_that_does_not_answer_holds_the_start_once_and_hosts_names_still_serve() {
    let app = backend("app").await;
    let dns = SilentResolver::start();
    // Names the resolver will never answer, and one /etc/hosts has.
    let mut config = TestConfig::new()
        .upstream("local", [format!("localhost:{}", app.addr.port())])
        .route("/", "local");
    for (i, name) in ["one.edge.test", "two.edge.test", "three.edge.test"]
        .iter()
        .enumerate()
    {
        config = config
            .upstream(&format!("u{i}"), [format!("{name}:1")])
            .route(&format!("/u{i}/"), &format!("u{i}"));
    }
    let started = std::time::Instant::now();
    let edge = Edge::start(
        table! { resolver = vec![dns.addr.to_string()], dns_min_ttl = "1s" },
        config,
    );
    // One by one, each name held the start 5 s (20 s here, and `localhost`, queued behind
    // them, stayed without an address for good); together they wait for the slowest.
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(12),
        "listening after {waited:?}"
    );
    wait_until(
        Duration::from_secs(10),
        "the hosts name serves",
        async || get_json(&client(), &edge.url("/x"), &[]).await.0 == 200,
    )
    .await;
    let (status, _) = get_json(&client(), &edge.url("/u0/x"), &[]).await;
    assert_eq!(status, 502, "a name with no address takes no traffic");
}
