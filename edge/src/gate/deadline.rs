//! The head clock around a client connection's stream (`client_header_timeout`, slowloris):
//! [`HeadDeadline`] times reads while a request head is due and lets the rest pass, and
//! gathers a response's small writes into one.

use super::STASH_READ;
use crate::observe::connections;
use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a connection is in reading a request head.
const WAITING: u8 = 0; // kept alive between requests: keepalive_timeout governs
const IN_HEAD: u8 = 1; // a head has started (or the connection is new): the clock runs
const PASSING: u8 = 2; // the head is complete: body and response pass untimed

/// Shared between the gate (which arms it between requests) and the stream wrapper.
pub(super) struct HeadClock {
    state: AtomicU8,
    timeout_ms: AtomicU64,
}

impl HeadClock {
    /// A new connection: its first head is due within `timeout` from now.
    pub(super) fn new(timeout: Duration) -> HeadClock {
        HeadClock {
            state: AtomicU8::new(IN_HEAD),
            timeout_ms: AtomicU64::new(timeout.as_millis() as u64),
        }
    }

    /// Between requests: the next head's clock starts at its first byte.
    pub(super) fn arm(&self, timeout: Duration) {
        self.timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
        self.state.store(WAITING, Ordering::Relaxed);
    }
}

/// A client stream whose reads fail once a request head takes longer than the timeout.
#[derive(Debug)]
pub(super) struct HeadDeadline {
    inner: Stream,
    clock: Arc<HeadClock>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The last bytes read, to find a head's end across reads.
    tail: [u8; 3],
    /// Bytes read while waiting for the next request (`try_peek`), handed out first.
    stash: Vec<u8>,
    /// Small writes gathered until a flush (a response's head and a small body leave in one
    /// write); allocated when written to and freed when flushed, so an idle connection holds
    /// none.
    out: Vec<u8>,
}

impl std::fmt::Debug for HeadClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadClock")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}

impl HeadDeadline {
    /// A new connection's stream; its first head is due within `first_head`.
    pub(super) fn new(inner: Stream, clock: Arc<HeadClock>, first_head: Duration) -> HeadDeadline {
        HeadDeadline {
            inner,
            clock,
            deadline: Some(Box::pin(tokio::time::sleep(first_head))),
            tail: [0; 3],
            stash: Vec::new(),
            out: Vec::new(),
        }
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
            self.out.reserve_exact(OUT_BUF);
        }
        Poll::Ready(Ok(true))
    }

    /// Writes out what is gathered in `out`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        self.out = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl Drop for HeadDeadline {
    /// One attempt, without waiting, to write out what is gathered if the stream is dropped
    /// unflushed (as Pingora's own stream does).
    fn drop(&mut self) {
        if !self.out.is_empty() {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = self.poll_drain(&mut cx);
        }
    }
}

/// The most a connection gathers before writing (a response head and a small body).
const OUT_BUF: usize = 4096;

/// Whether `data`, read after `tail`, completes a head (a blank line); updates `tail`.
fn ends_head(tail: &mut [u8; 3], data: &[u8]) -> bool {
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

impl AsyncRead for HeadDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let state = this.clock.state.load(Ordering::Relaxed);
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
            this.clock.state.store(PASSING, Ordering::Relaxed);
            this.deadline = None;
        } else if state == WAITING {
            // The first bytes of a head on a kept-alive connection: its clock starts now.
            this.clock.state.store(IN_HEAD, Ordering::Relaxed);
            let timeout = Duration::from_millis(this.clock.timeout_ms.load(Ordering::Relaxed));
            this.deadline = Some(Box::pin(tokio::time::sleep(timeout)));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HeadDeadline {
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
            return Pin::new(&mut this.inner).poll_write(cx, buf);
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
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
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
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        let _ = std::future::poll_fn(|cx| self.poll_drain(cx)).await;
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
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

impl GetTimingDigest for HeadDeadline {
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

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

/// Waits for data and keeps it for the next reads: true when `buf` could be filled from it.
/// Nothing is allocated while waiting: each poll reads into a buffer on its own stack, and
/// only what arrived is kept.
#[async_trait]
impl Peek for HeadDeadline {
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
    use super::ends_head;

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
    }
}
