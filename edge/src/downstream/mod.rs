//! The client side of one request, as the request's phases ([`crate::proxy`],
//! [`crate::forward`], [`crate::respond`]) use it, whichever codec carries it: the edge's own
//! HTTP/1.1 server session ([`h1`]) for the common request, an HTTP/2 stream on pingora-core's
//! h2 codec ([`h2`]), or Pingora's session for what the own HTTP/1.1 one leaves to Pingora's
//! parser (bodies, upgrades, HTTP/1.0, anything unusual in a head).
//!
//! Static dispatch: each phase is generic over [`Downstream`], so no call on the request's
//! path is boxed.

pub mod clocks;
pub mod h1;
pub mod h2;

use bytes::Bytes;
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompression;
use pingora::prelude::*;
use pingora::protocols::http::compression::ResponseCompressionCtx;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::tls::SslDigest;
use pingora::proxy::Session;
use std::future::Future;
use std::net::IpAddr;

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
    /// While the server is answering: ends with an error when the client closes or its
    /// connection breaks, and never otherwise (bytes of a next request are kept for it).
    fn watch_idle(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Whether the rest of a request body the server did not wait for is read and dropped
    /// after the answer (HTTP/1's lingering close); an HTTP/2 stream is reset instead.
    fn lingers(&self) -> bool {
        true
    }
}

impl Downstream for Session {
    fn req_header(&self) -> &RequestHeader {
        self.as_downstream().req_header()
    }

    fn raw_head(&self) -> Option<Bytes> {
        self.as_http1().map(|h1| h1.get_headers_raw_bytes())
    }

    fn ssl_digest(&self) -> Option<&SslDigest> {
        self.digest().and_then(|d| d.ssl_digest.as_deref())
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        match self.client_addr() {
            Some(PingoraAddr::Inet(addr)) => Some(addr.ip()),
            _ => None,
        }
    }

    fn set_keepalive_off(&mut self) {
        self.set_keepalive(None);
    }

    fn is_upgrade_req(&self) -> bool {
        self.as_downstream().is_upgrade_req()
    }

    fn response_status(&self) -> Option<StatusCode> {
        self.response_written().map(|r| r.status)
    }

    fn body_bytes_sent(&self) -> usize {
        self.as_downstream().body_bytes_sent()
    }

    fn body_bytes_read(&self) -> usize {
        self.as_downstream().body_bytes_read()
    }

    fn compression_off(&mut self) {
        if let Some(c) = self.downstream_modules_ctx.get_mut::<ResponseCompression>() {
            c.adjust_level(0);
        }
    }

    fn is_body_empty(&mut self) -> bool {
        self.as_downstream_mut().is_body_empty()
    }

    async fn write_head(&mut self, head: Box<ResponseHeader>, end: bool) -> Result<()> {
        self.write_response_header(head, end).await
    }

    async fn write_body(&mut self, body: Option<Bytes>, end: bool) -> Result<()> {
        self.write_response_body(body, end).await
    }

    async fn write_continue(&mut self) -> Result<()> {
        self.as_downstream_mut().write_continue_response().await
    }

    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        self.as_downstream_mut().read_request_body().await
    }

    async fn watch_idle(&mut self) -> Result<()> {
        loop {
            self.as_downstream_mut().read_body_or_idle(true).await?;
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
            let accept = req.headers.get(http::header::ACCEPT_ENCODING);
            match accept.and_then(|v| crate::compress::preferred_codings(v.as_bytes())) {
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
