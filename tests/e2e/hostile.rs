//! Hostile input: malformed and ambiguous requests end at the edge with a 4xx and never reach
//! a backend; misbehaving backends cost the client a 502/504 and
//! the edge keeps serving.

use crate::support::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_and_malformed_requests_never_reach_the_backend() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    let cases: &[(&str, &[u8])] = &[
        ("CL and TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("two different CLs", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"),
        ("TE not ending in chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("TE identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\nabc"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n"),
        ("space before colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A : one\r\n\r\n"),
        ("invalid byte in a name", b"GET / HTTP/1.1\r\nHost: a\r\nX\x01A: one\r\n\r\n"),
        ("invalid byte in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: o\x00ne\r\n\r\n"),
        ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\nX-A: one\r\n\r\n"),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("absolute-form host differs", b"GET http://other.example/ HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("path above the root", b"GET /../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("broken escape", b"GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n"),
    ];
    for (name, request) in cases {
        let response = raw_request(edge.http, request);
        let status = status_of(&response);
        assert!(
            (400..500).contains(&status),
            "{name}: expected a 4xx, got:\n{response}"
        );
        assert_eq!(app.requests(), 0, "{name} reached the backend:\n{response}");
    }
    // A malformed chunk size is found only while the body streams, after the request head
    // went upstream (the edge does not buffer request bodies the way nginx's
    // proxy_request_buffering does): the client still gets a 400 and its connection closed.
    let response = raw_request(
        edge.http,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert_eq!(status_of(&response), 400, "{response}");
    assert!(
        !response.contains("/smuggled"),
        "nothing after it is read as a request"
    );
    // The edge still serves: a request reaches the backend (which may or may not count the
    // broken one above, and when it does, whenever it is done with it).
    let (status, body) = get_json(&client(), &edge.url("/fine"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(instance(&body), "app", "{body}");
    assert_eq!(body["path"], "/fine", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_and_encodings_cannot_move_a_request_to_another_route() {
    let content = backend("content").await;
    let prometheus = backend("prometheus").await;
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("content", [content.addr])
            .upstream("prometheus", [prometheus.addr])
            .route("/api/content/", "content")
            .route("/prometheus/", "prometheus")
            .with("allow", vec!["10.0.0.0/8"]),
    );
    for path in [
        "/api/content/../../prometheus/api/v1/query",
        "/api/content/%2e%2e/%2e%2e/prometheus/api",
        "/api/content/%2E%2E/%2E%2E/prometheus/api",
        "//prometheus//api",
        "/api/content/./../../prometheus/",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let response = raw_request(edge.http, request.as_bytes());
        assert_eq!(status_of(&response), 403, "{path}:\n{response}");
    }
    assert_eq!(prometheus.requests(), 0);
    assert_eq!(content.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_backends_give_502_or_504_and_the_edge_keeps_serving() {
    let good = backend("good").await;
    let closes = scripted_backend(Vec::new(), false);
    let bad_status = scripted_backend(b"HTTP/1.1 OK-ish\r\n\r\n".to_vec(), false);
    let mut huge = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 2 << 20));
    huge.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    let huge_header = scripted_backend(huge, false);
    let silent = scripted_backend(Vec::new(), true);
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("good", [good.addr])
            .upstream("closes", [closes])
            .upstream("bad_status", [bad_status])
            .upstream("huge_header", [huge_header])
            .upstream("silent", [silent])
            .with("read_timeout", "1s")
            .route("/good/", "good")
            .route("/closes/", "closes")
            .route("/bad-status/", "bad_status")
            .route("/huge-header/", "huge_header")
            .route("/silent/", "silent"),
    );
    let c = client();
    for (path, want) in [
        ("/closes/x", 502),
        ("/bad-status/x", 502),
        ("/huge-header/x", 502),
        ("/silent/x", 504),
    ] {
        let started = Instant::now();
        let (status, body) = get_json(&c, &edge.url(path), &[]).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let (status, _) = get_json(&c, &edge.url("/good/x"), &[]).await;
        assert_eq!(status, 200, "the edge keeps serving after {path}");
    }
}

/// Sends raw bytes on a new connection: (what the edge answered, whether it then closed the
/// connection within 3 s).
fn exchange_then_closed(addr: std::net::SocketAddr, request: &[u8]) -> (String, bool) {
    use std::io::{Read, Write};
    blocking(|| {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        stream.write_all(request).expect("write");
        let mut out = Vec::new();
        let closed = stream.read_to_end(&mut out).is_ok();
        (String::from_utf8_lossy(&out).into_owned(), closed)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_body_framing_is_refused_before_routing() {
    let app = backend("app").await;
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("app", [app.addr])
            .route("/app/", "app"),
    );
    let body = "5\r\nhello\r\n0\r\n\r\n";
    let cases: &[(&str, &str)] = &[
        (
            "a list of two chunked",
            "Transfer-Encoding: chunked, chunked\r\n",
        ),
        (
            "chunked then another coding",
            "Transfer-Encoding: chunked, gzip\r\n",
        ),
        (
            "another coding then chunked",
            "Transfer-Encoding: gzip, chunked\r\n",
        ),
        (
            "a list with an empty member",
            "Transfer-Encoding: chunked,\r\n",
        ),
        ("an unknown coding", "Transfer-Encoding: identity\r\n"),
        (
            "a coding that only contains chunked",
            "Transfer-Encoding: xchunked\r\n",
        ),
        ("a quoted chunked", "Transfer-Encoding: \"chunked\"\r\n"),
        (
            "chunked with a parameter",
            "Transfer-Encoding: chunked;q=1\r\n",
        ),
        (
            "two header lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "two header lines, one of them empty",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: \r\n",
        ),
        (
            "Content-Length before it",
            "Content-Length: 14\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "Content-Length after it",
            "Transfer-Encoding: chunked\r\nContent-Length: 14\r\n",
        ),
        (
            "Content-Length 0 beside it",
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
        ),
    ];
    let mut requests: Vec<(String, String)> = cases
        .iter()
        .map(|(name, headers)| {
            (
                name.to_string(),
                format!("POST /app/x HTTP/1.1\r\nHost: a\r\n{headers}\r\n{body}"),
            )
        })
        .collect();
    // A length no 64-bit number holds: read as no length, its body would be taken for the
    // next request on the connection.
    requests.push((
        "a Content-Length too large for a number".to_string(),
        "POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n\
         GET /app/smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
            .to_string(),
    ));
    requests.push((
        "Transfer-Encoding in HTTP/1.0".to_string(),
        format!("POST /app/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}"),
    ));
    for (name, request) in &requests {
        for target in ["/app/x", "/no-route"] {
            let request = request.replacen("/app/x", target, 1);
            let (response, closed) = exchange_then_closed(edge.http, request.as_bytes());
            assert_eq!(status_of(&response), 400, "{name} to {target}:\n{response}");
            assert!(closed, "{name}: the connection is closed after the 400");
            assert!(
                !response.contains("HTTP/1.1 400 Bad Request\r\n\r\nHTTP"),
                "{name}: one answer only"
            );
        }
        assert_eq!(app.requests(), 0, "{name} reached the backend");
    }
    // One chunked, alone and last, is a request like any other.
    let response = raw_request(
        edge.http,
        format!("POST /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}").as_bytes(),
    );
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(app.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_answers_reach_the_client_framed_and_without_the_servers_connection_fields() {
    let answers: &[(&str, &[u8])] = &[
        ("no-reason", b"HTTP/1.1 299\r\nContent-Length: 2\r\n\r\nok"),
        // A transfer coding other than chunked, the body read to the close.
        (
            "te-gzip",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: gzip\r\n\r\nraw-coded-bytes",
        ),
        ("no-content", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
        (
            "hop-by-hop",
            b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok",
        ),
    ];
    let mut config = TestConfig::new();
    for (name, answer) in answers {
        let addr = scripted_backend(answer.to_vec(), false);
        let upstream = name.replace('-', "_");
        config = config
            .upstream(&upstream, [addr])
            .route(&format!("/{name}/"), &upstream);
    }
    let edge = Edge::start("", config);
    let ask = |name: &str| {
        let (answer, closed) = exchange_then_closed(
            edge.http,
            format!("GET /{name}/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(closed, "{name}: {answer}");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        (head.to_ascii_lowercase(), body.to_string())
    };

    let (head, body) = ask("no-reason");
    assert!(head.starts_with("http/1.1 299 "), "{head}");
    assert_eq!(body, "ok");

    let (head, body) = ask("te-gzip");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("\r\ntransfer-encoding: gzip, chunked"),
        "{head}"
    );
    assert_eq!(body, "F\r\nraw-coded-bytes\r\n0\r\n\r\n");

    let (head, body) = ask("no-content");
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(body, "");

    let (head, body) = ask("hop-by-hop");
    assert!(!head.contains("upgrade"), "{head}");
    assert!(!head.contains("x-hop"), "{head}");
    assert!(head.contains("\r\nx-kept: 1"), "{head}");
    assert_eq!(body, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_answer_says_the_connection_closes() {
    let closes = scripted_backend(Vec::new(), false);
    let edge = Edge::start("", one_route(closes));
    let (answer, closed) = exchange_then_closed(edge.http, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status_of(&answer), 502, "{answer}");
    assert!(closed, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
}
