//! HTTP/3 from clients on the edge's own phases, on the h3 crate over quinn: each request
//! stream of a QUIC connection is a [`Session`] the request's phases run on as they run on an
//! HTTP/2 stream. The QUIC listener ([`crate::quic`]) accepts the connections and their
//! streams; this is one stream.
//!
//! The clocks: every write toward the client (a head, a piece of body, the end) may wait for
//! flow-control credit for `send_timeout` before the stream is reset (a client that never
//! reads, or never opens its window); a request body may pause for `client_body_timeout`.
//! QUIC has no socket to stall: the connection's idle timeout ends a client that went
//! silent.
//!
//! 0-RTT: a request that arrived before its connection's handshake completed came in early
//! data, which an attacker can replay; [`Session::early_data`] says so, and the request's
//! admission answers anything but a safe method 425 (RFC 8470).

use super::{Compressor, Downstream};
use bytes::{Buf, Bytes};
use h3::error::Code;
use h3::server::RequestStream;
use http::{HeaderMap, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::tls::SslDigest;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;

/// A request stream as h3 hands it over.
pub type Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// What the streams of one QUIC connection share.
pub struct Conn {
    pub ssl: Option<Arc<SslDigest>>,
    pub peer: Option<IpAddr>,
    /// The QUIC connection, to learn when it is gone.
    pub quic: quinn::Connection,
    /// Set once the handshake is complete: requests read before came in 0-RTT data.
    pub handshake_done: Arc<AtomicBool>,
    /// `send_timeout`: the longest a write may wait for flow-control credit.
    pub send_timeout: Duration,
    /// `client_body_timeout`: the longest a request body may pause.
    pub body_timeout: Duration,
}

/// The request body of a stream, read under `client_body_timeout`.
pub struct BodyStream {
    recv: RecvHalf,
    timeout: Duration,
    /// The first piece, read ahead to learn whether there is a body at all.
    ahead: Option<Bytes>,
    /// The body has ended (its stream's FIN is in).
    ended: bool,
    /// Bytes read so far.
    pub read: usize,
}

impl BodyStream {
    /// Whether the body is known to be empty: the stream's end is already in, with no data
    /// before it (a request without a body usually arrives with its end in one packet).
    fn peek_empty(&mut self) -> bool {
        if self.ended || self.ahead.is_some() {
            return self.ended && self.ahead.is_none();
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.recv.poll_recv_data(&mut cx) {
            Poll::Ready(Ok(Some(mut data))) => {
                self.ahead = Some(data.copy_to_bytes(data.remaining()));
                false
            }
            Poll::Ready(Ok(None)) => {
                self.ended = true;
                true
            }
            // An error is met again by the read that follows.
            Poll::Ready(Err(_)) | Poll::Pending => false,
        }
    }

    /// The next piece of the body, `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        if let Some(data) = self.ahead.take() {
            self.read += data.len();
            return Ok(Some(data));
        }
        if self.ended {
            return Ok(None);
        }
        let read =
            pingora::prelude::fast_timeout::fast_timeout(self.timeout, self.recv.recv_data()).await;
        match read {
            Ok(Ok(Some(mut data))) => {
                let data = data.copy_to_bytes(data.remaining());
                self.read += data.len();
                Ok(Some(data))
            }
            Ok(Ok(None)) => {
                self.ended = true;
                Ok(None)
            }
            Ok(Err(e)) => {
                Err(Error::because(ErrorType::ReadError, "reading the request body", e).into_down())
            }
            Err(_) => Error::e_explain(
                ErrorType::ReadTimedout,
                "client_body_timeout: the client sent no more of its request body",
            )
            .map_err(|e| e.into_down()),
        }
    }
}

/// One HTTP/3 request stream.
pub struct Session {
    req: Box<RequestHeader>,
    /// The request body; taken apart by [`Downstream::take_body`].
    body: Option<BodyStream>,
    send: SendHalf,
    conn: Arc<Conn>,
    /// The request came in 0-RTT data.
    early: bool,
    status: Option<StatusCode>,
    /// The final head has gone out.
    answering: bool,
    /// The response has ended (the stream's FIN is sent).
    ended: bool,
    body_sent: usize,
    compression: Compressor,
    grpc_status: Option<u8>,
}

impl Session {
    /// The session of a request whose head `request` arrived on `stream`.
    pub fn new(request: http::Request<()>, stream: Stream, conn: Arc<Conn>) -> Session {
        let early = !conn.handshake_done.load(Ordering::Acquire);
        let (parts, ()) = request.into_parts();
        let mut req = RequestHeader::from(parts);
        req.set_version(http::Version::HTTP_3);
        let (send, recv) = stream.split();
        Session {
            req: Box::new(req),
            body: Some(BodyStream {
                recv,
                timeout: conn.body_timeout,
                ahead: None,
                ended: false,
                read: 0,
            }),
            send,
            conn,
            early,
            status: None,
            answering: false,
            ended: false,
            body_sent: 0,
            compression: Compressor::default(),
            grpc_status: None,
        }
    }

    /// Ends the stream: `whole`, after its answer (the FIN, if it has not gone yet);
    /// otherwise it is reset, so that a body cut short is never taken for a whole one.
    pub async fn finish(mut self, whole: bool) {
        if self.ended {
            return;
        }
        if whole && self.answering {
            if let Err(e) = self.write(|s| s.finish()).await {
                tracing::debug!(error = %e, "ending an HTTP/3 stream");
            }
        } else {
            self.send.stop_stream(Code::H3_INTERNAL_ERROR);
        }
        if let Some(body) = &mut self.body {
            if !body.ended {
                body.recv.stop_sending(Code::H3_NO_ERROR);
            }
        }
    }

    /// One write toward the client, waiting at most `send_timeout` for flow-control credit;
    /// the stream is reset when it runs out.
    async fn write<'a, F, Fut>(&'a mut self, op: F) -> Result<()>
    where
        F: FnOnce(&'a mut SendHalf) -> Fut,
        Fut: Future<Output = std::result::Result<(), h3::error::StreamError>> + 'a,
    {
        let timeout = self.conn.send_timeout;
        match pingora::prelude::fast_timeout::fast_timeout(timeout, op(&mut self.send)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                Err(Error::because(ErrorType::WriteError, "writing to the client", e).into_down())
            }
            Err(_) => Error::e_explain(
                ErrorType::WriteTimedout,
                "send_timeout: the client took none of the response in time",
            )
            .map_err(|e| e.into_down()),
        }
    }

    async fn send_data(&mut self, data: Bytes, end: bool) -> Result<()> {
        if !data.is_empty() {
            let len = data.len();
            let sent = self.write(|s| s.send_data(data)).await;
            if sent.is_err() {
                self.send.stop_stream(Code::H3_REQUEST_CANCELLED);
                self.ended = true;
            }
            sent?;
            self.body_sent += len;
        }
        if end {
            self.ended = true;
            self.write(|s| s.finish()).await?;
        }
        Ok(())
    }
}

impl Downstream for Session {
    fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    fn raw_head(&self) -> Option<Bytes> {
        None
    }

    fn ssl_digest(&self) -> Option<&SslDigest> {
        self.conn.ssl.as_deref()
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.conn.peer
    }

    /// The connection's other streams go on: nothing to do for one stream.
    fn set_keepalive_off(&mut self) {}

    fn is_upgrade_req(&self) -> bool {
        false
    }

    fn response_status(&self) -> Option<StatusCode> {
        self.status
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }

    fn body_bytes_read(&self) -> usize {
        self.body.as_ref().map_or(0, |b| b.read)
    }

    fn compress(&mut self, level: u32) {
        self.compression = Compressor::new(level, &self.req);
    }

    fn compression_off(&mut self) {
        self.compression.off();
    }

    fn is_body_empty(&mut self) -> bool {
        self.body.as_mut().is_none_or(|b| b.peek_empty())
    }

    fn early_data(&self) -> bool {
        self.early
    }

    async fn write_head(&mut self, mut head: Box<ResponseHeader>, end: bool) -> Result<()> {
        if self.answering || self.ended {
            return Ok(());
        }
        let status = head.status;
        if status.is_informational() {
            // 103 Early Hints and the like; 101 has no meaning in HTTP/3.
            if status != StatusCode::SWITCHING_PROTOCOLS {
                let head = super::multiplexed_response(head, http::Version::HTTP_3);
                self.write(|s| s.send_response(head)).await?;
                self.status = Some(status);
            }
            return Ok(());
        }
        self.compression.head(&mut head, end);
        if end {
            self.grpc_status = crate::grpc::status(&head.headers);
        }
        let head = super::multiplexed_response(head, http::Version::HTTP_3);
        self.write(|s| s.send_response(head)).await?;
        self.status = Some(status);
        self.answering = true;
        if end {
            self.ended = true;
            self.write(|s| s.finish()).await?;
        }
        Ok(())
    }

    async fn write_body(&mut self, body: Option<Bytes>, end: bool) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        if !self.answering {
            return Error::e_explain(ErrorType::InternalError, "a body before its head");
        }
        let data = self.compression.body(body, end).unwrap_or_default();
        if data.is_empty() && !end {
            return Ok(());
        }
        self.send_data(data, end).await
    }

    async fn write_trailers(&mut self, trailers: HeaderMap) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        if !self.answering {
            return Error::e_explain(ErrorType::InternalError, "trailers before a head");
        }
        // What the compressor still holds goes before the trailers.
        let tail = self.compression.body(None, true).unwrap_or_default();
        self.send_data(tail, false).await?;
        self.grpc_status = crate::grpc::status(&trailers);
        self.write(|s| s.send_trailers(trailers)).await?;
        self.ended = true;
        self.write(|s| s.finish()).await
    }

    async fn write_continue(&mut self) -> Result<()> {
        let mut head = http::Response::new(());
        *head.status_mut() = StatusCode::CONTINUE;
        self.write(|s| s.send_response(head)).await
    }

    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match self.body.as_mut() {
            Some(body) => body.next().await,
            None => Ok(None),
        }
    }

    fn grpc_status(&self) -> Option<u8> {
        self.grpc_status
    }

    fn take_body(&mut self) -> Option<super::TakenBody> {
        self.body.take().map(|b| super::TakenBody::H3(Box::new(b)))
    }

    async fn watch_idle(&mut self) -> Result<()> {
        // Ends when the client's connection goes: the client left. (A client that cancels
        // one stream is seen by the next write, which fails.)
        let closed = self.conn.quic.closed().await;
        Error::e_explain(
            ErrorType::ConnectionClosed,
            format!("the client's QUIC connection ended ({closed})"),
        )
        .map_err(|e| e.into_down())
    }
}
