//! Request routing: `/health`, `/metrics`, WebSocket upgrades and the JSON echo with its knobs.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::Serialize;

use crate::ctx::{error, respond, Ctx, JSON};
use crate::health;
use crate::state::State;
use crate::ws;

/// Response header naming the instance that answered.
const SERVED_BY: &str = "x-served-by";
/// Longest `sleep_ms` accepted (ten minutes).
const MAX_SLEEP_MS: u64 = 600_000;
/// Largest `bytes` accepted (64 MiB).
const MAX_BYTES: usize = 64 << 20;

/// Answers one request; never fails, so the connection always gets a response.
pub(crate) async fn handle(
    ctx: Ctx,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let readable = matches!(method, Method::GET | Method::HEAD);
    // Probes (`/health`, `/metrics`) are answered but not counted as served requests.
    let (mut response, counted) = match path.as_str() {
        "/health" if readable => {
            let (status, body) = health::report(&ctx.state).await;
            (respond(status, JSON, body), false)
        }
        "/metrics" if readable => (metrics(&ctx.state), false),
        _ if ws::is_upgrade_request(&req) => (ws::upgrade(&ctx, req), true),
        _ => (echo(&ctx, req).await, true),
    };

    let spec = &ctx.state.spec;
    if let Ok(v) = HeaderValue::from_str(&spec.instance) {
        response.headers_mut().insert(SERVED_BY, v);
    }
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    if counted {
        ctx.state.count_request();
        ctx.state
            .metrics
            .observe(method.as_str(), status, elapsed.as_secs_f64());
    }
    tracing::info!(
        service = %spec.name,
        instance = %spec.instance,
        peer = %ctx.peer,
        method = %method,
        path = %path,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    Ok(response)
}

fn metrics(state: &State) -> Response<Full<Bytes>> {
    match state.metrics.render() {
        Ok(text) => respond(StatusCode::OK, "text/plain; version=0.0.4", text),
        Err(e) => {
            tracing::error!(error = %e, "metrics encoding failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed")
        }
    }
}

/// The echo knobs read from the query string.
#[derive(Debug, Default, PartialEq, Eq)]
struct EchoParams {
    sleep: Option<Duration>,
    status: Option<StatusCode>,
    bytes: Option<usize>,
    content_type: Option<String>,
}

impl EchoParams {
    fn parse(query: &str) -> Result<Self, String> {
        let mut params = Self::default();
        for (key, value) in query_pairs(query) {
            match key.as_str() {
                "sleep_ms" => {
                    let ms: u64 = number(&key, &value)?;
                    if ms > MAX_SLEEP_MS {
                        return Err(format!("sleep_ms must be at most {MAX_SLEEP_MS}"));
                    }
                    params.sleep = Some(Duration::from_millis(ms));
                }
                "status" => {
                    let code: u16 = number(&key, &value)?;
                    params.status = Some(
                        StatusCode::from_u16(code)
                            .ok()
                            .filter(|s| (200..=599).contains(&s.as_u16()))
                            .ok_or("status must be between 200 and 599")?,
                    );
                }
                "bytes" => {
                    let n: usize = number(&key, &value)?;
                    if n > MAX_BYTES {
                        return Err(format!("bytes must be at most {MAX_BYTES}"));
                    }
                    params.bytes = Some(n);
                }
                "type" => {
                    HeaderValue::from_str(&value)
                        .map_err(|_| "type is not a valid header value")?;
                    params.content_type = Some(value);
                }
                _ => {}
            }
        }
        Ok(params)
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{key} must be a non-negative integer, got {value:?}"))
}

/// The JSON document the echo answers with.
#[derive(Serialize)]
struct Echo<'a> {
    service: &'a str,
    instance: &'a str,
    method: &'a str,
    path: &'a str,
    query: &'a str,
    #[serde(serialize_with = "ordered_map")]
    headers: Vec<(String, String)>,
    body_bytes: u64,
}

fn ordered_map<S: serde::Serializer>(
    pairs: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

async fn echo(ctx: &Ctx, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, mut body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("");
    let params = match EchoParams::parse(query) {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };

    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(e) => {
                tracing::debug!(peer = %ctx.peer, error = %e, "reading request body failed");
                return error(StatusCode::BAD_REQUEST, "failed to read request body");
            }
        }
    }

    if let Some(delay) = params.sleep {
        tokio::time::sleep(delay).await;
    }

    let spec = &ctx.state.spec;
    let content = match params.bytes {
        Some(size) => padded(&spec.name, size),
        None => {
            let doc = Echo {
                service: &spec.name,
                instance: &spec.instance,
                method: parts.method.as_str(),
                path: parts.uri.path(),
                query,
                headers: header_pairs(&parts.headers),
                body_bytes,
            };
            match serde_json::to_vec(&doc) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "echo encoding failed");
                    return error(StatusCode::INTERNAL_SERVER_ERROR, "echo encoding failed");
                }
            }
        }
    };
    respond(
        params.status.unwrap_or(StatusCode::OK),
        params.content_type.as_deref().unwrap_or(JSON),
        content,
    )
}

/// Request headers as (lowercase name, value), repeated names joined with `", "`.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(headers.keys_len());
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match pairs.iter_mut().find(|(n, _)| n == name.as_str()) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            None => pairs.push((name.as_str().to_owned(), value.into_owned())),
        }
    }
    pairs
}

/// `{"service":"...","pad":"aaa..."}` of exactly `size` bytes, or the shortest such document
/// when `size` is smaller than that.
fn padded(service: &str, size: usize) -> Vec<u8> {
    let service = serde_json::Value::from(service).to_string();
    let head = format!("{{\"service\":{service},\"pad\":\"");
    let tail = "\"}";
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut out = Vec::with_capacity(head.len() + pad + tail.len());
    out.extend_from_slice(head.as_bytes());
    out.resize(head.len() + pad, b'a');
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Splits a query string into percent-decoded (key, value) pairs.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|s| !s.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` as space; malformed escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
                if let Some(b) = hex {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_echo_params() {
        let p = EchoParams::parse("sleep_ms=25&status=418&bytes=100&type=text%2Fplain&x=1")
            .expect("valid query");
        assert_eq!(
            p,
            EchoParams {
                sleep: Some(Duration::from_millis(25)),
                status: Some(StatusCode::IM_A_TEAPOT),
                bytes: Some(100),
                content_type: Some("text/plain".to_owned()),
            }
        );
        assert_eq!(EchoParams::parse(""), Ok(EchoParams::default()));
        assert!(EchoParams::parse("status=99").is_err());
        assert!(EchoParams::parse("status=abc").is_err());
        assert!(EchoParams::parse("sleep_ms=-1").is_err());
        assert!(EchoParams::parse("sleep_ms=600001").is_err());
        assert!(EchoParams::parse("bytes=999999999999").is_err());
    }

    #[test]
    fn padding_hits_the_exact_size() {
        for size in [40, 100, 1000, 65_536] {
            let body = padded("content-manager", size);
            assert_eq!(body.len(), size);
            let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert_eq!(v["service"], "content-manager");
        }
        let tiny = padded("content-manager", 1);
        assert!(serde_json::from_slice::<serde_json::Value>(&tiny).is_ok());
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("text%2Fplain"), "text/plain");
        assert_eq!(percent_decode("a+b%20c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn joins_repeated_headers() {
        let mut h = HeaderMap::new();
        h.append("X-A", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.append("Host", HeaderValue::from_static("example"));
        let pairs = header_pairs(&h);
        assert!(pairs.contains(&("x-a".to_owned(), "1, 2".to_owned())));
        assert!(pairs.contains(&("host".to_owned(), "example".to_owned())));
    }
}
