//! What HTTP/2 clients get beyond a plain answer: informational heads, trailers, bounded
//! streams and heads, the connection's clocks, and a drain when the edge stops.

use crate::observe::{scrape, value};
use crate::support::*;
use crate::tls::{connect, connector, https_edge};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An HTTP/1.1 server that answers every request with `answer` and keeps each request head
/// it was sent.
fn answering(answer: &'static [u8]) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                each_request_head(&mut stream, |stream, head| {
                    seen.lock().expect("heads").push(head.to_string());
                    stream.write_all(answer).is_ok()
                });
            });
        }
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
    let dir = tempfile::tempdir().expect("dir");
    let (edge, https) = https_edge(
        dir.path(),
        "redirect_http_to_https = false",
        &one_route(server),
    )
    .await;

    // HTTP/2: the 103, the answer, its trailers.
    let stream = connect(&connector(&[b"h2"]), https, "a.example").await;
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
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
    let dir = tempfile::tempdir().expect("dir");
    let (_edge, https) = https_edge(dir.path(), "", &one_route(server)).await;
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
    let dir = tempfile::tempdir().expect("dir");
    let (edge, https) = https_edge(
        dir.path(),
        "redirect_http_to_https = false",
        &one_route(server),
    )
    .await;

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

    let stream = connect(&connector(&[b"h2"]), https, "a.example").await;
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
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
