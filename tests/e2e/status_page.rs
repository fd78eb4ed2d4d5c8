//! The live status page, loaded in a real headless browser (Debian's chromium) against a
//! running edge: it must show what happened to the edge, from its own polling of `/status`.

use crate::support::*;
use std::process::Command;

/// The DOM of `url` after the page's scripts ran for `budget_ms` of virtual time.
fn rendered_dom(url: &str, budget_ms: u32) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--disable-client-side-phishing-detection",
            "--no-first-run",
            "--no-default-browser-check",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium (Debian's chromium package; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

/// The `<tr>` whose `attr` is `key`, as rendered HTML.
fn row<'a>(dom: &'a str, attr: &str, key: &str) -> &'a str {
    let marker = format!("<tr data-{attr}=\"{key}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no row {marker} in the page:\n{dom}"));
    let end = dom[start..].find("</tr>").expect("row end") + start;
    &dom[start..end]
}

/// The text of each `<td>` of a row.
fn cells(row: &str) -> Vec<String> {
    row.split("<td")
        .skip(1)
        .map(|c| {
            let text = &c[c.find('>').expect("td") + 1..];
            let text = &text[..text.find("</td>").unwrap_or(text.len())];
            // Nested markup (the reload details list) reduced to its text.
            let mut plain = String::new();
            let mut in_tag = false;
            for ch in text.chars() {
                match ch {
                    '<' => in_tag = true,
                    '>' => in_tag = false,
                    _ if !in_tag => plain.push(ch),
                    _ => {}
                }
            }
            plain
                .replace("&amp;", "&")
                .replace("&gt;", ">")
                .replace("&lt;", "<")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_servers_routes_limits_and_reloads_in_a_browser() {
    let app = backend("app").await;
    let idle = backend("idle").await;
    let (dead, dead2) = (dead_port(4), dead_port(5));
    let edge = Edge::start(
        "",
        TestConfig::new()
            .zone("api", "1r/m")
            .upstream("app", [app.addr])
            .upstream(
                "gone",
                [dead, dead2].map(|port| format!("127.0.0.1:{port}")),
            )
            .with_servers("max_fails", 1)
            .with_servers("fail_timeout", "10m")
            .route("/api/", "app")
            .limit(table! { zone = "api", burst = 1, nodelay = true })
            .route("/gone/", "gone")
            .upstream("idle", [idle.addr])
            .route("/idle/", "idle"),
    );
    let c = client();
    for _ in 0..3 {
        get_json(&c, &edge.url("/api/x"), &[]).await; // 2 pass, 1 rejected
    }
    assert_eq!(get_json(&c, &edge.url("/gone/x"), &[]).await.0, 502);

    // One refused reload and one applied.
    let path = edge.dir.path().join("upstreams.toml");
    let good = std::fs::read_to_string(&path).expect("read");
    write_atomically(&path, &format!("{good}\nnonsense = 1\n"));
    let reload = || c.post(format!("http://{}/reload", edge.admin)).send();
    assert_eq!(reload().await.expect("reload").status(), 400);
    write_atomically(&path, &good.replace("\"1r/m\"", "\"2r/m\""));
    assert_eq!(reload().await.expect("reload").status(), 200);

    // Plain clients still get JSON from the same URL.
    let json = admin_json(&edge, "/status").await;
    assert!(json["upstreams"]["app"].is_object(), "{json}");

    let dom = rendered_dom(&format!("http://{}/status", edge.admin), 6000);
    assert!(
        dom.contains("live, updated"),
        "the page never polled:\n{dom}"
    );

    let up = row(&dom, "server", &format!("app/{}", app.addr));
    assert!(up.contains("data-health=\"up\""), "{up}");
    let up = cells(up);
    assert_eq!(up[2], "http1", "the upstream's protocol: {up:?}");
    assert_eq!(up[4], "up");
    assert_eq!(up[9], "2", "requests the app server served: {up:?}");
    assert_eq!(
        up[7], "0.0",
        "req/s from two polls with no traffic between: {up:?}"
    );

    // A server nothing probes and no request has reached is not called checked.
    let unprobed = cells(row(&dom, "server", &format!("idle/{}", idle.addr)));
    assert_eq!(unprobed[4], "up (unprobed)", "{unprobed:?}");
    let health = admin_json(&edge, "/health").await;
    assert_eq!(health["unprobed"], serde_json::json!(["idle"]), "{health}");

    let down = row(&dom, "server", &format!("gone/127.0.0.1:{dead}"));
    assert!(down.contains("data-health=\"down\""), "{down}");
    let down = cells(down);
    assert!(down[4].starts_with("down (passive"), "{down:?}");
    assert_eq!(down[10], "1", "failures: {down:?}");

    let api = cells(row(&dom, "route", "/api/"));
    assert_eq!((api[1].as_str(), api[4].as_str()), ("app", "3"), "{api:?}");
    assert_eq!(api[2], "0.0", "route req/s from two polls: {api:?}");
    let gone = cells(row(&dom, "route", "/gone/"));
    assert_eq!((gone[4].as_str(), gone[5].as_str()), ("1", "1"), "{gone:?}");

    let zone = cells(row(&dom, "zone", "api"));
    assert_eq!(zone[1], "2r/m", "the reloaded rate: {zone:?}");

    let applied = cells(row(&dom, "result", "applied"));
    assert_eq!(applied[1], "POST /reload");
    assert!(applied[3].contains("zones changed: api"), "{applied:?}");
    let refused = cells(row(&dom, "result", "refused"));
    assert!(
        refused[3].contains("upstreams.toml:") && refused[3].contains("nonsense"),
        "the error with its place in the file: {refused:?}"
    );
    // Newest first.
    assert!(dom.find("data-result=\"applied\"") < dom.find("data-result=\"refused\""));
}
