//! What every request handler gets (the service's state, the client, the shutdown signal),
//! and the plain answers they all give.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::sync::watch;

use crate::state::State;

pub(crate) const JSON: &str = "application/json";

/// What each request handler gets: the service's state, the client, and the shutdown signal.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) state: Arc<State>,
    pub(crate) peer: SocketAddr,
    pub(crate) stop: watch::Receiver<bool>,
}

/// A response with a body and content type.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let content_type = HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

/// A JSON `{"error": ...}` response.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    respond(status, JSON, body)
}
