//! Serving a service: the accept loop, graceful shutdown and the in-process handle used by tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::ctx::Ctx;
use crate::handler::handle;
use crate::spec::{HealthOverride, ServiceSpec};
use crate::state::{ConnectionGuard, State};

/// How long shutdown waits for in-flight requests and WebSockets before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A service running in a spawned task. Dropping it stops the service too.
pub struct RunningService {
    /// The address it listens on.
    pub addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    state: Arc<State>,
}

impl RunningService {
    /// Forces what `/health` reports; [`HealthOverride::Auto`] goes back to the real checks.
    pub fn set_health(&self, h: HealthOverride) {
        self.state.set_health_override(h);
    }

    /// Requests served so far, excluding `/health` and `/metrics`.
    pub fn requests(&self) -> u64 {
        self.state.requests()
    }

    /// Stops accepting connections, lets in-flight requests finish, and returns when done.
    pub async fn shutdown(self) {
        // The receiver is gone only if the server task already ended.
        let _ = self.shutdown.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "service ended with an error"),
            Err(e) => tracing::warn!(error = %e, "service task failed"),
        }
    }
}

impl std::fmt::Debug for RunningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningService")
            .field("addr", &self.addr)
            .field("name", &self.state.spec.name)
            .field("instance", &self.state.spec.instance)
            .finish_non_exhaustive()
    }
}

/// The listen backlog: the kernel's own cap (`net.core.somaxconn`, 4096 on current kernels),
/// as Go's net/http and most production servers ask for; tokio's default of 1024 overflows
/// under a burst of connects (a dropped SYN waits a second for its retransmit).
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` (`"host:port"`, the first address it resolves to) with
/// [`LISTEN_BACKLOG`].
pub async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let Some(addr) = tokio::net::lookup_host(addr).await?.next() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{addr}` resolves to no address"),
        ));
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds `addr` (e.g. `"127.0.0.1:0"`) and serves in a spawned tokio task; returns once listening.
pub async fn spawn(spec: ServiceSpec, addr: &str) -> std::io::Result<RunningService> {
    let listener = listen(addr).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(State::new(spec)?);
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(run(Arc::clone(&state), listener, async move {
        // Resolves on an explicit shutdown and when the handle is dropped.
        let _ = stop.await;
    }));
    Ok(RunningService {
        addr,
        shutdown,
        task,
        state,
    })
}

/// Serves on an existing listener until `shutdown` resolves, then drains in-flight connections.
pub async fn serve(
    spec: ServiceSpec,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let state = Arc::new(State::new(spec)?);
    run(state, listener, shutdown).await
}

async fn run(
    state: Arc<State>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    // Tells upgraded WebSockets to close; every holder of a receiver is an unfinished task.
    let (stop_tx, stop_rx) = watch::channel(false);

    state.metrics.up.set(1);
    tracing::info!(
        service = %state.spec.name,
        instance = %state.spec.instance,
        version = %state.spec.version,
        addr = %local,
        "listening"
    );

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE or a connection reset before accept: back off briefly.
                    tracing::warn!(service = %state.spec.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let guard = ConnectionGuard::new(Arc::clone(&state));
        let ctx = Ctx {
            state: Arc::clone(&state),
            peer,
            stop: stop_rx.clone(),
        };
        let service = service_fn(move |req| handle(ctx.clone(), req));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(guard);
        });
    }

    drop(listener);
    drop(stop_rx);
    state.metrics.up.set(0);
    tracing::info!(
        service = %state.spec.name,
        active_connections = state.active_connections(),
        "shutting down, draining connections"
    );
    // Only fails when no WebSocket is listening, which is fine.
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        graceful.shutdown().await;
        stop_tx.closed().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            service = %state.spec.name,
            timeout_secs = DRAIN_TIMEOUT.as_secs(),
            "drain timed out; abandoning remaining connections"
        );
    }
    tracing::info!(service = %state.spec.name, "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn listeners_ask_for_the_kernels_backlog() {
        let listener = super::listen("127.0.0.1:0").await.expect("listen");
        let port = listener.local_addr().expect("addr").port();
        // `ss` shows a listening socket's backlog as its Send-Q (capped by somaxconn).
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2)");
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let backlog: u32 = line
            .split_whitespace()
            .nth(2)
            .and_then(|q| q.parse().ok())
            .unwrap_or_else(|| panic!("no listener line: {line}"));
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        assert_eq!(backlog, super::LISTEN_BACKLOG.min(somaxconn), "{line}");
        if somaxconn > 1024 {
            assert!(backlog > 1024, "more than tokio's default: {line}");
        }
    }
}
