//! HTTP/3: a QUIC listener on UDP beside every https listener (same address, same port),
//! on quinn and the h3 crate. Its TLS is the https listeners' rustls with the same
//! certificate resolver (SNI, reloads, OCSP staples), TLS 1.3 only as QUIC requires; each
//! request stream runs on the same phases as an HTTP/1.1 request or an HTTP/2 stream
//! ([`crate::downstream::h3`]).
//!
//! What a public UDP listener must do, and where it is done:
//! - address validation: once more than [`RETRY_ABOVE`] handshakes are in progress, a new
//!   client from an unvalidated address is sent a Retry and must come back with its token
//!   (a flood of Initials from spoofed sources then costs a stateless packet each);
//!   quinn keeps the anti-amplification limit (3x what an unvalidated peer sent), answers
//!   packets of unknown connections with stateless resets, follows a client that migrates
//!   to a new address, and uses UDP GSO/GRO where the kernel has them (falling back to one
//!   datagram per send where GSO fails);
//! - bounds: datagrams buffered for connections not yet accepted ([`INCOMING_BUFFER`]),
//!   handshakes waiting ([`MAX_INCOMING`]), per-stream and per-connection receive windows,
//!   bytes queued toward a client ([`SEND_WINDOW`]), streams per connection
//!   (`http2_max_concurrent_streams`), and the clocks: handshake and first request within
//!   `client_header_timeout`, `send_timeout` on every write, `client_body_timeout` on every
//!   body read, `keepalive_timeout` as the QUIC idle timeout and as the longest a connection
//!   may have no stream in flight; `max_connections_per_client` counts QUIC connections too.
//!
//! Shutdown and binary upgrade: when the process starts draining, each connection is sent
//! GOAWAY and its open streams are served to their end, and new connection attempts are
//! refused (CONNECTION_REFUSED: a browser goes on over TCP, which the successor serves). The
//! UDP socket is handed to the successor with the TCP ones, which starts reading it once
//! this process has exited: until then every datagram still reaches the connections that
//! own it.

use crate::downstream::h3::{Conn, Session};
use crate::downstream::{idle_for, Active, StreamGuard};
use crate::gate::ConnectionGate;
use crate::gate::Live;
use crate::observe::connections::{self, Listener};
use crate::proxy::Served;
use crate::tls::{Certificates, SniResolver};
use bytes::Bytes;
use pingora::protocols::tls::SslDigest;
use pingora::server::ListenFds;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Handshakes in progress above which a client whose address is not validated yet is sent a
/// Retry first.
pub const RETRY_ABOVE: usize = 64;

/// Connection attempts quinn holds before the listener takes them (more are refused).
const MAX_INCOMING: usize = 4096;

/// Datagrams buffered per connection attempt not yet accepted, and for all of them.
const INCOMING_BUFFER: u64 = 64 * 1024;
const INCOMING_BUFFER_TOTAL: u64 = 8 * 1024 * 1024;

/// What one stream may send the edge before the edge reads it, and a whole connection.
const STREAM_RECEIVE_WINDOW: u32 = 256 * 1024;
const RECEIVE_WINDOW: u32 = 2 * 1024 * 1024;

/// Bytes a connection may have sent and not yet acknowledged (quinn's default is 10 MB).
const SEND_WINDOW: u64 = 2 * 1024 * 1024;

/// Unidirectional streams a client may open: HTTP/3's control stream and QPACK's two, with
/// room for reserved (grease) ones.
const MAX_UNI_STREAMS: u32 = 8;

/// HTTP/3's code for a connection closed with nothing wrong.
const H3_NO_ERROR: quinn::VarInt = quinn::VarInt::from_u32(0x100);

/// Handshakes in progress on every QUIC listener of the process.
static HANDSHAKING: AtomicUsize = AtomicUsize::new(0);

/// Connection attempts sent a Retry, for metrics and tests.
pub static RETRIES: AtomicUsize = AtomicUsize::new(0);

/// The UDP port of the first QUIC listener serving now (0: none).
static SERVING: AtomicU16 = AtomicU16::new(0);

/// The UDP port HTTP/3 is served on now, if it is.
pub fn serving_port() -> Option<u16> {
    match SERVING.load(Ordering::Relaxed) {
        0 => None,
        port => Some(port),
    }
}

/// QUIC handshakes under way now.
pub fn handshakes_in_progress() -> usize {
    HANDSHAKING.load(Ordering::Relaxed)
}

/// Counts one handshake in [`HANDSHAKING`] while it lives.
struct Handshaking;

impl Handshaking {
    fn new() -> Handshaking {
        HANDSHAKING.fetch_add(1, Ordering::AcqRel);
        Handshaking
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        HANDSHAKING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The QUIC side of the https listeners: the TLS and transport settings every connection
/// gets, built once at start from `[edge]` (QUIC connections keep the settings they began
/// with; reloads never touch them).
pub fn server_config(
    certificates: Arc<Certificates>,
    edge: &crate::config::EdgeSettings,
) -> anyhow::Result<quinn::ServerConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|suite| matches!(suite, rustls::SupportedCipherSuite::Tls13(_)));
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(certificates)));
    tls.alpn_protocols = vec![b"h3".to_vec()];
    // QUIC takes early data in full or not at all (RFC 9001 4.6.1).
    tls.max_early_data_size = if edge.http3_early_data { u32::MAX } else { 0 };
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(edge.http2_max_concurrent_streams.into())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(RECEIVE_WINDOW.into())
        .send_window(SEND_WINDOW)
        .max_idle_timeout(
            quinn::IdleTimeout::try_from(edge.keepalive_timeout.max(Duration::from_millis(1))).ok(),
        );
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config
        .transport_config(Arc::new(transport))
        .migration(true)
        .max_incoming(MAX_INCOMING)
        .incoming_buffer_size(INCOMING_BUFFER)
        .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
    Ok(config)
}

/// The name of the UDP socket beside the TCP one named `tcp_key`, in the fd table an upgrade
/// hands over.
pub fn fd_key(tcp_key: &str) -> String {
    format!("quic:{tcp_key}")
}

/// The UDP socket at `addr`: the one handed over under `key` by the previous process on an
/// upgrade (then `true`), or a new one, recorded under `key` for the next upgrade.
#[allow(unsafe_code)]
pub fn socket(
    addr: SocketAddr,
    key: &str,
    fds: Option<&ListenFds>,
) -> std::io::Result<(std::net::UdpSocket, bool)> {
    if let Some(fds) = fds {
        let inherited = fds.lock().get(key).copied();
        if let Some(fd) = inherited {
            // SAFETY: the fd table hands each socket to exactly one owner: this listener,
            // the only one at `addr` on UDP.
            let socket = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
            socket.set_nonblocking(true)?;
            return Ok((socket, true));
        }
    }
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_nonblocking(true)?;
    // Bursts of datagrams wait here while the endpoint is busy: the kernel's default (about
    // 200 KB) drops them under load. Capped by net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    let _ = socket.set_send_buffer_size(4 * 1024 * 1024);
    socket.bind(&addr.into())?;
    let socket: std::net::UdpSocket = socket.into();
    if let Some(fds) = fds {
        fds.lock().add(key.to_string(), socket.as_raw_fd());
    }
    Ok((socket, false))
}

/// Waits until the process `pid` has exited (or `limit` has passed): a successor reads the
/// UDP socket it inherited only then, so that the predecessor's connections get every
/// datagram meant for them until they are done.
async fn predecessor_gone(pid: i32, limit: Duration) {
    let until = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < until && alive(pid) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether process `pid` runs (a zombie, exited but not yet reaped by its parent, does not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// A QUIC listener: serves HTTP/3 on `socket` until the process drains, then lets its
/// connections finish. `predecessor`: the process that handed the socket over, whose end is
/// awaited before the first read.
pub async fn serve(
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
    gate: Arc<ConnectionGate>,
    predecessor: Option<i32>,
) {
    if let Some(pid) = predecessor {
        tracing::info!(
            pid,
            "HTTP/3 waits for the previous process to finish its connections"
        );
        predecessor_gone(pid, crate::gate::DRAIN_LIMIT + Duration::from_secs(15)).await;
    }
    let endpoint = match quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    ) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the QUIC listener; HTTP/3 is off");
            return;
        }
    };
    let port = endpoint.local_addr().map(|a| a.port()).unwrap_or(0);
    advertise(port);
    let _ = SERVING.compare_exchange(0, port, Ordering::Relaxed, Ordering::Relaxed);
    let mut draining = gate.draining.clone();
    loop {
        let incoming = tokio::select! {
            biased;
            changed = draining.changed(), if !*draining.borrow() => {
                if changed.is_err() || *draining.borrow() {
                    break;
                }
                continue;
            }
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        admit(incoming, &gate);
    }
    // Draining: no new connection (quinn refuses them), no more advertising; the connections
    // finish their streams after their GOAWAY.
    crate::ctx::advertise_http3(None);
    SERVING.store(0, Ordering::Relaxed);
    endpoint.set_server_config(None);
    endpoint.wait_idle().await;
}

/// Advertises HTTP/3 on the first https listener's port (the one redirects name).
fn advertise(port: u16) {
    let first = crate::snapshot::FIRST_HTTPS_PORT.load(Ordering::Relaxed);
    if first == 0 || first == port {
        crate::ctx::advertise_http3(Some(port));
    }
}

/// Decides about one connection attempt: refused (its client holds its cap), sent a Retry
/// (too many handshakes in progress and its address not validated), or accepted and served.
fn admit(incoming: quinn::Incoming, gate: &Arc<ConnectionGate>) {
    let peer = incoming.remote_address();
    let ip = peer.ip().to_canonical();
    let limit = {
        let snapshot = gate.snapshot.load();
        let edge = &snapshot.config.edge;
        let trusted = edge
            .trusted_proxies
            .iter()
            .any(|net| crate::client::net_contains(net, ip));
        match edge.max_connections_per_client {
            0 => None,
            _ if trusted => None,
            n => Some(n),
        }
    };
    if !incoming.remote_address_validated() && HANDSHAKING.load(Ordering::Acquire) >= RETRY_ABOVE {
        if incoming.may_retry() {
            RETRIES.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
        } else {
            incoming.ignore();
        }
        return;
    }
    let Some(open) = connections::open(Listener::Quic, Some(ip), limit) else {
        incoming.refuse();
        return;
    };
    // Counted here, not in the task: the next attempt's decision sees this one.
    let handshaking = Handshaking::new();
    let live = Live::new(Arc::default());
    tokio::spawn(connection(
        incoming,
        gate.clone(),
        handshaking,
        (live, open),
    ));
}

/// One QUIC connection: its handshake and first request within `client_header_timeout`,
/// then its request streams until it closes, is idle for `keepalive_timeout`, or the process
/// drains (GOAWAY, then the open streams to their end).
async fn connection(
    incoming: quinn::Incoming,
    gate: Arc<ConnectionGate>,
    handshaking: Handshaking,
    _held: (Live, connections::OpenConnection),
) {
    let peer = incoming.remote_address();
    let (header_timeout, send_timeout, body_timeout, idle, early_data, max_head) = {
        let snapshot = gate.snapshot.load();
        let edge = &snapshot.config.edge;
        (
            edge.client_header_timeout,
            edge.send_timeout,
            edge.client_body_timeout,
            edge.keepalive_timeout,
            edge.http3_early_data,
            edge.max_header_size,
        )
    };
    let deadline = tokio::time::Instant::now() + header_timeout;
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "QUIC connection attempt failed");
            return;
        }
    };
    let handshake_done = Arc::new(AtomicBool::new(false));
    let quic = if early_data {
        match connecting.into_0rtt() {
            Ok((quic, accepted)) => {
                // Requests read before this flag is up came in early data.
                let done = handshake_done.clone();
                tokio::spawn(async move {
                    let _handshaking = handshaking;
                    accepted.await;
                    done.store(true, Ordering::Release);
                });
                Some(quic)
            }
            Err(connecting) => {
                let quic = handshake(connecting, deadline, &peer).await;
                handshake_done.store(true, Ordering::Release);
                drop(handshaking);
                quic
            }
        }
    } else {
        let quic = handshake(connecting, deadline, &peer).await;
        handshake_done.store(true, Ordering::Release);
        drop(handshaking);
        quic
    };
    let Some(quic) = quic else { return };
    connections::handshake("TLSv1_3");
    let conn = Arc::new(Conn {
        ssl: Some(Arc::new(SslDigest::new(
            "",
            "TLSv1_3",
            None,
            None,
            Vec::new(),
        ))),
        peer: Some(peer.ip().to_canonical()),
        quic: quic.clone(),
        handshake_done,
        send_timeout,
        body_timeout,
    });
    let mut builder = h3::server::builder();
    builder.max_field_section_size(max_head);
    let h3 = tokio::time::timeout_at(
        deadline,
        builder.build::<_, Bytes>(h3_quinn::Connection::new(quic.clone())),
    );
    let mut h3 = match h3.await {
        Ok(Ok(h3)) => h3,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 connection set-up failed");
            return;
        }
        Err(_) => {
            connections::HEADER_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
            quic.close(H3_NO_ERROR, b"");
            return;
        }
    };
    let active = Arc::new(Active::default());
    let mut draining = gate.draining.clone();
    let mut goaway = *draining.borrow();
    if goaway {
        let _ = h3.shutdown(1).await;
    }
    let mut first = true;
    loop {
        let accepted = tokio::select! {
            biased;
            changed = draining.changed(), if !goaway => {
                if changed.is_err() || *draining.borrow() {
                    goaway = true;
                    // GOAWAY: the streams accepted so far are served to their end, and h3's
                    // accept ends once they are.
                    let _ = h3.shutdown(1).await;
                }
                continue;
            }
            accepted = h3.accept() => accepted,
            () = tokio::time::sleep_until(deadline), if first => {
                connections::HEADER_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
                break;
            }
            () = idle_for(&active, idle), if !first => break,
            // After GOAWAY, the connection ends with its last stream (h3's accept would wait
            // for the client to close it).
            () = idle_for(&active, Duration::ZERO), if goaway => break,
        };
        match accepted {
            Ok(Some(resolver)) => {
                first = false;
                let guard = StreamGuard::of(&active);
                let conn = conn.clone();
                let edge = gate.edge.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    let resolved =
                        tokio::time::timeout(header_timeout, resolver.resolve_request()).await;
                    let (request, stream) = match resolved {
                        Ok(Ok(resolved)) => resolved,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "an HTTP/3 request head was refused");
                            return;
                        }
                        Err(_) => return,
                    };
                    let mut session = Session::new(request, stream, conn);
                    let served = edge.serve(&mut session).await;
                    session.finish(served != Served::Cut).await;
                });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                break;
            }
        }
    }
    quic.close(H3_NO_ERROR, b"");
}

/// Completes a handshake by `deadline`.
async fn handshake(
    connecting: quinn::Connecting,
    deadline: tokio::time::Instant,
    peer: &SocketAddr,
) -> Option<quinn::Connection> {
    match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(quic)) => Some(quic),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "QUIC handshake failed");
            None
        }
        Err(_) => {
            connections::HEADER_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "QUIC handshake timed out");
            None
        }
    }
}
