//! What HTTP/2 clients get beyond a plain answer: informational heads, trailers, bounded
//! streams and heads, the connection's clocks, and a drain when the edge stops.

use crate::support::*;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An HTTP/1.1 server that answers every request with `answer` and keeps each request head
/// it was sent.
fn answering(answer: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let addr = each_connection(move |mut stream| {
        each_request_head(&mut stream, |stream, head| {
            seen.lock().expect("heads").push(head.to_string());
            stream.write_all(answer).is_ok()
        });
    });
    (addr, heads)
}

/// An early hint, then a chunked answer that ends with trailers.
const HINTED_WITH_TRAILERS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
    HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
    5\r\nhello\r\n0\r\nx-checksum: abc\r\ngrpc-status: 0\r\n\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn early_hints_and_trailers_reach_http2_and_http11_clients_that_take_them() {
    let (server, heads) = answering(HINTED_WITH_TRAILERS);
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge(
        table! { redirect_http_to_https = false },
        one_route(server).certificate(&a),
    );

    // HTTP/2: the 103, the answer, its trailers.
    let mut client = h2_frames_client(https).await;
    let request = http::Request::get("https://a.example/hinted")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (mut response, _) = client.send_request(request, true).expect("send");
    let hint = std::future::poll_fn(|cx| response.poll_informational(cx))
        .await
        .expect("an informational head")
        .expect("a valid one");
    assert_eq!(hint.status(), 103);
    assert_eq!(hint.headers()["link"], "</style.css>; rel=preload");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        got.extend_from_slice(&chunk.expect("body"));
    }
    assert_eq!(got, b"hello");
    let trailers = body.trailers().await.expect("trailers").expect("some");
    assert_eq!(trailers["x-checksum"], "abc");
    assert_eq!(trailers["grpc-status"], "0");
    assert!(
        heads.lock().expect("heads")[0].contains("TE: trailers"),
        "the server is told the client takes trailers"
    );

    // HTTP/1.1 with `TE: trailers`: chunked trailers after the last chunk.
    let response = raw_request(
        edge.http,
        b"GET /hinted HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    );
    assert!(
        response.starts_with("HTTP/1.1 103 Early Hints\r\n"),
        "{response}"
    );
    assert!(
        response.ends_with("\r\n0\r\nx-checksum: abc\r\ngrpc-status: 0\r\n\r\n"),
        "{response}"
    );
    // Without it: the body ends plainly, and the server is not told otherwise.
    let response = raw_request(
        edge.http,
        b"GET /plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(response.ends_with("\r\n0\r\n\r\n"), "{response}");
    assert!(!response.contains("x-checksum"), "{response}");
    let heads = heads.lock().expect("heads").clone();
    assert!(!heads[2].contains("TE:"), "{}", heads[2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn nghttp_an_independent_client_sees_the_early_hint_and_the_trailers() {
    let (server, _) = answering(HINTED_WITH_TRAILERS);
    let a = Certificate::self_signed(&["a.example"]);
    let (_edge, https) = https_edge("", one_route(server).certificate(&a));
    let out = blocking(|| {
        std::process::Command::new("nghttp")
            .args(["-nv", "--no-verify-peer"])
            .arg(format!("https://127.0.0.1:{}/hinted", https.port()))
            .output()
            .expect("nghttp (Debian's nghttp2-client; scripts/test.sh installs it)")
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(":status: 103"), "{text}");
    assert!(text.contains("link: </style.css>; rel=preload"), "{text}");
    assert!(text.contains(":status: 200"), "{text}");
    assert!(text.contains("x-checksum: abc"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_head_over_64_kib_is_a_502_over_http2_as_over_http11() {
    let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_vec();
    for n in 0..70 {
        big.extend_from_slice(format!("x-filler-{n}: {}\r\n", "v".repeat(1000)).as_bytes());
    }
    big.extend_from_slice(b"\r\n{}");
    let (server, _) = answering(Box::leak(big.into_boxed_slice()));
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge(
        table! { redirect_http_to_https = false },
        one_route(server).certificate(&a),
    );

    let response = raw_request(
        edge.http,
        b"GET /big-head HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        status_of(&response),
        502,
        "{}",
        &response[..response.len().min(300)]
    );

    let mut client = h2_frames_client(https).await;
    let request = http::Request::get("https://a.example/big-head")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("an answer in time")
        .expect("a response, not a reset");
    assert_eq!(response.status(), 502);
}

/// An HTTP/1.1 server that answers `done` after the number of milliseconds the request's
/// last path segment says.
fn slow_server() -> SocketAddr {
    each_connection(|mut stream| {
        each_request_head(&mut stream, |stream, head| {
            let wait = head
                .split_whitespace()
                .nth(1)
                .and_then(|target| target.rsplit('/').next())
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or(0);
            // A time wait: the server is this slow on purpose.
            std::thread::sleep(Duration::from_millis(wait));
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
                .is_ok()
        });
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn sigquit_without_a_successor_sends_goaway_finishes_open_streams_then_exits() {
    let a = Certificate::self_signed(&["a.example"]);
    let (mut edge, https) = https_edge("", one_route(slow_server()).certificate(&a));
    let mut client = h2_frames_client(https).await;
    let request = http::Request::get("https://a.example/slow/3000")
        .body(())
        .expect("request");
    let (in_flight, _) = client.send_request(request, true).expect("send");
    wait_until(
        Duration::from_secs(10),
        "the stream is not in flight",
        async || server(&edge, "app", 0).await["in_flight"] == 1,
    )
    .await;

    edge.signal("QUIT");
    // GOAWAY comes at once: a new stream on the connection is refused.
    wait_until(
        Duration::from_secs(2),
        "the connection took new streams after SIGQUIT",
        async || {
            let Ok(mut ready) = client.clone().ready().await else {
                return true;
            };
            let request = http::Request::get("https://a.example/slow/0")
                .body(())
                .expect("request");
            match ready.send_request(request, true) {
                Err(_) => true,
                Ok((response, _)) => response.await.is_err(),
            }
        },
    )
    .await;
    // The stream that was open is served to its end.
    let response = in_flight.await.expect("the open stream is answered");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        got.extend_from_slice(&chunk.expect("body"));
    }
    assert_eq!(got, b"done");
    // And the process ends once nothing is left (after Pingora's hand-over attempts).
    wait_until(
        Duration::from_secs(20),
        "the edge did not exit",
        async || edge.exited().is_some(),
    )
    .await;
}

/// The frames the edge sends on `stream` until it closes the connection (or `within`
/// passes): each frame's type, and the time the close came.
pub(crate) async fn frames_until_close<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> (Vec<u8>, Option<std::time::Instant>) {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut kinds = Vec::new();
    let mut buf = Vec::new();
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            kinds.push(buf[3]);
            buf.drain(..9 + len);
        }
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (kinds, Some(std::time::Instant::now())),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (kinds, None),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_pings_but_opens_no_stream_is_closed_after_client_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let app = backend("app").await;
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge(
        table! { client_header_timeout = "1s" },
        one_route(app.addr).certificate(&a),
    );
    let stream = connect(&connector(&[b"h2"]), https, "a.example").await;
    let (mut read, mut write) = tokio::io::split(stream);
    let opened = std::time::Instant::now();
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(h2_frame(4, 0, 0, &[])); // SETTINGS
    write.write_all(&hello).await.expect("preface");
    // PINGs, every 200 ms, and never a stream.
    let pinger = tokio::spawn(async move {
        loop {
            // A time wait: the client's pace, well within the header timeout.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let ping = h2_frame(6, 0, 0, &[0; 8]);
            if write.write_all(&ping).await.is_err() {
                return;
            }
        }
    });
    let (kinds, closed) = frames_until_close(&mut read, Duration::from_secs(10)).await;
    pinger.abort();
    let closed = closed.expect("the edge kept the connection");
    let after = closed.duration_since(opened);
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
    assert!(
        kinds.contains(&6),
        "the PINGs were answered meanwhile: {kinds:?}"
    );
    let timeouts = metric_reaching(&edge, "edge_client_header_timeouts_total", &[], 1.0);
    assert_eq!(timeouts.await, 1.0);
    let header = ["phase=\"header\""];
    let timeouts = metric_reaching(&edge, "edge_client_timeouts_total", &header, 1.0);
    assert_eq!(timeouts.await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_capped_by_the_config_and_a_header_block_by_max_header_size() {
    use tokio::io::AsyncWriteExt;
    let app = StrictBackend::start("app").await;
    let a = Certificate::self_signed(&["a.example"]);
    let (_edge, https) = https_edge(
        table! { http2_max_concurrent_streams = 3, max_header_size = "8k" },
        one_route(app.addr).certificate(&a),
    );

    // The cap is what the edge advertises.
    let stream = connect(&connector(&[b"h2"]), https, "a.example").await;
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    let mut connection = Box::pin(connection);
    until_settings(&mut connection, Duration::from_secs(5)).await;
    assert_eq!(connection.max_concurrent_send_streams(), 3);
    tokio::spawn(connection);

    // A head over max_header_size: 431, and nothing reaches the server.
    let mut client = client.ready().await.expect("ready");
    let mut request = http::Request::get("https://a.example/big-head");
    for n in 0..12 {
        request = request.header(format!("x-big-{n}"), "v".repeat(1000));
    }
    let (response, _) = client
        .send_request(request.body(()).expect("request"), true)
        .expect("send");
    match response.await {
        Ok(response) => assert_eq!(response.status(), 431),
        Err(e) => assert_eq!(e.reason(), Some(h2::Reason::REFUSED_STREAM), "{e}"),
    }
    assert_eq!(app.requests(), 0);

    // A header block that never ends, one CONTINUATION frame after another: the connection
    // is closed once the block outgrows what max_header_size needs.
    let mut stream = connect(&connector(&[b"h2"]), https, "a.example").await;
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(4, 0, 0, &[]));
    let start = hpack_literal(&[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/flood"),
        (":authority", "a.example"),
    ]);
    out.extend(h2_frame(1, 0x1, 1, &start)); // HEADERS, END_STREAM, no END_HEADERS
    stream.write_all(&out).await.expect("head start");
    let piece = hpack_literal(&[("x-flood", &"f".repeat(200))]);
    let mut sent = 0;
    for _ in 0..2000 {
        let frame = h2_frame(9, 0, 1, &piece); // CONTINUATION, no END_HEADERS
        if stream.write_all(&frame).await.is_err() {
            break;
        }
        sent += 1;
    }
    let (kinds, closed) = frames_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(
        closed.is_some(),
        "the connection took {sent} CONTINUATION frames"
    );
    assert!(kinds.contains(&7), "a GOAWAY says why: {kinds:?}");
    assert_eq!(app.requests(), 0);
}
