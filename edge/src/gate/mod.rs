//! The connection gate: what happens to a client connection around its requests. The
//! listeners (`listen.rs`) hand it each connection once its TLS handshake is done; it:
//!
//! - counts open connections per listener and TLS handshakes by negotiated version;
//! - refuses a client that already holds `max_connections_per_client` connections (peers in
//!   `trusted_proxies` are exempt: they carry many clients) with a 429 and a close;
//! - wraps the connection's stream in its clocks ([`crate::downstream::clocks`]):
//!   `client_header_timeout` (slowloris: a new connection must deliver its first request
//!   head within it, and on a kept-alive connection a head must be complete within it of its
//!   first byte; the wait for that byte is `keepalive_timeout`) and `send_timeout`;
//! - reads each HTTP/1 request head (in as many reads as it takes) and runs the request on
//!   the HTTP/1 session, keep-alive and pipelining included, or serves an HTTP/2 connection's
//!   streams, each request on the same phases ([`crate::proxy`]);
//! - keeps a connection that waits for a request (its first, or the next one) small: the
//!   wait holds no buffer, and a request's state is allocated when its first bytes are in.
//!
//! The gate keeps the connection for its whole life, so dropping its guard is exactly the
//! connection closing.

use crate::client::net_contains;
use crate::downstream::clocks::{ClientStream, Clocks, STASH_READ};
use crate::downstream::{h1, h2};
use crate::observe::connections::{self, Listener};
use crate::proxy::{EdgeProxy, Served};
use crate::snapshot::Snapshot;
use crate::spare;
use crate::stripe::{self, Padded, STRIPES};
use arc_swap::ArcSwap;
use pingora::protocols::{Shutdown, Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

/// The longest a shutdown or an upgrade waits for requests in flight before cutting them
/// (Pingora's grace period); the process ends as soon as none is left.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Client connections being served (handshakes included).
pub static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts one connection in [`LIVE`], and in its worker's count, while it lives.
pub struct Live {
    pub worker: Arc<AtomicUsize>,
}

impl Live {
    pub fn new(worker: Arc<AtomicUsize>) -> Live {
        LIVE.fetch_add(1, Ordering::AcqRel);
        worker.fetch_add(1, Ordering::Relaxed);
        Live { worker }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.worker.fetch_sub(1, Ordering::Relaxed);
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The listeners' application: the gate in front of the request path.
pub struct ConnectionGate {
    /// The request path every request runs on.
    pub edge: Arc<EdgeProxy>,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Set once the process is on its way out: a shutdown, or an upgrade's hand-over of the
    /// listeners (SIGQUIT), whether or not a successor takes them. HTTP/2 connections are
    /// sent GOAWAY then, and their open streams served to the end: a client learns from it
    /// which streams were taken and opens a new connection for the rest, so it loses no
    /// request. (HTTP/1 connections wait for the shutdown itself: closing an idle one races
    /// a request the client may be sending on it.)
    pub draining: ShutdownWatch,
    /// The shutdown as HTTP/1 connections see it: their waits for a next request, and each
    /// answer's `Connection` (the listeners set it when the shutdown watch they serve under
    /// fires).
    pub closing: Closing,
}

/// A shutdown flag and the waits it ends. A kept-alive connection's wait for its next request
/// holds one entry of it (64 bytes); a clone of the shutdown watch and its `changed` future
/// were 136, held by every idle connection. The waits are listed by stripe: each wait adds
/// itself to its thread's list and takes itself off, and one list for all threads was a
/// lock that both cores took in turn for every kept-alive request.
#[derive(Default)]
pub struct Closing {
    begun: AtomicBool,
    waits: [Padded<tokio::sync::Notify>; STRIPES],
}

impl Closing {
    /// The shutdown began: waiting connections are woken to end their wait.
    pub fn begin(&self) {
        self.begun.store(true, Ordering::Release);
        for waits in &self.waits {
            waits.notify_waiters();
        }
    }

    /// Whether the shutdown began: read by every kept-alive request for its answer's
    /// `Connection` (a load; the shutdown watch's `borrow` is a lock taken and released, and
    /// a request looked twice).
    pub fn begun(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }

    /// This thread's list of waits.
    fn waits(&self) -> &tokio::sync::Notify {
        &self.waits[stripe::mine()]
    }
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

    /// Serves one client connection (its TLS handshake done) from `peer` until it closes;
    /// its first request head is due by `first_head_by`.
    ///
    /// Every await here but the HTTP/1 loop's is on a boxed future: this future is part of
    /// every connection's task, idle ones included, and is as large as its largest state.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice"
    )]
    pub fn serve(
        &self,
        mut stream: Stream,
        peer: Option<IpAddr>,
        first_head_by: tokio::time::Instant,
    ) -> impl Future<Output = ()> + '_ {
        async move {
            let (limit, header_timeout, send_timeout, h2c) = {
                let snapshot = self.snapshot.load();
                let edge = &snapshot.config.edge;
                let trusted = peer
                    .is_some_and(|ip| edge.trusted_proxies.iter().any(|net| net_contains(net, ip)));
                let limit = match edge.max_connections_per_client {
                    0 => None,
                    _ if trusted => None,
                    n => Some(n),
                };
                (
                    limit,
                    edge.client_header_timeout,
                    edge.send_timeout,
                    edge.http2_cleartext,
                )
            };
            let listener = match stream.get_ssl_digest() {
                Some(digest) => {
                    connections::handshake(&digest.version);
                    Listener::Https
                }
                None => Listener::Http,
            };
            let tls = listener == Listener::Https;
            let Some(_open) = connections::open(listener, peer, limit) else {
                // Strict-Transport-Security as on every other https response.
                let hsts = match (tls, &self.snapshot.load().config.tls) {
                    (true, Some(settings)) => settings.hsts.clone(),
                    _ => None,
                };
                return Box::pin(refuse(stream, hsts)).await;
            };

            // A CA's TLS-ALPN-01 validation (`acme-tls/1`, the only other protocol offered):
            // the handshake was the answer; nothing follows it.
            if matches!(stream.selected_alpn_proto(), Some(ALPN::Custom(_))) {
                return;
            }
            let clock = Arc::new(Clocks::new(header_timeout, send_timeout));
            let h2 = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                true
            } else if !tls && h2c {
                match Box::pin(prior_knowledge(&mut stream, first_head_by)).await {
                    Some(h2) => h2,
                    None => return,
                }
            } else {
                false
            };
            let first_wait = first_head_by.saturating_duration_since(tokio::time::Instant::now());
            // The client's stream under the clocks, made in each branch's own block: moved
            // into a future that is awaited in the same scope, it would keep its place in
            // this one for the connection's life (16 bytes of every connection's task).
            if h2 {
                let stream = Box::new(ClientStream::new(stream, clock.clone(), first_wait));
                return Box::pin(self.h2_connection(stream, peer, clock, first_head_by)).await;
            }
            let http1 = {
                let stream: Stream = Box::new(ClientStream::new(stream, clock.clone(), first_wait));
                let conn = h1::Conn {
                    ssl: stream.get_ssl_digest(),
                    peer,
                };
                self.http1(stream, conn, first_head_by, &clock)
            };
            http1.await
        }
    }

    /// An HTTP/2 connection: its streams until it closes.
    async fn h2_connection(
        &self,
        stream: Stream,
        peer: Option<IpAddr>,
        clocks: Arc<Clocks>,
        first_stream_by: tokio::time::Instant,
    ) {
        let (conn, limits) = {
            let snapshot = self.snapshot.load();
            let edge = &snapshot.config.edge;
            let conn = h2::Conn {
                ssl: stream.get_ssl_digest(),
                peer,
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
        // Each stream runs on the same phases as an HTTP/1 request, in a task of its own on
        // the connection's thread (as nginx and HAProxy keep a connection's work on one
        // worker): its answer goes back to the connection's task without a wake-up across
        // threads. Drawn at random, as Pingora places streams, the same load cost 15-20% more
        // CPU per request with 50 connections and 17% less throughput with one connection of
        // 100 streams (BENCHMARKS.md); a gRPC call's messages, which go back and forth, 15%
        // more.
        let ended = h2::serve_connection(
            stream,
            conn,
            &limits,
            first_stream_by,
            &self.draining,
            |mut session, guard| {
                let edge = self.edge.clone();
                // Built in its box: spawned bare, the stream's future (several KB) was
                // copied into the task, and its task's stage copied again as it ended
                // (1,700 instructions of memcpy per stream).
                let serve = boxed(|| async move {
                    let _guard = guard;
                    let served = edge.serve(&mut session).await;
                    session.finish(served != Served::Cut);
                });
                tokio::spawn(serve);
            },
        )
        .await;
        if ended == h2::Ended::HeaderTimeout {
            connections::HEADER_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// HTTP/1 requests until the connection ends: the first head due within `first_wait`,
    /// keepalive_requests per connection, `keepalive_timeout` between requests, the head
    /// clock re-armed for each, pipelined requests answered in order.
    ///
    /// A connection waits for each request here with only this loop's few words and the
    /// wait's timer alive. Everything after a request's first bytes (the rest of its head,
    /// its session, the close) is one boxed future, allocated when the bytes are in and freed
    /// when the answer is out: a task is as large as its largest state, and an idle connection
    /// would otherwise carry room for all of it (10,000 idle connections: 132 MB with the
    /// session inline, BENCHMARKS.md).
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice"
    )]
    fn http1<'a>(
        &'a self,
        mut stream: Stream,
        conn: h1::Conn,
        first_head_by: tokio::time::Instant,
        clock: &'a Clocks,
    ) -> impl Future<Output = ()> + 'a {
        async move {
            let mut served = 0u32;
            // Bytes of the next request that arrived with the previous one (pipelining);
            // empty (and unallocated) when none did. Not an `Option`: a `match` on its `take()`
            // kept the taken value's slot in the task across the wait, 32 bytes.
            let mut pipelined = bytes::BytesMut::new();
            // One timer for every wait of the connection, moved to each wait's end (see
            // `first_bytes`); registered with the runtime at the first wait that has to wait.
            let mut timer = std::pin::pin!(tokio::time::sleep_until(first_head_by));
            // The connection's entry in the list of waits a shutdown ends, made at its first
            // wait for a next request and kept until it closes (see `first_bytes`).
            let mut standing = std::pin::pin!(None);
            loop {
                let buf = if !pipelined.is_empty() {
                    std::mem::take(&mut pipelined)
                } else {
                    // No snapshot is held across the wait: a waiting connection keeps no
                    // config alive. The first request's wait is not ended by a shutdown: a
                    // client that just connected may have its request on the way, and it is
                    // served (with keep-alive off). The timer of a later wait was set as the
                    // request before it ended.
                    let watch = (served > 0).then_some(&self.closing);
                    let wait = first_bytes(&mut stream, timer.as_mut(), watch, standing.as_mut());
                    match wait.await {
                        Ok(bytes) => bytes,
                        Err(Arrival::TimedOut) if served == 0 => {
                            connections::HEADER_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Err(_) => return,
                    }
                };
                served += 1;
                let request = boxed(|| self.request(&mut stream, &conn, buf, served));
                match request.await {
                    Some(rest) if !rest.is_empty() => pipelined = rest,
                    Some(spent) => spare::give_back_read_buffer(spent),
                    None => return,
                }
                // The wait for the next request ends `keepalive_timeout` from now; its head clock
                // starts at its first byte; the timeouts as the config has them now (one look at
                // it for all three).
                let edge = &self.snapshot.load().config.edge;
                let end = tokio::time::Instant::now() + edge.keepalive_timeout;
                timer.as_mut().reset(end);
                clock.arm(edge.client_header_timeout, edge.send_timeout);
            }
        }
    }

    /// One HTTP/1 request of a connection whose first bytes are in `buf`, the `served`th on
    /// it: the rest of its head, its session on the edge's phases, and, when the connection
    /// cannot carry another, its close. What is left in `buf` after the request (the next
    /// one's first bytes, pipelined), or `None` once the connection is done.
    async fn request(
        &self,
        stream: &mut Stream,
        conn: &h1::Conn,
        mut buf: bytes::BytesMut,
        served: u32,
    ) -> Option<bytes::BytesMut> {
        // What the request needs of the config, read without holding it (a clone of the
        // snapshot's `Arc` is a write to its count, a line every thread writes in turn).
        let (limits, keepalive_requests, no_keepalive, body_timeout) = {
            let snapshot = self.snapshot.load();
            let edge = &snapshot.config.edge;
            (
                edge.head_limits(),
                edge.keepalive_requests,
                edge.keepalive_timeout.is_zero(),
                edge.client_body_timeout,
            )
        };
        let request = loop {
            match h1::parse(&mut buf, &limits) {
                h1::Head::Request(request) => break request,
                h1::Head::Partial => {
                    // The rest of the head, under the head clock.
                    buf.reserve(STASH_READ);
                    match stream.read_buf(&mut buf).await {
                        Ok(1..) => {}
                        _ => return None,
                    }
                }
                h1::Head::Refused(status, why) => {
                    let snapshot = self.snapshot.load_full();
                    let tls = stream.get_ssl_digest().is_some();
                    let hsts = snapshot.config.tls.as_ref().filter(|_| tls);
                    let hsts = hsts.and_then(|t| t.hsts.as_deref());
                    // Boxed: its state (a 4 KiB sink among it) would otherwise be part of
                    // every request's future, allocated and moved for each request.
                    Box::pin(answer_and_close(stream, status, why, hsts)).await;
                    return None;
                }
            }
        };
        let last = served >= keepalive_requests || self.closing.begun() || no_keepalive;
        let mut session = h1::Session::new(stream, conn, &mut buf, request, last, body_timeout)
            .closing_at(&self.closing.begun);
        let outcome = self.edge.serve(&mut session).await;
        if outcome != Served::Cut && session.body_left() {
            // What the answer did not need of the body is read and dropped, so that the
            // next request is found after it, or the client sees the answer before the
            // close rather than a reset (nginx's discarded body, its lingering close).
            session.discard_body().await;
        }
        let reusable = outcome == Served::Whole && session.reusable();
        drop(session);
        if !reusable {
            // Whatever is gathered goes out, then the FIN; a client that stopped reading
            // does not hold the connection for it.
            let close = Shutdown::shutdown(&mut **stream);
            let _ = tokio::time::timeout(CLOSE_WAIT, close).await;
            return None;
        }
        Some(buf)
    }
}

/// `make()`'s future in a box, written there: `Box::pin(f())` makes the future on the stack
/// and copies all of it into the box (2.9 KB per request).
fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// How long a connection that ends after its answer waits for the answer's last bytes to be
/// taken and its FIN sent.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What came of waiting for a request.
#[derive(PartialEq)]
enum Arrival {
    /// The wait ran out.
    TimedOut,
    /// The client closed, the read failed, or the server is shutting down.
    Closed,
}

/// Waits for a connection's next request and reads its first bytes, until `timer` ends (set
/// by the caller: `client_header_timeout` from the accept for a new connection,
/// `keepalive_timeout` from now between requests) and, with `closing`, until the server
/// shuts down: a shutdown shortens the wait
/// to [`SHUTDOWN_GRACE`] (then [`Arrival::Closed`]), since a client that was told its
/// connection stays open may have sent its next request before it could learn otherwise, and
/// that request is served (with keep-alive off) rather than reset. A request that is already
/// in (a busy connection) is read at once, without the timer polled or a shutdown watch set
/// up.
///
/// An idle connection's task holds this future for as long as it waits, so it is one timer
/// that a shutdown moves, not a select over a timeout and a grace timeout (424 bytes then,
/// 10,000 idle connections are 10,000 of these).
///
/// The connection's entry in its thread's list of waits (`standing`) is made at its first
/// wait that watches `closing` and kept for the connection's life: made and dropped for each
/// wait, it was its list's lock taken three times per kept-alive request (entered, polled,
/// taken off), where a standing entry is only polled.
///
/// The timer is the connection's, one for all its waits: moved to a later end, a timer that
/// is still registered only has its end stored (the runtime's driver finds it at the old end
/// and sets it again), where a new timer per wait was registered with the driver each time
/// and, when it was the driver's earliest, woke the driver through its eventfd (0.26 writes
/// per kept-alive request, BENCHMARKS.md). Its end is set by the caller, not passed here:
/// 16 bytes fewer in every waiting connection's task put the task in a smaller allocation
/// (measured: 10,000 idle connections 1.3 MB more with the wait's length held here).
fn first_bytes<'s, 'c>(
    stream: &'s mut Stream,
    timer: Pin<&'s mut tokio::time::Sleep>,
    closing: Option<&'c Closing>,
    standing: Pin<&'s mut Option<tokio::sync::futures::Notified<'c>>>,
) -> FirstBytes<'s, 'c> {
    FirstBytes {
        stream,
        timer,
        closing,
        standing,
        waiting: false,
        begun: false,
        shortened: false,
    }
}

/// [`first_bytes`]'s wait: its references and three flags, written out rather than an
/// `async fn` over a `poll_fn`, which held each reference twice more (120 bytes against 40
/// in every waiting connection's task).
struct FirstBytes<'s, 'c> {
    stream: &'s mut Stream,
    timer: Pin<&'s mut tokio::time::Sleep>,
    closing: Option<&'c Closing>,
    standing: Pin<&'s mut Option<tokio::sync::futures::Notified<'c>>>,
    /// The wait is set up (it is, once, for a connection that has to wait).
    waiting: bool,
    /// A shutdown has begun.
    begun: bool,
    /// The timer was moved to the shutdown's grace.
    shortened: bool,
}

impl Future for FirstBytes<'_, '_> {
    type Output = Result<bytes::BytesMut, Arrival>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is a reference or a flag: nothing here is pinned structurally.
        let this = self.get_mut();
        if let Poll::Ready(read) = poll_first_bytes(this.stream, cx) {
            return Poll::Ready(read);
        }
        // Nothing yet (the read's wake-up is registered): the wait is set up once, and only
        // for a connection that waits.
        if !this.waiting {
            this.waiting = true;
            if let Some(closing) = this.closing {
                // Entered in the list before the flag is read, so a shutdown that begins in
                // between still wakes it; an entry already standing is in the list.
                if this.standing.is_none() {
                    this.standing.set(Some(closing.waits().notified()));
                    this.begun = this
                        .standing
                        .as_mut()
                        .as_pin_mut()
                        .is_some_and(|entry| entry.enable());
                }
                this.begun = this.begun || closing.begun();
            }
        }
        if !this.begun && this.closing.is_some() {
            if let Some(woken) = this.standing.as_mut().as_pin_mut() {
                this.begun = woken.poll(cx).is_ready();
            }
        }
        if this.begun && !this.shortened {
            this.shortened = true;
            let grace = tokio::time::Instant::now() + SHUTDOWN_GRACE;
            let at = grace.min(this.timer.deadline());
            this.timer.as_mut().reset(at);
        }
        ready!(this.timer.as_mut().poll(cx));
        Poll::Ready(Err(if this.begun {
            Arrival::Closed
        } else {
            Arrival::TimedOut
        }))
    }
}

/// How long a kept-alive connection still waits for its next request once a shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

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
            let mut bytes = spare::read_buffer(STASH_READ);
            bytes.extend_from_slice(space.filled());
            Poll::Ready(Ok(bytes))
        }
        _ => Poll::Ready(Err(Arrival::Closed)),
    }
}

/// Whether a cleartext connection speaks HTTP/2 with prior knowledge: its preface starts
/// "PRI ", which no HTTP/1 request does. The bytes peeked stay for whichever reads the
/// connection. `None`: the connection closed, or sent nothing by `first_head_by`.
async fn prior_knowledge(stream: &mut Stream, first_head_by: tokio::time::Instant) -> Option<bool> {
    let mut start = [0u8; 4];
    match tokio::time::timeout_at(first_head_by, stream.try_peek(&mut start)).await {
        Ok(Ok(true)) => Some(&start == b"PRI "),
        Ok(_) => None,
        Err(_) => {
            connections::HEADER_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Answers a client over its connection cap (HTTP/1; an h2 client just sees the close), with
/// the headers every edge answer carries: a request id and, on https, HSTS.
async fn refuse(mut stream: Stream, hsts: Option<String>) {
    if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        let answer = crate::respond::closing_answer(
            429,
            "too_many_connections",
            "this client holds max_connections_per_client connections",
            hsts.as_deref(),
            &[("retry-after", "1")],
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(&answer).await;
            let _ = stream.flush().await;
        })
        .await;
    }
    Shutdown::shutdown(&mut *stream).await;
}

/// Answers a request head the edge does not read (malformed, or over the head limits) and
/// closes the connection: nothing after that head can be trusted to be a request. What the
/// client goes on sending is read and dropped for a moment after the answer, so that it sees
/// the answer rather than a reset.
async fn answer_and_close(stream: &mut Stream, status: u16, why: &str, hsts: Option<&str>) {
    let answer =
        crate::respond::closing_answer(status, crate::respond::error_name(status), why, hsts, &[]);
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        stream.write_all(&answer).await?;
        stream.flush().await?;
        Shutdown::shutdown(&mut **stream).await;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What an idle connection costs the edge is mostly its task: the future of the
    /// connection's loop, sized by its largest state. A request's state is boxed apart, so
    /// this stays small (10,000 idle connections are 10,000 of these); the task as a whole is
    /// `listen::tests::a_connections_task_fits_a_640_byte_allocation`.
    #[tokio::test]
    async fn a_waiting_connections_future_stays_small() {
        let gate = gate();
        let (stream, _client) = crate::tcp::test_pair().await;
        let serve = gate.serve(stream, None, tokio::time::Instant::now());
        let size = std::mem::size_of_val(&serve);
        // 440 bytes (the same in debug and release builds). It was 704 as three nested
        // `async fn`s, each holding its arguments twice, with the wait an `async fn` over a
        // `poll_fn` (120 bytes for 40 of references and flags) and values moved into the loop
        // still holding their places here; 1,416 with the request's session inline in the
        // loop; 1,040 with the rest of the head read and the close in the loop and the wait a
        // select over a shutdown watch's `changed` and two timeouts.
        assert!(size <= 440, "a waiting connection's future is {size} bytes");
    }

    /// A request's future is made on the stack and moved into its box for every request, all
    /// of it: its size is bytes copied per request. Rare paths with large state (the answer to
    /// a refused head, with its 4 KiB sink) are boxed apart so that they are not part of it.
    #[tokio::test]
    async fn a_requests_future_stays_small() {
        let gate = gate();
        let (mut stream, _client) = crate::tcp::test_pair().await;
        let conn = h1::Conn {
            ssl: None,
            peer: None,
        };
        let request = gate.request(&mut stream, &conn, bytes::BytesMut::new(), 1);
        let size = std::mem::size_of_val(&request);
        // 2,912 bytes when this was written (2,192 of them the phases'); 5,056 with the
        // refused head's answer inline.
        assert!(size <= 3200, "a request's future is {size} bytes");
    }

    /// A wait as the HTTP/1 loop makes it: the connection's timer set to end `wait` from
    /// now, then the wait.
    async fn wait_for(
        stream: &mut Stream,
        mut timer: Pin<&mut tokio::time::Sleep>,
        wait: Duration,
        closing: Option<&Closing>,
    ) -> Result<bytes::BytesMut, Arrival> {
        timer.as_mut().reset(tokio::time::Instant::now() + wait);
        let standing = std::pin::pin!(None);
        first_bytes(stream, timer, closing, standing).await
    }

    /// The wait for a kept-alive connection's next request: bytes end it, so does its time,
    /// and a shutdown (begun before the wait or during it) ends it after the grace, with the
    /// wait's own time the shorter of the two.
    #[tokio::test(start_paused = true)]
    async fn the_wait_for_a_next_request_ends_at_bytes_time_or_the_shutdown_grace() {
        use tokio::io::AsyncWriteExt;
        use tokio::time::Instant;
        let long = Duration::from_secs(60);
        // Each connection's timer, as the loop has it: made once, moved by each wait.
        let new_timer = || Box::pin(tokio::time::sleep(Duration::ZERO));

        let (mut stream, mut client) = crate::tcp::test_pair().await;
        let mut timer = new_timer();
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let closing = Closing::default();
        let got = wait_for(&mut stream, timer.as_mut(), long, Some(&closing)).await;
        assert_eq!(&got.ok().expect("bytes")[..], b"GET / HTTP/1.1\r\n");

        let (mut stream, _client) = crate::tcp::test_pair().await;
        let mut timer = new_timer();
        let started = Instant::now();
        let waited = wait_for(
            &mut stream,
            timer.as_mut(),
            Duration::from_secs(5),
            Some(&closing),
        )
        .await;
        assert!(waited.err() == Some(Arrival::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        // A shutdown during the wait: it ends a grace after.
        let (mut stream, _client) = crate::tcp::test_pair().await;
        let mut timer = new_timer();
        let started = Instant::now();
        let wait = wait_for(&mut stream, timer.as_mut(), long, Some(&closing));
        let shutdown = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            closing.begin();
        };
        let (waited, ()) = tokio::join!(wait, shutdown);
        assert!(waited.err() == Some(Arrival::Closed));
        assert_eq!(started.elapsed(), Duration::from_secs(2) + SHUTDOWN_GRACE);

        // Begun before the wait: the grace from the start.
        let (mut stream, _client) = crate::tcp::test_pair().await;
        let mut timer = new_timer();
        let started = Instant::now();
        let waited = wait_for(&mut stream, timer.as_mut(), long, Some(&closing)).await;
        assert!(waited.err() == Some(Arrival::Closed));
        assert_eq!(started.elapsed(), SHUTDOWN_GRACE);

        // The wait's own time when it is the shorter, and a first request's wait (no
        // shutdown watched) is not shortened.
        let (mut stream, _client) = crate::tcp::test_pair().await;
        let mut timer = new_timer();
        let started = Instant::now();
        let short = Duration::from_millis(300);
        let waited = wait_for(&mut stream, timer.as_mut(), short, Some(&closing)).await;
        assert!(waited.err() == Some(Arrival::Closed));
        assert_eq!(started.elapsed(), short);
        let (mut stream, _client) = crate::tcp::test_pair().await;
        let mut timer = new_timer();
        let started = Instant::now();
        let waited = wait_for(&mut stream, timer.as_mut(), Duration::from_secs(5), None).await;
        assert!(waited.err() == Some(Arrival::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    /// A connection's entry in the list of waits stands from its first wait to its close:
    /// a shutdown that begins during a later wait, or between two waits (while a request is
    /// served), still ends the wait a grace after.
    #[tokio::test(start_paused = true)]
    async fn a_standing_entry_sees_a_shutdown_in_any_later_wait() {
        use tokio::io::AsyncWriteExt;
        use tokio::time::Instant;
        type Standing<'c> = Option<tokio::sync::futures::Notified<'c>>;
        /// A wait of the loop's kind: the connection's timer a minute out, its standing entry.
        async fn wait<'c>(
            stream: &mut Stream,
            timer: &mut Pin<Box<tokio::time::Sleep>>,
            closing: &'c Closing,
            standing: Pin<&mut Standing<'c>>,
        ) -> Result<bytes::BytesMut, Arrival> {
            timer
                .as_mut()
                .reset(Instant::now() + Duration::from_secs(60));
            first_bytes(stream, timer.as_mut(), Some(closing), standing).await
        }
        /// A wait that has to wait (so its entry is made), ended by bytes a second in.
        async fn ended_by_bytes<'c>(
            stream: &mut Stream,
            client: &mut tokio::net::TcpStream,
            timer: &mut Pin<Box<tokio::time::Sleep>>,
            closing: &'c Closing,
            standing: Pin<&mut Standing<'c>>,
        ) -> Result<bytes::BytesMut, Arrival> {
            let bytes = async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                client
                    .write_all(b"GET / HTTP/1.1\r\n")
                    .await
                    .expect("write");
            };
            let (got, ()) = tokio::join!(wait(stream, timer, closing, standing), bytes);
            got
        }
        let (mut stream, mut client) = crate::tcp::test_pair().await;
        let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));

        // The first wait's entry stays after the bytes end it.
        let closing = Closing::default();
        let mut standing = std::pin::pin!(None);
        let got = ended_by_bytes(
            &mut stream,
            &mut client,
            &mut timer,
            &closing,
            standing.as_mut(),
        )
        .await;
        assert_eq!(&got.ok().expect("bytes")[..], b"GET / HTTP/1.1\r\n");
        assert!(standing.is_some(), "the entry stands");

        // A later wait: a shutdown during it ends it a grace after.
        let started = Instant::now();
        let shutdown = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            closing.begin();
        };
        let later = wait(&mut stream, &mut timer, &closing, standing.as_mut());
        let (waited, ()) = tokio::join!(later, shutdown);
        assert!(waited.err() == Some(Arrival::Closed));
        assert_eq!(started.elapsed(), Duration::from_secs(2) + SHUTDOWN_GRACE);

        // Begun between two waits, with the entry standing (notified, off the list): the
        // next wait is the grace.
        let closing = Closing::default();
        let mut standing = std::pin::pin!(None);
        let got = ended_by_bytes(
            &mut stream,
            &mut client,
            &mut timer,
            &closing,
            standing.as_mut(),
        )
        .await;
        assert!(got.is_ok() && standing.is_some());
        closing.begin();
        let started = Instant::now();
        let waited = wait(&mut stream, &mut timer, &closing, standing.as_mut()).await;
        assert!(waited.err() == Some(Arrival::Closed));
        assert_eq!(started.elapsed(), SHUTDOWN_GRACE);
    }

    /// A shutdown ends the waits of every thread, whichever stripe each is listed on.
    #[tokio::test]
    async fn a_shutdown_wakes_the_waits_of_every_stripe() {
        let closing = Closing::default();
        let mut waits: Vec<_> = closing
            .waits
            .iter()
            .map(|w| Box::pin(w.notified()))
            .collect();
        for wait in &mut waits {
            assert!(!wait.as_mut().enable(), "nothing began yet");
        }
        closing.begin();
        for wait in waits {
            tokio::time::timeout(Duration::from_secs(1), wait)
                .await
                .expect("woken");
        }
    }

    /// A connection's one timer across its waits: a wait that follows one cut short by
    /// bytes ends its own time after it began, whether that is later than the end the timer
    /// was registered for (the stored end) or sooner (registered again).
    #[tokio::test(start_paused = true)]
    async fn one_timer_serves_every_wait_of_a_connection() {
        use tokio::io::AsyncWriteExt;
        use tokio::time::Instant;
        let (mut stream, mut client) = crate::tcp::test_pair().await;
        let mut timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let started = Instant::now();
        async fn next_request_after(client: &mut (impl AsyncWriteExt + Unpin), secs: u64) {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            client
                .write_all(b"GET / HTTP/1.1\r\n")
                .await
                .expect("write");
        }

        // Registered for 5 s; bytes at 2 s.
        let five = Duration::from_secs(5);
        let (got, ()) = tokio::join!(
            wait_for(&mut stream, timer.as_mut(), five, None),
            next_request_after(&mut client, 2)
        );
        assert!(got.is_ok());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // Later: 5 s from 2 s, not the 5 s first registered.
        let (got, ()) = tokio::join!(
            wait_for(&mut stream, timer.as_mut(), five, None),
            next_request_after(&mut client, 4)
        );
        assert!(got.is_ok(), "the timer fired at its first end");
        assert_eq!(started.elapsed(), Duration::from_secs(6));
        // Sooner: 1 s from 6 s, before the 11 s the timer is registered for.
        let waited = wait_for(&mut stream, timer.as_mut(), Duration::from_secs(1), None).await;
        assert!(waited.err() == Some(Arrival::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(7));
        // After it fired: set again, for the whole wait.
        let waited = wait_for(&mut stream, timer.as_mut(), five, None).await;
        assert!(waited.err() == Some(Arrival::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(12));
    }

    pub(crate) fn gate() -> ConnectionGate {
        let text = "[edge]\nhttp_listen = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
                    [upstreams.a]\nservers = [{ addr = \"127.0.0.1:9\" }]\n\
                    [[routes]]\npath = \"/\"\nupstream = \"a\"\n";
        let config = crate::config::validate("t.toml", text)
            .expect("valid")
            .config;
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::compile("t", config, None)));
        let (_tx, draining) = tokio::sync::watch::channel(false);
        ConnectionGate {
            edge: Arc::new(EdgeProxy::new(snapshot.clone())),
            snapshot,
            draining,
            closing: Closing::default(),
        }
    }
}
