//! Upstreams at runtime: servers, their shared state (in-flight, passive failures), selection.
//!
//! A [`ServerState`] outlives config reloads: it is keyed by (upstream, server addr) and handed
//! to the new snapshot when the server is still there, so in-flight counts and failure marks
//! carry over. Selection algorithms live in [`balance`].

pub mod balance;
pub mod client;
pub mod exchange;
pub mod h1;
pub mod h2;
pub mod pool;
pub mod probe;
pub mod tls;

use crate::config::{Balance, UpstreamSettings};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::now_ms;

/// State of one server that is shared by every request and kept across reloads.
#[derive(Debug)]
pub struct ServerState {
    /// Requests in flight to this server, across all threads (least_conn's count).
    pub in_flight: AtomicU32,
    /// Failures since the last success (nginx's `fails`).
    fails: AtomicU32,
    /// When a failure was last counted, or the server last retried after `fail_timeout`.
    checked_ms: AtomicU64,
    /// When the server last failed.
    accessed_ms: AtomicU64,
    /// Whether active health probes let the server take traffic.
    probe_up: AtomicBool,
    /// Attempts sent to this server in all (for /status and tests): a request that moved
    /// on to the next server counts once at each.
    pub attempts: AtomicU64,
    /// Failures counted in all (for metrics).
    failures_total: AtomicU64,
    /// The last probe said "degraded" (still up).
    degraded: AtomicBool,
    /// Something has been learnt of this server: a probe answered (or failed), or a request
    /// to it got a response or failed. A server nothing has checked shows as "up (unprobed)".
    checked: AtomicBool,
    /// Its idle kept-alive connections.
    pub pool: pool::Pool,
    /// Its HTTP/2 connections (an upstream with `protocol = "h2"`, or `"auto"` when the
    /// server chose h2).
    pub h2: h2::Pool,
    /// When this server first appeared (for the health `start_period`).
    pub created: Instant,
}

impl Default for ServerState {
    fn default() -> Self {
        ServerState {
            in_flight: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            checked_ms: AtomicU64::new(0),
            accessed_ms: AtomicU64::new(0),
            probe_up: AtomicBool::new(true),
            attempts: AtomicU64::new(0),
            failures_total: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            checked: AtomicBool::new(false),
            pool: pool::Pool::default(),
            h2: h2::Pool::default(),
            created: Instant::now(),
        }
    }
}

impl ServerState {
    /// Whether active health probing lets this server take traffic.
    pub fn probe_up(&self) -> bool {
        self.probe_up.load(Ordering::Relaxed)
    }

    /// Sets the active health verdict.
    pub fn set_probe_up(&self, up: bool) {
        self.probe_up.store(up, Ordering::Relaxed);
    }

    /// Whether a probe or a request has told anything about this server yet.
    pub fn checked(&self) -> bool {
        self.checked.load(Ordering::Relaxed)
    }

    /// Records that a probe or a request has told something about this server.
    pub fn set_checked(&self) {
        if !self.checked.load(Ordering::Relaxed) {
            self.checked.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the last probe answered "degraded".
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.store(degraded, Ordering::Relaxed);
    }

    /// Failures counted since the start.
    pub fn failures(&self) -> u64 {
        self.failures_total.load(Ordering::Relaxed)
    }

    /// Failures counted since the last success.
    pub fn fails(&self) -> u32 {
        self.fails.load(Ordering::Relaxed)
    }
}

/// One server of a compiled upstream. A configured `addr` that is a name stands for one
/// server per address it resolves to; each keeps three different things apart: what was
/// configured, where requests go, and how it is named to people.
#[derive(Debug)]
pub struct Server {
    /// How logs, metrics and `/status` name it: the configured address, followed by the
    /// resolved IP for a name ("content-manager:8000 (172.18.0.5)").
    pub label: String,
    /// The Host the edge sends on requests of its own (health probes): the configured host,
    /// with its port unless it is 80 ("content-manager:8000").
    pub host: String,
    /// Where requests go; `None` while the name does not resolve.
    pub addr: Option<SocketAddr>,
    pub weight: u32,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub state: Arc<ServerState>,
}

impl Server {
    /// Whether passive failure accounting has taken this server out at `now`.
    fn failed_out(&self, now: u64) -> bool {
        self.max_fails > 0
            && self.state.fails.load(Ordering::Relaxed) >= self.max_fails
            && now.saturating_sub(self.state.checked_ms.load(Ordering::Relaxed))
                <= self.fail_timeout.as_millis() as u64
    }

    /// Whether this server may be picked at `now` (`single`: the upstream's only server, which
    /// nginx never takes out for failures).
    pub(crate) fn usable(&self, now: u64, single: bool) -> bool {
        self.addr.is_some() && self.state.probe_up() && (single || !self.failed_out(now))
    }

    /// Whether passive failure accounting lets the server take traffic now.
    pub fn passive_up(&self) -> bool {
        !self.failed_out(now_ms())
    }

    /// Whether passive and active health both let the server take traffic now.
    pub fn is_up(&self) -> bool {
        self.addr.is_some() && self.state.probe_up() && !self.failed_out(now_ms())
    }

    /// The server's health in the words of `/status` and the status page: "up", "up
    /// (unprobed)" (nothing has checked it yet: no probe has answered and no request has
    /// reached it), "degraded", "down (active probe)", "down (passive)" or "down (no
    /// address)".
    pub fn health(&self) -> &'static str {
        if self.addr.is_none() {
            "down (no address)"
        } else if !self.state.probe_up() {
            "down (active probe)"
        } else if self.failed_out(now_ms()) {
            "down (passive)"
        } else if !self.state.checked() {
            "up (unprobed)"
        } else if self.state.degraded() {
            "degraded"
        } else {
            "up"
        }
    }
}

/// Per-server weights of the smooth weighted round robin.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Weights {
    pub(crate) current: i64,
    pub(crate) effective: i64,
}

/// A compiled upstream: its servers and how to pick one.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub settings: UpstreamSettings,
    pub servers: Vec<Server>,
    pub(crate) weights: Mutex<Vec<Weights>>,
    /// TLS to its servers (`tls`), loaded when the snapshot was compiled; `Err`: its files
    /// could not be loaded (why), and no server of it can be reached.
    pub tls: Option<Result<Arc<tls::UpstreamTls>, String>>,
    /// A gRPC call came for this `http1` upstream (said once in the log).
    grpc_to_http1: AtomicBool,
}

/// What one request has tried so far on its upstream (nginx's `tried` bitmap and ip_hash state).
#[derive(Debug, Default)]
pub struct Attempts {
    tried: Tried,
    /// Attempts made, for `next_upstream_tries`.
    pub count: u32,
    pub(crate) ip_hash: Option<u32>,
    pub(crate) ip_hash_tries: u32,
    /// A preview (`edge explain`): round robin works on a copy of the weights, so asking
    /// which server would be picked changes nothing.
    pub(crate) preview: bool,
    /// A preview from a config file (no running edge): every server counts as usable.
    pub(crate) assume_up: bool,
}

impl Attempts {
    /// Whether `server` may be picked (always, for a preview from a config file).
    pub(crate) fn usable(&self, server: &Server, now: u64, single: bool) -> bool {
        self.assume_up || server.usable(now, single)
    }

    pub(crate) fn tried(&self, index: usize) -> bool {
        self.tried.contains(index)
    }

    /// Records that the request went to `index`.
    pub fn mark(&mut self, index: usize) {
        if !self.tried.contains(index) {
            self.tried.push(index);
        }
        self.count += 1;
    }

    /// The server tried last.
    pub fn last(&self) -> Option<usize> {
        self.tried.last()
    }

    /// Forgets that `index` was tried: a stale pooled connection is no verdict on the server.
    pub fn unmark(&mut self, index: usize) {
        self.tried.remove(index);
        self.count = self.count.saturating_sub(1);
    }
}

/// The servers a request has tried, in order: the first few in place (a request tries one
/// server, or a few with retries), more on the heap. Every request has one, so the common
/// case allocates nothing.
#[derive(Debug, Default)]
struct Tried {
    first: [usize; TRIED_IN_PLACE],
    len: usize,
    more: Vec<usize>,
}

const TRIED_IN_PLACE: usize = 4;

impl Tried {
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.first[..self.len.min(TRIED_IN_PLACE)]
            .iter()
            .chain(&self.more)
            .copied()
    }

    fn contains(&self, index: usize) -> bool {
        self.iter().any(|i| i == index)
    }

    fn push(&mut self, index: usize) {
        if self.len < TRIED_IN_PLACE {
            self.first[self.len] = index;
        } else {
            self.more.push(index);
        }
        self.len += 1;
    }

    fn last(&self) -> Option<usize> {
        self.iter().last()
    }

    fn remove(&mut self, index: usize) {
        let kept: Vec<usize> = self.iter().filter(|&i| i != index).collect();
        if kept.len() == self.len {
            return;
        }
        *self = Tried::default();
        for i in kept {
            self.push(i);
        }
    }
}

impl Upstream {
    pub fn new(name: String, settings: UpstreamSettings, servers: Vec<Server>) -> Self {
        let weights = servers
            .iter()
            .map(|s| Weights {
                current: 0,
                effective: s.weight as i64,
            })
            .collect();
        let tls = settings.tls.as_ref().map(|t| {
            if !t.verify {
                tracing::warn!(upstream = %name, "tls.verify = false: the servers' certificates are not verified");
            }
            tls::UpstreamTls::load(t, settings.protocol)
                .map(Arc::new)
                .map_err(|e| {
                    tracing::error!(upstream = %name, error = %e, "the upstream's TLS files cannot be used");
                    e.to_string()
                })
        });
        Upstream {
            name,
            settings,
            servers,
            weights: Mutex::new(weights),
            tls,
            grpc_to_http1: AtomicBool::new(false),
        }
    }

    /// A gRPC call came for this upstream, whose protocol is "http1": said in the log the
    /// first time (every such call is answered UNAVAILABLE).
    pub fn grpc_to_http1_once(&self) {
        if !self.grpc_to_http1.swap(true, Ordering::Relaxed) {
            tracing::error!(
                upstream = %self.name,
                "gRPC calls reach this upstream, whose protocol is \"http1\": they are answered \
                 UNAVAILABLE (set protocol = \"h2\", or \"auto\" with tls)"
            );
        }
    }

    /// The most attempts one request may make: every server once, bounded by
    /// `next_upstream_tries` (0 = no bound).
    pub fn max_attempts(&self) -> u32 {
        let servers = self.servers.len() as u32;
        match self.settings.next_upstream_tries {
            0 => servers,
            n => n.min(servers),
        }
    }

    /// Picks a server for a request from `client`, skipping what `attempts` already tried.
    /// `None` when no server is usable (nginx's "no live upstreams").
    pub fn select(&self, client: IpAddr, attempts: &mut Attempts) -> Option<usize> {
        self.select_at(client, attempts, now_ms())
    }

    /// [`Upstream::select`] at `now` (the process's milliseconds, [`crate::clock::ms_at`]).
    pub fn select_at(&self, client: IpAddr, attempts: &mut Attempts, now: u64) -> Option<usize> {
        let picked = match self.settings.balance {
            Balance::RoundRobin => self.round_robin(now, attempts, |_| true),
            Balance::LeastConn => self.least_conn(now, attempts),
            Balance::IpHash => self.ip_hash(now, client, attempts),
        };
        match picked {
            Some(index) => {
                let server = &self.servers[index];
                let fail_timeout = server.fail_timeout.as_millis() as u64;
                let checked = server.state.checked_ms.load(Ordering::Relaxed);
                if now.saturating_sub(checked) > fail_timeout {
                    server.state.checked_ms.store(now, Ordering::Relaxed);
                }
                Some(index)
            }
            None => {
                // nginx: when every server has failed, mark them all live again so that the
                // next request probes them instead of failing until fail_timeout passes.
                if attempts.count == 0 {
                    for s in &self.servers {
                        s.state.fails.store(0, Ordering::Relaxed);
                    }
                }
                None
            }
        }
    }

    /// The server a request from `client` would be sent to now, without counting it as sent
    /// (no weights move, no failure state is reset). `None`: no server is usable.
    /// With `assume_up` (no running edge) every server counts as usable.
    pub fn preview(&self, client: IpAddr, assume_up: bool) -> Option<usize> {
        let now = now_ms();
        let mut attempts = Attempts {
            preview: true,
            assume_up,
            ..Attempts::default()
        };
        match self.settings.balance {
            Balance::RoundRobin => self.round_robin(now, &attempts, |_| true),
            Balance::LeastConn => self.least_conn(now, &attempts),
            Balance::IpHash => self.ip_hash(now, client, &mut attempts),
        }
    }

    /// Passive health: the request to `index` failed with an error or timeout.
    pub fn report_failure(&self, index: usize) {
        let Some(server) = self.servers.get(index) else {
            return;
        };
        server.state.set_checked();
        server.state.failures_total.fetch_add(1, Ordering::Relaxed);
        if self.servers.len() == 1 {
            return;
        }
        let now = now_ms();
        let fails = server.state.fails.fetch_add(1, Ordering::Relaxed) + 1;
        server.state.accessed_ms.store(now, Ordering::Relaxed);
        server.state.checked_ms.store(now, Ordering::Relaxed);
        if let Some(penalty) = server.weight.checked_div(server.max_fails) {
            if let Ok(mut weights) = self.weights.lock() {
                if let Some(w) = weights.get_mut(index) {
                    w.effective = (w.effective - penalty as i64).max(0);
                }
            }
            if fails == server.max_fails {
                tracing::warn!(
                    upstream = %self.name,
                    server = %server.label,
                    fails,
                    fail_timeout = ?server.fail_timeout,
                    "server temporarily disabled"
                );
            }
        }
    }

    /// Passive health: the request to `index` got a response.
    pub fn report_success(&self, index: usize) {
        if let Some(server) = self.servers.get(index) {
            let state = &server.state;
            state.set_checked();
            if state.fails.load(Ordering::Relaxed) > 0
                && state.accessed_ms.load(Ordering::Relaxed)
                    < state.checked_ms.load(Ordering::Relaxed)
            {
                state.fails.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Whether at least one server can take traffic now.
    pub fn has_usable_server(&self) -> bool {
        let now = now_ms();
        let single = self.servers.len() == 1;
        self.servers.iter().any(|s| s.usable(now, single))
    }
}

/// Counts a request in flight to a server until dropped, on every exit path.
#[derive(Debug)]
pub struct InFlightGuard {
    state: Arc<ServerState>,
}

impl InFlightGuard {
    pub fn new(state: Arc<ServerState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.attempts.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { state }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tried_tests {
    use super::Tried;

    #[test]
    fn tried_servers_keep_their_order_in_place_and_beyond() {
        let mut tried = Tried::default();
        assert_eq!(tried.last(), None);
        for i in [3, 1, 4, 0, 5, 9] {
            tried.push(i);
        }
        assert_eq!(tried.iter().collect::<Vec<_>>(), [3, 1, 4, 0, 5, 9]);
        assert!(tried.contains(9) && tried.contains(3) && !tried.contains(2));
        assert_eq!(tried.last(), Some(9));
        tried.remove(9);
        assert_eq!(tried.last(), Some(5));
        tried.remove(1);
        assert_eq!(tried.iter().collect::<Vec<_>>(), [3, 4, 0, 5]);
        assert!(tried.more.is_empty(), "back in place");
        tried.remove(7);
        assert_eq!(tried.len, 4);
    }
}
