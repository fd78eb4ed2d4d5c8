//! Responses the edge makes itself: small JSON bodies for 404/403/413/502..., and redirects.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// The short machine-readable name of an error status.
pub fn error_name(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        403 => "forbidden",
        404 => "not_found",
        408 => "request_timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
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

/// Writes a complete JSON error response.
pub async fn json_error(
    session: &mut Session,
    status: u16,
    message: &str,
    request_id: &str,
    extra_headers: &[(&'static str, String)],
) -> Result<()> {
    let body = error_body(status, message, request_id);
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("x-request-id", request_id)?;
    header.insert_header("cache-control", "no-store")?;
    for (name, value) in extra_headers {
        header.insert_header(*name, value.as_str())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// 308 to the same URL on https.
pub async fn redirect_to_https(session: &mut Session, host: &str, request_id: &str) -> Result<()> {
    let target = session
        .req_header()
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str());
    let location = format!("https://{host}{target}");
    let mut header = ResponseHeader::build(308, Some(4))?;
    header.insert_header("location", location)?;
    header.insert_header("content-length", "0")?;
    header.insert_header("x-request-id", request_id)?;
    session.write_response_header(Box::new(header), true).await
}
