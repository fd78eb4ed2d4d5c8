//! Kept-alive upstream connections, owned by the edge: a stack of idle connections per
//! server and worker thread (the most recently used is taken first, as nginx's per-worker
//! keepalive cache does), at most the upstream's `keepalive` of them on each thread for long,
//! each retired after `keepalive_requests` requests or `keepalive_timeout` idle. A connection
//! the server closed while it sat idle is noticed when it is taken and dropped, without a
//! request lost; while a thread holds idle connections, a timer looks at them every second
//! and closes those idle past `keepalive_timeout` and those the server closed (as nginx's
//! keepalive cache closes a connection on its timeout or on the server's close: left to the
//! next take, they sat in CLOSE-WAIT, their servers' sockets in FIN-WAIT-2, for as long as
//! no request came).
//!
//! A burst of more concurrent requests than `keepalive` needs more connections than the pool
//! keeps. nginx closes each surplus connection as its request ends, and the burst's next
//! requests open new ones: hundreds of connects and closes a second, each a SYN into the
//! server's accept queue and a socket in TIME_WAIT. Here a surplus connection is kept for
//! [`SURPLUS_GRACE`] after its request (HAProxy purges its idle surplus gradually too): a
//! burst's next requests reuse it, and once the burst is over the pool is back to
//! `keepalive` idle connections within that time, a timer trimming it.
//!
//! A connection is only taken again on the thread that opened it: its socket is registered
//! with that worker's reactor, and a connection used from another worker's task would have
//! every wake-up cross threads.
//!
//! The pool lives in the server's [`super::ServerState`], so it survives reloads that keep
//! the server, and goes with the server when a reload removes it.

use super::h1::Connection;
use crate::held::lock;
use pingora::protocols::Stream;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;

/// How long a connection beyond `keepalive` is kept idle after its request.
pub const SURPLUS_GRACE: Duration = Duration::from_secs(1);

/// The most idle connections one thread keeps for one server, surplus included.
const MAX_IDLE: usize = 4096;

/// One idle connection.
struct Idle {
    connection: Connection,
    /// When it went idle.
    since: Instant,
}

/// One thread's idle connections to a server, oldest first.
#[derive(Default)]
struct Stack {
    idle: Vec<Idle>,
    /// The `keepalive` the last put was made with (what a trim keeps).
    capacity: usize,
    /// The `keepalive_timeout` the last put was made with.
    timeout: Duration,
    /// A trim is scheduled.
    trimming: bool,
}

impl Stack {
    /// Drops the connections idle for `timeout` at `now`, and those beyond `capacity` idle for
    /// [`SURPLUS_GRACE`] (the oldest go first).
    fn trim_at(&mut self, now: Instant) {
        let timeout = self.timeout;
        let expired = self
            .idle
            .iter()
            .take_while(|i| now.saturating_duration_since(i.since) >= timeout)
            .count();
        self.idle.drain(..expired);
        let surplus = self.idle.len().saturating_sub(self.capacity);
        let expired = self.idle[..surplus]
            .iter()
            .take_while(|i| now.duration_since(i.since) >= SURPLUS_GRACE)
            .count();
        self.idle.drain(..expired);
    }
}

/// The idle connections of one server, a stack per worker thread.
#[derive(Default)]
pub struct Pool {
    stacks: ThreadLocal<Arc<Mutex<Stack>>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("idle", &self.len()).finish()
    }
}

impl Pool {
    /// The newest idle connection younger than `idle_timeout` at `now` that the server has not
    /// closed.
    pub fn take(&self, idle_timeout: Duration, now: Instant) -> Option<Connection> {
        let stack = self.here();
        loop {
            let idle = lock(stack).idle.pop()?;
            if now.saturating_duration_since(idle.since) >= idle_timeout {
                // Everything below it is older still.
                lock(stack).idle.clear();
                return None;
            }
            let mut connection = idle.connection;
            if still_open(&mut connection.stream) {
                return Some(connection);
            }
        }
    }

    /// Keeps `connection` for the next request unless it has carried `max_requests` (0: no
    /// bound) or `capacity` is 0 (keep none), for `idle_timeout` at most. Beyond `capacity`
    /// idle connections, it is kept for [`SURPLUS_GRACE`] only. It is idle from `now` (the
    /// caller's reading of the clock, no later than the truth: an earlier one only ends its
    /// idle time sooner).
    pub fn put(
        &self,
        connection: Connection,
        capacity: usize,
        max_requests: u32,
        idle_timeout: Duration,
        now: Instant,
    ) {
        if capacity == 0 || (max_requests > 0 && connection.served >= max_requests) {
            return;
        }
        let stack = self.here();
        let schedule = {
            let mut here = lock(stack);
            here.capacity = capacity;
            here.timeout = idle_timeout;
            here.trim_at(now);
            if here.idle.len() >= MAX_IDLE {
                // The oldest goes: it is the likeliest to be closed by the server.
                here.idle.remove(0);
            }
            // The stack stays oldest first (`take` and the trims rely on it) when the
            // caller's reading is older than the top's: a request whose answer came first
            // may be done with its connection last.
            let since = here.idle.last().map_or(now, |top| top.since.max(now));
            here.idle.push(Idle { connection, since });
            // The timer runs while anything is idle (see `Surplus for Stack`).
            here.timer_wanted(true)
        };
        if schedule {
            trim_later(Arc::downgrade(stack));
        }
    }

    /// Idle connections held now, on every thread.
    pub fn len(&self) -> usize {
        self.stacks.iter().map(|stack| lock(stack).idle.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This thread's stack (uncontended: only this thread takes and puts; `len` and the
    /// trim timer read).
    fn here(&self) -> &Arc<Mutex<Stack>> {
        self.stacks.get_or_default()
    }
}

/// One thread's connections to a server that a timer trims back to `keepalive` after a
/// burst: this pool's idle stack, and the HTTP/2 pool's connections.
pub(super) trait Surplus: Send + 'static {
    /// Drops the connections beyond `keepalive` that have sat idle for [`SURPLUS_GRACE`]
    /// (and whatever else the timer is for); whether the timer must look again.
    fn trim(&mut self) -> bool;
    /// Whether a trim timer is running.
    fn trimming(&mut self) -> &mut bool;

    /// After a put: whether a timer must be started for the `surplus` it left (one at a time).
    fn timer_wanted(&mut self, surplus: bool) -> bool {
        let start = surplus && !*self.trimming();
        *self.trimming() |= start;
        start
    }
}

impl Surplus for Stack {
    /// The surplus past its grace, the connections idle past the timeout and those the
    /// server closed (or wrote on) go; the timer looks again while any is idle. Only those
    /// idle for a tick are looked at: under load a connection goes back and forth many times
    /// a second, and its next take looks anyway.
    fn trim(&mut self) -> bool {
        let now = Instant::now();
        self.trim_at(now);
        self.idle.retain_mut(|idle| {
            now.saturating_duration_since(idle.since) < SURPLUS_GRACE
                || still_open(&mut idle.connection.stream)
        });
        !self.idle.is_empty()
    }

    fn trimming(&mut self) -> &mut bool {
        &mut self.trimming
    }
}

/// Trims `held` every [`SURPLUS_GRACE`] while its trim says to, on this thread's runtime (its
/// sockets are registered there); it ends with the pool that holds `held`.
pub(super) fn trim_later<S: Surplus>(held: Weak<Mutex<S>>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        if let Some(held) = held.upgrade() {
            *lock(&held).trimming() = false;
        }
        return;
    };
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(SURPLUS_GRACE).await;
            let Some(held) = held.upgrade() else { return };
            let mut here = lock(&held);
            if !here.trim() {
                *here.trimming() = false;
                return;
            }
        }
    });
}

/// Whether an idle connection can carry a request: nothing has arrived on it since it went
/// idle, neither data (a server has nothing to say between requests) nor its close. One poll
/// of a one-byte read, answered from the reactor's readiness without waiting; whatever it
/// reads is lost, and so is the connection then. Over TLS, a record with no data for the
/// request (a session ticket) is taken in and the connection stays open; a close_notify
/// closes it. A plain read, not `Peek::try_peek`: that one is boxed per call (async_trait),
/// and every pooled request would pay the allocation.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(
        tokio::io::AsyncRead::poll_read(std::pin::Pin::new(stream), &mut cx, &mut buf),
        Poll::Pending
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    // (the edge's side, as forward::connect opens it, and the server's side)
    use crate::tcp::test_pair as pair;

    /// The `keepalive_timeout` of the tests that are not about it.
    const MINUTE: Duration = Duration::from_secs(60);

    fn pooled(stream: Stream, served: u32) -> Connection {
        Connection::with_served(stream, served)
    }

    #[tokio::test]
    async fn the_newest_connection_is_taken_first() {
        let pool = Pool::default();
        let mut servers = Vec::new();
        for served in 1..=3 {
            let (stream, server) = pair().await;
            servers.push(server);
            pool.put(pooled(stream, served), 8, 0, MINUTE, Instant::now());
        }
        for served in [3, 2, 1] {
            let taken = pool.take(MINUTE, Instant::now()).expect("a connection");
            assert_eq!(taken.served, served);
        }
        assert!(pool.take(MINUTE, Instant::now()).is_none());
    }

    /// A connection put with an older reading of the clock than the one below it (its
    /// request's answer came first, its body was done last) counts as idle from the newer:
    /// an older one on top would be taken for the stack's oldest, and its age would clear
    /// the younger ones below.
    #[tokio::test]
    async fn the_stack_stays_oldest_first_whatever_the_readings() {
        let pool = Pool::default();
        let start = Instant::now();
        let (stream, _s1) = pair().await;
        pool.put(
            pooled(stream, 1),
            8,
            0,
            MINUTE,
            start + Duration::from_secs(10),
        );
        let (stream, _s2) = pair().await;
        pool.put(pooled(stream, 2), 8, 0, MINUTE, start);
        let later = start + Duration::from_secs(12);
        let taken = pool.take(Duration::from_secs(5), later).expect("2s idle");
        assert_eq!(taken.served, 2);
        assert_eq!(
            pool.take(Duration::from_secs(5), later)
                .expect("2s idle")
                .served,
            1
        );
    }

    #[tokio::test]
    async fn connections_beyond_capacity_are_kept_for_the_grace_then_trimmed() {
        let pool = Pool::default();
        let mut servers = Vec::new();
        for served in 1..=5 {
            let (stream, server) = pair().await;
            servers.push(server);
            pool.put(pooled(stream, served), 2, 0, MINUTE, Instant::now());
        }
        assert_eq!(
            pool.len(),
            5,
            "a burst's surplus is kept for its next requests"
        );
        // The grace, and the trim timer's turn.
        tokio::time::sleep(SURPLUS_GRACE + Duration::from_millis(300)).await;
        assert_eq!(pool.len(), 2, "back to keepalive once the burst is over");
        let taken = pool.take(MINUTE, Instant::now()).expect("a connection");
        assert_eq!(taken.served, 5, "the newest were kept, the oldest went");
    }

    #[tokio::test]
    async fn a_connection_is_taken_only_on_the_thread_that_put_it() {
        let pool = std::sync::Arc::new(Pool::default());
        let (stream, _server) = pair().await;
        pool.put(pooled(stream, 1), 8, 0, MINUTE, Instant::now());
        let other = pool.clone();
        let taken_elsewhere =
            std::thread::spawn(move || other.take(MINUTE, Instant::now()).is_some())
                .join()
                .expect("thread");
        assert!(!taken_elsewhere, "another worker must open its own");
        assert_eq!(pool.len(), 1, "len counts every thread's stack");
        assert_eq!(pool.take(MINUTE, Instant::now()).expect("here").served, 1);
    }

    #[tokio::test]
    async fn a_connection_is_retired_after_keepalive_requests() {
        let pool = Pool::default();
        let (stream, _server) = pair().await;
        pool.put(pooled(stream, 10), 8, 10, MINUTE, Instant::now());
        assert!(pool.is_empty());
        let (stream, _server) = pair().await;
        pool.put(pooled(stream, 9), 8, 10, MINUTE, Instant::now());
        assert_eq!(pool.len(), 1);
    }

    #[tokio::test]
    async fn connections_idle_past_keepalive_timeout_are_not_taken() {
        let pool = Pool::default();
        let (stream, _server) = pair().await;
        pool.put(pooled(stream, 1), 8, 0, MINUTE, Instant::now());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(pool
            .take(Duration::from_millis(50), Instant::now())
            .is_none());
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_or_wrote_on_is_not_taken() {
        let pool = Pool::default();
        let (closed, server) = pair().await;
        drop(server);
        let (chatty, mut server2) = pair().await;
        server2
            .write_all(b"HTTP/1.1 408 x\r\n\r\n")
            .await
            .expect("write");
        let (open, _server3) = pair().await;
        pool.put(pooled(open, 1), 8, 0, MINUTE, Instant::now());
        pool.put(pooled(closed, 2), 8, 0, MINUTE, Instant::now());
        pool.put(pooled(chatty, 3), 8, 0, MINUTE, Instant::now());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let taken = pool.take(MINUTE, Instant::now()).expect("the open one");
        assert_eq!(taken.served, 1);
        assert!(pool.is_empty());
    }

    /// Without any take, the timer closes a connection idle past its timeout and one the
    /// server closed (nginx's keepalive cache does both; left, they sat in CLOSE-WAIT), and
    /// keeps one that is neither.
    #[tokio::test]
    async fn the_timer_closes_connections_idle_past_the_timeout_or_closed_by_the_server() {
        use tokio::io::AsyncReadExt;
        let pool = Pool::default();
        let (closed, server) = pair().await;
        pool.put(pooled(closed, 1), 8, 0, MINUTE, Instant::now());
        drop(server);
        let (open, _server) = pair().await;
        pool.put(pooled(open, 2), 8, 0, MINUTE, Instant::now());

        let expiring_pool = Pool::default();
        let (expiring, mut its_server) = pair().await;
        let short = Duration::from_millis(200);
        expiring_pool.put(pooled(expiring, 3), 8, 0, short, Instant::now());

        tokio::time::sleep(SURPLUS_GRACE + Duration::from_millis(300)).await;
        assert_eq!(pool.len(), 1, "the closed one went, without a take");
        assert!(expiring_pool.is_empty(), "the expired one went");
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(1), its_server.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "the expired connection was closed: {read:?}"
        );
        let taken = pool.take(MINUTE, Instant::now()).expect("the open one");
        assert_eq!(taken.served, 2);
    }
}
