//! Rate-limit zones with nginx limit_req semantics, in process and shared through Redis.

use crate::support::*;
use std::time::{Duration, Instant};

/// `app` for every path, with `/api/` limited by `limit` in the zone `api` that `zone` has.
fn limited(addr: std::net::SocketAddr, zone: TestConfig, limit: toml::Value) -> TestConfig {
    zone.upstream("app", [addr])
        .route("/api/", "app")
        .limit(limit)
        .route("/", "app")
}

/// A zone `api` of `rate`, kept in the edge's memory.
fn local_zone(rate: &str) -> TestConfig {
    TestConfig::new().zone("api", rate)
}

/// A zone `api` of 1r/m kept in `redis`, and what to do when it is unreachable.
fn redis_zone(redis: &Redis, on_error: &str) -> TestConfig {
    TestConfig::new()
        .section("redis")
        .with("url", redis.url())
        .with("on_error", on_error)
        .zone("api", "1r/m")
        .with("store", "redis")
}

/// Sends `per_second` requests a second for `seconds` as `client` (an X-Forwarded-For value,
/// or none); returns (passed, rejected, retry-after values seen).
async fn drive(
    edge_url: String,
    client_ip: Option<String>,
    per_second: u32,
    seconds: u32,
) -> (u32, u32, Vec<String>) {
    let c = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    let (mut passed, mut rejected, mut retry_after) = (0, 0, Vec::new());
    for _ in 0..per_second * seconds {
        tick.tick().await;
        let mut req = c.get(&edge_url);
        if let Some(ip) = &client_ip {
            req = req.header("x-forwarded-for", ip);
        }
        let resp = req.send().await.expect("request");
        match resp.status().as_u16() {
            200 => passed += 1,
            429 => {
                rejected += 1;
                if let Some(v) = resp.headers().get("retry-after") {
                    retry_after.push(v.to_str().unwrap_or("").to_string());
                }
                let body: serde_json::Value = resp.json().await.expect("json body");
                assert_eq!(body["zone"], "api");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    (passed, rejected, retry_after)
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_per_second_against_ten_with_burst_twenty_passes_twenty_plus_ten_a_second() {
    let app = backend("app").await;
    let edge = Edge::start(
        "",
        limited(
            app.addr,
            local_zone("10r/s"),
            table! { zone = "api", burst = 20, nodelay = true },
        ),
    );
    let (passed, rejected, retry_after) = drive(edge.url("/api/x"), None, 50, 4).await;
    assert!(
        (58..=63).contains(&passed),
        "passed {passed}, expected 20 + 10 x 4 (+-2)"
    );
    assert_eq!(passed + rejected, 200);
    assert_eq!(
        retry_after.len() as u32,
        rejected,
        "every 429 has Retry-After"
    );
    assert!(retry_after
        .iter()
        .all(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)));
    // Routes without the zone are not limited.
    let (status, _) = get_json(&client(), &edge.url("/other"), &[]).await;
    assert_eq!(status, 200);
    let status = admin_json(&edge, "/status").await;
    assert_eq!(
        status["zones"]["api"]["rejected"].as_u64(),
        Some(rejected as u64)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_do_not_affect_each_other_and_forged_forwarding_changes_nothing() {
    let app = backend("app").await;
    let config = limited(
        app.addr,
        local_zone("1r/m"),
        table! { zone = "api", burst = 4, nodelay = true },
    );
    // Trusted proxy: distinct forwarded clients are distinct keys.
    let edge = Edge::start(table! { trusted_proxies = vec!["127.0.0.1/32"] }, &config);
    let (a_passed, _, _) = drive(edge.url("/api/a"), Some("198.51.100.1".into()), 20, 1).await;
    let (b_passed, _, _) = drive(edge.url("/api/b"), Some("198.51.100.2".into()), 20, 1).await;
    assert_eq!((a_passed, b_passed), (5, 5));

    // Untrusted peer: X-Forwarded-For is ignored, so forging it neither escapes the limit
    // nor spends another client's.
    let edge = Edge::start("", &config);
    let c = reqwest::Client::new();
    let mut passed = 0;
    for n in 0..20 {
        let resp = c
            .get(edge.url("/api/x"))
            .header("x-forwarded-for", format!("203.0.113.{n}"))
            .send()
            .await
            .expect("request");
        passed += u32::from(resp.status() == 200);
    }
    assert_eq!(passed, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_nodelay_excess_requests_are_spaced_at_the_rate() {
    let app = backend("app").await;
    let edge = Edge::start(
        "",
        limited(
            app.addr,
            local_zone("5r/s"),
            table! { zone = "api", burst = 5 },
        ),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..7 {
        let url = edge.url("/api/q");
        tasks.push(tokio::spawn(async move {
            let status = client().get(url).send().await.expect("request").status();
            (status.as_u16(), started.elapsed())
        }));
    }
    let mut finished = Vec::new();
    let mut rejected = 0;
    for t in tasks {
        match t.await.expect("task") {
            (200, at) => finished.push(at),
            (429, _) => rejected += 1,
            (other, _) => panic!("unexpected {other}"),
        }
    }
    finished.sort();
    // 1 + burst 5 pass: one at once, then one every 200 ms (the last after about a second);
    // the seventh, sent at the same moment, would wait past the burst and is rejected.
    assert_eq!((finished.len(), rejected), (6, 1), "{finished:?}");
    assert!(finished[0] < Duration::from_millis(300), "{finished:?}");
    assert!(finished[5] >= Duration::from_millis(950), "{finished:?}");
    for pair in finished.windows(2).skip(1) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(120),
            "spaced at the rate: {finished:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_rejects_nothing_and_counts_what_it_would_have() {
    let app = backend("app").await;
    let edge = Edge::start(
        "",
        limited(
            app.addr,
            local_zone("1r/m"),
            table! { zone = "api", burst = 2, nodelay = true, dry_run = true },
        ),
    );
    let c = reqwest::Client::new();
    for _ in 0..10 {
        assert_eq!(
            c.get(edge.url("/api/x"))
                .send()
                .await
                .expect("request")
                .status(),
            200
        );
    }
    let status = admin_json(&edge, "/status").await;
    assert_eq!(status["zones"]["api"]["dry_run_rejected"].as_u64(), Some(7));
    assert_eq!(status["zones"]["api"]["rejected"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_edges_sharing_a_redis_zone_admit_together_what_one_would_alone() {
    let redis = Redis::start();
    let app = backend("app").await;
    let config = limited(
        app.addr,
        redis_zone(&redis, "local"),
        table! { zone = "api", burst = 9, nodelay = true },
    );
    let one = Edge::start("", &config);
    let two = Edge::start("", &config);
    let c = reqwest::Client::new();
    let mut passed = 0;
    for i in 0..40 {
        let edge = if i % 2 == 0 { &one } else { &two };
        passed += u32::from(
            c.get(edge.url("/api/x"))
                .send()
                .await
                .expect("request")
                .status()
                == 200,
        );
    }
    assert_eq!(passed, 10, "burst 9 + 1, across both replicas");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_follows_on_error_and_sharing_resumes_when_it_returns() {
    let mut redis = Redis::start();
    let app = backend("app").await;
    let limit = table! { zone = "api", burst = 2, nodelay = true };
    let allow = Edge::start(
        "",
        limited(app.addr, redis_zone(&redis, "allow"), limit.clone()),
    );
    let local = Edge::start("", limited(app.addr, redis_zone(&redis, "local"), limit));
    let c = reqwest::Client::new();
    let count = |edge: &Edge, n: usize| {
        let c = c.clone();
        let url = edge.url("/api/x");
        async move {
            let mut ok = 0;
            for _ in 0..n {
                let status = c.get(&url).send().await.expect("request").status().as_u16();
                assert!(
                    status == 200 || status == 429,
                    "only the limit's own 429s: {status}"
                );
                ok += u32::from(status == 200);
            }
            ok
        }
    };
    // Shared while Redis is up: 3 in all for the one client, whichever edge it reaches.
    assert_eq!(count(&allow, 2).await + count(&local, 4).await, 3);

    redis.stop();
    assert_eq!(
        count(&allow, 10).await,
        10,
        "on_error = allow admits everything"
    );
    assert_eq!(
        count(&local, 10).await,
        3,
        "on_error = local limits in process"
    );
    let status = admin_json(&local, "/status").await;
    assert!(status["zones"]["api"]["redis_fallbacks"].as_u64() >= Some(10));

    redis.restart(); // empty: the client starts afresh in the shared zone
                     // The allow edge is limited again (past its reconnect backoff): proof it is back on Redis.
    wait_until(
        Duration::from_secs(20),
        "the zone is not shared (and limiting) again after Redis returns",
        async || count(&allow, 10).await < 10,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redis_password_comes_from_the_environment_and_never_reaches_the_log() {
    let redis = Redis::start_with_password(Some("s3cret-for-test"));
    let app = backend("app").await;
    // on_error = allow: if the edge could not authenticate, every request would pass.
    let config = limited(
        app.addr,
        redis_zone(&redis, "allow"),
        table! { zone = "api", burst = 2, nodelay = true },
    );
    let edge = Edge::start_with_env(
        "",
        &config,
        &[
            ("EDGE_REDIS_PASSWORD", "s3cret-for-test"),
            ("RUST_LOG", "debug"),
        ],
    );
    let c = reqwest::Client::new();
    let mut passed = 0;
    for _ in 0..6 {
        passed += u32::from(
            c.get(edge.url("/api/x"))
                .send()
                .await
                .expect("request")
                .status()
                == 200,
        );
    }
    assert_eq!(passed, 3, "limited through the password-protected Redis");
    let status = admin_json(&edge, "/status").await;
    assert_eq!(status["zones"]["api"]["redis_fallbacks"].as_u64(), Some(0));

    // A wrong password in the URL itself: refused by Redis, logged without the password.
    let wrong = config.text().replace("redis://", "redis://:wr0ng-pass@");
    let edge = Edge::start_with_env("", &wrong, &[("RUST_LOG", "debug")]);
    for _ in 0..3 {
        let _ = c.get(edge.url("/api/x")).send().await.expect("request");
    }
    let status = admin_json(&edge, "/status").await;
    assert!(status["zones"]["api"]["redis_fallbacks"].as_u64() > Some(0));
    let log = edge.log();
    assert!(
        !log.contains("wr0ng-pass"),
        "the password was logged:\n{log}"
    );
}

/// `/explain` reads a Redis zone as every replica sees it: requests through one edge show up
/// in the standing another edge explains, and explaining counts none.
#[tokio::test(flavor = "multi_thread")]
async fn explain_on_one_edge_sees_what_another_spent_in_a_redis_zone() {
    let redis = Redis::start();
    let app = backend("app").await;
    let config = limited(
        app.addr,
        redis_zone(&redis, "local"),
        table! { zone = "api", burst = 1, nodelay = true },
    );
    let (one, two) = (Edge::start("", &config), Edge::start("", &config));
    let explain = |edge: &Edge| {
        let path = format!("/explain?url=http%3A%2F%2F{}%2Fapi%2Fx", edge.http);
        let edge_admin = edge.admin;
        async move {
            let url = format!("http://{edge_admin}{path}");
            get_json(&client(), &url, &[]).await.1
        }
    };
    for _ in 0..3 {
        let said = explain(&two).await;
        assert_eq!(said["zones"][0]["store"], "redis", "{said}");
        assert_eq!(said["zones"][0]["standing"]["next"], "pass", "{said}");
    }
    for _ in 0..2 {
        let status = client()
            .get(one.url("/api/x"))
            .send()
            .await
            .expect("request")
            .status();
        assert_eq!(status, 200);
    }
    let said = explain(&two).await;
    assert_eq!(said["zones"][0]["standing"]["next"], "reject", "{said}");
    assert!(
        said["zones"][0]["standing"]["excess"].as_f64() > Some(0.9),
        "{said}"
    );
    assert_eq!(said["verdict"]["status"], 429, "{said}");
    let status = client()
        .get(two.url("/api/x"))
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 429);
}
