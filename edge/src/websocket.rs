//! Websocket (and other HTTP/1.1 `Upgrade`) tunnels for routes with `websocket = true`.
//!
//! Pingora 0.9.1's proxy loop can tear an upgraded connection down right after the 101 when
//! the upstream answers before the request's empty body has been relayed
//! (cloudflare/pingora#946), which drops Grafana Live connections under load. Upgrades are
//! therefore relayed here: pick a server like any request (balance, passive failures, next
//! server on connect errors), send the handshake with the forwarding headers, hand the
//! upstream's answer to the client, and after a 101 copy bytes both ways until either side
//! closes or the upstream is silent for `read_timeout`.

use crate::ctx::RequestCtx;
use crate::snapshot::Route;
use crate::upstream::InFlightGuard;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::ErrorType;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head accepted from the upstream.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Relays an upgrade request to `route`'s upstream; the response is written to the client.
pub async fn tunnel(session: &mut Session, ctx: &mut RequestCtx, route: &Arc<Route>) -> Result<()> {
    // Over 100 lines: connect, upgrade request, 101 and the two-way relay share one upstream
    // connection's state, read top to bottom.
    let upstream = &route.upstream;
    let settings = &upstream.settings;
    let head = handshake_request(session, ctx);

    // Connect, moving on to the next server on failure, as for any request.
    let mut stream = loop {
        if ctx.attempts.count >= upstream.max_attempts() {
            return Error::e_explain(ErrorType::HTTPStatus(502), "no server accepted the upgrade");
        }
        let Some(index) = upstream.select(ctx.client_ip, &mut ctx.attempts) else {
            return Error::e_explain(ErrorType::HTTPStatus(502), "no live servers");
        };
        ctx.attempts.mark(index);
        let server = &upstream.servers[index];
        let Some(addr) = server.addr else {
            upstream.report_failure(index);
            continue;
        };
        match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                ctx.server = Some((index, InFlightGuard::new(server.state.clone())));
                break stream;
            }
            _ => upstream.report_failure(index),
        }
    };
    let _ = stream.set_nodelay(true);
    let io_error = |e: std::io::Error| Error::because(ErrorType::HTTPStatus(502), "upstream", e);
    tokio::time::timeout(settings.send_timeout, stream.write_all(&head))
        .await
        .map_err(|_| {
            Error::explain(
                ErrorType::HTTPStatus(504),
                "sending the handshake timed out",
            )
        })?
        .map_err(io_error)?;

    // Read the upstream's response head.
    let mut buf = BytesMut::with_capacity(4096);
    let (mut response, head_len) = loop {
        let read = tokio::time::timeout(settings.read_timeout, stream.read_buf(&mut buf))
            .await
            .map_err(|_| Error::explain(ErrorType::HTTPStatus(504), "no handshake answer in time"))?
            .map_err(io_error)?;
        if read == 0 {
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                "upstream closed during the handshake",
            );
        }
        if let Some(parsed) = parse_response_head(&buf)? {
            break parsed;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                "upstream response head too large",
            );
        }
    };
    ctx.response_started = true;
    if let (Some(route), Some((index, _))) = (&ctx.route, &ctx.server) {
        route.upstream.report_success(*index);
    }
    let leftover = buf.split_off(head_len).freeze();
    response.insert_header("x-request-id", ctx.request_id.as_str())?;

    if response.status.as_u16() != 101 {
        // The upstream refused the upgrade: relay its answer and close.
        let length = response
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        response.insert_header("connection", "close")?;
        session.set_keepalive(None);
        session
            .write_response_header(Box::new(response), false)
            .await?;
        relay_refusal(
            session,
            &mut stream,
            leftover,
            length,
            settings.read_timeout,
        )
        .await?;
        return Ok(());
    }

    session
        .write_response_header(Box::new(response), false)
        .await?;
    if !leftover.is_empty() {
        session.write_response_body(Some(leftover), false).await?;
    }
    let (mut up_read, mut up_write) = stream.into_split();
    let mut chunk = vec![0u8; 16 * 1024];
    // Each direction has its own idle deadline, the upstream's read_timeout from the last
    // byte that came that way: traffic one way does not keep a side that went silent open.
    let idle = settings.read_timeout;
    session.downstream_session.set_read_timeout(None);
    let mut client_quiet_by = tokio::time::Instant::now() + idle;
    let mut upstream_quiet_by = client_quiet_by;
    loop {
        tokio::select! {
            from_client = session.downstream_session.read_request_body() => {
                match from_client {
                    Ok(Some(data)) => {
                        client_quiet_by = tokio::time::Instant::now() + idle;
                        if up_write.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            from_upstream = up_read.read(&mut chunk) => {
                match from_upstream {
                    Ok(n) if n > 0 => {
                        upstream_quiet_by = tokio::time::Instant::now() + idle;
                        let data = Bytes::copy_from_slice(&chunk[..n]);
                        if session.write_response_body(Some(data), false).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            () = tokio::time::sleep_until(client_quiet_by.min(upstream_quiet_by)) => {
                tracing::debug!("websocket tunnel idle for read_timeout one way; closing");
                break;
            }
        }
    }
    let _ = up_write.shutdown().await;
    let _ = session.write_response_body(None, true).await;
    Ok(())
}

/// The handshake as sent upstream: the client's request line and headers (Host and the
/// Upgrade handshake included) with the edge's forwarding headers.
fn handshake_request(session: &Session, ctx: &RequestCtx) -> Vec<u8> {
    let req = session.req_header();
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut head = Vec::with_capacity(1024);
    head.extend_from_slice(format!("{} {} HTTP/1.1\r\n", req.method, target).as_bytes());
    let forwarding = ctx.forwarding_headers(req.headers.get("x-forwarded-for"));
    let mut put = |name: &[u8], value: &[u8]| {
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    };
    for (name, value) in req.headers.iter() {
        let set_by_edge = forwarding.iter().any(|(f, _)| f == name);
        let hop_by_hop = matches!(
            name.as_str(),
            "keep-alive" | "te" | "proxy-connection" | "trailer" | "transfer-encoding"
        );
        if !set_by_edge && !hop_by_hop {
            put(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    for (name, value) in &forwarding {
        put(name.as_str().as_bytes(), value.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Parses a complete response head: the header and its length in bytes.
fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHeader, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Response::new(&mut headers);
    let status = parsed
        .parse(buf)
        .map_err(|e| Error::because(ErrorType::HTTPStatus(502), "bad upstream response", e))?;
    let httparse::Status::Complete(len) = status else {
        return Ok(None);
    };
    let code = parsed.code.unwrap_or(502);
    let mut header = ResponseHeader::build(code, Some(parsed.headers.len()))?;
    for h in parsed.headers.iter() {
        header.append_header(h.name.to_string(), h.value)?;
    }
    Ok(Some((header, len)))
}

/// Relays the body of a refused upgrade: `length` bytes, or until the upstream closes.
async fn relay_refusal(
    session: &mut Session,
    stream: &mut TcpStream,
    leftover: Bytes,
    length: Option<usize>,
    read_timeout: std::time::Duration,
) -> Result<()> {
    let mut remaining = length.unwrap_or(usize::MAX);
    let first = leftover.slice(..leftover.len().min(remaining));
    remaining -= first.len();
    if !first.is_empty() {
        session.write_response_body(Some(first), false).await?;
    }
    let mut chunk = vec![0u8; 16 * 1024];
    while remaining > 0 {
        match tokio::time::timeout(read_timeout, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                let n = n.min(remaining);
                remaining -= n;
                session
                    .write_response_body(Some(Bytes::copy_from_slice(&chunk[..n])), false)
                    .await?;
            }
            _ => break,
        }
    }
    session.write_response_body(None, true).await
}
