//! HTTP/2 toward servers (`protocol = "h2"`, or `"auto"` when the server selects h2): one
//! connection carries many requests at once, each on its own stream, as many as the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` allows; a new connection is opened when every one is
//! full or going away. [`Exchange`] is one request's stream, with the same calls as the
//! HTTP/1.1 exchange ([`super::h1::Exchange`]): the head out, the body out under flow
//! control, the answer's head, body and trailers back.
//!
//! A stream the server refused (RST_STREAM REFUSED_STREAM) or never took (after a GOAWAY
//! whose last stream is below it) was not processed (RFC 9113 8.7): its error is marked
//! `ReusedOnly`, as an HTTP/1.1 request on a connection the server had closed, so the
//! request is sent again on another connection without counting against the server.

use super::h1::Response;
use super::pool::Surplus;
use crate::held::lock;
use crate::window::{self, Stalled};
use ::h2::client::{ResponseFuture, SendRequest};
use ::h2::{RecvStream, SendStream};
use bytes::Bytes;
use http::HeaderMap;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result, RetryType};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;

/// One HTTP/2 connection to a server: a handle to open streams on it, and what is known of
/// its use.
#[derive(Clone)]
pub struct Connection {
    send: SendRequest<Bytes>,
    shared: Arc<Shared>,
}

struct Shared {
    /// Streams open on it now.
    active: AtomicUsize,
    /// Streams it has carried (`keepalive_requests` retires it).
    served: AtomicU32,
    /// When its last stream ended (for `keepalive_timeout`).
    idle_since: Mutex<Instant>,
}

impl Connection {
    /// The HTTP/2 handshake on `stream` (already TLS with ALPN h2, or cleartext with prior
    /// knowledge); the connection's own task runs on the current runtime until the server or
    /// the last handle closes it.
    ///
    /// It is ready once the server has answered a PING: its SETTINGS come before that answer,
    /// so its stream limit is known before requests are put on it (h2 takes it for unbounded
    /// until then, and would queue on it a burst its server takes one or two at a time).
    pub async fn handshake(stream: Stream, timeout: Duration) -> Result<Connection> {
        let by = tokio::time::Instant::now() + timeout;
        let handshake = ::h2::client::Builder::new()
            .initial_window_size(WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .handshake::<_, Bytes>(stream);
        let failed = |e| Error::e_because(ErrorType::ConnectError, "the HTTP/2 handshake", e);
        let timed_out = || Error::e_explain(ErrorType::ConnectTimedout, "the HTTP/2 handshake");
        let (send, mut connection) = match tokio::time::timeout_at(by, handshake).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return failed(e),
            Err(_) => return timed_out(),
        };
        let pings = connection.ping_pong();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "an HTTP/2 connection to a server ended");
            }
        });
        if let Some(mut pings) = pings {
            match tokio::time::timeout_at(by, pings.ping(::h2::Ping::opaque())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return failed(e),
                Err(_) => return timed_out(),
            }
        }
        Ok(Connection {
            send,
            shared: Arc::new(Shared {
                active: AtomicUsize::new(0),
                served: AtomicU32::new(0),
                idle_since: Mutex::new(Instant::now()),
            }),
        })
    }

    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS` (`usize::MAX`: it states none).
    fn limit(&self) -> usize {
        self.send.current_max_send_streams().max(1)
    }

    /// Whether it can open one more stream now: fewer than `limit` are open, and the
    /// connection is neither closed nor going away.
    fn has_room(&mut self, limit: usize) -> bool {
        if self.shared.active.load(Ordering::Relaxed) >= limit {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.send.poll_ready(&mut cx), Poll::Ready(Ok(())))
    }

    /// Streams open on it now.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Whether it has had no stream for `timeout` or longer.
    fn idle_for(&self, timeout: Duration) -> bool {
        self.active() == 0 && lock(&self.shared.idle_since).elapsed() >= timeout
    }

    /// Whether it has closed (the server's GOAWAY or close, or an error on it).
    fn closed(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        matches!(self.send.poll_ready(&mut cx), Poll::Ready(Err(_)))
    }
}

/// The HTTP/2 connections of one server, per worker thread (as the HTTP/1.1 pool keeps its
/// idle connections): a request takes one with room, or opens a new one. Connections with no
/// stream beyond `keepalive` are closed once they have had none for
/// [`super::pool::SURPLUS_GRACE`], and any after `keepalive_timeout` without one: a timer
/// looks every grace while the thread holds a connection (as the HTTP/1.1 pool's does).
///
/// A request that finds no room waits for a connection being opened on its thread that is
/// expected to take more streams (the server's stated limit, or [`ASSUMED_STREAMS`]) than the
/// requests already waiting for it; otherwise it opens one: a burst after an idle spell opens
/// the connections its size needs, at once, not one per request.
#[derive(Default)]
pub struct Pool {
    connections: ThreadLocal<Arc<Mutex<Held>>>,
    /// The last stream limit a connection's server stated (0: none yet; `usize::MAX`: none).
    stated: AtomicUsize,
    /// With `protocol = "auto"`: the server's last connect chose HTTP/1.1.
    chose_http1: AtomicBool,
}

/// The streams a new connection is expected to take before its server has stated a limit:
/// the least RFC 9113 6.5.2 recommends servers allow.
const ASSUMED_STREAMS: usize = 100;

/// The most streams a connection being opened is expected to take (a server that states no
/// limit takes any number).
const MAX_ROOM: usize = 1024;

/// A connection being opened on a thread, from [`Pool::no_room`]: when it is dropped, the
/// requests waiting for it are told how it came out ([`Opening::ready`] once it is in the
/// pool, [`Opening::failed`], or neither: it was not HTTP/2, or its request went).
pub struct Opening {
    held: Arc<Mutex<Held>>,
    id: u64,
    came: tokio::sync::watch::Sender<Came>,
    outcome: Came,
}

/// How a connection being opened came out.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Came {
    Pending,
    /// It is in the pool.
    Ready,
    /// Its connect failed so: its waiters' would too.
    Failed(ErrorType),
    /// It was not HTTP/2, or its request went: its waiters look again.
    Gone,
}

impl Opening {
    pub fn ready(mut self) {
        self.outcome = Came::Ready;
    }

    pub fn failed(mut self, error: &Error) {
        self.outcome = Came::Failed(error.etype().clone());
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        lock(&self.held).openings.retain(|o| o.id != self.id);
        self.came
            .send_replace(std::mem::replace(&mut self.outcome, Came::Gone));
    }
}

/// A request waiting for a connection being opened (its claim on one of its streams).
struct Waiting {
    held: Arc<Mutex<Held>>,
    id: u64,
    came: tokio::sync::watch::Receiver<Came>,
}

impl Waiting {
    /// Waits until the connection comes out: how.
    async fn outcome(&mut self) -> Came {
        match self.came.wait_for(|came| *came != Came::Pending).await {
            Ok(came) => came.clone(),
            Err(_) => Came::Gone,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        // A request that leaves before the connection came gives its stream back.
        let mut here = lock(&self.held);
        if let Some(o) = here.openings.iter_mut().find(|o| o.id == self.id) {
            o.unclaimed += 1;
        }
    }
}

/// A connection being opened, as its thread's pool sees it.
struct Pending {
    id: u64,
    /// The streams it is expected to take that no request has claimed.
    unclaimed: usize,
    came: tokio::sync::watch::Receiver<Came>,
}

/// What a request that found no connection with room does: opens one (with the
/// [`Opening`] others may wait for, held until the connection is in the pool), or waits.
enum NoRoom {
    Own(Option<Opening>),
    Wait(Waiting),
}

/// What [`Pool::wait_or_open`] gives a request: a connection with room that came while it
/// waited, or the go-ahead to open one (with the [`Opening`] others may wait for).
pub enum Got {
    Connection(Connection),
    Open(Option<Opening>),
}

/// How much longer than `connect_timeout` a request waits for a connection another request
/// is opening (whose connect is bounded by it): its outcome comes first.
const OPENING_MARGIN: Duration = Duration::from_millis(500);

/// How many times a request whose awaited connection came without room for it waits again
/// before it opens its own.
const WAITS: u32 = 3;

/// One thread's connections to a server.
#[derive(Default)]
struct Held {
    list: Vec<Connection>,
    /// The `keepalive` of the last put: how many idle ones stay.
    keepalive: usize,
    /// The `keepalive_timeout` of the last put: how long one stays without a stream.
    timeout: Duration,
    /// A trim is scheduled.
    trimming: bool,
    /// Connections being opened now, and the last one's number.
    openings: Vec<Pending>,
    opened: u64,
}

impl Surplus for Held {
    /// Drops the connections the server closed, those without a stream for `timeout`, and
    /// those with no stream beyond `keepalive` (the longest idle first) that have had none for
    /// the grace; whether any is left (the timer looks again while one is).
    fn trim(&mut self) -> bool {
        let timeout = self.timeout;
        self.list
            .retain_mut(|c| !(c.idle_for(timeout) || c.closed()));
        let mut idle: Vec<(Instant, usize)> = self
            .list
            .iter()
            .enumerate()
            .filter(|(_, c)| c.active() == 0)
            .map(|(i, c)| (*lock(&c.shared.idle_since), i))
            .collect();
        if idle.len() <= self.keepalive {
            return !self.list.is_empty();
        }
        // The most recently idle stay.
        idle.sort_unstable_by_key(|&(since, _)| std::cmp::Reverse(since));
        let mut gone: Vec<usize> = idle[self.keepalive..]
            .iter()
            .filter(|(since, _)| since.elapsed() >= super::pool::SURPLUS_GRACE)
            .map(|(_, i)| *i)
            .collect();
        gone.sort_unstable();
        for i in gone.into_iter().rev() {
            self.list.swap_remove(i);
        }
        !self.list.is_empty()
    }

    fn trimming(&mut self) -> &mut bool {
        &mut self.trimming
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("connections", &self.len())
            .finish()
    }
}

impl Pool {
    /// A connection of this thread with room for one more stream, dropping those closed,
    /// retired after `max_requests` streams (0: no bound), or idle past `idle_timeout`.
    pub fn take(&self, idle_timeout: Duration, max_requests: u32) -> Option<Connection> {
        let mut here = lock(self.connections.get_or_default());
        here.list.retain_mut(|c| {
            let retired =
                max_requests > 0 && c.shared.served.load(Ordering::Relaxed) >= max_requests;
            !(c.idle_for(idle_timeout) || retired || c.closed())
        });
        here.list.iter_mut().find_map(|c| {
            let limit = c.limit();
            if limit != self.stated.load(Ordering::Relaxed) {
                self.stated.store(limit, Ordering::Relaxed);
            }
            c.has_room(limit).then(|| c.clone())
        })
    }

    /// For a request that found no connection with room ([`Pool::take`]): waits for a
    /// connection being opened on this thread while one is expected to take a stream no other
    /// request claimed (each wait `connect_timeout` and a margin at most, [`WAITS`] times),
    /// and takes one with room that came; or says to open one. A connect waited for that
    /// failed fails the request with the same kind of error.
    pub async fn wait_or_open(
        &self,
        idle_timeout: Duration,
        max_requests: u32,
        connect_timeout: Duration,
    ) -> Result<Got> {
        let (mut may_wait, mut waits) = (true, WAITS);
        loop {
            let mut waiting = match self.no_room(may_wait && waits > 0) {
                NoRoom::Own(opening) => return Ok(Got::Open(opening)),
                NoRoom::Wait(waiting) => waiting,
            };
            waits -= 1;
            let within = connect_timeout + OPENING_MARGIN;
            match tokio::time::timeout(within, waiting.outcome()).await {
                Ok(Came::Failed(kind)) => {
                    let why = "the connection being opened to the server for it";
                    return Error::e_explain(kind, why);
                }
                Ok(_) => {}
                Err(_) => may_wait = false,
            }
            drop(waiting);
            if let Some(connection) = self.take(idle_timeout, max_requests) {
                return Ok(Got::Connection(connection));
            }
        }
    }

    /// For a request that found no connection with room ([`Pool::take`]): wait for a
    /// connection being opened on this thread that is expected to take a stream no other
    /// request claimed, or open one, holding the [`Opening`] until it is put. With `may_wait`
    /// false (the request waited long enough) it opens one that others do not wait for.
    fn no_room(&self, may_wait: bool) -> NoRoom {
        if !may_wait {
            return NoRoom::Own(None);
        }
        let held = self.connections.get_or_default();
        let mut here = lock(held);
        if let Some(o) = here.openings.iter_mut().find(|o| o.unclaimed > 0) {
            o.unclaimed -= 1;
            return NoRoom::Wait(Waiting {
                held: held.clone(),
                id: o.id,
                came: o.came.clone(),
            });
        }
        let expected = match self.stated.load(Ordering::Relaxed) {
            0 => ASSUMED_STREAMS,
            stated => stated.min(MAX_ROOM),
        };
        here.opened += 1;
        let id = here.opened;
        let (came, waiting) = tokio::sync::watch::channel(Came::Pending);
        here.openings.push(Pending {
            id,
            unclaimed: expected - 1,
            came: waiting,
        });
        NoRoom::Own(Some(Opening {
            held: held.clone(),
            id,
            came,
            outcome: Came::Gone,
        }))
    }

    /// With `protocol = "auto"`: what the server's last connect chose by ALPN.
    pub fn chose(&self, http2: bool) {
        self.chose_http1.store(!http2, Ordering::Relaxed);
    }

    /// Whether a request that finds no room should [`Pool::wait_or_open`]: not for a server
    /// whose last connect chose HTTP/1.1 (`protocol = "auto"`), whose connects nobody could
    /// share.
    pub fn waits_for_openings(&self) -> bool {
        !self.chose_http1.load(Ordering::Relaxed)
    }

    /// Keeps a new connection for the requests after this one (none with `keepalive` 0), for
    /// `idle_timeout` without a stream at most; the surplus beyond `keepalive` idle ones is
    /// trimmed after the grace.
    pub fn put(&self, connection: Connection, keepalive: usize, idle_timeout: Duration) {
        self.chose(true);
        if keepalive == 0 {
            return;
        }
        self.stated.store(connection.limit(), Ordering::Relaxed);
        let held = self.connections.get_or_default();
        let schedule = {
            let mut here = lock(held);
            here.keepalive = keepalive;
            here.timeout = idle_timeout;
            here.trim();
            here.list.push(connection);
            here.timer_wanted(true)
        };
        if schedule {
            super::pool::trim_later(Arc::downgrade(held));
        }
    }

    /// Connections held now, on every thread.
    pub fn len(&self) -> usize {
        self.connections.iter().map(|c| lock(c).list.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stream's window for an answer's body, and the connection's (h2's defaults are 64 KiB:
/// one round trip per 64 KiB of a large answer).
const WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
/// Request bytes one stream may queue ahead of the socket.
const MAX_SEND_BUFFER: usize = 64 * 1024;

/// A head of the answer, as h2 hands it out.
enum Head {
    Interim(http::Response<()>),
    Final(http::Response<RecvStream>),
}

/// Counts a stream open on its connection while it lives.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.0.idle_since) = Instant::now();
        }
    }
}

/// The request body's side of a stream: its pieces go out as the server's window lets them.
/// Taken apart from the [`Exchange`] when the body and the answer stream at once (gRPC).
pub struct Upload {
    send: SendStream<Bytes>,
    write_timeout: Duration,
}

impl Upload {
    /// Sends a piece of the request body as the server's window lets it (each wait for
    /// window bounded by the upstream's `send_timeout`); `end`: it is the last.
    pub async fn write(&mut self, data: Bytes, end: bool) -> Result<()> {
        let mut sent = 0;
        match window::send(
            &mut self.send,
            data,
            end,
            self.write_timeout,
            || false,
            &mut sent,
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(Stalled::H2(e)) => Err(stream_error(e, "sending the request body")),
            Err(Stalled::Closed) => {
                Error::e_explain(ErrorType::WriteError, "the server's stream closed")
            }
            Err(Stalled::TimedOut) => {
                Error::e_explain(ErrorType::WriteTimedout, "the server opened no window")
            }
        }
    }

    /// Ends the request body, with `trailers` when there are some.
    pub fn finish(mut self, trailers: Option<HeaderMap>) -> Result<()> {
        match trailers {
            Some(trailers) => self.send.send_trailers(trailers),
            None => self.send.send_data(Bytes::new(), true),
        }
        .map_err(|e| stream_error(e, "ending the request body"))
    }
}

/// One request and its answer on a stream of an HTTP/2 connection.
pub struct Exchange {
    response: Option<ResponseFuture>,
    upload: Option<Upload>,
    recv: Option<RecvStream>,
    trailers: Option<HeaderMap>,
    read_timeout: Duration,
    _open: Open,
}

impl Exchange {
    /// Opens a stream on `connection` with `request`'s head; `end`: no body follows.
    pub async fn start(
        mut connection: Connection,
        request: http::Request<()>,
        end: bool,
        read_timeout: Duration,
        write_timeout: Duration,
    ) -> Result<Exchange> {
        let ready = std::future::poll_fn(|cx| connection.send.poll_ready(cx));
        match tokio::time::timeout(write_timeout, ready).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(stream_error(e, "opening a stream")),
            Err(_) => {
                return Error::e_explain(ErrorType::WriteTimedout, "no stream could be opened")
            }
        }
        let (response, send) = connection
            .send
            .send_request(request, end)
            .map_err(|e| stream_error(e, "sending the request head"))?;
        connection.shared.active.fetch_add(1, Ordering::AcqRel);
        connection.shared.served.fetch_add(1, Ordering::Relaxed);
        Ok(Exchange {
            response: Some(response),
            upload: (!end).then_some(Upload {
                send,
                write_timeout,
            }),
            recv: None,
            trailers: None,
            read_timeout,
            _open: Open(connection.shared.clone()),
        })
    }

    /// Sends a piece of the request body; `end`: it is the last.
    pub async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        upload.write(data, end).await?;
        if end {
            self.upload = None;
        }
        Ok(())
    }

    /// Ends the request body, with `trailers` when there are some.
    pub fn finish_body(&mut self, trailers: Option<HeaderMap>) -> Result<()> {
        match self.upload.take() {
            Some(upload) => upload.finish(trailers),
            None => Ok(()),
        }
    }

    /// The request body's side, to be sent while the answer is read.
    pub fn take_upload(&mut self) -> Option<Upload> {
        self.upload.take()
    }

    /// The answer's next head: an informational one (1xx, 103 Early Hints) when the server
    /// sends one, then the final one, after which the body can be read; within
    /// `read_timeout`.
    pub async fn read_response(&mut self) -> Result<Response> {
        let Some(response) = self.response.as_mut() else {
            return Error::e_explain(ErrorType::InternalError, "the final head was already read");
        };
        let next = std::future::poll_fn(|cx| {
            if let Poll::Ready(Some(head)) = response.poll_informational(cx) {
                return Poll::Ready(head.map(Head::Interim));
            }
            Pin::new(&mut *response)
                .poll(cx)
                .map(|r| r.map(Head::Final))
        });
        let head = match tokio::time::timeout(self.read_timeout, next).await {
            Ok(Ok(head)) => head,
            Ok(Err(e)) => return Err(stream_error(e, "reading the response head")),
            Err(_) => {
                return Error::e_explain(ErrorType::ReadTimedout, "while reading the response head")
            }
        };
        let (parts, body) = match head {
            Head::Interim(head) => (head.into_parts().0, None),
            Head::Final(head) => {
                let (parts, body) = head.into_parts();
                (parts, Some(body))
            }
        };
        if body.is_some() {
            self.response = None;
            self.recv = body;
        }
        Ok(Response {
            status: parts.status,
            reason: Bytes::new(),
            headers: parts.headers,
        })
    }

    /// Whether the answer's body has been read to its end.
    pub fn is_body_done(&self) -> bool {
        self.recv.as_ref().is_some_and(|r| r.is_end_stream())
    }

    /// The next piece of the answer's body, `None` at its end (its trailers are then kept).
    pub async fn read_body(&mut self) -> Result<Option<Bytes>> {
        let Some(recv) = self.recv.as_mut() else {
            return Error::e_explain(ErrorType::InternalError, "no response head read");
        };
        match tokio::time::timeout(self.read_timeout, recv.data()).await {
            Ok(Some(Ok(data))) => {
                let _ = recv.flow_control().release_capacity(data.len());
                Ok(Some(data))
            }
            Ok(Some(Err(e))) => Err(stream_error(e, "reading the response body")),
            Ok(None) => {
                match tokio::time::timeout(self.read_timeout, recv.trailers()).await {
                    Ok(Ok(trailers)) => self.trailers = trailers,
                    Ok(Err(e)) => return Err(stream_error(e, "reading the response trailers")),
                    Err(_) => {
                        return Error::e_explain(
                            ErrorType::ReadTimedout,
                            "while reading the trailers",
                        )
                    }
                }
                Ok(None)
            }
            Err(_) => Error::e_explain(ErrorType::ReadTimedout, "while reading the response body"),
        }
    }

    /// The answer's trailer fields, once, after its body.
    pub fn take_trailers(&mut self) -> Option<HeaderMap> {
        self.trailers.take()
    }
}

/// An h2 error as the request path classifies it: a stream the server did not process is
/// `ReusedOnly` (sent again elsewhere, blaming nobody); the rest are read or write errors.
fn stream_error(e: ::h2::Error, what: &'static str) -> Box<Error> {
    let unprocessed = e.reason() == Some(::h2::Reason::REFUSED_STREAM)
        || (e.is_go_away() && e.is_remote() && e.reason() == Some(::h2::Reason::NO_ERROR));
    let mut error = Error::because(ErrorType::ReadError, what, e);
    if unprocessed {
        error.retry = RetryType::ReusedOnly;
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(pool: &Pool) -> Opening {
        match pool.no_room(true) {
            NoRoom::Own(Some(opening)) => opening,
            _ => panic!("expected to open a connection others wait for"),
        }
    }

    fn wait(pool: &Pool) -> Waiting {
        match pool.no_room(true) {
            NoRoom::Wait(waiting) => waiting,
            _ => panic!("expected to wait"),
        }
    }

    #[test]
    fn a_connection_being_opened_is_waited_for_by_as_many_as_its_server_takes_beyond_its_own() {
        let pool = Pool::default();
        pool.stated.store(3, Ordering::Relaxed);
        let _first = own(&pool);
        let (_a, _b) = (wait(&pool), wait(&pool));
        // The first connection's three streams are claimed: the next request opens another.
        let _second = own(&pool);
        let c = wait(&pool);
        let _d = wait(&pool);
        let _third = own(&pool);
        // One that leaves before its connection came gives its stream back.
        drop(c);
        let _e = wait(&pool);
        // Told not to wait, a request opens one that nobody waits for.
        assert!(matches!(pool.no_room(false), NoRoom::Own(None)));
    }

    #[test]
    fn before_the_server_states_a_limit_a_hundred_wait_for_one_connection() {
        let pool = Pool::default();
        let _first = own(&pool);
        let waiting: Vec<Waiting> = (0..ASSUMED_STREAMS - 1).map(|_| wait(&pool)).collect();
        let _second = own(&pool);
        assert_eq!(waiting.len(), 99);
    }

    #[tokio::test]
    async fn waiters_learn_how_their_connection_came_out_and_only_theirs() {
        let pool = Pool::default();
        pool.stated.store(2, Ordering::Relaxed);
        let first = own(&pool);
        let mut on_first = wait(&pool);
        let second = own(&pool);
        let mut on_second = wait(&pool);
        let refused = Error::explain(ErrorType::ConnectRefused, "test");
        first.failed(&refused);
        assert_eq!(
            on_first.outcome().await,
            Came::Failed(ErrorType::ConnectRefused)
        );
        // The other connection is still being opened.
        let still = tokio::time::timeout(Duration::from_millis(50), on_second.outcome()).await;
        assert!(still.is_err(), "woken by another connection: {still:?}");
        second.ready();
        assert_eq!(on_second.outcome().await, Came::Ready);
        // Dropped without an outcome (not HTTP/2, or its request went): its waiters look again.
        let third = own(&pool);
        let mut on_third = wait(&pool);
        drop(third);
        assert_eq!(on_third.outcome().await, Came::Gone);
    }

    #[test]
    fn a_server_that_chose_http1_last_is_not_waited_for() {
        let pool = Pool::default();
        pool.chose(false);
        assert!(!pool.waits_for_openings());
        pool.chose(true);
        assert!(pool.waits_for_openings());
        assert!(matches!(pool.no_room(true), NoRoom::Own(Some(_))));
    }
}
