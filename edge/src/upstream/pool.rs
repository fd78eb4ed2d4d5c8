//! Kept-alive upstream connections, owned by the edge: a stack of idle connections per
//! server and worker thread (the most recently used is taken first, as nginx's per-worker
//! keepalive cache does), at most the upstream's `keepalive` of them on each thread, each
//! retired after `keepalive_requests` requests or `keepalive_timeout` idle. A connection the server closed while it sat idle is noticed
//! when it is taken (its socket has become readable) and dropped, without a request lost.
//!
//! A connection is only taken again on the thread that opened it: its socket is registered
//! with that worker's reactor, and a connection used from another worker's task would have
//! every wake-up cross threads.
//!
//! The pool lives in the server's [`super::ServerState`], so it survives reloads that keep
//! the server, and goes with the server when a reload removes it.

use super::h1::Connection;
use pingora::protocols::Stream;
use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;

/// One idle connection.
struct Idle {
    connection: Connection,
    /// When it went idle.
    since: Instant,
}

/// The idle connections of one server, a stack per worker thread.
#[derive(Default)]
pub struct Pool {
    idle: ThreadLocal<Mutex<Vec<Idle>>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("idle", &self.len()).finish()
    }
}

impl Pool {
    /// The newest idle connection younger than `idle_timeout` that the server has not closed.
    pub fn take(&self, idle_timeout: Duration) -> Option<Connection> {
        let stack = self.here();
        loop {
            let idle = lock(stack).pop()?;
            if idle.since.elapsed() >= idle_timeout {
                // Everything below it is older still.
                lock(stack).clear();
                return None;
            }
            let mut connection = idle.connection;
            if still_open(&mut connection.stream) {
                return Some(connection);
            }
        }
    }

    /// Keeps `connection` for the next request unless it has carried `max_requests` (0: no
    /// bound) or the pool already holds `capacity` (0: keep none).
    pub fn put(&self, connection: Connection, capacity: usize, max_requests: u32) {
        if capacity == 0 || (max_requests > 0 && connection.served >= max_requests) {
            return;
        }
        let mut idle = lock(self.here());
        if idle.len() >= capacity {
            // The oldest goes: it is the likeliest to be closed by the server.
            idle.remove(0);
        }
        idle.push(Idle {
            connection,
            since: Instant::now(),
        });
    }

    /// Idle connections held now, on every thread.
    pub fn len(&self) -> usize {
        self.idle.iter().map(|stack| lock(stack).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This thread's stack (uncontended: only this thread takes and puts; `len` reads).
    fn here(&self) -> &Mutex<Vec<Idle>> {
        self.idle.get_or_default()
    }
}

/// A stack's lock; a panic while it was held leaves nothing half-done in a `Vec` of idle
/// connections, so a poisoned lock is used as it is.
fn lock(stack: &Mutex<Vec<Idle>>) -> std::sync::MutexGuard<'_, Vec<Idle>> {
    stack.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether an idle connection can carry a request: nothing has arrived on it since it went
/// idle, neither data (a server has nothing to say between requests) nor its close. One poll
/// of a one-byte peek, answered from the reactor's readiness without waiting (a stream that
/// cannot peek answers `false` at once, and is taken as open).
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let peek = stream.try_peek(&mut byte);
    let mut peek = std::pin::pin!(peek);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(
        peek.as_mut().poll(&mut cx),
        Poll::Pending | Poll::Ready(Ok(false))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    // (the edge's side, as forward::connect opens it, and the server's side)
    use crate::tcp::test_pair as pair;

    fn pooled(stream: Stream, served: u32) -> Connection {
        Connection::with_served(stream, served)
    }

    #[tokio::test]
    async fn the_newest_connection_is_taken_first_and_capacity_bounds_the_rest() {
        let pool = Pool::default();
        let mut servers = Vec::new();
        for served in 1..=3 {
            let (stream, server) = pair().await;
            servers.push(server);
            pool.put(pooled(stream, served), 2, 0);
        }
        assert_eq!(pool.len(), 2, "the oldest was dropped at capacity");
        let taken = pool.take(Duration::from_secs(60)).expect("a connection");
        assert_eq!(taken.served, 3);
        assert_eq!(
            pool.take(Duration::from_secs(60)).expect("one more").served,
            2
        );
        assert!(pool.take(Duration::from_secs(60)).is_none());
    }

    #[tokio::test]
    async fn a_connection_is_taken_only_on_the_thread_that_put_it() {
        let pool = std::sync::Arc::new(Pool::default());
        let (stream, _server) = pair().await;
        pool.put(pooled(stream, 1), 8, 0);
        let other = pool.clone();
        let taken_elsewhere =
            std::thread::spawn(move || other.take(Duration::from_secs(60)).is_some())
                .join()
                .expect("thread");
        assert!(!taken_elsewhere, "another worker must open its own");
        assert_eq!(pool.len(), 1, "len counts every thread's stack");
        assert_eq!(pool.take(Duration::from_secs(60)).expect("here").served, 1);
    }

    #[tokio::test]
    async fn a_connection_is_retired_after_keepalive_requests() {
        let pool = Pool::default();
        let (stream, _server) = pair().await;
        pool.put(pooled(stream, 10), 8, 10);
        assert!(pool.is_empty());
        let (stream, _server) = pair().await;
        pool.put(pooled(stream, 9), 8, 10);
        assert_eq!(pool.len(), 1);
    }

    #[tokio::test]
    async fn connections_idle_past_keepalive_timeout_are_not_taken() {
        let pool = Pool::default();
        let (stream, _server) = pair().await;
        pool.put(pooled(stream, 1), 8, 0);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(pool.take(Duration::from_millis(50)).is_none());
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
        pool.put(pooled(open, 1), 8, 0);
        pool.put(pooled(closed, 2), 8, 0);
        pool.put(pooled(chatty, 3), 8, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let taken = pool.take(Duration::from_secs(60)).expect("the open one");
        assert_eq!(taken.served, 1);
        assert!(pool.is_empty());
    }
}
