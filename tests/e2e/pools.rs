//! Upstream connections the edge keeps: reused within `keepalive_requests`, and a server
//! that closes kept-alive connections whenever it likes costs no client request.

use crate::support::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upstream `app` (routed for every path) keeping up to 16 idle connections to `backend`, each
/// for at most `keepalive_requests`.
fn upstream(backend: std::net::SocketAddr, keepalive_requests: i64) -> TestConfig {
    TestConfig::new()
        .upstream("app", [backend])
        .with("keepalive", 16)
        .with("keepalive_requests", keepalive_requests)
        .route("/", "app")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_connection_carries_at_most_keepalive_requests() {
    let backend = KeepaliveBackend::start(0, Duration::from_secs(30));
    let edge = Edge::start("", upstream(backend.addr, 10));
    let c = reqwest::Client::new();
    for i in 0..200 {
        let (status, _) = get_json(&c, &edge.url(&format!("/r{i}")), &[]).await;
        assert_eq!(status, 200);
    }
    let per_connection = backend.per_connection();
    assert_eq!(per_connection.iter().sum::<u32>(), 200);
    assert!(
        per_connection.len() >= 20,
        "200 requests at 10 a connection need 20 connections: {per_connection:?}"
    );
    assert!(
        per_connection.iter().all(|&n| n <= 10),
        "no connection carries 11: {per_connection:?}"
    );
    assert!(
        per_connection.iter().filter(|&&n| n == 10).count() >= 15,
        "connections are reused up to the bound: {per_connection:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_that_closes_kept_alive_connections_costs_no_request() {
    // It closes each connection after 5 requests, or after 1 s idle, without saying so.
    let backend = KeepaliveBackend::start(5, Duration::from_secs(1));
    let edge = Edge::start("", upstream(backend.addr, 100));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    for burst in 0..2 {
        let until = Instant::now() + Duration::from_millis(1500);
        let mut clients = Vec::new();
        for _ in 0..20 {
            let (url, ok, failed) = (edge.url("/load"), ok.clone(), failed.clone());
            clients.push(tokio::spawn(async move {
                let c = reqwest::Client::new();
                while Instant::now() < until {
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for c in clients {
            c.await.expect("client");
        }
        if burst == 0 {
            // Every idle connection in the pool is closed by the backend meanwhile.
            wait_until(
                Duration::from_secs(10),
                "the backend has not closed its idle connections",
                async || backend.open() == 0,
            )
            .await;
        }
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{ok} served");
    assert!(ok > 200, "{ok} served");
    assert!(backend.per_connection().iter().all(|&n| n <= 5));
    let status = admin_json(&edge, "/status").await;
    assert_eq!(
        status["upstreams"]["app"]["servers"][0]["failures"], 0,
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_oversized_chunked_bodies_never_reach_the_backend() {
    let backend = KeepaliveBackend::start(0, Duration::from_secs(30));
    let edge = Edge::start(
        table! { client_max_body_size = "1k" },
        upstream(backend.addr, 100),
    );
    let big = format!("800\r\n{}\r\n0\r\n\r\n", "a".repeat(0x800));
    for (name, body, want) in [
        (
            "a malformed chunk size",
            "zz\r\nabc\r\n0\r\n\r\n".to_string(),
            400,
        ),
        (
            "a chunk longer than its size",
            "3\r\nabcdef\r\n0\r\n\r\n".to_string(),
            400,
        ),
        ("a body over client_max_body_size", big, 413),
    ] {
        let request =
            format!("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let response = raw_request(edge.http, request.as_bytes());
        assert_eq!(status_of(&response), want, "{name}:\n{response}");
    }
    assert_eq!(
        backend.per_connection(),
        Vec::<u32>::new(),
        "the backend saw nothing"
    );
    // A good chunked body goes through, with its length now known.
    let response = raw_request(
        edge.http,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(backend.requests(), 1);
}

/// A kept-alive backend that answers by path: `/chunked` in chunks (with an extension and a
/// trailer, each piece its own write), `/close` with `Connection: close` (then it closes),
/// anything else with a length. It counts the connections it accepted.
fn framing_backend() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicU64::new(0));
    let accepted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            accepted.fetch_add(1, Ordering::Relaxed);
            std::thread::spawn(move || {
                each_request_head(&mut stream, |stream, request| {
                    let pieces: Vec<&[u8]> = if request.starts_with("GET /chunked") {
                        vec![
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                            b"6;note=x\r\nhello,",
                            b"\r\n7\r\n world!\r\n",
                            b"0\r\nX-Checksum: 1\r\n\r\n",
                        ]
                    } else if request.starts_with("GET /close") {
                        vec![
                            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
                        ]
                    } else {
                        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]
                    };
                    for piece in &pieces {
                        if stream.write_all(piece).is_err() {
                            return false;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    !request.starts_with("GET /close")
                });
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_answers_keep_their_connection_and_a_connection_close_is_honoured() {
    let (backend, connections) = framing_backend();
    // One worker: kept connections are pooled per worker, and the counts below are of one
    // pool.
    let edge = Edge::start(table! { threads = 1 }, upstream(backend, 100));
    let c = reqwest::Client::new();
    for _ in 0..5 {
        let response = c.get(edge.url("/chunked")).send().await.expect("get");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "hello, world!");
    }
    assert_eq!(
        connections.load(Ordering::Relaxed),
        1,
        "a chunked answer read to its last chunk leaves the connection reusable"
    );
    for _ in 0..3 {
        let response = c.get(edge.url("/close")).send().await.expect("get");
        assert_eq!(response.status(), 200);
        assert!(
            response
                .headers()
                .get("connection")
                .is_none_or(|v| v != "close"),
            "the server's Connection field stays with its connection"
        );
        assert_eq!(response.text().await.expect("body"), "bye");
    }
    // The first /close reused the kept connection; the next two each needed a new one.
    assert_eq!(connections.load(Ordering::Relaxed), 3);
    let status = admin_json(&edge, "/status").await;
    assert_eq!(
        status["upstreams"]["app"]["servers"][0]["failures"], 0,
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bursts_surplus_connections_serve_the_next_burst_then_go() {
    // Each answer takes 50 ms: 100 concurrent requests hold 100 connections.
    let backend =
        KeepaliveBackend::answering_after(0, Duration::from_secs(60), Duration::from_millis(50));
    let config = TestConfig::new()
        .upstream("app", [backend.addr])
        .with("keepalive", 4)
        .route("/", "app");
    // One worker: one pool, so a burst finds all the connections the last one left (with
    // two, a burst spread differently over them would open some on the emptier one).
    let edge = Edge::start("threads = 1", config);
    let burst = async || {
        let mut tasks = Vec::new();
        for i in 0..100 {
            let url = edge.url(&format!("/b{i}"));
            tasks.push(tokio::spawn(async move {
                client().get(url).send().await.expect("answer").status()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task"), 200);
        }
    };
    burst().await;
    let first = backend.per_connection().len();
    assert!(
        first >= 50,
        "the first burst needed its connections: {first}"
    );
    burst().await;
    let second = backend.per_connection().len() - first;
    assert!(
        second <= first / 4,
        "the second burst reused the first one's connections: {second} new after {first}"
    );
    // Once the bursts are over, what stays idle is `keepalive`.
    wait_until(Duration::from_secs(5), "the surplus closed", async || {
        backend.open() <= 4
    })
    .await;
}

/// A server that closes a kept-alive connection as the next request arrives (the race of its
/// idle close): a GET is sent again on a new connection; a POST whose body went out is not
/// (502, as from nginx: the server may have acted on it); neither counts against the server,
/// which stays in use with no failure counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_closing_a_kept_alive_connection_under_a_request_is_not_blamed() {
    // Answers each connection's first request; on its second, closes without a word.
    let backend = each_connection(|mut stream| {
        let mut served = 0;
        each_request_head(&mut stream, |stream, _head| {
            served += 1;
            served == 1
                && std::io::Write::write_all(
                    stream,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
                )
                .is_ok()
        });
    });
    let edge = Edge::start("", upstream(backend, 100));
    let c = client();
    assert_eq!(get_json(&c, &edge.url("/first"), &[]).await.0, 200);
    // On the kept-alive connection: closed under it, sent again on a new one.
    assert_eq!(get_json(&c, &edge.url("/again"), &[]).await.0, 200);
    // On the new one, kept alive in turn: closed under the POST, whose body went with its head.
    let post = c
        .post(edge.url("/post"))
        .body("x=1")
        .send()
        .await
        .expect("post");
    assert_eq!(post.status().as_u16(), 502);
    let status = admin_json(&edge, "/status").await;
    let server = &status["upstreams"]["app"]["servers"][0];
    assert_eq!(server["failures"], 0, "{status}");
    assert_eq!(get_json(&c, &edge.url("/after"), &[]).await.0, 200);
}
