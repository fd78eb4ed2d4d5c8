//! The client side of one request, as the request's phases ([`crate::proxy`],
//! [`crate::forward`], [`crate::respond`]) use it, whichever protocol carries it: an HTTP/1
//! request on the edge's HTTP/1 session ([`h1`]), an HTTP/2 stream ([`h2`], on the h2
//! crate), or an HTTP/3 stream ([`h3`], on the h3 crate over quinn). The phases are written once against [`Downstream`]; the sessions differ in what
//! they read and write, and share the connection's clocks ([`clocks`]).
//!
//! Static dispatch: each phase is generic over [`Downstream`], so no call on the request's
//! path is boxed.

pub mod clocks;
pub mod h1;
pub mod h2;
pub mod h3;

use bytes::Bytes;
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::compression::ResponseCompressionCtx;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::Stream;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Fields that concern only an HTTP/1.1 connection and are malformed in HTTP/2 and HTTP/3
/// (RFC 9113 8.2.2, RFC 9114 4.2).
fn connection_specific(name: &http::HeaderName) -> bool {
    *name == http::header::CONNECTION
        || *name == http::header::TRANSFER_ENCODING
        || *name == http::header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// A response head as an HTTP/2 or HTTP/3 stream sends it (`version`): without HTTP/1.1's
/// connection fields; a final head with the edge's `Date`, as on HTTP/1.1.
fn multiplexed_response(head: Box<ResponseHeader>, version: http::Version) -> http::Response<()> {
    let parts: Box<http::response::Parts> = head.into();
    let mut parts = *parts;
    let names: Vec<http::HeaderName> = parts
        .headers
        .keys()
        .filter(|name| connection_specific(name))
        .cloned()
        .collect();
    for name in names {
        parts.headers.remove(name);
    }
    if !parts.status.is_informational() {
        parts.headers.insert(
            http::header::DATE,
            pingora::protocols::http::date::get_cached_date(),
        );
    }
    // A request id is new in every answer: entered in the connection's header table (HPACK's
    // dynamic table, which the h2 crate fills with every field it sends), it would push out
    // the fields that repeat (the content type, HSTS, alt-svc), which would then be sent and
    // entered again. Sent as never indexed, the table keeps what repeats, as nginx's and
    // HAProxy's encoders keep unique values out of it.
    if let Some(id) = parts.headers.get_mut(crate::ctx::X_REQUEST_ID) {
        id.set_sensitive(true);
    }
    parts.version = version;
    http::Response::from_parts(parts, ())
}

/// What the request's phases need of the client side.
pub trait Downstream: Send {
    /// The request head.
    fn req_header(&self) -> &RequestHeader;
    /// The head as it arrived (HTTP/1), for the size and framing checks.
    fn raw_head(&self) -> Option<Bytes>;
    /// The TLS connection's digest, if the client came over TLS.
    fn ssl_digest(&self) -> Option<&SslDigest>;
    /// The socket peer's address.
    fn peer_ip(&self) -> Option<IpAddr>;
    /// No further request on this connection after this one.
    fn set_keepalive_off(&mut self);
    /// Whether the request asks for a protocol upgrade (HTTP/1.1 `Upgrade`).
    fn is_upgrade_req(&self) -> bool;
    /// The status of the response head sent so far, if any (the last informational one
    /// until the final one is sent).
    fn response_status(&self) -> Option<StatusCode>;
    /// Response body bytes sent (before any transfer coding).
    fn body_bytes_sent(&self) -> usize;
    /// Request body bytes read so far.
    fn body_bytes_read(&self) -> usize;
    /// Compresses the response at `level` (0: not at all) in the coding the client prefers.
    fn compress(&mut self, level: u32);
    /// Turns compression off for this response.
    fn compression_off(&mut self);
    /// Whether the request has no body at all.
    fn is_body_empty(&mut self) -> bool;

    /// Sends a response head; `end`: no body follows.
    fn write_head(
        &mut self,
        head: Box<ResponseHeader>,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Sends a piece of the response body; `end`: it is the last.
    fn write_body(
        &mut self,
        body: Option<Bytes>,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Ends the response with trailer fields where the client can take them (HTTP/2; an
    /// HTTP/1.1 client that sent `TE: trailers` and gets a chunked body); elsewhere they are
    /// dropped and the body simply ends.
    fn write_trailers(
        &mut self,
        trailers: http::HeaderMap,
    ) -> impl Future<Output = Result<()>> + Send {
        drop(trailers);
        self.write_body(None, true)
    }
    /// `100 Continue`, before the edge reads a body the client waits to send.
    fn write_continue(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// The next piece of the request body; `None` at its end.
    fn read_body(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send;
    /// The `grpc-status` the answer carried (in its trailers, or a trailers-only head).
    fn grpc_status(&self) -> Option<u8> {
        None
    }
    /// The request body apart from the session, for a request whose body goes up while its
    /// answer comes down (gRPC's streams); `None` where one session cannot do both at once
    /// (HTTP/1.1), or the body was taken already.
    fn take_body(&mut self) -> Option<TakenBody> {
        None
    }
    /// Whether the request came in TLS early data (0-RTT), which can be replayed.
    fn early_data(&self) -> bool {
        false
    }
    /// While the server is answering: ends with an error when the client closes or its
    /// connection breaks, and never otherwise (bytes of a next request are kept for it).
    fn watch_idle(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// After a 101 was sent: relays between the client and `upstream` (`from_upstream`
    /// first: what the server sent after its head) until either closes or a direction is
    /// quiet for `idle`. Only an HTTP/1.1 session that asked for an upgrade has one.
    fn tunnel(
        &mut self,
        upstream: Stream,
        from_upstream: Bytes,
        idle: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (upstream, from_upstream, idle);
        async {
            Error::e_explain(
                ErrorType::InternalError,
                "an upgrade on a session that takes none",
            )
        }
    }
}

/// A request body taken apart from its session ([`Downstream::take_body`]).
pub enum TakenBody {
    H2(h2::BodyStream),
    /// Boxed: the h3 stream's state is six times the h2 one's.
    H3(Box<h3::BodyStream>),
}

impl TakenBody {
    /// The next piece of the body, `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        match self {
            TakenBody::H2(body) => body.next().await,
            TakenBody::H3(body) => body.next().await,
        }
    }

    /// Bytes read so far.
    pub fn read(&self) -> usize {
        match self {
            TakenBody::H2(body) => body.read,
            TakenBody::H3(body) => body.read,
        }
    }
}

/// Pingora's response compressor as the edge's own sessions drive it: off until
/// [`Compressor::new`] is given a level, in the coding the client prefers.
#[derive(Default)]
pub struct Compressor(Option<ResponseCompressionCtx>);

impl Compressor {
    /// Compression at `level` (0: none) for the client that sent `req`.
    pub fn new(level: u32, req: &RequestHeader) -> Compressor {
        Compressor((level > 0).then(|| {
            let mut c = ResponseCompressionCtx::new(level, false, false);
            let Some(accept) = req.headers.get(http::header::ACCEPT_ENCODING) else {
                // No coding asked for: the compressor's list stays empty (it still says
                // `Vary: Accept-Encoding` on an answer it would have compressed).
                return c;
            };
            match crate::compress::preferred_codings(accept.as_bytes()) {
                None => c.request_filter(req),
                // Weights or `*`: the compressor is given the codings in the client's order
                // of preference, without those it refused.
                Some(list) => {
                    if let Ok(mut plain) = RequestHeader::build("GET", b"/", Some(1)) {
                        if !list.is_empty()
                            && plain
                                .insert_header(http::header::ACCEPT_ENCODING, list)
                                .is_ok()
                        {
                            c.request_filter(&plain);
                        }
                    }
                }
            }
            c
        }))
    }

    /// No compression for this response after all.
    pub fn off(&mut self) {
        if let Some(c) = &mut self.0 {
            c.adjust_level(0);
        }
    }

    /// Decides from the final head whether (and how) its body is compressed, and says so in it.
    pub fn head(&mut self, head: &mut ResponseHeader, end: bool) {
        if let Some(c) = &mut self.0 {
            c.response_header_filter(head, end);
        }
    }

    /// A piece of the body as it goes to the client.
    pub fn body(&mut self, body: Option<Bytes>, end: bool) -> Option<Bytes> {
        match self.0.as_mut().filter(|c| c.is_enabled()) {
            Some(c) => c.response_body_filter(body.as_ref(), end).or(body),
            None => body,
        }
    }
}

// Streams in flight on a multiplexed connection (HTTP/2, HTTP/3), for its idle clock.

/// The streams of a connection being served, and a wake-up for when there are none.
#[derive(Default)]
pub struct Active {
    count: AtomicUsize,
    none: Notify,
}

/// Held by a stream's task for as long as it runs.
pub struct StreamGuard(Arc<Active>);

impl StreamGuard {
    /// Counts a new stream in `active` for as long as the guard lives.
    pub fn of(active: &Arc<Active>) -> StreamGuard {
        active.count.fetch_add(1, Ordering::AcqRel);
        StreamGuard(active.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none.notify_waiters();
        }
    }
}

/// Ends once the connection has had no stream for `idle` (nginx closes an idle HTTP/2
/// connection after keepalive_timeout too).
pub async fn idle_for(active: &Active, idle: Duration) {
    loop {
        loop {
            let none = active.none.notified();
            if active.count.load(Ordering::Acquire) == 0 {
                break;
            }
            none.await;
        }
        tokio::time::sleep(idle).await;
        if active.count.load(Ordering::Acquire) == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_the_edge_would_compress_varies_on_accept_encoding_whatever_was_asked() {
        let answer = || {
            let mut head = ResponseHeader::build(200, None).expect("head");
            head.insert_header("content-type", "application/json")
                .expect("type");
            head
        };
        let request = |accept: Option<&str>| {
            let mut req = RequestHeader::build("GET", b"/", None).expect("request");
            if let Some(accept) = accept {
                req.insert_header("accept-encoding", accept)
                    .expect("accept");
            }
            req
        };
        for accept in [None, Some("gzip"), Some("br;q=0, gzip;q=0.5")] {
            let mut compressor = Compressor::new(6, &request(accept));
            let mut head = answer();
            compressor.head(&mut head, false);
            let vary = head.headers.get("vary").map(|v| v.to_str().expect("text"));
            assert!(
                vary.is_some_and(|v| v.eq_ignore_ascii_case("accept-encoding")),
                "{accept:?}: {vary:?}"
            );
            let coded = head.headers.get("content-encoding").is_some();
            assert_eq!(coded, accept.is_some(), "{accept:?}");
            let body = compressor.body(Some(Bytes::from_static(b"{}")), true);
            if accept.is_none() {
                assert_eq!(body.as_deref(), Some(&b"{}"[..]), "passed as it is");
            }
        }
    }

    #[test]
    fn a_multiplexed_answer_sends_its_request_id_never_indexed_and_no_connection_fields() {
        let mut head = ResponseHeader::build(200, None).expect("head");
        head.insert_header("x-request-id", "0123456789abcdef")
            .expect("id");
        head.insert_header("content-type", "application/json")
            .expect("type");
        head.insert_header("connection", "keep-alive")
            .expect("connection");
        let response = multiplexed_response(Box::new(head), http::Version::HTTP_2);
        let headers = response.headers();
        assert!(headers["x-request-id"].is_sensitive());
        assert!(!headers["content-type"].is_sensitive());
        assert!(headers.get("connection").is_none());
        assert!(headers.get(http::header::DATE).is_some());
    }
}
