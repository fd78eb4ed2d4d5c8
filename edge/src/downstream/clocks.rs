//! The clocks around a client connection's stream, the same on every protocol it carries:
//!
//! - the head clock (`client_header_timeout`, slowloris): reads time out once a request head
//!   takes longer than the timeout, and pass untimed otherwise;
//! - the send clock (`send_timeout`): a write (or flush) toward the client that makes no
//!   progress for the timeout fails, so a client that stops reading (a full receive window, a
//!   TCP window of zero) frees its connection, and the upstream connection behind it, instead
//!   of holding both for ever. It runs only while a write waits: a connection with nothing to
//!   send has no timer.
//!
//! [`ClientStream`] also gathers a response's small writes into one.

use crate::observe::connections;
use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much one read takes while waiting for a request (a typical request head; the rest of a
/// larger one is read by the session).
pub const STASH_READ: usize = 4096;

/// Where a connection is in reading a request head.
const WAITING: u8 = 0; // kept alive between requests: keepalive_timeout governs
const IN_HEAD: u8 = 1; // a head has started (or the connection is new): the clock runs
const PASSING: u8 = 2; // the head is complete: body and response pass untimed

/// The error of a write that waited out the send clock.
#[derive(Debug)]
struct SendTimedOut;

impl std::fmt::Display for SendTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("send_timeout: the client took no bytes in time")
    }
}

impl std::error::Error for SendTimedOut {}

fn send_timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, SendTimedOut)
}

/// A connection's clocks, shared between the gate (which arms them between requests), the
/// stream wrapper, and the sessions on the connection (which ask whether the send clock ran
/// out under them).
pub struct Clocks {
    state: AtomicU8,
    header_timeout_ms: AtomicU64,
    send_timeout_ms: AtomicU64,
    /// The send clock ran out: the connection is of no more use.
    send_timed_out: AtomicBool,
}

impl Clocks {
    /// A new connection: its first head is due within `header_timeout` from now; a write may
    /// wait `send_timeout` for the client.
    pub fn new(header_timeout: Duration, send_timeout: Duration) -> Clocks {
        Clocks {
            state: AtomicU8::new(IN_HEAD),
            header_timeout_ms: AtomicU64::new(millis(header_timeout)),
            send_timeout_ms: AtomicU64::new(millis(send_timeout)),
            send_timed_out: AtomicBool::new(false),
        }
    }

    /// Between requests: the next head's clock starts at its first byte; both timeouts as the
    /// config has them now.
    pub fn arm(&self, header_timeout: Duration, send_timeout: Duration) {
        self.header_timeout_ms
            .store(millis(header_timeout), Ordering::Relaxed);
        self.send_timeout_ms
            .store(millis(send_timeout), Ordering::Relaxed);
        self.state.store(WAITING, Ordering::Relaxed);
    }

    /// Whether a write toward the client waited out `send_timeout` on this connection.
    pub fn send_timed_out(&self) -> bool {
        self.send_timed_out.load(Ordering::Relaxed)
    }

    fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms.load(Ordering::Relaxed))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether an I/O error is the send clock running out.
pub fn is_send_timeout(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SendTimedOut>())
}

/// A client stream with the head clock on its reads and the send clock on its writes.
#[derive(Debug)]
pub struct ClientStream {
    inner: Stream,
    clocks: Arc<Clocks>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The send clock's timer, made at the first write that had to wait and reset for each
    /// later one.
    send_deadline: crate::clock::Reused,
    /// A write is waiting for the client now (the send clock runs).
    send_waiting: bool,
    /// The last bytes read, to find a head's end across reads.
    tail: [u8; 3],
    /// Bytes read while waiting for the next request (`try_peek`), handed out first.
    stash: Vec<u8>,
    /// Small writes gathered until a flush (a response's head and a small body leave in one
    /// write); allocated when written to and freed when flushed, so an idle connection holds
    /// none.
    out: Vec<u8>,
}

impl std::fmt::Debug for Clocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clocks")
            .field("state", &self.state.load(Ordering::Relaxed))
            .field("send_timed_out", &self.send_timed_out())
            .finish()
    }
}

impl ClientStream {
    /// A new connection's stream; its first head is due within `first_head`.
    pub fn new(inner: Stream, clocks: Arc<Clocks>, first_head: Duration) -> ClientStream {
        ClientStream {
            inner,
            clocks,
            deadline: Some(Box::pin(tokio::time::sleep(first_head))),
            send_deadline: None,
            send_waiting: false,
            tail: [0; 3],
            stash: Vec::new(),
            out: Vec::new(),
        }
    }

    /// One write-side operation on the inner stream under the send clock: while it waits, the
    /// clock runs (from the first wait); any outcome stops it. When it runs out the operation
    /// fails with a timed-out error, and the connection is marked as timed out.
    fn under_send_clock<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut Stream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.clocks.send_timed_out() {
            return Poll::Ready(Err(send_timed_out()));
        }
        let polled = op(Pin::new(&mut self.inner), cx);
        if let Poll::Ready(done) = &polled {
            self.send_waiting = false;
            if done
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::TimedOut)
            {
                // The kernel's half of the clock (TCP_USER_TIMEOUT, set at the accept).
                self.clocks.send_timed_out.store(true, Ordering::Relaxed);
                return Poll::Ready(Err(send_timed_out()));
            }
            return polled;
        }
        if !self.send_waiting {
            self.send_waiting = true;
            let at = tokio::time::Instant::now() + self.clocks.send_timeout();
            crate::clock::set_timer(&mut self.send_deadline, at);
        }
        if let Some(deadline) = &mut self.send_deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                self.clocks.send_timed_out.store(true, Ordering::Relaxed);
                return Poll::Ready(Err(send_timed_out()));
            }
        }
        Poll::Pending
    }

    /// Makes room to gather `len` more bytes, writing out what is gathered if they would not
    /// fit: true when they are to be gathered, false when they are a buffer's worth or more
    /// and go straight to the stream.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.out.len() + len > OUT_BUF {
            ready!(self.poll_drain(cx))?;
        }
        if len >= OUT_BUF {
            return Poll::Ready(Ok(false));
        }
        if self.out.capacity() == 0 {
            self.out = crate::spare::gathering_buffer(OUT_BUF);
        }
        Poll::Ready(Ok(true))
    }

    /// Writes out what is gathered in `out`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            let written = self.under_send_clock(cx, |inner, cx| inner.poll_write(cx, &out));
            self.out = out;
            let n = ready!(written)?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        // Empty now: kept for the thread's next gathering; a connection that waits holds none.
        crate::spare::give_back_gathering_buffer(std::mem::take(&mut self.out), OUT_BUF);
        Poll::Ready(Ok(()))
    }
}

impl Drop for ClientStream {
    /// One attempt, without waiting, to write out what is gathered if the stream is dropped
    /// unflushed (as Pingora's own stream does).
    fn drop(&mut self) {
        if !self.out.is_empty() && !self.clocks.send_timed_out() {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = self.poll_drain(&mut cx);
        }
    }
}

/// The most a connection gathers before writing (a response head and a small body).
const OUT_BUF: usize = 4096;

/// Whether `data`, read after `tail`, completes a head (a blank line); updates `tail`.
fn ends_head(tail: &mut [u8; 3], data: &[u8]) -> bool {
    // The usual read: a whole head and nothing after it. It ends in a blank line, so it has
    // one, found without going over every byte (a thirtieth of a request's instructions).
    if data.ends_with(b"\r\n\r\n") || data.ends_with(b"\n\n") {
        *tail = [0; 3];
        return true;
    }
    let mut window = *tail;
    for &b in data {
        if b == b'\n' && (window[2] == b'\n' || (window[2] == b'\r' && window[1] == b'\n')) {
            *tail = [0; 3];
            return true;
        }
        window = [window[1], window[2], b];
    }
    *tail = window;
    false
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let state = this.clocks.state.load(Ordering::Relaxed);
        if state == IN_HEAD {
            if let Some(deadline) = this.deadline.as_mut() {
                if deadline.as_mut().poll(cx).is_ready() {
                    connections::HEADER_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client_header_timeout: the request head did not arrive in time",
                    )));
                }
            }
        }
        let before = buf.filled().len();
        if this.stash.is_empty() {
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        } else {
            let n = this.stash.len().min(buf.remaining());
            buf.put_slice(&this.stash[..n]);
            this.stash.drain(..n);
            if this.stash.is_empty() {
                this.stash = Vec::new(); // nothing held while idle
            }
        }
        let new = &buf.filled()[before..];
        if new.is_empty() || state == PASSING {
            return Poll::Ready(Ok(()));
        }
        if state == WAITING {
            this.tail = [0; 3];
        }
        if ends_head(&mut this.tail, new) {
            this.clocks.state.store(PASSING, Ordering::Relaxed);
            this.deadline = None;
        } else if state == WAITING {
            // The first bytes of a head on a kept-alive connection: its clock starts now.
            this.clocks.state.store(IN_HEAD, Ordering::Relaxed);
            let timeout =
                Duration::from_millis(this.clocks.header_timeout_ms.load(Ordering::Relaxed));
            this.deadline = Some(Box::pin(tokio::time::sleep(timeout)));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !ready!(this.poll_room(cx, buf.len()))? {
            return this.under_send_clock(cx, |inner, cx| inner.poll_write(cx, buf));
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        if !ready!(this.poll_room(cx, len))? {
            return this.under_send_clock(cx, |inner, cx| inner.poll_write_vectored(cx, bufs));
        }
        for b in bufs {
            this.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.under_send_clock(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        this.under_send_clock(cx, |inner, cx| inner.poll_shutdown(cx))
    }
}

#[async_trait]
impl Shutdown for ClientStream {
    /// What is gathered goes out, then the FIN; not on a connection whose client stopped
    /// taking bytes (it is just dropped).
    async fn shutdown(&mut self) {
        if self.clocks.send_timed_out() {
            return;
        }
        if std::future::poll_fn(|cx| self.poll_drain(cx))
            .await
            .is_err()
        {
            return;
        }
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClientStream {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

/// Waits for data and keeps it for the next reads: true when `buf` could be filled from it.
/// Nothing is allocated while waiting: each poll reads into a buffer on its own stack, and
/// only what arrived is kept.
#[async_trait]
impl Peek for ClientStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        while self.stash.len() < buf.len() {
            let (inner, stash) = (&mut self.inner, &mut self.stash);
            let read = std::future::poll_fn(|cx| {
                // Uninitialised: zeroing 4 KiB on every poll of every waiting connection
                // was 0.3% of the CPU of small requests.
                let mut space = [std::mem::MaybeUninit::<u8>::uninit(); STASH_READ];
                let mut space = ReadBuf::uninit(&mut space);
                ready!(Pin::new(&mut *inner).poll_read(cx, &mut space))?;
                stash.extend_from_slice(space.filled());
                Poll::Ready(Ok::<usize, io::Error>(space.filled().len()))
            })
            .await?;
            if read == 0 {
                return Ok(false);
            }
        }
        buf.copy_from_slice(&self.stash[..buf.len()]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::{ends_head, ClientStream, Clocks};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_writes_leave_in_one_and_the_gathering_buffer_goes_to_the_next_answer() {
        let clocks = || Arc::new(Clocks::new(Duration::from_secs(5), Duration::from_secs(5)));
        let (a, mut client_a) = crate::tcp::test_pair().await;
        let (b, mut client_b) = crate::tcp::test_pair().await;
        let mut a = ClientStream::new(a, clocks(), Duration::from_secs(5));
        let mut b = ClientStream::new(b, clocks(), Duration::from_secs(5));
        a.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.expect("head");
        a.write_all(b"first").await.expect("body");
        assert_eq!(a.out.len(), 24, "gathered, not written yet");
        let buffer = a.out.as_ptr();
        a.flush().await.expect("flush");
        assert_eq!(
            a.out.capacity(),
            0,
            "a connection that waits holds no buffer"
        );
        // Had the buffer been freed, this would take its storage.
        let decoy = Vec::<u8>::with_capacity(super::OUT_BUF);
        b.write_all(b"second").await.expect("write");
        assert_ne!(decoy.as_ptr(), buffer);
        assert_eq!(
            b.out.as_ptr(),
            buffer,
            "the next connection's answer takes it"
        );
        assert_eq!(b.out, b"second", "nothing of the last answer in it");
        b.flush().await.expect("flush");
        let mut got = vec![0; 24];
        client_a.read_exact(&mut got).await.expect("read");
        assert_eq!(got, b"HTTP/1.1 200 OK\r\n\r\nfirst");
        let mut got = vec![0; 6];
        client_b.read_exact(&mut got).await.expect("read");
        assert_eq!(got, b"second");
    }

    #[test]
    fn a_head_ends_at_its_blank_line_even_across_reads() {
        let mut tail = [0; 3];
        assert!(!ends_head(&mut tail, b"GET / HTTP/1.1\r\nHost: a\r"));
        assert!(!ends_head(&mut tail, b"\n"));
        assert!(!ends_head(&mut tail, b"\r"));
        assert!(ends_head(&mut tail, b"\nbody"));
        let mut tail = [0; 3];
        assert!(ends_head(&mut tail, b"GET / HTTP/1.1\nHost: a\n\n"));
        let mut tail = [0; 3];
        for b in b"GET / HTTP/1.1\r\nX: 1\r\n" {
            assert!(!ends_head(&mut tail, &[*b]), "one byte at a time");
        }
        assert!(!ends_head(&mut tail, b"\r"));
        assert!(ends_head(&mut tail, b"\n"));
        // A whole head in one read, then the next head in pieces: the first one's end
        // leaves nothing behind that would end the second early.
        let mut tail = [0; 3];
        assert!(ends_head(&mut tail, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(
            !ends_head(&mut tail, b"\r\n"),
            "a blank line of its own is needed"
        );
        assert!(!ends_head(&mut tail, b"GET / HTTP/1.1\r\n"));
        assert!(ends_head(&mut tail, b"\r\n"));
        // Every way of cutting a head in two ends it exactly at its blank line.
        let head = b"POST / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        let end = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("blank")
            + 4;
        for cut in 0..=head.len() {
            let mut tail = [0; 3];
            let first = ends_head(&mut tail, &head[..cut]);
            assert_eq!(first, cut >= end, "cut at {cut}");
            if !first {
                assert!(ends_head(&mut tail, &head[cut..]), "cut at {cut}");
            }
        }
    }
}
