//! The client listeners: binding (or taking over, on a binary upgrade) the `http_listen` and
//! `https_listen` sockets, accepting, and the TLS handshake, before the connection gate.
//!
//! Pingora's listening service does the same, but its task per connection holds the inline
//! state of a TLS handshake (about 8.8 KiB) for the connection's whole life, and bounds the
//! handshake at a fixed 60 s. Here the handshake is boxed and freed once done, so an idle
//! keep-alive connection costs only the gate's small state, and the handshake and the first
//! request head must both be done within `client_header_timeout` of the accept (as in nginx
//! 1.22, whose handshake runs under that timer).
//!
//! Sockets are registered in Pingora's fd table under their address, so a graceful binary
//! upgrade (`edge run --upgrade`, then SIGQUIT to the old process) hands them over unchanged.
//! Each address bound is written to `listening.json` in the runtime directory ([`Bound`]), so
//! a listener configured on port 0 can be found.

use crate::gate::ConnectionGate;
use crate::held;
use async_trait::async_trait;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// One address to listen on, with its TLS acceptor when it is an `https_listen` one.
pub struct Endpoint {
    pub addr: String,
    pub tls: Option<Arc<Acceptor>>,
    /// HTTP/3 on UDP at the same address and port (an https listener with `http3`).
    pub quic: Option<quinn::ServerConfig>,
}

/// The client-facing service: every listener of the edge, in front of one gate.
pub struct ClientListeners {
    pub gate: Arc<ConnectionGate>,
    pub endpoints: Vec<Endpoint>,
    /// The worker threads the connections are spread over (`threads`).
    pub threads: usize,
    pub bound: Arc<Bound>,
    /// On a binary upgrade, the process that handed the sockets over.
    pub predecessor: Option<i32>,
}

/// The pid file's name in the runtime directory: the process to signal (SIGHUP reload, SIGQUIT
/// upgrade, SIGTERM stop).
pub const PID_FILE: &str = "edge.pid";

/// The addresses the edge's listeners bound, by kind (`http`, `https`, `admin`), kept in
/// `listening.json` in the runtime directory and rewritten as each listener binds. With port
/// 0 in the config, this is where to find the port the kernel chose.
pub struct Bound {
    file: PathBuf,
    kinds: Mutex<BTreeMap<&'static str, Vec<String>>>,
}

impl Bound {
    /// Starts an empty record in `runtime_dir` (replacing one a previous process left).
    pub fn new(runtime_dir: &Path) -> Arc<Bound> {
        let bound = Arc::new(Bound {
            file: runtime_dir.join("listening.json"),
            kinds: Mutex::new(BTreeMap::new()),
        });
        bound.write(&BTreeMap::new());
        bound
    }

    /// At the process's end: this record and the pid file go, unless a successor (a binary
    /// upgrade) has written its own pid already. Left behind, a pid file names a process that
    /// is gone, or one that took its number since.
    pub fn remove_with_pid_file(&self) {
        let pid_file = self.file.with_file_name(PID_FILE);
        let ours = std::fs::read_to_string(&pid_file)
            .is_ok_and(|pid| pid.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.file);
            let _ = std::fs::remove_file(&pid_file);
        }
    }

    /// Records one bound listener and rewrites the file (atomically: readers never see half).
    pub fn record(&self, kind: &'static str, addr: SocketAddr) {
        tracing::info!(%kind, %addr, "listening");
        let mut kinds = held::lock(&self.kinds);
        kinds.entry(kind).or_default().push(addr.to_string());
        self.write(&kinds);
    }

    fn write(&self, kinds: &BTreeMap<&'static str, Vec<String>>) {
        let text = serde_json::to_string(kinds).unwrap_or_default();
        let tmp = self.file.with_extension("json.tmp");
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = written {
            tracing::warn!(file = %self.file.display(), error = %e, "cannot record the listening addresses");
        }
    }
}

use crate::gate::LIVE;
pub use crate::gate::{Live, DRAIN_LIMIT};

/// The worker threads' runtimes, each with the connections it serves now. A new connection
/// goes to the worker that serves the fewest (HAProxy spreads its connections the same
/// way): Pingora's pick is a random worker, which with 50 connections on two workers leaves
/// one with about a third more than the other at any moment, and the busier one's clients
/// wait longer (the p99 of the keep-alive benchmarks).
struct Workers {
    runtimes: Vec<(tokio::runtime::Handle, Arc<AtomicUsize>)>,
    /// Where the search for the least busy starts, turned by one each time, so that ties
    /// are spread too.
    next: AtomicUsize,
}

impl Workers {
    /// Finds each worker's runtime: Pingora hands out a random worker's handle, so handles are
    /// drawn until a task spawned on them has run on `threads` different threads (or enough
    /// draws were made that any missing worker just gets no connections from this spread).
    async fn find(threads: usize) -> Workers {
        let mut runtimes = Vec::with_capacity(threads);
        let mut seen = Vec::with_capacity(threads);
        for _ in 0..threads.max(1) * 64 {
            if seen.len() >= threads {
                break;
            }
            let handle = pingora_runtime::current_handle();
            let Ok(thread) = handle.spawn(async { std::thread::current().id() }).await else {
                continue;
            };
            if !seen.contains(&thread) {
                seen.push(thread);
                runtimes.push((handle, Arc::new(AtomicUsize::new(0))));
            }
        }
        Workers {
            runtimes,
            next: AtomicUsize::new(0),
        }
    }

    /// The least busy worker's runtime, and its count for the new connection's [`Live`].
    fn pick(&self) -> (tokio::runtime::Handle, Arc<AtomicUsize>) {
        let n = self.runtimes.len();
        if n == 0 {
            return (pingora_runtime::current_handle(), Arc::default());
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let (handle, count) = (0..n)
            .map(|i| &self.runtimes[(start + i) % n])
            .min_by_key(|(_, count)| count.load(Ordering::Relaxed))
            .unwrap_or(&self.runtimes[start]);
        (handle.clone(), count.clone())
    }
}

/// The listen queue, as Pingora and nginx (where the kernel allows) size it.
const BACKLOG: i32 = 65535;

/// How many ports a port-0 https listener tries before one is free on UDP too.
const PORT_ZERO_TRIES: usize = 20;

#[async_trait]
impl Service for ClientListeners {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let workers = Arc::new(Workers::find(self.threads).await);
        let mut accepting = Vec::new();
        let keys = self.fd_keys();
        for (endpoint, key) in self.endpoints.drain(..).zip(keys) {
            let kind = kind_of(&endpoint);
            let mut listener = listen_or_exit(&endpoint.addr, &key, fds.as_ref()).await;
            // Port 0 with HTTP/3: the UDP socket takes the port the TCP listener got, which
            // another process may hold on UDP; then both move to another port.
            let mut quic_bound = None;
            if let (Some(_), true) = (&endpoint.quic, endpoint.addr.ends_with(":0")) {
                let quic_key = crate::quic::fd_key(&key);
                let (moved, bound) = same_port_on_udp(
                    listener,
                    &endpoint.addr,
                    |addr| crate::quic::socket(addr, &quic_key, fds.as_ref()),
                    // A new TCP socket is recorded in the old one's place for an upgrade.
                    |fresh| {
                        if let Some(fds) = fds.as_ref() {
                            fds.lock().add(key.clone(), fresh.as_raw_fd());
                        }
                    },
                )
                .await;
                listener = moved;
                quic_bound = bound;
            }
            if let Ok(addr) = listener.local_addr() {
                self.bound.record(kind, addr);
                if endpoint.tls.is_some() {
                    let first = &crate::snapshot::FIRST_HTTPS_PORT;
                    let _ = first.compare_exchange(
                        0,
                        addr.port(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                if let Some(config) = endpoint.quic.clone() {
                    // UDP at the port the TCP listener got (the config's may be 0).
                    let quic_key = crate::quic::fd_key(&key);
                    let bound = quic_bound
                        .take()
                        .unwrap_or_else(|| crate::quic::socket(addr, &quic_key, fds.as_ref()));
                    match bound {
                        Ok((socket, inherited)) => {
                            self.bound.record("quic", addr);
                            let predecessor = self.predecessor.filter(|_| inherited);
                            accepting.push(tokio::spawn(crate::quic::serve(
                                socket,
                                config,
                                self.gate.clone(),
                                predecessor,
                            )));
                        }
                        Err(e) => {
                            tracing::error!(%addr, error = %e, "cannot listen on UDP for HTTP/3");
                            std::process::exit(1);
                        }
                    }
                }
            }
            accepting.push(tokio::spawn(accept_loop(
                listener,
                endpoint.tls,
                self.gate.clone(),
                workers.clone(),
                shutdown.clone(),
            )));
        }
        // The connections waiting for their next request learn of the shutdown from the gate.
        let gate = self.gate.clone();
        let mut watch = shutdown.clone();
        tokio::spawn(async move {
            while !*watch.borrow_and_update() && watch.changed().await.is_ok() {}
            gate.closing.begin();
        });
        for task in accepting {
            let _ = task.await;
        }
        // Drain: requests in flight finish (connections idle between requests were closed by
        // the gate at the shutdown), then the process ends, without waiting out the rest of
        // the DRAIN_LIMIT that Pingora would otherwise sleep through.
        while LIVE.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!("every client connection is done; exiting");
        crate::observe::access_log::flush();
        self.bound.remove_with_pid_file();
        std::process::exit(0);
    }

    fn name(&self) -> &str {
        "edge"
    }

    /// The names the sockets have in the upgrade fd table: Pingora closes the inherited
    /// sockets that no service names here.
    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.all_fd_keys())
    }
}

impl ClientListeners {
    /// The sockets' names: each listener's, and the UDP socket's beside an HTTP/3 one.
    fn fd_keys(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .enumerate()
            .map(|(n, e)| fd_key(&e.addr, &format!("{}{n}", kind_of(e))))
            .collect()
    }

    fn all_fd_keys(&self) -> Vec<String> {
        let mut keys = self.fd_keys();
        for (endpoint, key) in self.endpoints.iter().zip(self.fd_keys()) {
            if endpoint.quic.is_some() {
                keys.push(crate::quic::fd_key(&key));
            }
        }
        keys
    }
}

fn kind_of(endpoint: &Endpoint) -> &'static str {
    if endpoint.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// [`listen`], or the end of the process: the same outcome as a listener Pingora cannot
/// build. The edge cannot serve what its config says, so it stops rather than run half-bound.
pub async fn listen_or_exit(addr: &str, key: &str, fds: Option<&ListenFds>) -> TcpListener {
    match listen(addr, key, fds).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            std::process::exit(1);
        }
    }
}

/// For an https listener on port 0 with HTTP/3: `listener` and the UDP socket `udp` binds
/// at the port it got. While that port is taken on UDP (by another process), both move to
/// another port, up to [`PORT_ZERO_TRIES`] times; `record` is told of each new TCP socket.
/// The UDP socket's result, unless no TCP socket could be made.
async fn same_port_on_udp<U>(
    mut listener: TcpListener,
    addr: &str,
    mut udp: impl FnMut(SocketAddr) -> io::Result<U>,
    mut record: impl FnMut(&TcpListener),
) -> (TcpListener, Option<io::Result<U>>) {
    for _ in 0..PORT_ZERO_TRIES {
        let Ok(got) = listener.local_addr() else {
            break;
        };
        match udp(got) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                // A new socket (not `listen`, which would take the recorded one back).
                let Ok(fresh) = bind(addr).await else {
                    break;
                };
                record(&fresh);
                listener = fresh;
            }
            bound => return (listener, Some(bound)),
        }
    }
    (listener, None)
}

/// The name a listening socket has in the fd table an upgrade hands over: its address, as
/// Pingora names its own, but for port 0 (any number of them) also the listener's `role`.
pub fn fd_key(addr: &str, role: &str) -> String {
    if addr.ends_with(":0") {
        format!("{addr}#{role}")
    } else {
        addr.to_string()
    }
}

/// The listening socket for `addr`: the one handed over under `key` by the previous process on
/// an upgrade, or a new one, then recorded under `key` for the next upgrade.
#[allow(unsafe_code)]
async fn listen(addr: &str, key: &str, fds: Option<&ListenFds>) -> io::Result<TcpListener> {
    if let Some(fds) = fds {
        let inherited = fds.lock().get(key).copied();
        if let Some(fd) = inherited {
            // SAFETY: the fd table hands each listening socket to exactly one owner: this
            // service, the only one that listens on `addr`.
            let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            std.set_nonblocking(true)?;
            return TcpListener::from_std(std);
        }
    }
    let listener = bind(addr).await?;
    if let Some(fds) = fds {
        fds.lock().add(key.to_string(), listener.as_raw_fd());
    }
    Ok(listener)
}

/// Binds `addr`, retrying for up to 30 s while the address is still in use (a previous
/// process that is going away without handing this socket over, as Pingora does).
async fn bind(addr: &str) -> io::Result<TcpListener> {
    let sockaddr: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let mut tries = 0;
    loop {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(sockaddr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        match socket.bind(&sockaddr.into()) {
            Ok(()) => {
                socket.listen(BACKLOG)?;
                return TcpListener::from_std(socket.into());
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 30 => {
                tries += 1;
                tracing::warn!(%addr, "address in use, trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Accepts until shutdown; each connection gets a task of its own.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<Acceptor>>,
    gate: Arc<ConnectionGate>,
    workers: Arc<Workers>,
    mut shutdown: ShutdownWatch,
) {
    while let Some((tcp, peer)) = next_connection(&listener, &mut shutdown).await {
        // Counted from the accept, so a drain that starts now waits for it; spawned on the
        // worker thread that serves the fewest connections.
        let (worker, count) = workers.pick();
        let live = Live::new(count);
        // The socket moves to the worker's own reactor, so its readiness wakes that worker
        // directly (a socket stays registered where it was first used).
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot hand the connection over");
                continue;
            }
        };
        worker.spawn(serve(live, tcp, peer, tls.clone(), gate.clone()));
    }
}

/// The next connection on `listener`, or `None` once the process shuts down. A failed accept
/// is logged; out of file descriptors, it waits 500 ms for connections to close (accept
/// would fail again at once).
pub async fn next_connection(
    listener: &TcpListener,
    shutdown: &mut ShutdownWatch,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return None;
                }
                continue;
            }
        };
        match accepted {
            Ok(connection) => return Some(connection),
            Err(e) => {
                tracing::error!(error = %e, "accept failed");
                if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// A connection set up as Pingora's own listeners do: no Nagle delay (a head and a body are
/// separate writes), and the peer's address in its socket digest for the session.
pub fn l4_stream(tcp: TcpStream, peer: SocketAddr) -> L4Stream {
    let _ = tcp.set_nodelay(true);
    let mut stream = L4Stream::from(tcp);
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    stream.set_socket_digest(digest);
    stream
}

/// One client connection: the TLS handshake if any, then the gate for its whole life.
///
/// A block, not an `async fn`: an `async fn` keeps its arguments twice in its future (as
/// passed, and as the body's own bindings), and this future is most of every connection's
/// task, idle ones included (see `gate::tests`).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice"
)]
fn serve(
    live: Live,
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<Acceptor>>,
    gate: Arc<ConnectionGate>,
) -> impl Future<Output = ()> {
    async move {
        // One clock from accept: the handshake and the first request head share
        // client_header_timeout.
        let deadline = tokio::time::Instant::now() + gate.header_timeout();
        // The kernel's half of send_timeout: bytes the client leaves unacknowledged (its receive
        // window shut) that long end the connection. The edge's own send clock sees a write that
        // waits; this sees the client stop while the socket's buffer still takes small writes.
        if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_user_timeout(Some(gate.send_timeout()))
        {
            tracing::debug!(%peer, error = %e, "cannot set TCP_USER_TIMEOUT");
        }
        let tcp = match TcpStream::from_std(tcp) {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot register the connection");
                return;
            }
        };
        // The deadline goes through the handshake's box and back: held here across the
        // handshake, it kept 16 bytes of every connection's task for the connection's life.
        let (stream, deadline): (pingora::protocols::Stream, _) = match tls {
            // Plain HTTP reads and writes the socket itself (see tcp.rs).
            None => (crate::tcp::Tcp::boxed(tcp, peer), deadline),
            Some(acceptor) => {
                // Boxed, timeout and all: this task lives as long as the connection, and an
                // idle one would otherwise carry room for the handshake's state.
                let handshake = Box::pin(async move {
                    let stream = l4_stream(tcp, peer);
                    let shaken = tokio::time::timeout_at(deadline, acceptor.tls_handshake(stream));
                    (shaken.await, deadline)
                });
                match handshake.await {
                    (Ok(Ok(tls)), deadline) => (Box::new(tls), deadline),
                    (Ok(Err(e)), _) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    (Err(_), _) => {
                        crate::observe::connections::HEADER_TIMEOUTS
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        gate.serve(stream, Some(peer.ip()), deadline).await;
        // Counted until the connection ends.
        drop(live);
    }
}

#[cfg(test)]
mod tests {
    use super::{Live, Workers};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_port_0_listener_whose_port_is_taken_on_udp_moves_both_to_another() {
        let listener = super::bind("127.0.0.1:0").await.expect("bind");
        let got = listener.local_addr().expect("addr");
        // Another process's UDP socket on that port (if even that is taken, it is taken).
        let _holder = std::net::UdpSocket::bind(got);
        let mut recorded = 0;
        let (moved, udp) =
            super::same_port_on_udp(listener, "127.0.0.1:0", std::net::UdpSocket::bind, |_| {
                recorded += 1
            })
            .await;
        let port = moved.local_addr().expect("addr").port();
        assert_ne!(port, got.port(), "the TCP listener moved");
        let udp = udp.expect("a UDP result").expect("bound on UDP");
        assert_eq!(
            udp.local_addr().expect("addr").port(),
            port,
            "UDP on the same port"
        );
        assert!(recorded >= 1);
        // A port free on UDP too stays where it is (unless another process takes it on UDP
        // in between, when moving is right as well).
        let listener = super::bind("127.0.0.1:0").await.expect("bind");
        let (kept, udp) =
            super::same_port_on_udp(listener, "127.0.0.1:0", std::net::UdpSocket::bind, |_| {})
                .await;
        let udp = udp.expect("a UDP result").expect("bound on UDP");
        assert_eq!(
            udp.local_addr().expect("addr").port(),
            kept.local_addr().expect("addr").port()
        );
    }

    /// An idle HTTP/1 connection costs the edge little more than its task (and tokio's
    /// registration of its socket): tokio allocates a task as its future and 104 bytes of
    /// header, scheduler and trailer, in steps of 128 bytes (a cache line pair). At 536 bytes
    /// or less the task is 640; it was 832 (a 1,024-byte task) before the connection's
    /// futures stopped holding their arguments twice: 10,000 idle connections measured
    /// 36.9 MB then (compare.py's idle row; HAProxy 37.2).
    #[tokio::test]
    async fn a_connections_task_fits_a_640_byte_allocation() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("addr"));
        let (tcp, peer) = listener.accept().expect("accept");
        let gate = Arc::new(crate::gate::tests::gate());
        let serve = super::serve(Live::new(Arc::default()), tcp, peer, None, gate);
        let size = std::mem::size_of_val(&serve);
        assert!(size <= 536, "a connection's future is {size} bytes");
        drop(client);
    }

    #[test]
    fn every_worker_thread_is_found() {
        let runtime = pingora_runtime::Runtime::new_no_steal(3, "placement-test");
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.get_handle().spawn(async move {
            let workers = Workers::find(3).await;
            let _ = tx.send(workers.runtimes.len());
        });
        let found = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("found");
        assert_eq!(found, 3);
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_new_connection_goes_to_the_worker_that_serves_the_fewest() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let workers = Workers {
            runtimes: (0..2)
                .map(|_| (runtime.handle().clone(), Arc::new(AtomicUsize::new(0))))
                .collect(),
            next: AtomicUsize::new(0),
        };
        let counts = |w: &Workers| -> Vec<usize> {
            w.runtimes
                .iter()
                .map(|(_, c)| c.load(Ordering::Relaxed))
                .collect()
        };
        let mut live: Vec<Live> = (0..4).map(|_| Live::new(workers.pick().1)).collect();
        assert_eq!(counts(&workers), [2, 2], "spread evenly");
        // Two connections of the first worker close: the next two go there.
        let first = workers.runtimes[0].1.clone();
        live.retain(|l| !Arc::ptr_eq(&l.worker, &first));
        assert_eq!(counts(&workers), [0, 2]);
        live.push(Live::new(workers.pick().1));
        live.push(Live::new(workers.pick().1));
        assert_eq!(counts(&workers), [2, 2]);
        drop(live);
        assert_eq!(counts(&workers), [0, 0], "every close is counted");
    }
}
