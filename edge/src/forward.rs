//! Forwarding a request to its upstream in the edge's own loop, as plain calls on the task of
//! the client connection: read the body (whole when it is small), pick a server, take one of
//! its kept-alive connections or open one, send the request, relay the answer, keep the
//! connection for the next request. Toward the client the codec is whichever session
//! carries the request ([`crate::downstream`]); toward the server it is the edge's own
//! ([`crate::upstream::h1`]): the request head is written as bytes from the client's head,
//! the answer's head parsed straight into the map the client's response is built from.
//! There are no channels and no spawned tasks.
//!
//! Which failures move a request to the next server, and which count against a server,
//! follow nginx: a failed connect always moves on; a failure after the request went out moves
//! an idempotent request whose body can be sent again; a reused connection that fails before
//! any answer byte is sent again on a new connection without counting; a client that left
//! ends the request.

use crate::ctx::RequestCtx;
use crate::downstream::Downstream;
use crate::observe::metrics::METRICS;
use crate::snapshot::Route;
use crate::upstream::h1::{self, Connection, Exchange, Upload};
use crate::upstream::{InflightGuard, Upstream};
use bytes::{Bytes, BytesMut};
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::Stream;
use pingora::ErrorType;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// A request body as the edge holds it before going upstream.
pub enum Body {
    /// No body.
    Empty,
    /// The whole body, read before any server was chosen: it can be sent again.
    Whole(Bytes),
    /// The first `client_body_buffer_size` bytes; the rest is read from the client while it
    /// is sent, so it can go to one server only.
    Streaming(Bytes),
}

/// Reads the request body: whole when it ends within `buffer` bytes. A body over `limit` is
/// 413 and a malformed one 400, before anything was sent upstream.
pub async fn read_body(session: &mut impl Downstream, buffer: u64, limit: u64) -> Result<Body> {
    if session.is_body_empty() {
        return Ok(Body::Empty);
    }
    if expects_continue(session.req_header()) {
        // As nginx: the edge itself asks for the body it is about to read.
        session.write_continue().await.map_err(|e| e.into_down())?;
    }
    let mut body = BytesMut::new();
    loop {
        let chunk = session.read_body().await.map_err(|e| e.into_down())?;
        let Some(chunk) = chunk else {
            return Ok(Body::Whole(body.freeze()));
        };
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body is larger than client_max_body_size",
            );
        }
        if body.len() as u64 > buffer {
            return Ok(Body::Streaming(body.freeze()));
        }
    }
}

fn expects_continue(req: &RequestHeader) -> bool {
    req.headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// How one attempt on one server failed.
struct Failed {
    error: Box<Error>,
    /// The failure was the client's (it left, or its body broke off).
    client: bool,
    /// The connection was a kept-alive one and no byte of an answer arrived: the server may
    /// simply have closed it.
    stale: bool,
    /// Some of a streamed body was read from the client and sent: it cannot be sent again.
    body_spent: bool,
    /// Some of the body went to this server: a non-idempotent request is not sent again.
    body_sent: bool,
}

impl Failed {
    fn upstream(error: Box<Error>) -> Failed {
        Failed {
            error: error.into_up(),
            client: false,
            stale: false,
            body_spent: false,
            body_sent: false,
        }
    }

    fn client(error: Box<Error>) -> Failed {
        Failed {
            error: error.into_down(),
            client: true,
            stale: false,
            body_spent: false,
            body_sent: false,
        }
    }
}

/// Picks the server for the next attempt of a request (nginx's `tried` set, bounded by
/// `next_upstream_tries`) and records the attempt. 502 when none is left.
pub fn pick_server(ctx: &mut RequestCtx, upstream: &Upstream) -> Result<usize> {
    if ctx.attempts.count >= upstream.max_attempts() {
        return Error::e_explain(ErrorType::HTTPStatus(502), "next_upstream_tries exhausted");
    }
    let Some(index) = upstream.select(ctx.client_ip, &mut ctx.attempts) else {
        return Error::e_explain(
            ErrorType::HTTPStatus(502),
            format!("no live servers in upstream {}", upstream.name),
        );
    };
    if ctx.attempts.count > 0 {
        METRICS.retry(&upstream.name);
    }
    ctx.attempts.mark(index);
    Ok(index)
}

/// Sends the request to a server of the route's upstream, moving to the next server as
/// nginx's `proxy_next_upstream error timeout` does, and relays the answer to the client.
pub async fn forward(
    session: &mut impl Downstream,
    ctx: &mut RequestCtx,
    route: &Arc<Route>,
) -> Result<()> {
    let edge = &ctx.snapshot.config.edge;
    let mut body = read_body(
        session,
        edge.client_body_buffer_size,
        edge.client_max_body_size,
    )
    .await?;
    let upstream = &route.upstream;
    ctx.went_upstream = true;
    let idempotent = session.req_header().method.is_idempotent();
    loop {
        let index = pick_server(ctx, upstream)?;
        let server = &upstream.servers[index];
        let Some(addr) = server.addr else {
            upstream.report_failure(index);
            ctx.server = None;
            continue;
        };
        let failed = match attempt(session, ctx, upstream, addr, index, &mut body).await {
            Ok(()) => return Ok(()),
            Err(failed) => failed,
        };
        ctx.server = None;
        if failed.client {
            return Err(failed.error);
        }
        let resendable = !ctx.response_started
            && !failed.body_spent
            && !matches!(body, Body::Streaming(_))
            && (idempotent || (failed.stale && !failed.body_sent));
        if failed.stale && resendable {
            // A kept-alive connection the server had closed says nothing about the server.
            ctx.attempts.unmark(index);
            continue;
        }
        if !ctx.response_started {
            upstream.report_failure(index);
        }
        let connect_failed = matches!(
            failed.error.etype(),
            ErrorType::ConnectTimedout | ErrorType::ConnectRefused | ErrorType::ConnectError
        );
        let may_retry = (connect_failed && !failed.body_spent) || resendable;
        if !may_retry || ctx.attempts.count >= upstream.max_attempts() {
            return Err(failed.error);
        }
    }
}

/// One attempt on server `index`: the request out, the answer back.
async fn attempt(
    session: &mut impl Downstream,
    ctx: &mut RequestCtx,
    upstream: &Upstream,
    addr: SocketAddr,
    index: usize,
    body: &mut Body,
) -> Result<(), Failed> {
    let server = &upstream.servers[index];
    let settings = &upstream.settings;
    ctx.server = Some((index, InflightGuard::new(server.state.clone())));
    ctx.upstream_started = Some(Instant::now());
    // A body that streams can be sent once only: it gets a new connection, never one the
    // server may have closed while idle.
    let pooled = match body {
        Body::Streaming(_) => None,
        _ => server.state.pool.take(settings.keepalive_timeout),
    };
    let (connection, reused) = match pooled {
        Some(pooled) => (pooled, true),
        // Boxed: a connect is rare on kept-alive traffic, and its state would otherwise
        // be part of every request's future.
        None => (
            Connection::new(
                Box::pin(connect(addr, settings.connect_timeout))
                    .await
                    .map_err(Failed::upstream)?,
            ),
            false,
        ),
    };
    let mut up = Exchange::new(connection, settings.read_timeout, settings.send_timeout);
    // Only a close or a socket error on a reused connection, before any answer, is taken for
    // a connection the server closed while idle; a timeout or a broken answer is a failure.
    let stale = |error: Box<Error>| Failed {
        stale: reused && closed_under_us(&error),
        ..Failed::upstream(error)
    };

    let req = session.req_header();
    let head_request = req.method == http::Method::HEAD;
    let upload = upstream_request(req, ctx, body, up.head_buffer()).map_err(Failed::upstream)?;
    let whole = match body {
        Body::Whole(bytes) => Some(&bytes[..]),
        _ => None,
    };
    up.send_head(upload, head_request, whole)
        .await
        .map_err(|e| Failed {
            body_sent: whole.is_some(),
            ..stale(e)
        })?;
    // The answer when the server gave it before it took the whole body.
    let mut early = None;
    if let Body::Streaming(head) = body {
        let limit = ctx.snapshot.config.edge.client_max_body_size;
        // Boxed: only a body larger than the buffer streams.
        early = Box::pin(stream_upload(session, &mut up, head, limit, reused)).await?;
    }
    let cut_short = early.is_some();

    // The answer, while watching the client: one that leaves ends the request at once (its
    // server is not held, nor counted against, until read_timeout). Informational heads are
    // relayed to HTTP/1.1 clients (100 Continue was the edge's own).
    let client_http11 = session.req_header().version == http::Version::HTTP_11;
    let sent = !matches!(body, Body::Empty);
    let head = loop {
        let head = match early.take() {
            Some(head) => head,
            None => {
                let read = tokio::select! {
                    biased;
                    read = up.read_response() => read,
                    idle = session.watch_idle() => {
                        let e = idle.err().unwrap_or_else(|| {
                            Error::explain(ErrorType::ConnectionClosed, "the client went idle")
                        });
                        return Err(Failed::client(e));
                    }
                };
                read.map_err(|e| Failed {
                    body_sent: sent,
                    ..stale(e)
                })?
            }
        };
        if head.status == 101 {
            // Upgrades are relayed by the websocket tunnel only, on routes that allow them.
            return Err(Failed::upstream(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "101 Switching Protocols to a request that asked for no upgrade",
            )));
        }
        if head.status.is_informational() {
            if head.status != 100 && client_http11 {
                let info = client_head(head).map_err(Failed::upstream)?;
                session
                    .write_head(info, false)
                    .await
                    .map_err(Failed::client)?;
            }
            continue;
        }
        break head;
    };
    ctx.response_started = true;
    upstream.report_success(index);
    if let Some(started) = ctx.upstream_started {
        let elapsed = started.elapsed();
        ctx.upstream_elapsed = Some(elapsed);
        if let Some(route) = &ctx.route {
            route.metrics.observe_upstream(elapsed.as_secs_f64());
        }
    }

    let no_body = head_request || up.is_body_done();
    let (response, framed) =
        client_response(head, no_body, client_http11, ctx).map_err(Failed::upstream)?;
    if !framed {
        // An HTTP/1.0 client reads a body of unknown length to the close.
        session.set_keepalive_off();
    }
    crate::respond::choose_compression(session, &response, ctx);
    // The server is done with the request once its answer is all in: it leaves the
    // in-flight count (least_conn's, /status's) before the client has the last byte, so the
    // client's next request is balanced without it, as nginx frees its peer. The access
    // log still names it (the attempt's last server).
    if no_body {
        ctx.server = None;
    }
    session
        .write_head(response, no_body)
        .await
        .map_err(Failed::client)?;
    if !no_body {
        loop {
            match up.read_body().await {
                Ok(Some(chunk)) => {
                    if up.is_body_done() {
                        ctx.server = None;
                    }
                    session
                        .write_body(Some(chunk), false)
                        .await
                        .map_err(Failed::client)?
                }
                Ok(None) => break,
                Err(e) => return Err(Failed::upstream(e)),
            }
        }
        ctx.server = None;
    }
    session
        .write_body(None, true)
        .await
        .map_err(Failed::client)?;

    // The connection is kept for the next request if both ends allow it (never one whose
    // request body was cut short by an early answer).
    if cut_short {
        drain_client_body(session).await;
        return Ok(());
    }
    if let Some(connection) = up.into_reusable() {
        server
            .state
            .pool
            .put(connection, settings.keepalive, settings.keepalive_requests);
    }
    Ok(())
}

/// A head from the server as the client gets it: its status, reason phrase and fields, as
/// HTTP/1.1 whatever the server spoke (an HTTP/1.0 status line would make a client
/// downgrade its next request), as nginx does.
fn client_head(mut head: h1::Response) -> Result<Box<ResponseHeader>> {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = head.status;
    parts.version = http::Version::HTTP_11;
    parts.headers = std::mem::take(&mut head.headers);
    let mut out = Box::new(ResponseHeader::from(parts));
    out.set_reason_phrase(head.reason())?;
    Ok(out)
}

/// After an early answer, the rest of the client's body is read and dropped (nginx's
/// lingering close), so that a client still sending sees the answer instead of a reset:
/// for at most this long in all, and this long between two reads.
const LINGER: std::time::Duration = std::time::Duration::from_secs(30);
const LINGER_READ: std::time::Duration = std::time::Duration::from_secs(5);

async fn drain_client_body(session: &mut impl Downstream) {
    let deadline = tokio::time::Instant::now() + LINGER;
    while tokio::time::Instant::now() < deadline {
        let read = session.read_body();
        match tokio::time::timeout(LINGER_READ, read).await {
            Ok(Ok(Some(_))) => {}
            _ => return,
        }
    }
}

/// Sends a body larger than the buffer: `head`, then the rest as the client sends it.
/// `Some(answer)` when the server answered before it took it all (a 413, a 401) and stopped
/// reading or closed: what it said is already in the socket, and it is relayed, as nginx
/// does, instead of a 502 counted against the server. The client's body is then not read to
/// its end, so its connection ends with this request.
async fn stream_upload(
    session: &mut impl Downstream,
    up: &mut Exchange,
    head: &Bytes,
    limit: u64,
    reused: bool,
) -> Result<Option<h1::Response>, Failed> {
    let sent = match up.write_body(head).await {
        Ok(()) => stream_body(session, up, limit).await,
        Err(e) => Err(Failed {
            stale: reused && closed_under_us(&e),
            body_spent: true,
            body_sent: true,
            ..Failed::upstream(e)
        }),
    };
    let Err(failed) = sent else {
        return Ok(None);
    };
    if failed.client {
        return Err(failed);
    }
    let Some(answer) = early_answer(up).await else {
        return Err(failed);
    };
    session.set_keepalive_off();
    Ok(Some(answer))
}

/// How long a server whose body upload broke off gets to show the answer it sent first.
const EARLY_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The answer the server sent before the body upload broke off, if a response head is (or
/// arrives very soon) in the socket.
async fn early_answer(up: &mut Exchange) -> Option<h1::Response> {
    match tokio::time::timeout(EARLY_ANSWER_WAIT, up.read_response()).await {
        Ok(Ok(answer)) => Some(answer),
        _ => None,
    }
}

/// Whether an error says the connection was closed or reset under the request (what a server
/// that closed a kept-alive connection while it was idle looks like), not that it timed out
/// or answered badly.
fn closed_under_us(error: &Error) -> bool {
    matches!(error.retry, pingora::RetryType::ReusedOnly)
        || matches!(error.etype(), ErrorType::WriteError)
}

/// Relays the rest of a body larger than the buffer from the client to the upstream, counting
/// it against `limit` (`client_max_body_size`) as it arrives.
async fn stream_body(
    session: &mut impl Downstream,
    up: &mut Exchange,
    limit: u64,
) -> Result<(), Failed> {
    let spent = |error: Box<Error>| Failed {
        body_spent: true,
        ..Failed::upstream(error)
    };
    loop {
        let chunk = session.read_body().await.map_err(|e| Failed {
            body_spent: true,
            ..Failed::client(e)
        })?;
        if session.body_bytes_read() as u64 > limit {
            return Err(Failed {
                body_spent: true,
                ..Failed::client(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body is larger than client_max_body_size",
                ))
            });
        }
        match chunk {
            Some(chunk) => up.write_body(&chunk).await.map_err(spent)?,
            None => {
                up.finish_body().await.map_err(spent)?;
                return Ok(());
            }
        }
    }
}

/// Opens a connection to `addr` within `timeout`.
async fn connect(addr: SocketAddr, timeout: std::time::Duration) -> Result<Stream> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => Ok(crate::tcp::Tcp::boxed(tcp, addr)),
        Ok(Err(e)) => {
            let etype = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                ErrorType::ConnectRefused
            } else {
                ErrorType::ConnectError
            };
            Error::e_because(etype, format!("connecting to {addr}"), e)
        }
        Err(_) => Error::e_explain(ErrorType::ConnectTimedout, format!("connecting to {addr}")),
    }
}

/// Request fields that end at the edge (RFC 9110 7.6.1, and the ones nginx also drops).
const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "expect",
    "keep-alive",
    "proxy-connection",
    "http2-settings",
];

fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Writes the request head sent upstream into `out`: the client's, without its hop-by-hop
/// fields (those the standard names and those its `Connection` nominates) and `Expect` (the
/// edge answered it), with the forwarding headers, as HTTP/1.1, and framed for the body the
/// edge holds; the framing is returned.
///
/// Written as bytes straight from the client's head: no second header map is built for it
/// (a map built and then serialised cost 1.9% of a small request's CPU, a cloned one 4.6%).
/// Names go upstream in their usual spelling ([`h1::write_field`]): HTTP field names are
/// case-insensitive (RFC 9110 5.1). The target goes as the client sent it.
pub fn upstream_request(
    req: &RequestHeader,
    ctx: &RequestCtx,
    body: &Body,
    out: &mut Vec<u8>,
) -> Result<Upload> {
    let target = req.raw_path();
    if target
        .iter()
        .any(|&b| matches!(b, 0x00 | b'\n' | b'\r' | b' '))
    {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "a request target with a byte HTTP/1.1 forbids there",
        );
    }
    let forwarding = ctx.forwarding_headers(req.headers.get(crate::ctx::X_FORWARDED_FOR));
    // Most requests carry no hop-by-hop field: one pass over the names finds out.
    let has_hop_by_hop = req.headers.keys().any(|name| hop_by_hop(name.as_str()));
    let nominated: Vec<String> = if has_hop_by_hop {
        req.headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|name| std::str::from_utf8(name.trim_ascii()).ok())
            .filter(|name| !name.is_empty())
            .map(str::to_ascii_lowercase)
            .filter(|name| {
                !matches!(
                    name.as_str(),
                    "host" | "x-forwarded-for" | "x-forwarded-proto"
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    // A body the edge holds or streams goes with the framing the edge writes for it.
    let reframed = !matches!(body, Body::Empty);
    // HTTP/2 carries the host in `:authority` (the codec has checked that a Host beside it
    // agrees) and may split `Cookie` into several fields: HTTP/1.1 wants one Host and one
    // Cookie (RFC 9113 8.3.1, 8.2.3).
    let h2 = req.version == http::Version::HTTP_2;
    let authority = req.uri.authority().filter(|_| h2);
    let cookies = h2 && req.headers.get_all(header::COOKIE).iter().nth(1).is_some();
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(authority) = authority {
        h1::write_field(out, &header::HOST, authority.as_str().as_bytes());
    }
    for (name, value) in &req.headers {
        let dropped = (has_hop_by_hop
            && (hop_by_hop(name.as_str()) || nominated.iter().any(|n| n == name.as_str())))
            || forwarding.iter().any(|(set, _)| set == name)
            || (reframed && name == header::CONTENT_LENGTH)
            || (authority.is_some() && name == header::HOST)
            || (cookies && name == header::COOKIE);
        if !dropped {
            h1::write_field(out, name, value.as_bytes());
        }
    }
    if cookies {
        let mut joined = Vec::new();
        for (i, value) in req.headers.get_all(header::COOKIE).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(value.as_bytes());
        }
        h1::write_field(out, &header::COOKIE, &joined);
    }
    let length = match body {
        Body::Empty => None,
        Body::Whole(bytes) => Some(bytes.len() as u64),
        Body::Streaming(_) => crate::request::declared_length(req),
    };
    let upload = match (body, length) {
        (Body::Empty, _) => Upload::Length(0),
        (_, Some(length)) => {
            let mut digits = itoa::Buffer::new();
            h1::write_field(
                out,
                &header::CONTENT_LENGTH,
                digits.format(length).as_bytes(),
            );
            Upload::Length(length)
        }
        (_, None) => {
            h1::write_field(out, &header::TRANSFER_ENCODING, b"chunked");
            Upload::Chunked
        }
    };
    for (name, value) in &forwarding {
        h1::write_field(out, name, value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(upload)
}

/// The upstream's response head made fit for the client: the edge's own fields are added
/// ([`crate::respond::edge_fields`]; the exchange has already left out the hop-by-hop
/// ones, and the client side sets its own `Connection`), and a body without a length is
/// sent chunked to an HTTP/1.1 client, so its connection can be kept. The flag is `false`
/// when the body has no length the client can read, so only the close can end it (an
/// HTTP/1.0 client).
///
/// The map is the one the server's head was parsed into, moved, not copied.
fn client_response(
    mut upstream: h1::Response,
    no_body: bool,
    client_http11: bool,
    ctx: &RequestCtx,
) -> Result<(Box<ResponseHeader>, bool)> {
    let headers = &mut upstream.headers;
    for (name, value) in crate::respond::edge_fields(ctx) {
        headers.insert(name, value);
    }
    let framed = if no_body || headers.contains_key(header::CONTENT_LENGTH) {
        true
    } else if client_http11 {
        // Relayed chunked; a coding the server applied (`gzip`) stays, with chunked after it
        // as the coding the body now travels in.
        let coded = match crate::downstream::h1::ends_chunked(headers) {
            Some(true) => None,
            Some(false) => headers
                .get(header::TRANSFER_ENCODING)
                .map(|v| [v.as_bytes(), b", chunked"].concat()),
            None => Some(b"chunked".to_vec()),
        };
        if let Some(coding) = coded {
            let value = http::HeaderValue::from_bytes(&coding).map_err(|_| {
                Error::explain(ErrorType::InvalidHTTPHeader, "a bad Transfer-Encoding")
            })?;
            headers.insert(header::TRANSFER_ENCODING, value);
        }
        true
    } else {
        // HTTP/1.0 has no chunked coding: the body goes as it is, ended by the close.
        headers.remove(header::TRANSFER_ENCODING);
        false
    };
    Ok((client_head(upstream)?, framed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RequestCtx {
        let text = "[upstreams.app]\nservers = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n";
        let config = crate::config::validate("test.toml", text)
            .expect("valid")
            .config;
        let snapshot = crate::snapshot::Snapshot::compile("test.toml", config, None);
        RequestCtx::new(Arc::new(snapshot))
    }

    fn head_for(fields: &[(&str, &str)], body: &Body) -> (String, Upload) {
        let mut req = RequestHeader::build("POST", b"/up", None).expect("head");
        for (name, value) in fields {
            req.append_header(name.to_string(), *value).expect("field");
        }
        let mut out = Vec::new();
        let upload = upstream_request(&req, &ctx(), body, &mut out).expect("written");
        (String::from_utf8(out).expect("text"), upload)
    }

    #[test]
    fn a_body_goes_upstream_with_the_one_framing_the_edge_writes_for_it() {
        let streaming = Body::Streaming(Bytes::from_static(b"first part"));
        // Identical lengths in a list (framing lets them through) become one length.
        let (head, upload) = head_for(&[("content-length", "20000, 20000")], &streaming);
        assert_eq!(upload, Upload::Length(20000));
        assert_eq!(
            head.matches("Content-Length: 20000\r\n").count(),
            1,
            "{head}"
        );
        assert!(
            !head.contains("20000, 20000") && !head.contains("chunked"),
            "{head}"
        );
        // A chunked body of unknown length streams chunked.
        let (head, upload) = head_for(&[("transfer-encoding", "chunked")], &streaming);
        assert_eq!(upload, Upload::Chunked);
        assert_eq!(
            head.matches("Transfer-Encoding: chunked\r\n").count(),
            1,
            "{head}"
        );
        assert!(!head.contains("Content-Length"), "{head}");
        // A whole body is sent with its length, whatever the client declared.
        let whole = Body::Whole(Bytes::from_static(b"abc"));
        let (head, upload) = head_for(&[("transfer-encoding", "chunked")], &whole);
        assert_eq!(upload, Upload::Length(3));
        assert!(
            head.contains("Content-Length: 3\r\n") && !head.contains("chunked"),
            "{head}"
        );
        // No body: the client's own fields go as they were.
        let (head, upload) = head_for(&[("content-length", "0")], &Body::Empty);
        assert_eq!(upload, Upload::Length(0));
        assert!(
            head.starts_with("POST /up HTTP/1.1\r\n") && head.contains("Content-Length: 0\r\n")
        );
        assert!(head.ends_with("\r\n\r\n"));
    }
}
