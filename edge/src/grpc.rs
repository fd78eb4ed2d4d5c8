//! What the edge reads of gRPC on the wire, wherever a call passes (the request path, the
//! client sessions, the upstream client, health probes): whether a request is a call, its
//! `grpc-timeout`, and a `grpc-status` field. A leaf: it imports nothing of the edge.

use http::HeaderMap;
use pingora::http::RequestHeader;
use std::time::Duration;

/// Whether the request is a gRPC call: `content-type: application/grpc`, or one of its
/// `+proto`/`+json` or parameterised forms, over HTTP/2 (gRPC needs trailers, which an
/// HTTP/1.1 request's answer cannot be relied on to carry; gRPC-Web is not gRPC).
pub fn is_call(req: &RequestHeader) -> bool {
    if req.version < http::Version::HTTP_2 {
        return false;
    }
    req.headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            let v = v.as_bytes();
            v.len() >= 16
                && v[..16].eq_ignore_ascii_case(b"application/grpc")
                && matches!(v.get(16), None | Some(b'+' | b';'))
        })
}

/// A call's `grpc-timeout` ("100m", "5S": digits and a unit of hours, minutes, seconds,
/// milliseconds, microseconds or nanoseconds).
pub fn timeout(req: &RequestHeader) -> Option<Duration> {
    let value = req.headers.get("grpc-timeout")?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A `grpc-status` field's code (in an answer's trailers, or a trailers-only head).
pub fn status(fields: &HeaderMap) -> Option<u8> {
    std::str::from_utf8(fields.get("grpc-status")?.as_bytes())
        .ok()?
        .parse()
        .ok()
}
