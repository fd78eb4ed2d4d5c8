//! The upstream codec against a scripted server: what it reads, what it keeps, what it refuses.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const SECOND: Duration = Duration::from_secs(1);

/// An exchange on an in-memory connection, and the server's end of it.
fn pair() -> (Exchange, DuplexStream) {
    let (edge, server) = tokio::io::duplex(256 * 1024);
    let exchange = Exchange::new(Connection::new(Box::new(edge)), SECOND, SECOND);
    (exchange, server)
}

/// Sends a GET (or HEAD) head with no body.
async fn send(exchange: &mut Exchange, method: &str) {
    let head = exchange.head_buffer();
    head.extend_from_slice(format!("{method} / HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes());
    exchange
        .send_head(Upload::Length(0), method == "HEAD", None)
        .await
        .expect("sent");
}

/// Reads the whole body.
async fn body(exchange: &mut Exchange) -> Result<Vec<u8>> {
    let mut all = Vec::new();
    while let Some(piece) = exchange.read_body().await? {
        all.extend_from_slice(&piece);
    }
    Ok(all)
}

/// The server's side answers `answer` in pieces of `step` bytes.
async fn answer(server: &mut DuplexStream, answer: &[u8], step: usize) {
    for piece in answer.chunks(step) {
        server.write_all(piece).await.expect("answer");
        tokio::task::yield_now().await;
    }
}

/// What the server's side received, up to the end of a head.
async fn received_head(server: &mut DuplexStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        server.read_exact(&mut byte).await.expect("read");
        got.push(byte[0]);
    }
    String::from_utf8(got).expect("text")
}

#[tokio::test]
async fn a_length_framed_answer_read_in_pieces_keeps_the_connection() {
    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    assert_eq!(
        received_head(&mut server).await,
        "GET / HTTP/1.1\r\nHost: app\r\n\r\n"
    );
    let reply =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world";
    let (read, ()) = tokio::join!(exchange.read_response(), answer(&mut server, reply, 7));
    let response = read.expect("head");
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["content-type"], "text/plain");
    assert_eq!(response.headers["content-length"], "11");
    assert_eq!(body(&mut exchange).await.expect("body"), b"hello world");
    let connection = exchange.into_reusable().expect("kept");
    assert_eq!(connection.served, 1);
}

#[tokio::test]
async fn a_chunked_answer_is_decoded_and_its_trailers_kept_for_the_client() {
    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
        5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\ngrpc-status:  0 \r\n\
        Content-Length: 5\r\nbad line\r\n\r\n";
    answer(&mut server, reply, 3).await;
    let response = exchange.read_response().await.expect("head");
    assert!(
        response.headers.get("content-length").is_none(),
        "Transfer-Encoding overrides Content-Length, which is dropped"
    );
    assert_eq!(response.headers["transfer-encoding"], "chunked");
    assert_eq!(body(&mut exchange).await.expect("body"), b"hello world");
    let trailers = exchange.take_trailers().expect("trailers");
    assert_eq!(trailers["x-trailer"], "t");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        trailers.len(),
        2,
        "framing fields and broken lines are dropped: {trailers:?}"
    );
    assert!(exchange.take_trailers().is_none(), "taken once");
    assert!(exchange.into_reusable().is_some());
}

#[tokio::test]
async fn trailers_larger_than_a_head_are_refused() {
    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    let mut reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
    for n in 0..MAX_HEAD / 1000 + 1 {
        reply.extend_from_slice(format!("x-{n}: {}\r\n", "v".repeat(1000)).as_bytes());
    }
    reply.extend_from_slice(b"\r\n");
    let (read, ()) = tokio::join!(
        async {
            exchange.read_response().await.expect("head");
            body(&mut exchange).await
        },
        answer(&mut server, &reply, 8192)
    );
    assert!(read.is_err());
}

#[tokio::test]
async fn an_answer_without_length_reads_to_the_close_and_ends_the_connection() {
    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    answer(&mut server, b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 100).await;
    drop(server);
    exchange.read_response().await.expect("head");
    assert_eq!(body(&mut exchange).await.expect("body"), b"until the end");
    assert!(exchange.into_reusable().is_none());
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_reads_to_the_close() {
    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    answer(
        &mut server,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\nabcdef",
        100,
    )
    .await;
    drop(server);
    exchange.read_response().await.expect("head");
    assert_eq!(body(&mut exchange).await.expect("body"), b"abcdef");
    assert!(exchange.into_reusable().is_none());
}

#[tokio::test]
async fn head_204_304_and_zero_length_answers_have_no_body_to_read() {
    for (method, reply) in [
        (
            "GET",
            &b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"[..],
        ),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"),
        (
            "GET",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
        ),
        (
            "GET",
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
    ] {
        let (mut exchange, mut server) = pair();
        send(&mut exchange, method).await;
        answer(&mut server, reply, 100).await;
        exchange.read_response().await.expect("head");
        assert!(exchange.is_body_done(), "{method} {reply:?}");
        assert_eq!(body(&mut exchange).await.expect("no body"), b"");
        assert!(exchange.into_reusable().is_some(), "{reply:?}");
    }
}

#[tokio::test]
async fn informational_heads_come_first_and_the_final_one_after() {
    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    answer(
        &mut server,
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nDate: Mon, 07 Dec 2026 06:00:00 GMT\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: Mon, 07 Dec 2026 06:00:00 GMT\r\n\r\nok",
        100,
    )
    .await;
    let hints = exchange.read_response().await.expect("103");
    assert_eq!(hints.status, 103);
    assert_eq!(hints.headers["link"], "</a.css>");
    assert!(
        hints.headers.contains_key("date"),
        "an interim head is relayed as it is"
    );
    assert!(!exchange.is_body_done(), "no body is read after a 1xx");
    let last = exchange.read_response().await.expect("200");
    assert_eq!(last.status, 200);
    // The edge writes its own on a final head (every client protocol): the server's is not
    // kept only to be skipped.
    assert!(!last.headers.contains_key("date"));
    assert_eq!(body(&mut exchange).await.expect("body"), b"ok");
    assert!(exchange.into_reusable().is_some());
}

#[tokio::test]
async fn the_connection_is_kept_only_when_both_versions_and_fields_allow() {
    for (reply, kept) in [
        (&b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..], false),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n", false),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", true),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab", false),
    ] {
        let (mut exchange, mut server) = pair();
        send(&mut exchange, "GET").await;
        answer(&mut server, reply, 100).await;
        let response = exchange.read_response().await.expect("head");
        assert!(
            response.headers.get("connection").is_none(),
            "connection fields stay with the connection"
        );
        body(&mut exchange).await.expect("body");
        assert_eq!(
            exchange.into_reusable().is_some(),
            kept,
            "{}",
            String::from_utf8_lossy(reply)
        );
    }
}

#[tokio::test]
async fn broken_framing_is_an_invalid_answer() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
    ] {
        let (mut exchange, mut server) = pair();
        send(&mut exchange, "GET").await;
        answer(&mut server, reply, 100).await;
        let result = match exchange.read_response().await {
            Ok(_) => body(&mut exchange).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let error = result.expect_err(&String::from_utf8_lossy(reply));
        assert_eq!(
            *error.etype(),
            ErrorType::InvalidHTTPHeader,
            "{}",
            String::from_utf8_lossy(reply)
        );
    }
}

#[tokio::test]
async fn identical_duplicate_lengths_are_one_length() {
    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    answer(
        &mut server,
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc",
        100,
    )
    .await;
    exchange.read_response().await.expect("head");
    assert_eq!(body(&mut exchange).await.expect("body"), b"abc");
}

#[tokio::test]
async fn a_close_before_any_answer_byte_may_be_a_stale_connection_but_not_after() {
    let (mut exchange, server) = pair();
    send(&mut exchange, "GET").await;
    drop(server);
    let error = exchange.read_response().await.expect_err("closed");
    assert_eq!(*error.etype(), ErrorType::ConnectionClosed);
    assert!(matches!(error.retry, RetryType::ReusedOnly));

    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    answer(&mut server, b"HTTP/1.1 200 OK\r\nCont", 100).await;
    drop(server);
    let error = exchange.read_response().await.expect_err("cut");
    assert!(!matches!(error.retry, RetryType::ReusedOnly));

    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    answer(
        &mut server,
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
        100,
    )
    .await;
    drop(server);
    exchange.read_response().await.expect("head");
    let error = body(&mut exchange).await.expect_err("short body");
    assert_eq!(*error.etype(), ErrorType::ConnectionClosed);
}

#[tokio::test]
async fn a_server_that_does_not_answer_times_out() {
    let (edge, _server) = tokio::io::duplex(1024);
    let mut exchange = Exchange::new(
        Connection::new(Box::new(edge)),
        Duration::from_millis(50),
        SECOND,
    );
    send(&mut exchange, "GET").await;
    let error = exchange.read_response().await.expect_err("timeout");
    assert_eq!(*error.etype(), ErrorType::ReadTimedout);
}

#[tokio::test]
async fn a_head_larger_than_the_limit_is_refused() {
    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    let mut reply = b"HTTP/1.1 200 OK\r\n".to_vec();
    while reply.len() <= MAX_HEAD + 1024 {
        reply.extend_from_slice(
            b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    let (read, ()) = tokio::join!(exchange.read_response(), answer(&mut server, &reply, 4096));
    assert_eq!(
        *read.expect_err("too large").etype(),
        ErrorType::InvalidHTTPHeader
    );
    // Whole, and in one piece: still too large.
    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    reply.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    answer(&mut server, &reply, reply.len()).await;
    assert_eq!(
        *exchange
            .read_response()
            .await
            .expect_err("too large")
            .etype(),
        ErrorType::InvalidHTTPHeader
    );
}

#[tokio::test]
async fn a_head_with_many_fields_is_read_whole() {
    let (mut exchange, mut server) = pair();
    send(&mut exchange, "GET").await;
    let mut reply = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..100 {
        reply.extend_from_slice(format!("X-Field-{i}: {i}\r\n").as_bytes());
    }
    reply.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    answer(&mut server, &reply, 100_000).await;
    let response = exchange.read_response().await.expect("head");
    assert_eq!(response.headers.len(), 101);
    assert_eq!(response.headers["x-field-99"], "99");
}

#[tokio::test]
async fn request_bodies_go_framed_as_declared() {
    // A whole body in the same write as the head.
    let (mut exchange, mut server) = pair();
    let head = exchange.head_buffer();
    head.extend_from_slice(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n");
    exchange
        .send_head(Upload::Length(4), false, Some(b"data"))
        .await
        .expect("sent");
    exchange.finish_body().await.expect("complete");
    let mut got = vec![0u8; 42];
    server.read_exact(&mut got).await.expect("read");
    assert!(got.ends_with(b"\r\n\r\ndata"));

    // A streamed body in chunks, ended by the last chunk.
    let (mut exchange, mut server) = pair();
    exchange
        .head_buffer()
        .extend_from_slice(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    exchange
        .send_head(Upload::Chunked, false, None)
        .await
        .expect("sent");
    exchange.write_body(b"hello, ").await.expect("chunk");
    exchange.write_body(b"").await.expect("nothing");
    exchange.write_body(&[b'x'; 20]).await.expect("chunk");
    exchange.finish_body().await.expect("end");
    drop(exchange);
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.expect("read");
    let text = String::from_utf8(got).expect("text");
    assert!(
        text.ends_with(&format!(
            "\r\n\r\n7\r\nhello, \r\n14\r\n{}\r\n0\r\n\r\n",
            "x".repeat(20)
        )),
        "{text:?}"
    );

    // A declared length is not overrun, nor left short silently.
    let (mut exchange, _server) = pair();
    exchange
        .send_head(Upload::Length(3), false, None)
        .await
        .expect("sent");
    exchange.write_body(b"ab").await.expect("part");
    assert!(exchange.finish_body().await.is_err(), "one byte short");
    exchange.write_body(b"cdef").await.expect("the rest");
    exchange.finish_body().await.expect("complete");
}

#[tokio::test]
async fn the_read_buffer_is_reused_from_one_request_to_the_next() {
    let (mut exchange, mut server) = pair();
    for round in 0..3 {
        send(&mut exchange, "GET").await;
        received_head(&mut server).await;
        answer(
            &mut server,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            100,
        )
        .await;
        let response = exchange.read_response().await.expect("head");
        assert_eq!(body(&mut exchange).await.expect("body"), b"ok");
        drop(response);
        let connection = exchange.into_reusable().expect("kept");
        assert_eq!(connection.served, round + 1);
        exchange = Exchange::new(connection, SECOND, SECOND);
    }
}

#[test]
fn request_field_names_are_spelt_as_usual() {
    let mut out = Vec::new();
    write_field(&mut out, &header::HOST, b"app");
    write_field(&mut out, &header::USER_AGENT, b"curl");
    write_field(&mut out, &HeaderName::from_static("x-real-ip"), b"::1");
    assert_eq!(out, b"Host: app\r\nuser-agent: curl\r\nx-real-ip: ::1\r\n");
}

/// One timer for every wait of a connection: an answer that comes after the end the timer was
/// first registered for, but within its own read's limit, is read; a read that gets nothing
/// times out at its own limit, sooner than the end the timer was last registered for.
#[tokio::test(start_paused = true)]
async fn one_timer_serves_every_read_of_a_connection() {
    let (edge, mut server) = tokio::io::duplex(1024);
    let five = Duration::from_secs(5);
    let mut exchange = Exchange::new(Connection::new(Box::new(edge)), five, five);
    let started = tokio::time::Instant::now();
    for after in [2, 4] {
        send(&mut exchange, "GET").await;
        let server_side = async {
            received_head(&mut server).await;
            tokio::time::sleep(Duration::from_secs(after)).await;
            server
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .expect("answer");
        };
        let (response, ()) = tokio::join!(exchange.read_response(), server_side);
        response.expect("answered within its read's limit");
        assert_eq!(body(&mut exchange).await.expect("body"), b"ok");
        let connection = exchange.into_reusable().expect("kept");
        exchange = Exchange::new(connection, five, five);
    }
    assert_eq!(started.elapsed(), Duration::from_secs(6));

    exchange.read_timeout = SECOND;
    send(&mut exchange, "GET").await;
    received_head(&mut server).await;
    let error = exchange.read_response().await.expect_err("timeout");
    assert_eq!(*error.etype(), ErrorType::ReadTimedout);
    assert_eq!(started.elapsed(), Duration::from_secs(7));
}

#[test]
fn a_connection_remembers_the_names_its_server_sends() {
    let mut names = Names::default();
    let content_type = names.name(0, b"Content-Type").expect("name");
    assert_eq!(content_type, header::CONTENT_TYPE);
    let served_by = names.name(1, b"X-Served-By").expect("name");
    assert_eq!(served_by.as_str(), "x-served-by");
    assert_eq!(names.0.len(), 2);
    // The next answer: in place, out of place, spelled otherwise.
    assert_eq!(names.name(0, b"Content-Type"), Some(header::CONTENT_TYPE));
    assert_eq!(names.name(0, b"X-Served-By"), Some(served_by.clone()));
    assert_eq!(names.name(2, b"content-type"), Some(header::CONTENT_TYPE));
    assert_eq!(names.0.len(), 3, "each spelling kept once");
    // Not a name: refused, and not kept.
    assert_eq!(names.name(3, b"Bad Name"), None);
    assert_eq!(names.name(3, b""), None);
    assert_eq!(names.0.len(), 3);
    // Kept up to the bound; beyond it names are still parsed.
    for i in 0..100 {
        let raw = format!("x-field-{i}");
        let name = names.name(i, raw.as_bytes()).expect("name");
        assert_eq!(name.as_str(), raw);
    }
    assert_eq!(names.0.len(), NAMES_KEPT);
}

#[tokio::test]
async fn a_reason_phrase_is_kept_when_it_is_not_the_usual_one() {
    for (line, kept) in [
        ("HTTP/1.1 200 OK", None),
        ("HTTP/1.1 200 Fine", Some("Fine")),
        ("HTTP/1.1 404 Nothing Here", Some("Nothing Here")),
        ("HTTP/1.1 404 Not Found", None),
    ] {
        let (mut exchange, mut server) = pair();
        send(&mut exchange, "GET").await;
        let reply = format!("{line}\r\nContent-Length: 0\r\n\r\n");
        answer(&mut server, reply.as_bytes(), 100).await;
        let head = exchange.read_response().await.expect("an answer");
        assert_eq!(head.reason(), kept, "{line}");
    }
}
