//! Responses the edge makes itself: small JSON bodies for 404/403/413/502..., and redirects.

use crate::compress;
use crate::ctx::{RequestCtx, X_REQUEST_ID};
use crate::downstream::Downstream;
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::prelude::*;

/// The short machine-readable name of an error status.
pub fn error_name(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
        425 => "too_early",
        429 => "too_many_requests",
        431 => "request_header_fields_too_large",
        500 => "internal_error",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        _ => "error",
    }
}

/// `{"error": ..., "status": ..., "message": ..., "request_id": ...}`.
pub fn error_body(status: u16, message: &str, request_id: &str) -> Bytes {
    let body = serde_json::json!({
        "error": error_name(status),
        "status": status,
        "message": message,
        "request_id": request_id,
    });
    Bytes::from(body.to_string())
}

/// Writes a complete JSON error response, with the request's id and HSTS where due.
pub async fn json_error(
    session: &mut impl Downstream,
    status: u16,
    message: &str,
    ctx: &RequestCtx,
) -> Result<()> {
    if ctx.grpc {
        return grpc_answer(session, status, message, ctx).await;
    }
    let body = error_body(status, message, &ctx.request_id);
    json_response(session, status, body, ctx, &ctx.https_fields()).await
}

/// The gRPC status the edge answers a call with instead of an HTTP error `status`.
pub fn grpc_code(status: u16) -> u8 {
    match status {
        400 | 405 | 431 => 13, // INTERNAL: the call itself is malformed
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED: no route for the method
        408 | 504 => 4,        // DEADLINE_EXCEEDED
        413 | 429 => 8,        // RESOURCE_EXHAUSTED
        502 | 503 => 14,       // UNAVAILABLE
        _ if (400..500).contains(&status) => 9, // FAILED_PRECONDITION
        _ => 13,
    }
}

/// What the edge answers a gRPC call itself: HTTP 200 with the status in a trailers-only
/// answer (one HEADERS frame that ends the stream), `grpc-message` percent-encoded as the
/// gRPC spec asks, and the fields of every answer (the request id; on https HSTS, as on
/// every https answer, and `Alt-Svc`).
pub async fn grpc_answer(
    session: &mut impl Downstream,
    status: u16,
    message: &str,
    ctx: &RequestCtx,
) -> Result<()> {
    let mut head = ResponseHeader::build(200, Some(4))?;
    head.insert_header("content-type", "application/grpc")?;
    head.insert_header("grpc-status", grpc_code(status).to_string())?;
    head.insert_header("grpc-message", grpc_message(message))?;
    for (name, value) in edge_fields(ctx) {
        head.insert_header(name, value)?;
    }
    session.compression_off();
    session.write_head(Box::new(head), true).await
}

/// `message` as `grpc-message` carries it: bytes outside printable ASCII, and `%`,
/// percent-encoded.
fn grpc_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request refused by a rate-limit zone: the route's `limit_status`, `Retry-After` in whole
/// seconds (at least 1), and the zone's name in the body.
pub async fn rate_limited(
    session: &mut impl Downstream,
    route: &crate::snapshot::Route,
    zone: &str,
    retry_after: std::time::Duration,
    ctx: &RequestCtx,
) -> Result<()> {
    let request_id = ctx.request_id.as_str();
    let status = route.settings.limit_status;
    if ctx.grpc {
        let message = format!("rate limit of zone `{zone}` exceeded");
        return grpc_answer(session, 429, &message, ctx).await;
    }
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let body = serde_json::json!({
        "error": error_name(status),
        "status": status,
        "message": format!("rate limit of zone `{zone}` exceeded"),
        "zone": zone,
        "request_id": request_id,
    });
    let mut headers = ctx.https_fields();
    headers.push(("retry-after", seconds.max(1).to_string()));
    json_response(
        session,
        status,
        Bytes::from(body.to_string()),
        ctx,
        &headers,
    )
    .await
}

/// A whole HTTP/1.1 answer for a connection the edge closes after it, sent before any
/// request could be routed (a head it does not read, a client over its connection cap): the
/// JSON error with `error` as its name, a request id, HSTS on https, `Connection: close`.
pub fn closing_answer(
    status: u16,
    error: &str,
    message: &str,
    hsts: Option<&str>,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let request_id = crate::client::new_request_id();
    let body = serde_json::json!({
        "error": error,
        "status": status,
        "message": message,
        "request_id": request_id.as_str(),
    })
    .to_string();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-request-id: {request_id}\r\ncache-control: no-store\r\n",
        body.len()
    );
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(hsts) = hsts {
        out.push_str(&format!("strict-transport-security: {hsts}\r\n"));
    }
    out.push_str("connection: close\r\n\r\n");
    out.push_str(&body);
    out.into_bytes()
}

fn json_head(
    status: u16,
    body: &Bytes,
    request_id: &str,
    extra_headers: &[(&'static str, String)],
) -> Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("x-request-id", request_id)?;
    header.insert_header("cache-control", "no-store")?;
    for (name, value) in extra_headers {
        header.insert_header(*name, value.as_str())?;
    }
    Ok(header)
}

/// The edge's own answer goes out compressed only where an upstream's would be: the
/// `[gzip]` types, and no shorter than `min_length`.
async fn json_response(
    session: &mut impl Downstream,
    status: u16,
    body: Bytes,
    ctx: &RequestCtx,
    extra_headers: &[(&'static str, String)],
) -> Result<()> {
    let header = json_head(status, &body, &ctx.request_id, extra_headers)?;
    choose_compression(session, &header, ctx);
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_head(Box::new(header), head_only).await?;
    if !head_only {
        session.write_body(Some(body), true).await?;
    }
    Ok(())
}

/// 200 with the key authorization an ACME CA asked for (HTTP-01), as plain text.
pub async fn acme_http01(
    session: &mut impl Downstream,
    answer: String,
    request_id: &str,
) -> Result<()> {
    let mut header = ResponseHeader::build(200, Some(4))?;
    header.insert_header("content-type", "text/plain")?;
    header.insert_header("content-length", answer.len().to_string())?;
    header.insert_header("x-request-id", request_id)?;
    session.compression_off();
    session.write_head(Box::new(header), false).await?;
    session.write_body(Some(Bytes::from(answer)), true).await
}

/// 308 to `location`, the same URL on https.
pub async fn redirect_to_https(
    session: &mut impl Downstream,
    location: &str,
    request_id: &str,
) -> Result<()> {
    let mut header = ResponseHeader::build(308, Some(4))?;
    header.insert_header("location", location)?;
    header.insert_header("content-length", "0")?;
    header.insert_header("x-request-id", request_id)?;
    session.write_head(Box::new(header), true).await?;
    session.write_body(None, true).await
}

/// The fields the edge sets on every upstream response: its request id, and on https HSTS
/// and, while the QUIC listener is up, `Alt-Svc`.
pub fn edge_fields(ctx: &RequestCtx) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
    let hsts = ctx
        .hsts_header()
        .map(|v| (header::STRICT_TRANSPORT_SECURITY, v));
    let alt_svc = ctx
        .alt_svc()
        .map(|v| (header::ALT_SVC, HeaderValue::clone(&v)));
    std::iter::once((X_REQUEST_ID, ctx.request_id_value()))
        .chain(hsts)
        .chain(alt_svc)
}

/// Turns compression off for a response it does not suit ([`compress::wanted`]).
pub fn choose_compression(
    session: &mut impl Downstream,
    response: &ResponseHeader,
    ctx: &RequestCtx,
) {
    if !compress::wanted(&ctx.snapshot.config.gzip, response) {
        session.compression_off();
    }
}
