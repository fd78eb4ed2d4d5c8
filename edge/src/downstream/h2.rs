//! HTTP/2 from clients on the edge's own phases, on the h2 crate: [`serve_connection`]
//! accepts a connection's streams, and each stream is a [`Session`] the request's phases run
//! on as they run on an HTTP/1.1 one. Compression is Pingora's compressor, driven here, as on
//! the own HTTP/1.1 session.
//!
//! The clocks are the same three as on HTTP/1.1: a connection must send its preface and its
//! first request within `client_header_timeout` of the accept; a request body may pause for
//! `client_body_timeout`; a stream may wait for flow-control window (its own or the
//! connection's) for `send_timeout` before it is reset, and the connection's socket writes
//! run under the send clock of the stream beneath ([`super::clocks`]), so a client that stops
//! reading its socket loses the connection. A connection with no stream for
//! `keepalive_timeout` is closed.
//!
//! What h2 bounds itself: concurrent streams (`http2_max_concurrent_streams`), the request
//! head (`max_header_size`, across CONTINUATION frames: an over-large one is answered 431,
//! and a header block in more frames than that size needs ends the connection), streams reset
//! before they were served (rapid reset, GOAWAY ENHANCE_YOUR_CALM), and the response bytes a
//! stream may queue ahead of the socket.

use super::clocks::Clocks;
use super::{idle_for, Active, Compressor, Downstream, StreamGuard};
use crate::window::{self, Stalled};
use ::h2::server::{Connection, SendResponse};
use ::h2::{RecvStream, SendStream};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Response bytes one stream may have queued in h2 ahead of the socket (h2's default is
/// 400 KiB): with 128 streams, a connection whose client stopped reading holds at most 8 MiB
/// until `send_timeout` ends it.
const MAX_SEND_BUFFER: usize = 64 * 1024;

/// Streams reset by the client before they were served that a connection may have at once
/// (h2's rapid-reset guard): more, and it gets GOAWAY ENHANCE_YOUR_CALM.
const MAX_PENDING_RESETS: usize = 20;

/// What the streams of one connection share: who the client is, and the connection's clocks.
pub struct Conn {
    pub ssl: Option<Arc<SslDigest>>,
    pub peer: Option<IpAddr>,
    pub clocks: Arc<Clocks>,
    /// `send_timeout`: the longest a stream waits for flow-control window.
    pub send_timeout: Duration,
    /// `client_body_timeout`: the longest a request body may pause.
    pub body_timeout: Duration,
}

/// A connection's limits, from `[edge]` when it was accepted.
pub struct Limits {
    /// `http2_max_concurrent_streams`.
    pub max_concurrent_streams: u32,
    /// `max_header_size`: the largest request head, decoded.
    pub max_header_list_size: u32,
    /// `keepalive_timeout`: how long a connection may have no stream in flight.
    pub idle: Duration,
}

/// How a connection's accept loop ended, for the caller to count.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The client closed it, the connection failed, or a shutdown drained it.
    Closed,
    /// No preface, or no first stream, within `client_header_timeout` of the accept.
    HeaderTimeout,
    /// No stream in flight for `keepalive_timeout`.
    Idle,
}

/// Serves an HTTP/2 connection: its handshake and first stream due by `first_stream_by`, then
/// each request stream handed to `serve` with a guard its task holds (the task runs it:
/// streams of one connection run at once) until the client closes, the connection fails, it
/// has had no stream for `limits.idle`, or a shutdown has drained it (GOAWAY, then the
/// streams already open are served to their end).
pub async fn serve_connection(
    stream: Stream,
    conn: Arc<Conn>,
    limits: &Limits,
    first_stream_by: tokio::time::Instant,
    shutdown: &ShutdownWatch,
    mut serve: impl FnMut(Session, StreamGuard),
) -> Ended {
    let mut builder = ::h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_send_buffer_size(MAX_SEND_BUFFER);
    let mut connection: Connection<Stream, Bytes> =
        match tokio::time::timeout_at(first_stream_by, builder.handshake(stream)).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "HTTP/2 handshake failed");
                return Ended::Closed;
            }
            Err(_) => return Ended::HeaderTimeout,
        };
    let mut shutdown = shutdown.clone();
    let mut draining = *shutdown.borrow();
    if draining {
        connection.graceful_shutdown();
    }
    let active = Arc::new(Active::default());
    let mut first = true;
    loop {
        let accepted = tokio::select! {
            biased;
            changed = shutdown.changed(), if !draining => {
                if changed.is_err() || *shutdown.borrow() {
                    // GOAWAY; the accept below drives the open streams to their end.
                    connection.graceful_shutdown();
                    draining = true;
                }
                continue;
            }
            // Cancel-safe: the accept is made again on the next turn.
            accepted = connection.accept() => accepted,
            () = tokio::time::sleep_until(first_stream_by), if first && !draining => {
                go_away(&mut connection).await;
                return Ended::HeaderTimeout;
            }
            // Nothing in flight for that long.
            () = idle_for(&active, limits.idle), if !first => {
                go_away(&mut connection).await;
                return Ended::Idle;
            }
        };
        match accepted {
            Some(Ok((request, respond))) => {
                first = false;
                serve(
                    Session::new(request, respond, conn.clone()),
                    StreamGuard::of(&active),
                );
            }
            None => return Ended::Closed,
            // Mostly a client that closed its socket without a GOAWAY, or one that stopped
            // reading it (the send clock).
            Some(Err(e)) => {
                tracing::debug!(error = %e, "HTTP/2 connection ended");
                return Ended::Closed;
            }
        }
    }
}

/// Ends a connection the edge closes (no first stream in time, or none in flight for
/// `keepalive_timeout`) with a GOAWAY naming the last stream it took, as RFC 9113 6.8 asks and
/// nginx does: a client whose request crosses the close learns that it was not taken, and
/// may send it again. The GOAWAY is written and the connection ends with it, without waiting
/// on the client; one that does not take it is left after [`GOAWAY_WAIT`] (the socket's own
/// send clock bounds a write too).
async fn go_away(connection: &mut Connection<Stream, Bytes>) {
    connection.abrupt_shutdown(::h2::Reason::NO_ERROR);
    let flushed = async {
        // Streams above the last one are refused by the GOAWAY; `None` once it is out.
        while let Some(Ok(_)) = connection.accept().await {}
    };
    let _ = tokio::time::timeout(GOAWAY_WAIT, flushed).await;
}

/// How long an ending connection's GOAWAY may take to go out.
const GOAWAY_WAIT: Duration = Duration::from_secs(1);

/// The request body of a stream, read under `client_body_timeout` (each read may wait that
/// long); the window is opened again as the edge takes the bytes.
pub struct BodyStream {
    body: RecvStream,
    timeout: Duration,
    /// Bytes read so far.
    pub read: usize,
}

impl BodyStream {
    /// The next piece of the body, `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>> {
        let read =
            pingora::prelude::fast_timeout::fast_timeout(self.timeout, self.body.data()).await;
        match read {
            Ok(Some(Ok(data))) => {
                let _ = self.body.flow_control().release_capacity(data.len());
                self.read += data.len();
                Ok(Some(data))
            }
            Ok(None) => Ok(None),
            Ok(Some(Err(e))) => {
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

/// One HTTP/2 request stream.
pub struct Session {
    req: Box<RequestHeader>,
    /// The request body; taken apart by [`Downstream::take_body`].
    body: Option<BodyStream>,
    respond: SendResponse<Bytes>,
    /// The response body's stream, once the final head is sent.
    send: Option<SendStream<Bytes>>,
    conn: Arc<Conn>,
    status: Option<StatusCode>,
    /// The response has ended (its last frame carried END_STREAM).
    ended: bool,
    body_read: usize,
    body_sent: usize,
    compression: Compressor,
    /// The `grpc-status` the answer carried.
    grpc_status: Option<u8>,
}

impl Session {
    fn new(
        request: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
        conn: Arc<Conn>,
    ) -> Session {
        let (parts, body) = request.into_parts();
        Session {
            req: Box::new(RequestHeader::from(parts)),
            body: Some(BodyStream {
                body,
                timeout: conn.body_timeout,
                read: 0,
            }),
            respond,
            send: None,
            conn,
            status: None,
            ended: false,
            body_read: 0,
            body_sent: 0,
            compression: Compressor::default(),
            grpc_status: None,
        }
    }

    /// Ends the stream: `whole`, after its answer; otherwise (or with no answer at all) it is
    /// reset, so that a body cut short (its server failed or went silent, or the client
    /// stopped taking it) is never taken for a whole one.
    pub fn finish(mut self, whole: bool) {
        if self.ended {
            return;
        }
        match (&mut self.send, whole) {
            (Some(send), true) => {
                if let Err(e) = send.send_data(Bytes::new(), true) {
                    tracing::debug!(error = %e, "ending an HTTP/2 stream");
                }
            }
            (Some(send), false) => send.send_reset(::h2::Reason::INTERNAL_ERROR),
            (None, _) => self.respond.send_reset(::h2::Reason::INTERNAL_ERROR),
        }
    }

    /// An h2 error on the client's stream: the client left (a reset, the connection gone), or
    /// the connection's send clock ran out under it.
    fn gone(&self, e: ::h2::Error, what: &'static str) -> Box<Error> {
        let etype = if self.conn.clocks.send_timed_out() {
            ErrorType::WriteTimedout
        } else {
            ErrorType::WriteError
        };
        Error::because(etype, what, e).into_down()
    }

    /// A broken request body: the client left, or the send clock ran out under it.
    fn gone_read(&self, e: Box<Error>) -> Box<Error> {
        if self.conn.clocks.send_timed_out() {
            Error::because(ErrorType::WriteTimedout, "reading the request body", e).into_down()
        } else {
            e
        }
    }

    /// Sends `data` as the window lets it: each wait for window is bounded by `send_timeout`
    /// (a stream whose client never opens its window is given up).
    async fn send_data(&mut self, data: Bytes, end: bool) -> Result<()> {
        let conn = &self.conn;
        let Some(send) = self.send.as_mut() else {
            return Error::e_explain(ErrorType::InternalError, "a body before its head");
        };
        let what = if data.is_empty() {
            "ending the response body"
        } else {
            "writing the response body"
        };
        // Counted as it goes: a client that resets the stream mid-body got what went before.
        let sent = window::send(
            send,
            data,
            end,
            conn.send_timeout,
            || conn.clocks.send_timed_out(),
            &mut self.body_sent,
        )
        .await;
        match sent {
            Ok(()) => Ok(()),
            Err(Stalled::H2(e)) => Err(self.gone(e, what)),
            Err(Stalled::Closed) => {
                Error::e_explain(ErrorType::WriteError, "the HTTP/2 stream closed")
                    .map_err(|e| e.into_down())
            }
            // The connection is gone under the stream (its send clock), or the client
            // opened no window in time.
            Err(Stalled::TimedOut) => Error::e_explain(
                ErrorType::WriteTimedout,
                if self.conn.clocks.send_timed_out() {
                    "send_timeout on the connection"
                } else {
                    "send_timeout: the client opened no flow-control window in time"
                },
            )
            .map_err(|e| e.into_down()),
        }
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
        self.body_read
    }

    fn compress(&mut self, level: u32) {
        self.compression = Compressor::new(level, &self.req);
    }

    fn compression_off(&mut self) {
        self.compression.off();
    }

    fn is_body_empty(&mut self) -> bool {
        self.body.as_ref().is_none_or(|b| b.body.is_end_stream())
    }

    async fn write_head(&mut self, mut head: Box<ResponseHeader>, end: bool) -> Result<()> {
        if self.send.is_some() || self.ended {
            return Ok(());
        }
        let status = head.status;
        if status.is_informational() {
            // 103 Early Hints and the like; 101 has no meaning in HTTP/2.
            if status != StatusCode::SWITCHING_PROTOCOLS {
                self.respond
                    .send_informational(super::multiplexed_response(head, http::Version::HTTP_2))
                    .map_err(|e| self.gone(e, "writing an informational head"))?;
                self.status = Some(status);
            }
            return Ok(());
        }
        self.compression.head(&mut head, end);
        if end {
            self.grpc_status = crate::grpc::status(&head.headers);
        }
        let send = self
            .respond
            .send_response(
                super::multiplexed_response(head, http::Version::HTTP_2),
                end,
            )
            .map_err(|e| self.gone(e, "writing the response head"))?;
        self.status = Some(status);
        self.send = Some(send);
        self.ended = end;
        Ok(())
    }

    async fn write_body(&mut self, body: Option<Bytes>, end: bool) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        let data = self.compression.body(body, end).unwrap_or_default();
        if data.is_empty() && !end {
            return Ok(());
        }
        self.send_data(data, end).await?;
        self.ended = end;
        Ok(())
    }

    async fn write_trailers(&mut self, trailers: HeaderMap) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        // What the compressor still holds goes before the trailers.
        let tail = self.compression.body(None, true).unwrap_or_default();
        if !tail.is_empty() {
            self.send_data(tail, false).await?;
        }
        let Some(send) = self.send.as_mut() else {
            return Error::e_explain(ErrorType::InternalError, "trailers before a head");
        };
        self.grpc_status = crate::grpc::status(&trailers);
        if let Err(e) = send.send_trailers(trailers) {
            return Err(self.gone(e, "writing the response trailers"));
        }
        self.ended = true;
        Ok(())
    }

    async fn write_continue(&mut self) -> Result<()> {
        let mut head = http::Response::new(());
        *head.status_mut() = StatusCode::CONTINUE;
        self.respond
            .send_informational(head)
            .map_err(|e| self.gone(e, "writing 100 Continue"))
    }

    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        match body.next().await {
            Ok(data) => {
                self.body_read += data.as_ref().map_or(0, |d| d.len());
                Ok(data)
            }
            Err(e) => Err(match e.etype() {
                ErrorType::ReadTimedout => e,
                _ => self.gone_read(e),
            }),
        }
    }

    fn grpc_status(&self) -> Option<u8> {
        self.grpc_status
    }

    fn take_body(&mut self) -> Option<super::TakenBody> {
        self.body.take().map(super::TakenBody::H2)
    }

    async fn watch_idle(&mut self) -> Result<()> {
        // Ends when the client resets the stream or the connection goes: the client left.
        let reset = std::future::poll_fn(|cx| match self.send.as_mut() {
            Some(send) => send.poll_reset(cx),
            None => self.respond.poll_reset(cx),
        })
        .await;
        let why = match reset {
            Ok(reason) => format!("the client reset the HTTP/2 stream ({reason})"),
            Err(e) => format!("the client's HTTP/2 connection ended ({e})"),
        };
        Error::e_explain(ErrorType::ConnectionClosed, why).map_err(|e| e.into_down())
    }
}
