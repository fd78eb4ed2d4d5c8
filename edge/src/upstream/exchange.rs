//! One request and its answer on a server, whichever protocol the connection speaks: the
//! calls the request path makes once the request's head is out (the rest of its body, the
//! answer's head, body and trailers) on an HTTP/1.1 exchange ([`super::h1`]) or an HTTP/2
//! stream ([`super::h2`]).

use super::h1::{self, Response};
use super::h2;
use bytes::Bytes;
use http::HeaderMap;
use pingora::Result;

/// A request in flight on a server. Unboxed although an HTTP/1.1 exchange is twice an HTTP/2
/// one: it is the usual one, and lives in the request's own future (boxed once per request).
#[allow(clippy::large_enum_variant)]
pub enum Exchange {
    H1(h1::Exchange),
    H2(h2::Exchange),
}

impl Exchange {
    /// The protocol, as the access log and `/status` name it.
    pub fn protocol(&self) -> &'static str {
        match self {
            Exchange::H1(_) => "HTTP/1.1",
            Exchange::H2(_) => "HTTP/2",
        }
    }

    /// Sends a piece of the request body.
    pub async fn write_body(&mut self, bytes: &Bytes) -> Result<()> {
        match self {
            Exchange::H1(up) => up.write_body(bytes).await,
            Exchange::H2(up) => up.write_body(bytes.clone(), false).await,
        }
    }

    /// Ends the request body.
    pub async fn finish_body(&mut self) -> Result<()> {
        match self {
            Exchange::H1(up) => up.finish_body().await,
            Exchange::H2(up) => up.finish_body(None),
        }
    }

    /// The next head of the answer: an informational one, or the final one.
    pub async fn read_response(&mut self) -> Result<Response> {
        match self {
            Exchange::H1(up) => up.read_response().await,
            Exchange::H2(up) => up.read_response().await,
        }
    }

    /// Whether the answer's body has been read to its end.
    pub fn is_body_done(&self) -> bool {
        match self {
            Exchange::H1(up) => up.is_body_done(),
            Exchange::H2(up) => up.is_body_done(),
        }
    }

    /// The next piece of the answer's body, `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Exchange::H1(up) => up.read_body().await,
            Exchange::H2(up) => up.read_body().await,
        }
    }

    /// The answer's trailer fields, once, after its body.
    pub fn take_trailers(&mut self) -> Option<HeaderMap> {
        match self {
            Exchange::H1(up) => up.take_trailers(),
            Exchange::H2(up) => up.take_trailers(),
        }
    }
}
