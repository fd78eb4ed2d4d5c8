//! `edge explain` against a running edge (admin `GET /explain`): it sees the zones' live state
//! without counting, and predicts the server the real request then reaches.

use crate::support::*;
use std::process::Command;

/// What `edge explain --json ARGS` says about a request to `edge`.
fn explain_cli(edge: &Edge, args: &[&str]) -> serde_json::Value {
    let out = Command::new(edge_bin())
        .args(["explain", "--admin", &edge.admin.to_string(), "--json"])
        .args(args)
        .output()
        .expect("run edge explain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_predicts_the_ip_hash_server_and_a_zone_rejection_without_counting() {
    let backends = [backend("a").await, backend("b").await, backend("c").await];
    let by_addr = |label: &str| {
        backends
            .iter()
            .position(|b| b.addr.to_string() == label)
            .map(|i| ["a", "b", "c"][i])
            .unwrap_or_else(|| panic!("no backend at {label}"))
    };
    let edge = Edge::start(
        table! { trusted_proxies = vec!["127.0.0.0/8"] },
        TestConfig::new()
            .zone("z", "1r/m")
            .upstream("sticky", backends.iter().map(|b| b.addr))
            .with("balance", "ip_hash")
            .route("/", "sticky")
            .route("/limited/", "sticky")
            .limit(table! { zone = "z", burst = 1, nodelay = true }),
    );
    let http = client();

    // ip_hash: the server explain names is the one the request reaches, client by client.
    let mut reached = std::collections::HashSet::new();
    for client_ip in [
        "10.1.2.3",
        "10.9.8.7",
        "172.16.0.1",
        "192.168.3.4",
        "10.200.1.1",
        "172.31.9.9",
    ] {
        let xff = format!("X-Forwarded-For: {client_ip}");
        let said = explain_cli(
            &edge,
            &["GET", &format!("http://{}/items", edge.http), "-H", &xff],
        );
        assert_eq!(said["request"]["client"], client_ip, "{said}");
        assert_eq!(said["balance"]["balance"], "ip_hash");
        let pick = said["balance"]["pick"]
            .as_str()
            .expect("a pick")
            .to_string();
        let response = http
            .get(edge.url("/items"))
            .header("x-forwarded-for", client_ip)
            .send()
            .await
            .expect("request");
        let served = response.headers()["x-served-by"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert_eq!(served, by_addr(&pick), "{client_ip}: explain said {pick}");
        reached.insert(served);
    }
    assert!(
        reached.len() > 1,
        "the clients spread over the servers: {reached:?}"
    );

    // A zone: explaining counts nothing; two requests fill 1r/m with burst 1, and then explain
    // says the zone rejects this client, as the real request finds.
    let url = format!("http://{}/limited/x", edge.http);
    for _ in 0..3 {
        let said = explain_cli(&edge, &[&url]);
        assert_eq!(said["zones"][0]["standing"]["next"], "pass", "{said}");
    }
    let limited = async || {
        let response = http.get(edge.url("/limited/x")).send().await;
        response.expect("request").status().as_u16()
    };
    for _ in 0..2 {
        assert_eq!(limited().await, 200);
    }
    let said = admin_json(
        &edge,
        &format!(
            "/explain?url={}",
            url.replace(':', "%3A").replace('/', "%2F")
        ),
    )
    .await;
    assert_eq!(said["verdict"]["status"], 429, "{said}");
    assert_eq!(said["zones"][0]["zone"], "z");
    assert_eq!(said["zones"][0]["standing"]["next"], "reject");
    assert!(said["zones"][0]["standing"]["retry_after_ms"].as_u64() > Some(0));
    assert_eq!(limited().await, 429);
    // Another client still passes, and the human form says why.
    let out = Command::new(edge_bin())
        .args([
            "explain",
            "--admin",
            &edge.admin.to_string(),
            &url,
            "-H",
            "X-Forwarded-For: 10.7.7.7",
        ])
        .output()
        .expect("run edge explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("=> proxy to `sticky`"), "{text}");
    assert!(
        text.contains("zone z: 1r/m burst 1 nodelay (local store)"),
        "{text}"
    );
    // A bad question is a 400 with a message.
    let bad = admin_json(&edge, "/explain?nope=1").await;
    assert_eq!(bad["status"], 400, "{bad}");
}

/// A reader that goes before the answer is written (`edge explain ... | head -0`) ends the
/// command quietly: no panic, exit 0, as any Unix tool ends then.
#[test]
fn a_reader_that_goes_early_ends_explain_quietly() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("upstreams.toml");
    std::fs::write(
        &config,
        "[upstreams.one]\nservers = [{ addr = \"127.0.0.1:9\" }]\n\n\
         [[routes]]\npath = \"/\"\nupstream = \"one\"\n",
    )
    .expect("write");
    let mut child = Command::new(edge_bin())
        .args(["explain", "--config"])
        .arg(&config)
        .args(["http://a.test/x", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run edge explain");
    // The read end closed before the command writes (it reads and compiles the config
    // first): its write finds no reader.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}
