//! `edge check`: like `nginx -t`, every mistake with file:line:col.

use crate::support::*;
use std::process::Command;

#[test]
fn the_repository_config_passes() {
    let out = Command::new(edge_bin())
        .args(["check", "upstreams.toml"])
        .current_dir(repo())
        .output()
        .expect("run edge check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
}

#[test]
fn five_mistakes_are_all_reported_and_the_exit_code_is_non_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    let text = TestConfig::new()
        .section("edge")
        .with("keepalive_timeout", "soon")
        .with("http_listen", vec!["nowhere"])
        .upstream("app", ["app:80"])
        .with("balance", "random")
        .with_servers("weight", 0)
        .route("/api/", "missing")
        .text();
    std::fs::write(&path, &text).expect("write");
    let out = Command::new(edge_bin())
        .arg("check")
        .arg(&path)
        .output()
        .expect("run edge check");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    // Each mistake is placed where its value starts.
    for key in [
        "keepalive_timeout",
        "http_listen",
        "balance",
        "weight",
        "upstream",
    ] {
        let place = place_of_value(&text, key);
        assert!(
            stderr.contains(&format!("{file}:{place}:")),
            "missing {key} at {place} in:\n{stderr}\n{text}"
        );
    }
    assert!(stderr.contains("5 errors found"), "{stderr}");
    assert!(
        !stderr.contains("started"),
        "a check starts nothing: {stderr}"
    );
}

#[test]
fn garbage_input_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("junk.toml");
    std::fs::write(&path, [0xffu8, 0xfe, b'[', b'[', b'=', 0]).expect("write");
    let out = Command::new(edge_bin())
        .arg("check")
        .arg(&path)
        .output()
        .expect("run edge check");
    assert_eq!(out.status.code(), Some(1));
    let missing = Command::new(edge_bin())
        .args(["check", "/nonexistent/upstreams.toml"])
        .output()
        .expect("run edge check");
    assert_eq!(missing.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_asks_the_admin_health_endpoint() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    let out = Command::new(edge_bin())
        .args(["healthcheck", "--admin", &edge.admin.to_string()])
        .output()
        .expect("run healthcheck");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the health JSON");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["checks"]["app"], "healthy");
    let closed = format!("127.0.0.1:{}", dead_port(6));
    let out = Command::new(edge_bin())
        .args(["healthcheck", "--admin", &closed])
        .output()
        .expect("run healthcheck");
    assert_eq!(out.status.code(), Some(1));
}

/// The `[tls]` certificate files, which only a starting edge reads: `edge check` reads them
/// (as `nginx -t` does) and warns at their place, exit 0 (a file is often checked where its
/// deployment's certificates are not); `edge run` refuses to start with the same places.
#[test]
fn missing_certificate_files_are_placed_a_warning_for_check_an_error_for_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing");
    let text = format!(
        "[edge]\nhttp_listen = [\"127.0.0.1:0\"]\nhttps_listen = [\"127.0.0.1:0\"]\n\
         admin_listen = \"127.0.0.1:0\"\n\n\
         [tls]\ncertificates = [ {{ cert = \"{m}.crt\", key = \"{m}.key\" }} ]\n\n\
         [upstreams.app]\nservers = [{{ addr = \"127.0.0.1:9\" }}]\n\n\
         [[routes]]\npath = \"/\"\nupstream = \"app\"\n",
        m = missing.display()
    );
    let path = dir.path().join("upstreams.toml");
    std::fs::write(&path, &text).expect("write");
    let file = path.display().to_string();
    let places = [place_of_value(&text, "cert"), place_of_value(&text, "key")];

    let check = Command::new(edge_bin())
        .arg("check")
        .arg(&path)
        .output()
        .expect("run edge check");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}");
    for place in &places {
        assert!(
            stderr.contains(&format!("warning: {file}:{place}: cannot read")),
            "{place} in:\n{stderr}"
        );
    }

    let run = Command::new(edge_bin())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .arg("--runtime-dir")
        .arg(dir.path())
        .output()
        .expect("run edge run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    for place in &places {
        assert!(
            stderr.contains(&format!("error: {file}:{place}: cannot read")),
            "{place} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("nothing was started"), "{stderr}");
}
