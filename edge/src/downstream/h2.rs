//! HTTP/2 from clients on the edge's own phases: pingora-core's h2 server codec accepts the
//! connection's streams ([`serve_connection`]), and each stream is a [`Session`] the request's
//! phases run on as they run on an HTTP/1 one. Compression is Pingora's compressor, driven
//! here, as on the own HTTP/1.1 session.

use super::{Compressor, Downstream};
use bytes::Bytes;
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::v2::server::{self, H2Accept, H2Options, HttpSession};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long a client may leave its request body without a byte more (nginx's
/// `client_body_timeout` default); then 408. pingora-core's h2 body read has no bound.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// An h2 error on the client's stream (a reset, the connection gone) is the client leaving.
fn gone(e: Box<Error>) -> Box<Error> {
    if matches!(e.etype(), ErrorType::H2Error) {
        return Error::because(ErrorType::WriteError, "the client's HTTP/2 stream ended", e);
    }
    e
}

/// Streams a connection may have refused as malformed (a forbidden byte in the target,
/// conflicting lengths, a missing authority) before it is closed: Pingora's own bound.
const MALFORMED_STREAMS: usize = 32;

/// The streams of a connection being served, and a wake-up for when there are none.
#[derive(Default)]
struct Active {
    count: AtomicUsize,
    none: Notify,
}

/// Held by a stream's task for as long as it runs.
pub struct StreamGuard(Arc<Active>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none.notify_waiters();
        }
    }
}

/// Ends once the connection has had no stream for `idle` (nginx closes an idle HTTP/2
/// connection after keepalive_timeout too).
async fn idle_for(active: &Active, idle: Duration) {
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

/// Serves an HTTP/2 connection: its handshake, then each request stream handed to `serve`
/// with a guard its task holds (the task runs it: streams of one connection run at once)
/// until the client closes, the connection fails, it has had no stream for `idle`, or a
/// shutdown has drained it (GOAWAY, then the streams already open are served to their end).
pub async fn serve_connection(
    stream: Stream,
    options: Option<H2Options>,
    idle: Duration,
    shutdown: &ShutdownWatch,
    mut serve: impl FnMut(Session, StreamGuard),
) {
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest: stream.get_proxy_digest(),
        socket_digest: stream.get_socket_digest(),
    });
    let mut conn = match server::handshake(stream, options).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/2 handshake failed");
            return;
        }
    };
    let mut shutdown = shutdown.clone();
    let mut draining = *shutdown.borrow();
    if draining {
        conn.graceful_shutdown();
    }
    let mut malformed = 0;
    let active = Arc::new(Active::default());
    loop {
        let accepted = if draining {
            HttpSession::from_h2_conn(&mut conn, digest.clone()).await
        } else {
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        // GOAWAY; the accept below drives the open streams to their end.
                        conn.graceful_shutdown();
                        draining = true;
                    }
                    continue;
                }
                // Cancel-safe: the accept is made again on the next turn.
                accepted = HttpSession::from_h2_conn(&mut conn, digest.clone()) => accepted,
                // Nothing in flight for that long: the socket is dropped (no GOAWAY to wait
                // on, from a peer that may be gone).
                () = idle_for(&active, idle) => {
                    tracing::debug!("idle HTTP/2 connection closed");
                    return;
                }
            }
        };
        match accepted {
            Ok(Some(H2Accept::Session(session))) => {
                active.count.fetch_add(1, Ordering::AcqRel);
                serve(Session::new(session), StreamGuard(active.clone()));
            }
            // Already answered or reset by the codec; siblings go on.
            Ok(Some(H2Accept::Rejected)) => {
                malformed += 1;
                if malformed >= MALFORMED_STREAMS {
                    tracing::debug!("HTTP/2 connection closed: too many malformed streams");
                    return;
                }
            }
            Ok(None) => return,
            // Mostly a client that closed its socket without a GOAWAY.
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/2 connection ended");
                return;
            }
        }
    }
}

/// One HTTP/2 request stream.
pub struct Session {
    /// Always pingora-core's h2 session; held as the protocol-neutral session for its
    /// uniform reads and writes.
    inner: ServerSession,
    compression: Compressor,
}

impl Session {
    fn new(stream: HttpSession) -> Session {
        Session {
            inner: ServerSession::new_http2(stream),
            compression: Compressor::default(),
        }
    }

    /// Compresses the response at `level` (0: not at all) in the coding the client prefers.
    pub fn compress(&mut self, level: u32) {
        self.compression = Compressor::new(level, self.inner.req_header());
    }

    /// Ends the stream: `whole`, after its answer (a stream with no head yet is reset);
    /// otherwise reset, so that a body cut short (its server failed or went silent) is never
    /// taken for a whole one.
    pub async fn finish(mut self, whole: bool) {
        if !whole {
            self.inner.shutdown().await;
            return;
        }
        if let Err(e) = self.inner.finish().await {
            tracing::debug!(error = %e, "ending an HTTP/2 stream");
        }
    }
}

impl Downstream for Session {
    fn req_header(&self) -> &RequestHeader {
        self.inner.req_header()
    }

    fn raw_head(&self) -> Option<Bytes> {
        None
    }

    fn ssl_digest(&self) -> Option<&SslDigest> {
        self.inner.digest().and_then(|d| d.ssl_digest.as_deref())
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        match self.inner.client_addr() {
            Some(PingoraAddr::Inet(addr)) => Some(addr.ip()),
            _ => None,
        }
    }

    /// The connection's other streams go on: nothing to do for one stream.
    fn set_keepalive_off(&mut self) {}

    fn is_upgrade_req(&self) -> bool {
        false
    }

    fn response_status(&self) -> Option<StatusCode> {
        self.inner.response_written().map(|r| r.status)
    }

    fn body_bytes_sent(&self) -> usize {
        self.inner.body_bytes_sent()
    }

    fn body_bytes_read(&self) -> usize {
        self.inner.body_bytes_read()
    }

    fn compression_off(&mut self) {
        self.compression.off();
    }

    fn is_body_empty(&mut self) -> bool {
        self.inner.is_body_empty()
    }

    async fn write_head(&mut self, mut head: Box<ResponseHeader>, end: bool) -> Result<()> {
        if !head.status.is_informational() {
            self.compression.head(&mut head, end);
        }
        // The stream's end is sent by the last write_body.
        self.inner.write_response_header(head).await.map_err(gone)
    }

    async fn write_body(&mut self, mut body: Option<Bytes>, end: bool) -> Result<()> {
        body = self.compression.body(body, end);
        self.inner
            .write_response_body(body.unwrap_or_default(), end)
            .await
            .map_err(gone)
    }

    async fn write_continue(&mut self) -> Result<()> {
        self.inner.write_continue_response().await
    }

    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match tokio::time::timeout(BODY_READ_TIMEOUT, self.inner.read_request_body()).await {
            Ok(read) => read.map_err(gone),
            Err(_) => Error::e_explain(
                ErrorType::ReadTimedout,
                "the client sent no more of its request body",
            ),
        }
    }

    fn lingers(&self) -> bool {
        false
    }

    async fn watch_idle(&mut self) -> Result<()> {
        // Ends when the client resets the stream or the connection goes: the client left.
        loop {
            if let Err(e) = self.inner.read_body_or_idle(true).await {
                return Error::e_because(
                    ErrorType::ConnectionClosed,
                    "the client closed the HTTP/2 stream",
                    e,
                );
            }
        }
    }
}
