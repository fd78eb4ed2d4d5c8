//! A plain TCP connection as the edge's HTTP/1 codecs use it: the socket itself, with the
//! address digest Pingora's session asks for. A leaf: it imports nothing of the edge.
//!
//! Pingora's own `l4::Stream` wraps a socket in a buffered reader and writer and reads the
//! clock around every read and write that waits (its pending-time accounting), and every
//! session built on it allocates a timing digest. On a small kept-alive request that is four
//! clock reads, two buffer layers and an allocation the edge never uses, on each side of the
//! proxy. This type passes reads and writes straight to the socket, or to the TLS session
//! over it toward a server (`upstream/tls.rs`). TLS connections from clients keep Pingora's
//! stream, which its TLS layer is built on.

use async_trait::async_trait;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// What a [`Tcp`] carries: the socket itself, or TLS toward a server over it.
pub trait Socket: AsyncRead + AsyncWrite + Unpin + Send + Sync + std::fmt::Debug + 'static {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// A TCP connection (or TLS over one), unbuffered, with its peer's address and the protocol
/// its TLS handshake selected.
#[derive(Debug)]
pub struct Tcp<S: Socket = TcpStream> {
    socket: S,
    peer: SocketAddr,
    /// Pingora's form of the addresses, made when first asked for: the edge's own paths take
    /// the peer's address where the connection is accepted, and a digest (392 bytes) held by
    /// every connection was an eighth of an idle one's memory.
    digest: OnceLock<Arc<SocketDigest>>,
    alpn: Option<ALPN>,
}

impl<S: Socket> Tcp<S> {
    /// `socket`, with `nodelay` set (a response's last piece must not wait for an ACK), its
    /// peer recorded as `peer`, and `alpn` the protocol its handshake selected.
    pub fn with_alpn(socket: S, peer: SocketAddr, alpn: Option<ALPN>) -> Tcp<S> {
        let _ = socket.tcp().set_nodelay(true);
        Tcp {
            socket,
            peer,
            digest: OnceLock::new(),
            alpn,
        }
    }
}

impl Tcp {
    /// A plain TCP connection (see [`Tcp::with_alpn`]).
    pub fn new(socket: TcpStream, peer: SocketAddr) -> Tcp {
        Tcp::with_alpn(socket, peer, None)
    }

    /// Boxed as the stream Pingora's sessions and the edge's codecs take.
    pub fn boxed(socket: TcpStream, peer: SocketAddr) -> pingora::protocols::Stream {
        Box::new(Tcp::new(socket, peer))
    }
}

impl<S: Socket> AsyncRead for Tcp<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl<S: Socket> AsyncWrite for Tcp<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

/// Whatever is buffered goes out (TLS: its close_notify), then the FIN.
#[async_trait]
impl<S: Socket> Shutdown for Tcp<S> {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(&mut self.socket).await {
            tracing::debug!(error = %e, "shutting down a connection");
        }
    }
}

impl<S: Socket> UniqueID for Tcp<S> {
    fn id(&self) -> UniqueIDType {
        self.socket.tcp().as_raw_fd()
    }
}

impl<S: Socket> Ssl for Tcp<S> {
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl<S: Socket> GetTimingDigest for Tcp<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl<S: Socket> GetProxyDigest for Tcp<S> {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        None
    }
}

impl<S: Socket> GetSocketDigest for Tcp<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        let digest = self.digest.get_or_init(|| {
            let digest = SocketDigest::from_raw_fd(self.socket.tcp().as_raw_fd());
            let _ = digest.peer_addr.set(Some(self.peer.into()));
            Arc::new(digest)
        });
        Some(digest.clone())
    }
}

/// Waits for data without taking it (what the upstream pool asks of an idle connection:
/// has the server said anything, or closed it). The TCP socket itself is peeked, so for TLS
/// an alert or close_notify counts as well as a FIN. A closed connection is an error, as a
/// read of it would be.
#[async_trait]
impl<S: Socket> Peek for Tcp<S> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let seen = self.socket.tcp().peek(buf).await?;
        if seen == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(true)
    }
}

/// A connected pair for tests: this type on one end (as the edge holds it), a plain socket on
/// the other (the client or server it talks to).
#[cfg(test)]
pub(crate) async fn test_pair() -> (pingora::protocols::Stream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let other = TcpStream::connect(addr).await.expect("connect");
    let (socket, peer) = listener.accept().await.expect("accept");
    (Tcp::boxed(socket, peer), other)
}

#[cfg(test)]
mod tests {
    use super::test_pair;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_pass_both_ways_and_the_peer_is_known() {
        let (mut stream, mut other) = test_pair().await;
        other.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        stream.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        stream.write_all(b"pong").await.expect("write");
        stream.flush().await.expect("flush");
        let mut answer = [0u8; 4];
        other.read_exact(&mut answer).await.expect("read");
        assert_eq!(&answer, b"pong");
        let digest = stream.get_socket_digest().expect("digest");
        let seen = digest.peer_addr().and_then(|a| a.as_inet()).copied();
        assert_eq!(seen, Some(other.local_addr().expect("addr")));
    }

    #[tokio::test]
    async fn a_peek_sees_data_without_taking_it_and_a_close_as_an_error() {
        let (mut stream, mut other) = test_pair().await;
        other.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        assert!(stream.try_peek(&mut byte).await.expect("peek"));
        let mut got = [0u8; 1];
        stream
            .read_exact(&mut got)
            .await
            .expect("the byte is still there");
        assert_eq!(&got, b"x");
        drop(other);
        assert!(stream.try_peek(&mut byte).await.is_err(), "closed");
    }
}
