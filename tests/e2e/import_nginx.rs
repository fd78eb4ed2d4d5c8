//! `edge import-nginx`: the nginx edge being replaced (tests/fixtures/nginx, a copy of
//! tests/fixtures/nginx), imported and run in front of the bundled services, routes, balances
//! and limits the requests as nginx did.

use crate::support::*;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

/// The nginx edge being replaced.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/nginx");

/// Copies the nginx tree, with a certificate where nginx.conf expects one (certs/).
fn nginx_tree(dir: &Path) {
    for file in [
        "nginx.conf",
        "upstream.conf",
        "sites-enabled/content-engine.conf",
    ] {
        let to = dir.join(file);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(Path::new(FIXTURE).join(file), &to).expect("copy");
    }
    std::fs::create_dir_all(dir.join("certs")).expect("certs");
    edge::tls::generate_self_signed(
        &["edge.test"],
        &dir.join("certs/edge.crt"),
        &dir.join("certs/edge.key"),
    )
    .expect("certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_imported_nginx_edge_routes_balances_and_limits_as_nginx_did() {
    let dir = tempfile::tempdir().expect("dir");
    nginx_tree(dir.path());
    let toml_path = dir.path().join("upstreams.toml");
    let out = Command::new(edge_bin())
        .arg("import-nginx")
        .arg(dir.path().join("nginx.conf"))
        .arg("-o")
        .arg(&toml_path)
        .output()
        .expect("run import-nginx");
    let report = String::from_utf8_lossy(&out.stderr);
    // `location = /health` becomes a prefix route: a person must decide, so the exit status
    // is 1.
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("! ")
            && report.contains("content-engine.conf:8:5: `location = /health`: differs"),
        "{report}"
    );
    assert!(
        report.contains("nginx.conf:15:5: `sendfile on`: edge default"),
        "{report}"
    );
    assert!(
        !report.contains("does not exist here"),
        "the certificate beside nginx.conf is found:\n{report}"
    );
    let check = Command::new(edge_bin())
        .arg("check")
        .arg(&toml_path)
        .output()
        .expect("check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Run it here: loopback listeners, and each upstream's name answered by a test DNS with
    // 127.0.0.1 at the port of a bundled service standing in for it.
    let dns = TestDns::start(&[Ipv4Addr::LOCALHOST]);
    let text = std::fs::read_to_string(&toml_path).expect("read");
    let mut doc: toml_edit::DocumentMut = text.parse().expect("TOML");
    let edge_table = &mut doc["edge"];
    for key in ["http_listen", "https_listen"] {
        edge_table[key] = toml_edit::value(toml_edit::Array::from_iter(["127.0.0.1:0"]));
    }
    edge_table["admin_listen"] = toml_edit::value("127.0.0.1:0");
    edge_table["resolver"] = toml_edit::value(toml_edit::Array::from_iter([dns.addr.to_string()]));
    edge_table["threads"] = toml_edit::value(2);
    edge_table["access_log"] = toml_edit::value("off");
    let mut backends = Vec::new();
    let names: Vec<String> = doc["upstreams"]
        .as_table()
        .expect("upstreams")
        .iter()
        .map(|(k, _)| k.to_string())
        .collect();
    for name in &names {
        let service = backend(name).await;
        let servers = doc["upstreams"][name.as_str()]["servers"]
            .as_array_mut()
            .expect("servers");
        let server = servers
            .get_mut(0)
            .and_then(|s| s.as_inline_table_mut())
            .expect("server");
        let host = server
            .get("addr")
            .and_then(|a| a.as_str())
            .expect("addr")
            .rsplit_once(':')
            .expect("port")
            .0
            .to_string();
        assert!(
            host.parse::<std::net::IpAddr>().is_err(),
            "servers stay DNS names: {host}"
        );
        server.insert("addr", format!("{host}:{}", service.addr.port()).into());
        backends.push(service);
    }
    std::fs::write(&toml_path, doc.to_string()).expect("write");
    let edge = Edge::start_with_config_path(&toml_path);
    let https = edge.https();

    // Plain HTTP: /health is proxied (nginx's `location = /health`), the rest is redirected.
    let health = raw_request(
        edge.http,
        b"GET /health HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&health), 200, "{health}");
    assert!(
        health
            .to_ascii_lowercase()
            .contains("x-served-by: content_manager"),
        "{health}"
    );
    let redirect = raw_request(
        edge.http,
        b"GET /api/content/x HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&redirect), 308, "{redirect}");

    // HTTPS: every location of the nginx server reaches its upstream.
    let tls = connector(&[b"http/1.1"]);
    let mut stream = connect(&tls, https, "edge.test").await;
    for (path, upstream) in [
        ("/api/content/items", "content_manager"),
        ("/api/ai/jobs", "ai_processor"),
        ("/api/scraper/feeds", "web_scraper"),
        ("/api/distribution/x", "distributor"),
        ("/api/subscribers/x", "subscriber_manager"),
        ("/grafana/d/1", "grafana"),
        ("/prometheus/graph", "prometheus"),
        ("/dashboard", "admin_dashboard"),
    ] {
        let (status, head, _) = http1(&mut stream, path, "").await;
        assert!(status.contains(" 200"), "{path}: {status}");
        assert!(
            head.contains(&format!("x-served-by: {upstream}")),
            "{path}:\n{head}"
        );
    }

    // Balancing as nginx's upstream blocks said.
    let status = admin_json(&edge, "/status").await;
    for (upstream, balance) in [
        ("content_manager", "least_conn"),
        ("ai_processor", "ip_hash"),
        ("distributor", "round_robin"),
        ("grafana", "round_robin"),
    ] {
        assert_eq!(
            status["upstreams"][upstream]["balance"], balance,
            "{upstream}: {status}"
        );
    }

    // Zones: `limit_req zone=ai burst=5 nodelay` (2r/s) admits 6 at once (one went above) and
    // answers 429, as `limit_req_status 429` says; /prometheus/ has no limit_req_status, so
    // nginx's 503.
    let mut ai = Vec::new();
    for _ in 0..8 {
        ai.push(http1(&mut stream, "/api/ai/jobs", "").await.0);
    }
    let admitted = ai.iter().take_while(|s| s.contains(" 200")).count();
    assert!((4..=6).contains(&admitted), "{ai:?}");
    assert!(ai[admitted..].iter().all(|s| s.contains(" 429")), "{ai:?}");
    let mut prometheus = Vec::new();
    for _ in 0..12 {
        prometheus.push(http1(&mut stream, "/prometheus/graph", "").await.0);
    }
    // One of the admin zone's 11 (burst 10 + 1) went to /grafana/ above.
    assert!(
        prometheus.iter().filter(|s| s.contains(" 200")).count() <= 11,
        "{prometheus:?}"
    );
    assert!(
        prometheus.last().is_some_and(|s| s.contains(" 503")),
        "{prometheus:?}"
    );
    drop(edge);
    drop(backends);
}

#[test]
fn a_syntax_error_exits_2_with_its_place_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir(dir.path().join("conf.d")).expect("mkdir");
    std::fs::write(
        dir.path().join("conf.d/a.conf"),
        "upstream a { server a:1; }\n",
    )
    .expect("a");
    std::fs::write(
        dir.path().join("conf.d/b.conf"),
        "upstream b {\n  server b:1\n}\n",
    )
    .expect("b");
    std::fs::write(
        dir.path().join("nginx.conf"),
        "http {\n  include conf.d/*.conf;\n}\n",
    )
    .expect("main");
    let out_file = dir.path().join("out.toml");
    let out = Command::new(edge_bin())
        .arg("import-nginx")
        .arg(dir.path().join("nginx.conf"))
        .arg("-o")
        .arg(&out_file)
        .output()
        .expect("run import-nginx");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("conf.d/b.conf:3:1: unexpected \"}\""),
        "{stderr}"
    );
    assert!(!out_file.exists());
    // Fixed, the glob's files are both read, and nothing needs a decision.
    std::fs::write(
        dir.path().join("conf.d/b.conf"),
        "upstream b {\n  server b:1;\n}\n",
    )
    .expect("b");
    std::fs::write(
        dir.path().join("nginx.conf"),
        "http {\n  include conf.d/*.conf;\n  server { listen 8080; location / { proxy_pass http://b; } }\n}\n",
    )
    .expect("main");
    let out = Command::new(edge_bin())
        .arg("import-nginx")
        .arg(dir.path().join("nginx.conf"))
        .output()
        .expect("run import-nginx");
    let toml = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        toml.contains("[upstreams.a]") && toml.contains("[upstreams.b]"),
        "{toml}"
    );
    assert!(toml.contains("conf.d/b.conf:1"), "{toml}");
}
