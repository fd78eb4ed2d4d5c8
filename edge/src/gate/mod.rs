//! The connection gate: what happens to a client connection around its requests, where
//! Pingora 0.9.1's proxy has no hook. The listeners (`listen.rs`) hand it each connection once
//! its TLS handshake is done; it:
//!
//! - counts open connections per listener and TLS handshakes by negotiated version;
//! - refuses a client that already holds `max_connections_per_client` connections (peers in
//!   `trusted_proxies` are exempt: they carry many clients) with a 429 and a close;
//! - enforces `client_header_timeout` (slowloris): a new connection must deliver its first
//!   request head within it, and on a kept-alive connection a head must be complete within it
//!   of its first byte (the wait for that byte is `keepalive_timeout`). Pingora's own
//!   timeout is per read, so a client trickling a byte at a time would otherwise never end;
//! - keeps a connection that waits for a request (its first, or the next one) out of
//!   Pingora: the wait holds no buffer, and Pingora's per-request state is built when the
//!   request's first bytes are in;
//! - gathers a response's small writes into one (Pingora writes a head and a body apart).
//!
//! The gate keeps the connection for its whole life (it runs Pingora's HTTP/1 keep-alive loop
//! itself, re-arming the head clock between requests), so dropping its guard is exactly the
//! connection closing.

use crate::client::net_contains;
use crate::downstream::{h1, h2};
use crate::observe::connections::{self, Listener};
use crate::proxy::EdgeProxy;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Shutdown, Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::downstream::clocks::{ClientStream, Clocks, STASH_READ};

/// The listeners' application: the gate in front of the proxy.
pub struct ConnectionGate {
    /// Pingora's proxy pipeline when `own_loop` is off (and the h2 settings it holds).
    pub proxy: Arc<HttpProxy<EdgeProxy>>,
    /// The edge's own request loop for HTTP/1.
    pub edge: Arc<EdgeProxy>,
    /// Whether requests (HTTP/1 and HTTP/2) go through the edge's own loop (the default)
    /// rather than Pingora's pipeline (`EDGE_REQUEST_LOOP=pingora`, kept while the new loop settles in).
    pub own_loop: bool,
    /// Whether the own loop serves the common request on the edge's own HTTP/1.1 session
    /// (the default) rather than Pingora's (`EDGE_H1_SESSION=pingora`, kept while the own
    /// session settles in).
    pub own_session: bool,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Set once the process is on its way out: a shutdown, or an upgrade's hand-over of the
    /// listeners (SIGQUIT), whether or not a successor takes them. HTTP/2 connections are
    /// sent GOAWAY then, and their open streams served to the end: a client learns from it
    /// which streams were taken and opens a new connection for the rest, so it loses no
    /// request. (HTTP/1 connections wait for the shutdown itself: closing an idle one races
    /// a request the client may be sending on it.)
    pub draining: ShutdownWatch,
}

impl ConnectionGate {
    /// How long a client has for a TLS handshake or a request head (`client_header_timeout`).
    pub fn header_timeout(&self) -> Duration {
        self.snapshot.load().config.edge.client_header_timeout
    }

    /// How long a write toward a client may make no progress (`send_timeout`).
    pub fn send_timeout(&self) -> Duration {
        self.snapshot.load().config.edge.send_timeout
    }

    /// Serves one client connection (its TLS handshake done) until it closes; its first
    /// request head is due by `first_head_by`.
    pub async fn serve(
        &self,
        mut stream: Stream,
        first_head_by: tokio::time::Instant,
        shutdown: &ShutdownWatch,
    ) {
        let peer = peer_ip(&stream);
        let (limit, header_timeout, send_timeout) = {
            let snapshot = self.snapshot.load();
            let edge = &snapshot.config.edge;
            let trusted =
                peer.is_some_and(|ip| edge.trusted_proxies.iter().any(|net| net_contains(net, ip)));
            let limit = match edge.max_connections_per_client {
                0 => None,
                _ if trusted => None,
                n => Some(n),
            };
            (limit, edge.client_header_timeout, edge.send_timeout)
        };
        let tls = stream.get_ssl_digest();
        if let Some(digest) = &tls {
            connections::handshake(&digest.version);
        }
        let listener = if tls.is_some() {
            Listener::Https
        } else {
            Listener::Http
        };
        let Some(_open) = connections::open(listener, peer, limit) else {
            // Strict-Transport-Security as on every other https response.
            let hsts = match (tls.is_some(), &self.snapshot.load().config.tls) {
                (true, Some(settings)) => settings.hsts.clone(),
                _ => None,
            };
            refuse(&mut stream, hsts.as_deref()).await;
            return;
        };

        let first_wait = first_head_by.saturating_duration_since(tokio::time::Instant::now());
        let clock = Arc::new(Clocks::new(header_timeout, send_timeout));
        let stream: Stream = Box::new(ClientStream::new(stream, clock.clone(), first_wait));
        // The HTTP/2 and Pingora paths are boxed: a connection's task is as large as its
        // largest path, and every idle HTTP/1 connection would carry the h2 codec's state.
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return Box::pin(self.h2_connection(stream, clock, first_head_by, shutdown)).await;
        }
        if self.own_loop {
            return self.own_loop(stream, first_wait, &clock, shutdown).await;
        }
        Box::pin(self.pingora_loop(stream, first_wait, &clock, shutdown)).await
    }

    /// An HTTP/2 connection: its streams until it closes.
    async fn h2_connection(
        &self,
        stream: Stream,
        clocks: Arc<Clocks>,
        first_stream_by: tokio::time::Instant,
        shutdown: &ShutdownWatch,
    ) {
        if !self.own_loop {
            // Pingora serves the whole HTTP/2 connection in this call.
            let _ = self.proxy.process_new(stream, shutdown).await;
            return;
        }
        let (conn, limits) = {
            let snapshot = self.snapshot.load();
            let edge = &snapshot.config.edge;
            let conn = h2::Conn {
                ssl: stream.get_ssl_digest(),
                peer: peer_ip(&stream),
                clocks,
                send_timeout: edge.send_timeout,
                body_timeout: edge.client_body_timeout,
            };
            let limits = h2::Limits {
                max_concurrent_streams: edge.http2_max_concurrent_streams,
                max_header_list_size: u32::try_from(edge.max_header_size).unwrap_or(u32::MAX),
                idle: edge.keepalive_timeout,
            };
            (Arc::new(conn), limits)
        };
        // Each stream runs on the same phases as an HTTP/1 request, in a task of its own
        // on a worker drawn at random, as Pingora places them: kept on the connection's
        // thread, a connection's streams lose the other core (measured in BENCHMARKS.md).
        let ended = h2::serve_connection(
            stream,
            conn,
            &limits,
            first_stream_by,
            &self.draining,
            |mut session, guard| {
                let edge = self.edge.clone();
                pingora_runtime::current_handle().spawn(async move {
                    let _guard = guard;
                    let whole = edge.serve_h2(&mut session).await;
                    session.finish(whole);
                });
            },
        )
        .await;
        if ended == h2::Ended::HeaderTimeout {
            connections::HEADER_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// HTTP/1 in Pingora's pipeline (`EDGE_REQUEST_LOOP=pingora`): its own keep-alive loop,
    /// with the head clock re-armed between requests.
    async fn pingora_loop(
        &self,
        mut stream: Stream,
        first_wait: Duration,
        clock: &Clocks,
        shutdown: &ShutdownWatch,
    ) {
        // A connection waits for each request here, first one included, with only this small
        // future alive: Pingora's per-request state is built when a request's first bytes are
        // in. A shutdown does not end this wait: a client that just connected may have its
        // request on the way, and it is served (with keep-alive off).
        match next_request_arrives(&mut stream, first_wait, None).await {
            Arrival::Request => {}
            Arrival::TimedOut => {
                connections::HEADER_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Arrival::Closed => return,
        }
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        session.set_keepalive_reuses_remaining(
            self.proxy
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
        );
        let mut served = self.proxy.process_new_http(session, shutdown).await;
        while let Some((mut stream, persistent)) = served.map(|r| r.consume()) {
            let (keepalive, header_timeout, send_timeout) = {
                let snapshot = self.snapshot.load();
                let edge = &snapshot.config.edge;
                (
                    edge.keepalive_timeout,
                    edge.client_header_timeout,
                    edge.send_timeout,
                )
            };
            clock.arm(header_timeout, send_timeout);
            if next_request_arrives(&mut stream, keepalive, Some(shutdown)).await
                != Arrival::Request
            {
                return;
            }
            let mut session = ServerSession::new_http1(stream);
            if let Some(persistent) = persistent {
                persistent.apply_to_session(&mut session);
            }
            served = self.proxy.process_new_http(session, shutdown).await;
        }
    }

    /// HTTP/1 requests in the edge's own loop until the connection ends: the first head due
    /// within `first_wait`, keepalive_requests per connection, `keepalive_timeout` between
    /// requests, the head clock re-armed for each.
    ///
    /// A connection waits for each request here with only this small future alive; the
    /// request's first bytes are read here and handed to the session as its prefix, so the
    /// session reads nothing more for a head that came in one piece.
    async fn own_loop(
        &self,
        mut stream: Stream,
        first_wait: Duration,
        clock: &Clocks,
        shutdown: &ShutdownWatch,
    ) {
        let mut served = 0u32;
        // Bytes of the next request that arrived with the previous one (pipelining).
        let mut pipelined: Option<bytes::BytesMut> = None;
        // What the own session needs of the connection, found at its first request.
        let mut conn: Option<h1::Conn> = None;
        loop {
            let (keepalive, header_timeout, send_timeout, max_requests) = {
                let snapshot = self.snapshot.load();
                let edge = &snapshot.config.edge;
                (
                    edge.keepalive_timeout,
                    edge.client_header_timeout,
                    edge.send_timeout,
                    edge.keepalive_requests,
                )
            };
            if served > 0 {
                clock.arm(header_timeout, send_timeout);
            }
            if pipelined.is_none() {
                // The first request's wait is not ended by a shutdown: a client that just
                // connected may have its request on the way, and it is served (with
                // keep-alive off).
                let (wait, watch) = match served {
                    0 => (first_wait, None),
                    _ => (keepalive, Some(shutdown)),
                };
                match first_bytes(&mut stream, wait, watch).await {
                    Ok(bytes) => pipelined = Some(bytes),
                    Err(Arrival::TimedOut) if served == 0 => {
                        connections::HEADER_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(_) => return,
                }
            }
            served += 1;
            let last = served >= max_requests || *shutdown.borrow();
            // The common request (a whole HTTP/1.1 head, no body, no upgrade) on the edge's
            // own session; anything else on Pingora's, which reads it from the same bytes.
            let own = if self.own_session {
                pipelined.take()
            } else {
                None
            };
            if let Some(mut buf) = own {
                match h1::parse(&mut buf) {
                    h1::Head::Own(request) => {
                        let conn = conn.get_or_insert_with(|| h1::Conn::of(&stream));
                        let last = last || keepalive.is_zero();
                        let mut session =
                            h1::Session::new(&mut stream, conn, &mut buf, request, last);
                        // Boxed, as below.
                        let reusable = Box::pin(self.edge.serve_own(&mut session)).await;
                        if !reusable {
                            // Whatever is gathered goes out, then the FIN; a client that
                            // stopped reading does not hold the connection for it.
                            let close = Shutdown::shutdown(&mut *stream);
                            let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
                            return;
                        }
                        if !buf.is_empty() {
                            pipelined = Some(buf);
                        }
                        continue;
                    }
                    h1::Head::Pingora => pipelined = Some(buf),
                }
            }
            let mut session = self.edge.session(stream);
            if let ServerSession::H1(h1) = session.downstream_session.as_mut() {
                // Pipelined requests are answered one after the other, in order.
                h1.set_pipelining_enabled(true);
                if let Some(prefix) = pipelined.take() {
                    h1.set_pipelined_prefix(prefix);
                }
            }
            session.set_keepalive(if last {
                None
            } else {
                crate::proxy::keepalive_secs(keepalive)
            });
            // Boxed: the request's state (its sessions, the upstream exchange) is allocated
            // for the request and freed after it, so a connection waiting for its next
            // request holds only this loop's few words, not room for the largest request
            // state (10,000 idle connections: 132 MB unboxed, see BENCHMARKS.md).
            match Box::pin(self.edge.serve(session, last)).await {
                Some(reusable) => (stream, pipelined) = reusable.into_parts(),
                None => return,
            }
        }
    }

    /// At shutdown, after the listeners stopped: tells the proxy (requests parked in it).
    pub async fn cleanup(&self) {
        ServerApp::cleanup(&*self.proxy).await;
    }
}

/// How long a connection that ends after its answer waits for the answer's last bytes to be
/// taken and its FIN sent.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What came of waiting for a request.
#[derive(PartialEq)]
enum Arrival {
    /// Its first bytes are here (stashed in the stream).
    Request,
    /// The wait ran out.
    TimedOut,
    /// The client closed, the read failed, or the server is shutting down.
    Closed,
}

/// Waits until a connection sends its next request, its wait (what is left of
/// `client_header_timeout` for a new connection, `keepalive_timeout` between requests) ends,
/// the client closes, or, with `shutdown`, the server shuts down.
async fn next_request_arrives(
    stream: &mut Stream,
    wait: Duration,
    shutdown: Option<&ShutdownWatch>,
) -> Arrival {
    let mut probe = [0u8; 1];
    let peek = async {
        match stream.try_peek(&mut probe).await {
            Ok(true) => Ok(()),
            _ => Err(Arrival::Closed),
        }
    };
    match within(peek, wait, shutdown).await {
        Ok(()) => Arrival::Request,
        Err(arrival) => arrival,
    }
}

/// Waits, as [`next_request_arrives`], for a connection's next request, and reads its first
/// bytes. A request that is already in (a busy connection) is read at once, without a timer
/// or a shutdown watch set up for the wait.
async fn first_bytes(
    stream: &mut Stream,
    wait: Duration,
    shutdown: Option<&ShutdownWatch>,
) -> Result<bytes::BytesMut, Arrival> {
    if let Poll::Ready(read) =
        std::future::poll_fn(|cx| Poll::Ready(poll_first_bytes(stream, cx))).await
    {
        return read;
    }
    let read = std::future::poll_fn(|cx| poll_first_bytes(stream, cx));
    within(read, wait, shutdown).await
}

/// `arrival` if it comes within `wait` (else [`Arrival::TimedOut`]) and, with `shutdown`,
/// before the server shuts down (else [`Arrival::Closed`]).
async fn within<T>(
    arrival: impl std::future::Future<Output = Result<T, Arrival>>,
    wait: Duration,
    shutdown: Option<&ShutdownWatch>,
) -> Result<T, Arrival> {
    let timed = async {
        match tokio::time::timeout(wait, arrival).await {
            Ok(arrived) => arrived,
            Err(_) => Err(Arrival::TimedOut),
        }
    };
    let Some(shutdown) = shutdown else {
        return timed.await;
    };
    let mut shutdown = shutdown.clone();
    if *shutdown.borrow() {
        return Err(Arrival::Closed);
    }
    tokio::select! {
        arrived = timed => arrived,
        _ = shutdown.changed() => Err(Arrival::Closed),
    }
}

/// One read of a waiting connection. While nothing has come, nothing is allocated: the read
/// goes to a buffer on the stack, and only what arrived is kept, in a buffer the size the
/// session's head parser starts with.
fn poll_first_bytes(
    stream: &mut Stream,
    cx: &mut Context<'_>,
) -> Poll<Result<bytes::BytesMut, Arrival>> {
    // Uninitialised: zeroing 4 KiB on every poll of every waiting connection was 0.3% of the
    // CPU of small requests.
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); STASH_READ];
    let mut space = ReadBuf::uninit(&mut space);
    match ready!(Pin::new(stream).poll_read(cx, &mut space)) {
        Ok(()) if !space.filled().is_empty() => {
            let mut bytes = bytes::BytesMut::with_capacity(STASH_READ);
            bytes.extend_from_slice(space.filled());
            Poll::Ready(Ok(bytes))
        }
        _ => Poll::Ready(Err(Arrival::Closed)),
    }
}

fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
}

/// Answers a client over its connection cap (HTTP/1; an h2 client just sees the close), with
/// the headers every edge answer carries: a request id and, on https, HSTS.
async fn refuse(stream: &mut Stream, hsts: Option<&str>) {
    if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        // The id in the body too, as in every other error the edge answers itself.
        let request_id = crate::client::new_request_id();
        let body = format!(
            r#"{{"error":"too_many_connections","status":429,"message":"this client holds max_connections_per_client connections","request_id":"{request_id}"}}"#
        );
        let hsts = hsts
            .map(|v| format!("strict-transport-security: {v}\r\n"))
            .unwrap_or_default();
        let response = format!(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nretry-after: 1\r\nx-request-id: {request_id}\r\n{hsts}\
             connection: close\r\n\r\n{body}",
            body.len(),
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.flush().await;
        })
        .await;
    }
    Shutdown::shutdown(&mut **stream).await;
}
