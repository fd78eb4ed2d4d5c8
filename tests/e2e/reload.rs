//! Live reload: file changes, SIGHUP and POST /reload; invalid files change nothing; no
//! request fails while the config changes under load.

use crate::support::*;
use std::time::{Duration, Instant};

/// The edge's reload generation (`/status` reloads.generation).
async fn generation(edge: &Edge) -> u64 {
    admin_json(edge, "/status").await["reloads"]["generation"]
        .as_u64()
        .expect("generation")
}

/// Waits until the reload generation is `want` or more.
async fn wait_for_generation(edge: &Edge, want: u64) {
    let why = format!("no reload to generation {want}");
    wait_until(Duration::from_secs(10), &why, async || {
        generation(edge).await >= want
    })
    .await;
}

/// One upstream named `upstream`, of one server, routed for every path.
fn routes_to(upstream: &str, addr: std::net::SocketAddr) -> TestConfig {
    TestConfig::new()
        .upstream(upstream, [addr])
        .route("/", upstream)
}

/// The `[edge]` part of a test edge's config file: everything before the next table.
fn edge_part(text: &str) -> String {
    let end = text.find("\n[").map_or(text.len(), |i| i + 1);
    text[..end].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn file_changes_sighup_and_post_reload_apply_and_a_bad_file_changes_nothing() {
    let a = backend("a").await;
    let b = backend("b").await;
    let edge = Edge::start("", routes_to("one", a.addr));
    let path = edge.dir.path().join("upstreams.toml");
    let head = std::fs::read_to_string(&path).expect("read");
    let head = edge_part(&head);
    let c = client();
    assert_eq!(instance(&get_json(&c, &edge.url("/"), &[]).await.1), "a");

    // An editor's rename-style write: exactly one reload.
    write_atomically(&path, &format!("{head}{}", routes_to("two", b.addr)));
    wait_for_generation(&edge, 1).await;
    assert_eq!(instance(&get_json(&c, &edge.url("/"), &[]).await.1), "b");
    // A time wait, not a state wait: a second reload would come within the watcher's 100 ms
    // debounce; none must.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(generation(&edge).await, 1, "one write, one reload");

    // A broken file: refused with file:line:col, the running config kept.
    let broken = TestConfig::new().upstream("three", ["nowhere"]);
    write_atomically(&path, &format!("{head}{broken}"));
    wait_until(
        Duration::from_secs(10),
        "the watcher refuses the file",
        async || admin_json(&edge, "/status").await["reloads"]["refused"].as_u64() >= Some(1),
    )
    .await;
    // Once: the edge's own read of the file is no change to it (it was seen as one, and the
    // file read and refused again ten times a second for ever). A time wait, not a state
    // wait: a second refusal would come within the watcher's 100 ms; none must.
    let refused = async || admin_json(&edge, "/status").await["reloads"]["refused"].as_u64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(refused().await, Some(1), "one write, one refusal");
    let resp = c
        .post(format!("http://{}/reload", edge.admin))
        .send()
        .await
        .expect("reload");
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await.expect("json");
    let error = body["errors"][0].as_str().expect("an error");
    assert!(
        error.contains("upstreams.toml:") && error.contains("nowhere"),
        "{error}"
    );
    assert_eq!(instance(&get_json(&c, &edge.url("/"), &[]).await.1), "b");
    // The POST's read of the file starts no reloads of its own either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(refused().await, Some(2), "one POST, one more refusal");
    let status = admin_json(&edge, "/status").await;
    assert_eq!(status["reloads"]["generation"].as_u64(), Some(1));
    // The names before the rename are served for one more release (the changelog).
    for (old, new) in [
        ("failed", "refused"),
        ("succeeded", "applied"),
        ("last_success", "last_applied"),
    ] {
        assert_eq!(status["reloads"][old], status["reloads"][new], "{old}");
    }

    // SIGHUP reloads (and does not end the process): in-place write, watcher and signal race,
    // the content hash makes it one reload.
    std::fs::write(&path, format!("{head}{}", routes_to("one", a.addr))).expect("write");
    let pid = std::fs::read_to_string(edge.dir.path().join("edge.pid")).expect("pid file");
    assert_eq!(
        pid.trim(),
        edge.pid().to_string(),
        "the pid file names the edge"
    );
    edge.signal("HUP");
    wait_for_generation(&edge, 2).await;
    assert_eq!(instance(&get_json(&c, &edge.url("/"), &[]).await.1), "a");

    // POST /reload with nothing changed says so.
    let body: serde_json::Value = c
        .post(format!("http://{}/reload", edge.admin))
        .send()
        .await
        .expect("reload")
        .json()
        .await
        .expect("json");
    assert_eq!(body["result"], "unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubernetes_style_symlink_swap_triggers_one_reload() {
    let a = backend("a").await;
    let b = backend("b").await;
    let edge = Edge::start("", routes_to("one", a.addr));
    let dir = edge.dir.path();
    let original = std::fs::read_to_string(dir.join("upstreams.toml")).expect("read");
    let head = edge_part(&original);
    // Rebuild as ConfigMap volumes look: upstreams.toml -> ..data/upstreams.toml,
    // ..data -> ..v1; an update writes ..v2 and swaps ..data atomically.
    let cm = tempfile::tempdir().expect("dir");
    std::fs::create_dir(cm.path().join("..v1")).expect("v1");
    std::fs::write(cm.path().join("..v1/upstreams.toml"), &original).expect("write");
    std::os::unix::fs::symlink("..v1", cm.path().join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/upstreams.toml", cm.path().join("upstreams.toml"))
        .expect("link");
    drop(edge);
    let edge = Edge::start_with_config_path(&cm.path().join("upstreams.toml"));
    assert_eq!(
        instance(&get_json(&client(), &edge.url("/"), &[]).await.1),
        "a"
    );

    std::fs::create_dir(cm.path().join("..v2")).expect("v2");
    std::fs::write(
        cm.path().join("..v2/upstreams.toml"),
        format!("{head}{}", routes_to("two", b.addr)),
    )
    .expect("write");
    std::os::unix::fs::symlink("..v2", cm.path().join("..data_tmp")).expect("link");
    std::fs::rename(cm.path().join("..data_tmp"), cm.path().join("..data")).expect("swap");
    wait_for_generation(&edge, 1).await;
    assert_eq!(
        instance(&get_json(&client(), &edge.url("/"), &[]).await.1),
        "b"
    );
    // A time wait, not a state wait: a second reload would come within the watcher's 100 ms
    // debounce; none must.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(generation(&edge).await, 1, "one swap, one reload");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_request_fails_while_the_config_is_reloaded_every_100ms() {
    let a1 = backend("a1").await;
    let a2 = backend("a2").await;
    let b1 = backend("b1").await;
    let never = backend("never").await;
    let config_a = TestConfig::new()
        .upstream("up_a", [a1.addr, a2.addr])
        .upstream("up_b", [b1.addr])
        .route("/api/", "up_a")
        .route("/", "up_b")
        .text();
    let config_b = TestConfig::new()
        .upstream("up_a", [a2.addr])
        .upstream("up_b", [b1.addr, a1.addr])
        .route("/api/", "up_b")
        .route("/", "up_a")
        .text();
    // Not TOML: `yes` is no value.
    let invalid = TestConfig::new()
        .upstream("up_c", [never.addr])
        .route("/api/", "up_c")
        .text()
        + "broken = yes\n";
    let edge = Edge::start("", &config_a);
    let path = edge.dir.path().join("upstreams.toml");
    let head = std::fs::read_to_string(&path).expect("read");
    let head = edge_part(&head);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let url = edge.url("/api/items");
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let (mut ok, mut failed, mut seen) = (0u32, 0u32, std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body: serde_json::Value = r.json().await.expect("json");
                        seen.insert(instance(&body));
                        ok += 1;
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed, seen)
        }));
    }
    let started = Instant::now();
    let mut n = 0;
    let mut invalid_writes = 0;
    while started.elapsed() < Duration::from_secs(5) {
        n += 1;
        let text = if n % 10 == 0 {
            invalid_writes += 1;
            &invalid
        } else if n % 2 == 0 {
            &config_b
        } else {
            &config_a
        };
        write_atomically(&path, &format!("{head}{text}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed, mut seen) = (0, 0, std::collections::BTreeSet::new());
    for t in load {
        let (o, f, s) = t.await.expect("load task");
        ok += o;
        failed += f;
        seen.extend(s);
    }
    assert_eq!(failed, 0, "{ok} requests passed");
    assert!(ok > 200, "the load ran: {ok}");
    assert!(
        !seen.contains("never"),
        "the invalid config was never applied: {seen:?}"
    );
    assert!(seen.contains("b1") || seen.contains("a1"), "{seen:?}");
    let status = admin_json(&edge, "/status").await;
    assert!(
        status["reloads"]["generation"].as_u64() >= Some(10),
        "{status}"
    );
    assert!(
        status["reloads"]["refused"].as_u64() >= Some(1),
        "{invalid_writes} invalid writes"
    );
    drop(never);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_binary_upgrade_drops_no_request() {
    let a = backend("a").await;
    let mut old = Edge::start("", routes_to("one", a.addr));
    let config = old.dir.path().join("upstreams.toml");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let url = old.url("/during-upgrade");
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(format!("{e:?}")),
                }
            }
            (ok, failed)
        })
    };
    wait_until(
        Duration::from_secs(10),
        "the load is not running",
        async || a.requests() >= 20,
    )
    .await;
    // The new binary waits for the listening sockets (on its upgrade socket); SIGQUIT makes
    // the old one hand them over and drain.
    let upgrade_socket = old.dir.path().join("edge-upgrade.sock");
    let mut new = std::process::Command::new(edge_bin())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--runtime-dir")
        .arg(old.dir.path())
        .arg("--upgrade")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the new edge");
    wait_until(
        Duration::from_secs(10),
        "the new edge does not wait for the sockets",
        async || upgrade_socket.exists(),
    )
    .await;
    old.signal("QUIT");
    // The old edge has handed its sockets over and drained: it ends, and the load goes on
    // through the new one.
    wait_until(
        Duration::from_secs(20),
        "the old edge still runs",
        async || old.exited().is_some(),
    )
    .await;
    let served = a.requests();
    wait_until(
        Duration::from_secs(10),
        "no request served after the hand-over",
        async || a.requests() >= served + 20,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.expect("load");
    assert!(
        failed.is_empty(),
        "{ok} passed, and failed: {failed:#?}\nthe old edge's log:\n{}",
        old.log()
    );
    assert!(
        new.try_wait().expect("status").is_none(),
        "the new edge runs"
    );
    let (status, _) = get_json(&client(), &old.url("/after"), &[]).await;
    assert_eq!(status, 200, "the new edge serves on the same port");
    // The old edge, ending, left the new one's pid file and record in place.
    let pid = std::fs::read_to_string(old.dir.path().join("edge.pid")).expect("pid file");
    assert_eq!(
        pid.trim(),
        new.id().to_string(),
        "the pid file names the new edge"
    );
    assert!(old.dir.path().join("listening.json").exists());
    // Listeners on port 0 are handed over too: the admin one is served on its old port.
    assert_eq!(admin_json(&old, "/health").await["status"], "healthy");
    let _ = new.kill();
    let _ = new.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn files_written_beside_the_config_cause_no_reload() {
    let a = backend("a").await;
    let edge = Edge::start("", routes_to("one", a.addr));
    for n in 0..5 {
        std::fs::write(edge.dir.path().join(format!("other-{n}.log")), "noise").expect("write");
    }
    // A time wait, not a state wait: a reload would come within the watcher's 100 ms
    // debounce; none must.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = admin_json(&edge, "/status").await;
    assert_eq!(status["reloads"]["refused"].as_u64(), Some(0));
    assert_eq!(status["reloads"]["generation"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_accepted_before_shutdown_still_gets_its_first_request_served() {
    use std::io::{Read, Write};
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    // Connected, request not yet sent, when the edge is told to stop.
    let mut early = std::net::TcpStream::connect(edge.http).expect("connect");
    // A request on another connection, accepted after it: so this one was accepted too.
    let _ = get_json(&client(), &edge.url("/warm"), &[]).await;
    edge.signal("TERM");
    // The shutdown has begun once the listener is closed.
    wait_until(Duration::from_secs(10), "the listener closes", async || {
        std::net::TcpStream::connect(edge.http).is_err()
    })
    .await;
    early
        .write_all(b"GET /late HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    early
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut response = Vec::new();
    let _ = blocking(|| early.read_to_end(&mut response));
    let response = String::from_utf8_lossy(&response);
    // Served, and the connection then closed (read_to_end returned).
    assert_eq!(status_of(&response), 200, "{response}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_lets_a_slow_request_finish_then_the_process_exits() {
    let app = backend("app").await;
    let mut edge = Edge::start("", one_route(app.addr));
    let url = edge.url("/slow?sleep_ms=3000");
    let slow = tokio::spawn(async move { get_json(&client(), &url, &[]).await });
    wait_until(
        Duration::from_secs(10),
        "the slow request is not in flight",
        async || server(&edge, "app", 0).await["in_flight"] == 1,
    )
    .await;
    let stopped = Instant::now();
    edge.signal("TERM");
    // The request in flight (longer than the old 1 s grace) is answered in full.
    let (status, _) = slow.await.expect("task");
    assert_eq!(status, 200);
    // And the process ends once it is done, not at the end of the drain limit.
    wait_until(
        Duration::from_secs(10),
        "still running after the drain",
        async || edge.exited().is_some(),
    )
    .await;
    let took = stopped.elapsed();
    let exit = edge.exited().expect("ended");
    assert!(exit.success(), "{exit:?}");
    // Its pid file and its listeners' record go with it: a pid file left behind would name a
    // process that is gone (or another that took its number) to the next `kill -HUP`.
    for file in ["edge.pid", "listening.json"] {
        assert!(!edge.dir.path().join(file).exists(), "{file} left behind");
    }
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "exited {took:?} after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_slowly_is_reloaded_once_when_the_writes_stop() {
    use std::io::Write;
    let (a, b) = (backend("a").await, backend("b").await);
    let edge = Edge::start("", routes_to("one", a.addr));
    let path = edge.dir.path().join("upstreams.toml");
    let text = format!(
        "{}{}",
        edge_part(&std::fs::read_to_string(&path).expect("read")),
        routes_to("two", b.addr)
    );
    // In place, a few bytes every 30 ms (a slow copy): never quiet for the watcher's 100 ms
    // until it is whole, so no half file is read.
    let mut file = std::fs::File::create(&path).expect("truncate");
    for piece in text.as_bytes().chunks(8) {
        file.write_all(piece).expect("write");
        file.flush().expect("flush");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    drop(file);
    wait_for_generation(&edge, 1).await;
    assert_eq!(
        instance(&get_json(&client(), &edge.url("/"), &[]).await.1),
        "b"
    );
    let reloads = admin_json(&edge, "/status").await["reloads"].clone();
    assert_eq!(
        reloads["refused"], 0,
        "a half-written file was read: {reloads}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_alive_connection_waiting_at_shutdown_is_closed_and_the_process_exits() {
    use std::io::{Read, Write};
    let app = backend("app").await;
    let mut edge = Edge::start("", one_route(app.addr));
    // One request answered, then the connection waits for its next (keepalive_timeout is 65 s).
    let mut idle = std::net::TcpStream::connect(edge.http).expect("connect");
    idle.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = [0u8; 4096];
    let n = blocking(|| idle.read(&mut head)).expect("read");
    assert_eq!(status_of(&String::from_utf8_lossy(&head[..n])), 200);
    let stopped = Instant::now();
    edge.signal("TERM");
    // The wait ends within the shutdown's grace (1 s): the edge closes the connection...
    let mut rest = Vec::new();
    let read = blocking(|| idle.read_to_end(&mut rest));
    assert!(read.is_ok(), "the connection was not closed: {read:?}");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    // ...and the process, with nothing else in flight, ends then, not at the drain limit.
    wait_until(
        Duration::from_secs(10),
        "still running after the shutdown",
        async || edge.exited().is_some(),
    )
    .await;
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
}
