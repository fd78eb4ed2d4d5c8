//! HTTP/2 with prior knowledge on the plain listener (`http2_cleartext`), attacked as the TLS
//! one is: streams whose window never opens, a preface that opens no stream, garbage after
//! "PRI ". Each costs the edge a bounded time and no backend connection.

use crate::http2::frames_until_close;
use crate::slow_clients::{
    closed_after_send_timeout, streams_never_read, streams_reset_and_counted,
};
use crate::support::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread")]
async fn cleartext_streams_whose_window_never_opens_are_reset_within_send_timeout() {
    let bulk = BulkBackend::start(32 << 20);
    let config = TestConfig::new()
        .upstream("bulk", [bulk.addr])
        .route("/", "bulk");
    let edge = Edge::start(
        table! { http2_cleartext = true, send_timeout = "2s" },
        config,
    );
    let stopped = Instant::now();
    let mut bodies = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(edge.http)
            .await
            .expect("tcp");
        clients.push(streams_never_read(tcp, "http://edge.test", 10, &mut bodies).await);
    }
    wait_until(
        Duration::from_secs(10),
        "upstream connections let go",
        async || bulk.closed_mid_response(20),
    )
    .await;
    closed_after_send_timeout(&bulk, 20, stopped);
    streams_reset_and_counted(&edge, bodies, 20.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cleartext_preface_that_opens_no_stream_is_closed_after_client_header_timeout() {
    let app = StrictBackend::start("app").await;
    let edge = Edge::start(
        table! { http2_cleartext = true, client_header_timeout = "1s" },
        one_route(app.addr),
    );
    let mut tcp = tokio::net::TcpStream::connect(edge.http)
        .await
        .expect("tcp");
    let opened = Instant::now();
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(h2_frame(4, 0, 0, &[])); // SETTINGS
    tcp.write_all(&hello).await.expect("preface");
    let (kinds, closed) = frames_until_close(&mut tcp, Duration::from_secs(10)).await;
    let after = closed
        .expect("the edge kept the connection")
        .duration_since(opened);
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
    assert!(kinds.contains(&4), "it answered as HTTP/2: {kinds:?}");
    assert_eq!(
        kinds.last(),
        Some(&7),
        "a GOAWAY before the close: {kinds:?}"
    );
    assert_eq!(app.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_connection_idle_for_keepalive_timeout_ends_with_a_goaway() {
    let app = StrictBackend::start("app").await;
    let edge = Edge::start(
        table! { http2_cleartext = true, keepalive_timeout = "1s" },
        one_route(app.addr),
    );
    let mut tcp = tokio::net::TcpStream::connect(edge.http)
        .await
        .expect("tcp");
    let mut hello = H2_PREFACE.to_vec();
    hello.extend(h2_frame(4, 0, 0, &[])); // SETTINGS
                                          // GET / on stream 1 (HPACK: :method GET, :path /, :scheme http, :authority "a").
    let fields = [0x82, 0x84, 0x86, 0x41, 0x01, b'a'];
    hello.extend(h2_frame(1, 0x5, 1, &fields)); // HEADERS, END_STREAM | END_HEADERS
    tcp.write_all(&hello).await.expect("request");
    let sent = Instant::now();
    let (kinds, closed) = frames_until_close(&mut tcp, Duration::from_secs(10)).await;
    let after = closed
        .expect("the edge kept the connection")
        .duration_since(sent);
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
    assert!(kinds.contains(&1), "the answer's HEADERS: {kinds:?}");
    // RFC 9113 6.8: a GOAWAY (naming stream 1 as the last taken) before the close, so a
    // request that crosses it is known not to have been taken.
    assert_eq!(
        kinds.last(),
        Some(&7),
        "a GOAWAY before the close: {kinds:?}"
    );
    assert_eq!(app.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_after_pri_is_closed_and_http1_still_works_on_the_same_listener() {
    let app = StrictBackend::start("app").await;
    let edge = Edge::start(table! { http2_cleartext = true }, one_route(app.addr));
    let mut tcp = tokio::net::TcpStream::connect(edge.http)
        .await
        .expect("tcp");
    tcp.write_all(b"PRI * HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "the edge closed it");
    assert_eq!(app.requests(), 0, "nothing reached the backend");

    let response = raw_request(edge.http, b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(app.requests(), 1);
}
