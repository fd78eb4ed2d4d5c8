//! What HTTP/1 clients of every kind get through the edge: `Expect: 100-continue`, HTTP/1.0,
//! HEAD and pipelined requests on a kept-alive connection, bodies larger than the buffer, a close-delimited answer,
//! and the compression the client prefers.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Reads from `stream` until `needle` has arrived (or 5 s pass); everything read so far.
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    blocking(|| {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    });
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_gets_continue_before_the_body_is_sent() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    let mut client = TcpStream::connect(edge.http).expect("connect");
    client
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .expect("head");
    let interim = read_until(&mut client, "\r\n\r\n");
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    client.write_all(b"hello").expect("body");
    let response = read_until(&mut client, "}");
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(raw_body_json(&response)["body_bytes"], 5, "{response}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_larger_than_the_buffer_stream_to_the_backend_whole() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    let c = client();
    let body = vec![b'x'; 100_000];
    let resp = c
        .post(edge.url("/upload"))
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["body_bytes"], 100_000);

    // The same, chunked: the client does not say how long it is.
    let stream = futures_util::stream::iter(
        body.chunks(7000)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let resp = c
        .post(edge.url("/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["body_bytes"], 100_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn http10_clients_and_close_delimited_answers_get_bodies_they_can_read() {
    // The backend answers as an HTTP/1.0 server: no length, the body ends with the close.
    let app = scripted_backend(
        b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nhello, old world".to_vec(),
        false,
    );
    let edge = Edge::start("", one_route(app));
    // An HTTP/1.0 client gets the body as it is, ended by the close.
    let response = raw_request(edge.http, b"GET /old HTTP/1.0\r\n\r\n");
    assert!(response.starts_with("HTTP/1."), "{response}");
    assert_eq!(
        status_of(&response.replacen("HTTP/1.0", "HTTP/1.1", 1)),
        200
    );
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(body, "hello, old world", "{response}");
    // An HTTP/1.1 client gets it chunked, on a connection that stays open.
    let resp = client().get(edge.url("/new")).send().await.expect("get");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "hello, old world");
}

#[tokio::test(flavor = "multi_thread")]
async fn head_answers_carry_no_body_and_a_pipelined_request_is_answered_after_one() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    let mut client = TcpStream::connect(edge.http).expect("connect");
    client
        .write_all(b"HEAD /x?bytes=3000 HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut all = String::new();
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = blocking(|| client.read_to_string(&mut all));
    let (head, rest) = all.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{all}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 3000"),
        "{head}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200"),
        "no body after HEAD:\n{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn brotli_and_zstd_are_used_when_the_client_asks_for_them() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    let c = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client");
    for coding in ["br", "zstd", "gzip"] {
        let resp = c
            .get(edge.url("/x?bytes=32768"))
            .header("accept-encoding", coding)
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok()),
            Some(coding)
        );
        let body = resp.bytes().await.expect("body");
        assert!(body.len() < 8000, "{coding}: {} bytes", body.len());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http10_clients_get_no_compressed_body_they_cannot_frame() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    let response = raw_request(
        edge.http,
        b"GET /x?bytes=32768 HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n",
    );
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(body.len(), 32768, "{head}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_early_hint_then_a_dead_server_still_ends_in_a_final_answer() {
    let app = scripted_backend(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n".to_vec(),
        false,
    );
    let edge = Edge::start("", one_route(app));
    let response = raw_request(edge.http, b"GET /page HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 103"), "{response}");
    assert!(response.contains("\r\n\r\nHTTP/1.1 502"), "{response}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_101_to_a_request_that_asked_for_no_upgrade_is_a_502() {
    let app = scripted_backend(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            .to_vec(),
        true,
    );
    let edge = Edge::start("", one_route(app));
    let started = std::time::Instant::now();
    let response = raw_request(edge.http, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status_of(&response), 502, "{response}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalive_timeout_zero_turns_client_keep_alive_off() {
    let app = backend("app").await;
    let edge = Edge::start(table! { keepalive_timeout = "0s" }, one_route(app.addr));
    let started = std::time::Instant::now();
    let response = raw_request(edge.http, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the edge closed it"
    );
}

/// A server that answers in HTTP/1.0 (Python's http.server, old appliances): the client still
/// gets an HTTP/1.1 status line, so it does not downgrade its next request, and its
/// connection is kept.
#[tokio::test(flavor = "multi_thread")]
async fn an_http10_server_answer_reaches_the_client_as_http11() {
    let app = scripted_backend(
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        false,
    );
    let edge = Edge::start("", one_route(app));
    let mut stream = std::net::TcpStream::connect(edge.http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    for _ in 0..2 {
        stream
            .write_all(b"GET /a HTTP/1.1\r\nHost: edge.test\r\n\r\n")
            .expect("write");
        let mut buf = [0u8; 4096];
        let n = blocking(|| stream.read(&mut buf)).expect("read");
        let answer = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_http1_request_shape_gets_the_answer_it_asked_for() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    // (request, status, Connection in the answer, what the body holds)
    let cases: [(&[u8], u16, &str, &str); 9] = [
        (b"GET /x?bytes=100 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 200, "close", "\"pad\""),
        (b"GET /echo HTTP/1.1\r\nHost: a\r\nUser-Agent: t\r\nConnection: close\r\n\r\n", 200, "close", "\"user-agent\":\"t\""),
        (b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n", 200, "close", "\"service\""),
        (b"GET /x HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET /y HTTP/1.0\r\nHost: a\r\n\r\n", 200, "keep-alive", "\"/y\""),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello", 200, "close", "\"body_bytes\":5"),
        (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n", 200, "close", "\"body_bytes\":5"),
        (b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "close", "HTTP/1.1 request without Host"),
        (b"GET /../etc/passwd HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 400, "close", "climbs above the root"),
        (b"DELETE /x?bytes=5 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n", 200, "close", "{"),
    ];
    for (request, status, connection, holds) in cases {
        let response = raw_request(edge.http, request);
        let text = String::from_utf8_lossy(request);
        assert_eq!(status_of(&response), status, "{text}\n{response}");
        let head = response
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(
            head.contains(&format!("\r\nconnection: {connection}")),
            "{text}\n{response}"
        );
        assert!(
            head.contains("\r\ndate: ") && head.contains("\r\nx-request-id: "),
            "{head}"
        );
        assert!(response.contains(holds), "{text}\n{response}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_and_trace_are_answered_405_and_never_reach_a_server() {
    let app = StrictBackend::start("app").await;
    let edge = Edge::start("", one_route(app.addr));
    for request in [
        &b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"[..],
        b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"TRACE /x HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let response = raw_request(edge.http, request);
        assert_eq!(status_of(&response), 405, "{response}");
    }
    assert_eq!(app.requests(), 0);
    let response = raw_request(
        edge.http,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&response), 200, "{response}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coding_with_q_0_is_never_used_and_small_error_bodies_are_not_compressed() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    let c = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client");
    let coding = |resp: &reqwest::Response| {
        resp.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // A GET and a POST with a body: both HTTP/1.1 request shapes.
    for (accept, expected) in [
        ("gzip;q=0, br", Some("br")),
        ("br;q=0.2, gzip;q=0.9", Some("gzip")),
        ("gzip;q=0", None),
        ("*;q=0", None),
    ] {
        let get = c
            .get(edge.url("/x?bytes=32768"))
            .header("accept-encoding", accept)
            .send()
            .await
            .expect("get");
        assert_eq!(coding(&get).as_deref(), expected, "GET, {accept}");
        let post = c
            .post(edge.url("/x?bytes=32768"))
            .header("accept-encoding", accept)
            .body("hello")
            .send()
            .await
            .expect("post");
        assert_eq!(coding(&post).as_deref(), expected, "POST, {accept}");
    }
    // The edge's own error, far below min_length: not compressed, though JSON and asked for.
    let edge_404 = Edge::start(
        "",
        TestConfig::new()
            .upstream("app", [app.addr])
            .route("/api/", "app"),
    );
    let resp = c
        .get(edge_404.url("/nowhere"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404);
    assert_eq!(coding(&resp), None);
    let json: serde_json::Value = resp.json().await.expect("plain JSON");
    assert_eq!(json["status"], 404);
}
