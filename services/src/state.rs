//! State shared by every connection of one running service.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::Metrics;
use crate::spec::{HealthOverride, ServiceSpec};

/// Counters, health override and metrics of one service instance.
pub(crate) struct State {
    pub(crate) spec: ServiceSpec,
    pub(crate) started: Instant,
    pub(crate) metrics: Metrics,
    health_override: AtomicU8,
    requests: AtomicU64,
    active_connections: AtomicUsize,
}

impl State {
    pub(crate) fn new(spec: ServiceSpec) -> std::io::Result<Self> {
        let metrics = Metrics::new(&spec).map_err(std::io::Error::other)?;
        Ok(Self {
            spec,
            started: Instant::now(),
            metrics,
            health_override: AtomicU8::new(HealthOverride::Auto.to_u8()),
            requests: AtomicU64::new(0),
            active_connections: AtomicUsize::new(0),
        })
    }

    pub(crate) fn health_override(&self) -> HealthOverride {
        HealthOverride::from_u8(self.health_override.load(Ordering::Relaxed))
    }

    pub(crate) fn set_health_override(&self, h: HealthOverride) {
        self.health_override.store(h.to_u8(), Ordering::Relaxed);
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn active_connections(&self) -> usize {
        self.active_connections.load(Ordering::Relaxed)
    }
}

/// Counts one open client connection for as long as it lives.
pub(crate) struct ConnectionGuard(Arc<State>);

impl ConnectionGuard {
    pub(crate) fn new(state: Arc<State>) -> Self {
        state.active_connections.fetch_add(1, Ordering::Relaxed);
        state.metrics.active_connections.inc();
        Self(state)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.active_connections.dec();
    }
}
