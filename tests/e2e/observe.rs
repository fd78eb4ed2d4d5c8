//! Metrics and access logs move with what happens.

use crate::support::*;
use std::time::Duration;

/// The config of these tests: `app` behind a limited route, and an upstream of two dead
/// servers.
fn observed_config(app: std::net::SocketAddr) -> TestConfig {
    let dead = [dead_port(2), dead_port(3)].map(|port| format!("127.0.0.1:{port}"));
    TestConfig::new()
        .zone("api", "1r/m")
        .upstream("app", [app])
        .upstream("gone", dead)
        .route("/api/", "app")
        .limit(table! { zone = "api", burst = 1, nodelay = true })
        .route("/gone/", "gone")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_family_moves_with_traffic_failures_limits_and_reloads() {
    let app = backend("app").await;
    let edge = Edge::start("", observed_config(app.addr));
    let c = client();
    for _ in 0..3 {
        get_json(&c, &edge.url("/api/x"), &[]).await; // 2 pass, 1 rejected
    }
    let (status, _) = get_json(&c, &edge.url("/gone/x"), &[]).await;
    assert_eq!(status, 502);
    // A request is counted when it is logged, just after its response left, and leaves the
    // in-flight gauge when its context ends, just after that: wait for all 4 to be done.
    wait_until(
        Duration::from_secs(10),
        "a request is not done",
        async || {
            let (_, m) = scrape(&edge).await;
            value(&m, "edge_requests_total", &[]) >= 4.0
                && value(&m, "edge_requests_in_flight", &[]) == 0.0
        },
    )
    .await;
    let (_, m) = scrape(&edge).await;
    assert_eq!(
        value(
            &m,
            "edge_requests_total",
            &["route=\"/api/\"", "status_class=\"2xx\""]
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "edge_requests_total",
            &["route=\"/api/\"", "status_class=\"4xx\""]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "edge_requests_total",
            &["route=\"/gone/\"", "status_class=\"5xx\""]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "edge_request_duration_seconds_count",
            &["route=\"/api/\""]
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            "edge_upstream_response_duration_seconds_count",
            &["upstream=\"app\""]
        ),
        2.0
    );
    assert_eq!(
        value(
            &m,
            "edge_ratelimit_requests_total",
            &["zone=\"api\"", "outcome=\"rejected\""]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "edge_ratelimit_requests_total",
            &["zone=\"api\"", "outcome=\"passed\""]
        ),
        2.0
    );
    assert_eq!(
        value(&m, "edge_upstream_failures_total", &["upstream=\"gone\""]),
        2.0
    );
    assert_eq!(
        value(&m, "edge_upstream_retries_total", &["upstream=\"gone\""]),
        1.0
    );
    assert_eq!(
        value(&m, "edge_upstream_server_up", &["upstream=\"app\""]),
        1.0
    );
    assert_eq!(
        value(&m, "edge_upstream_healthy_servers", &["upstream=\"gone\""]),
        0.0
    );
    assert_eq!(
        value(
            &m,
            "edge_upstream_server_health",
            &["upstream=\"gone\"", "check=\"passive\""]
        ),
        0.0
    );
    assert_eq!(value(&m, "edge_requests_in_flight", &[]), 0.0);
    assert_eq!(value(&m, "edge_build_info", &[]), 1.0);
    assert_eq!(value(&m, "edge_config_info", &[]), 1.0);
    assert_eq!(
        value(&m, "edge_config_reloads_total", &["result=\"applied\""]),
        0.0
    );

    // A bad reload and a good one.
    let path = edge.dir.path().join("upstreams.toml");
    let good = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, format!("{good}\nnonsense = 1\n")).expect("write");
    let refused = c
        .post(format!("http://{}/reload", edge.admin))
        .send()
        .await
        .expect("reload");
    assert_eq!(refused.status().as_u16(), 400);
    std::fs::write(&path, good.replace("rate = \"1r/m\"", "rate = \"2r/m\"")).expect("write");
    let applied = c
        .post(format!("http://{}/reload", edge.admin))
        .send()
        .await
        .expect("reload");
    assert_eq!(applied.status().as_u16(), 200);
    // A time wait, not a state wait: the file watcher (100 ms debounce) sees these writes too,
    // and whatever it makes of them (one more refusal, or nothing new) is counted by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (text, m) = scrape(&edge).await;
    assert!(value(&m, "edge_config_reloads_total", &["result=\"refused\""]) >= 1.0);
    assert_eq!(
        value(&m, "edge_config_reloads_total", &["result=\"applied\""]),
        1.0
    );
    assert!(value(&m, "edge_config_last_applied_timestamp_seconds", &[]) > 1.7e9);

    // The exposition is valid by Prometheus' own checker.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    let problems =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check metrics:\n{problems}");

    // Every family served is in docs/observability.md's table.
    let docs = std::fs::read_to_string(repo().join("docs/observability.md")).expect("docs");
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().expect("a name");
        assert!(
            docs.contains(&format!("| `{name}` |")),
            "{name} is served but not in docs/observability.md"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_lines_carry_every_field() {
    let app = backend("app").await;
    let (_dir, log, logging) = access_log_file();
    let edge = Edge::start(&logging, observed_config(app.addr));
    let c = client();
    let ua = [("user-agent", "edge-test/1")];
    get_json(&c, &edge.url("/api/ok?q=1"), &ua).await;
    get_json(&c, &edge.url("/api/ok"), &ua).await;
    get_json(&c, &edge.url("/api/limited"), &ua).await;
    get_json(&c, &edge.url("/nowhere"), &ua).await;
    get_json(&c, &edge.url("/gone/x"), &ua).await;
    wait_until(
        Duration::from_secs(10),
        "a request is not logged",
        async || logged_lines(&log).len() >= 5,
    )
    .await;
    let lines = logged_lines(&log);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let fields = [
        "timestamp",
        "request_id",
        "client_ip",
        "method",
        "host",
        "path",
        "status",
        "bytes_sent",
        "duration_ms",
        "upstream",
        "server",
        "upstream_duration_ms",
        "route",
        "limit",
        "tls_version",
        "user_agent",
    ];
    // Every field logged is in docs/observability.md's example line.
    let docs = std::fs::read_to_string(repo().join("docs/observability.md")).expect("docs");
    for field in lines[0].as_object().expect("an object").keys() {
        assert!(
            docs.contains(&format!("\"{field}\":")),
            "{field} is logged but not in docs/observability.md"
        );
    }
    for line in &lines {
        for f in fields {
            assert!(line.get(f).is_some(), "{f} missing in {line}");
        }
        assert_eq!(line["user_agent"], "edge-test/1");
        assert_eq!(line["client_ip"], "127.0.0.1");
        assert_eq!(line["request_id"].as_str().map(str::len), Some(32));
    }
    let by_path = |p: &str| lines.iter().find(|l| l["path"] == p).expect(p).clone();
    let ok = by_path("/api/ok");
    assert_eq!(
        (ok["status"].as_u64(), ok["route"].as_str()),
        (Some(200), Some("/api/"))
    );
    assert_eq!(ok["upstream"], "app");
    assert_eq!(ok["server"], app.addr.to_string());
    assert!(ok["upstream_duration_ms"].as_f64().is_some());
    assert_eq!(ok["limit"], "passed");
    assert!(ok["bytes_sent"].as_u64() > Some(0));
    let limited = by_path("/api/limited");
    assert_eq!(
        (limited["status"].as_u64(), limited["limit"].as_str()),
        (Some(429), Some("rejected:api"))
    );
    // Answered by the edge: no upstream, server or upstream time.
    assert!(limited["upstream"].is_null(), "{limited}");
    assert!(limited["server"].is_null(), "{limited}");
    assert!(limited["upstream_duration_ms"].is_null(), "{limited}");
    assert_eq!(limited["route"], "/api/");
    let missing = by_path("/nowhere");
    assert_eq!(missing["status"], 404);
    assert!(missing["route"].is_null());
    let gone = by_path("/gone/x");
    assert_eq!(gone["status"], 502);
    assert_eq!(gone["upstream"], "gone");
    assert!(gone["server"]
        .as_str()
        .is_some_and(|s| s.starts_with("127.0.0.1:")));
}

/// Every `edge_*` metric named by the Grafana dashboard and the alert rules is one the edge
/// exports (checked against a real scrape after traffic that creates every series).
#[tokio::test(flavor = "multi_thread")]
async fn dashboards_and_alert_rules_only_use_exported_metrics() {
    let app = backend("app").await;
    // A certificate too, so that the edge_ocsp_* series exist (a self-signed one: never
    // stapled, shown as such).
    // And ACME for a name, against a directory nobody serves: the edge_acme_* series exist
    // (no certificate, failures counted).
    let certificate = Certificate::self_signed(&["edge.test"]);
    let storage = tempfile::tempdir().expect("storage");
    let (edge, _) = https_edge(
        table! { redirect_http_to_https = false },
        observed_config(app.addr)
            .certificate(&certificate)
            .nested(&["tls", "acme"])
            .with(
                "directory",
                format!("https://127.0.0.1:{}/dir", crate::peers::free_port()),
            )
            .with("domains", vec!["shop.test"])
            .with("storage", storage.path().display().to_string()),
    );
    wait_until(
        Duration::from_secs(10),
        "no edge_ocsp_* or edge_acme_* series",
        async || {
            let text = scrape(&edge).await.0;
            text.contains("edge_ocsp_stapled") && text.contains("edge_acme_failures_total")
        },
    )
    .await;
    let c = client();
    for _ in 0..3 {
        get_json(&c, &edge.url("/api/x"), &[]).await;
    }
    get_json(&c, &edge.url("/gone/x"), &[]).await;
    let (text, _) = scrape(&edge).await;
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let files = [
        "infrastructure/monitoring/grafana/dashboards/edge.json",
        "infrastructure/monitoring/prometheus/rules/edge.yml",
    ];
    for file in files {
        let text = repo_file(file);
        // YAML comments are prose, not queries.
        let body: String = if file.ends_with(".yml") {
            text.lines()
                .map(|l| {
                    if l.trim_start().starts_with('#') {
                        ""
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            text
        };
        let mut used = std::collections::BTreeSet::new();
        let bytes = body.as_bytes();
        let mut i = 0;
        while let Some(at) = body[i..].find("edge_") {
            let start = i + at;
            let before_ok = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = start
                + body[start..]
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .unwrap_or(body.len() - start);
            // A bare "edge_" (as in prose: "edge_*") names no metric.
            if before_ok && !body[start..end].ends_with('_') {
                used.insert(body[start..end].to_string());
            }
            i = end.max(start + 1);
        }
        assert!(!used.is_empty(), "{file} uses no edge metric");
        for name in &used {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| exported.contains(f)))
                .unwrap_or(name);
            assert!(
                exported.contains(family),
                "{file} uses {name}, which the edge does not export"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_access_log_drops_lines_and_counts_them_without_slowing_requests() {
    let app = backend("app").await;
    let dir = tempfile::tempdir().expect("dir");
    let fifo = dir.path().join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    // Held open and never read: once the pipe's buffer is full the writer thread blocks.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("open fifo");
    let edge = Edge::start(
        table! { access_log = fifo.display().to_string() },
        one_route(app.addr),
    );
    let c = client();
    // Lines of about 8 KB: 16 MiB of backlog is about 2,000 of them.
    let agent = "x".repeat(8000);
    let mut slowest = Duration::ZERO;
    for _ in 0..3000 {
        let started = std::time::Instant::now();
        let response = c
            .get(edge.url("/a"))
            .header("user-agent", &agent)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a request waited {slowest:?} for the log"
    );
    let (_, m) = scrape(&edge).await;
    let dropped = value(&m, "edge_access_log_dropped_total", &[]);
    assert!(
        dropped >= 500.0,
        "{dropped} lines counted as dropped:\n{}",
        edge.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_access_log_is_reopened_on_sigusr1_and_when_moved() {
    let app = backend("app").await;
    let (dir, log, logging) = access_log_file();
    let edge = Edge::start(&logging, one_route(app.addr));
    let c = client();
    get_json(&c, &edge.url("/before"), &[]).await;
    logged_line(&log, "/before", Duration::from_secs(5), "the first file").await;

    // logrotate's `create`: the file moves away, an empty one takes its name, then SIGUSR1.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    std::fs::write(&log, "").expect("create");
    let killed = std::process::Command::new("kill")
        .args(["-USR1", &edge.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    get_json(&c, &edge.url("/after-signal"), &[]).await;
    logged_line(
        &log,
        "/after-signal",
        Duration::from_secs(5),
        "SIGUSR1 reopens",
    )
    .await;

    // Moved away with no signal: the writer notices the file is no longer the one it holds.
    std::fs::rename(&log, &rotated).expect("rotate again");
    get_json(&c, &edge.url("/after-move"), &[]).await;
    logged_line(
        &log,
        "/after-move",
        Duration::from_secs(5),
        "a moved file is reopened",
    )
    .await;
    let old = std::fs::read_to_string(&rotated).expect("rotated file");
    assert!(!old.contains("/after-move"), "{old}");
}
