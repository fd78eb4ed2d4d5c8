//! Client connections as the connection gate (gate.rs) sees them: open now per listener and
//! per client, refused over the per-client cap, and TLS handshakes by negotiated version.

use crate::held;
use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

/// Which listener a connection came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Http,
    Https,
    /// QUIC (HTTP/3) on the UDP side of an https listener.
    Quic,
}

impl Listener {
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
            Listener::Quic => "quic",
        }
    }
}

/// `edge_tls_handshakes_total{version}`, registered with the request metrics.
pub static TLS_HANDSHAKES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        prometheus::Opts::new(
            "edge_tls_handshakes_total",
            "Completed TLS handshakes by negotiated protocol version",
        ),
        &["version"],
    )
    .expect("valid metric");
    // Both versions exported from the start, so rate() sees the first handshake.
    for version in ["TLSv1.2", "TLSv1.3"] {
        counter.with_label_values(&[version]);
    }
    counter
});

static OPEN_HTTP: AtomicI64 = AtomicI64::new(0);
static OPEN_HTTPS: AtomicI64 = AtomicI64::new(0);
static OPEN_QUIC: AtomicI64 = AtomicI64::new(0);
/// Connections refused because their client was at its cap.
pub static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Open connections per client address, for the cap. Sharded so that clients on different
/// shards never wait for each other.
struct PerClient {
    shards: Vec<Mutex<HashMap<IpAddr, u32>>>,
}

const SHARDS: usize = 16;

static PER_CLIENT: LazyLock<PerClient> = LazyLock::new(|| PerClient {
    shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
});

impl PerClient {
    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        let index = match ip {
            IpAddr::V4(v4) => u32::from(v4) as usize,
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as usize ^ (u128::from(v6) as usize),
        } % SHARDS;
        held::lock(&self.shards[index])
    }
}

/// Counts a TLS handshake.
pub fn handshake(rustls_version: &str) {
    TLS_HANDSHAKES
        .with_label_values(&[tls_version_name(rustls_version)])
        .inc();
}

/// rustls' version name ("TLSv1_3") in the config's spelling ("TLSv1.3").
pub fn tls_version_name(rustls_name: &str) -> &str {
    match rustls_name {
        "TLSv1_3" => "TLSv1.3",
        "TLSv1_2" => "TLSv1.2",
        other => other,
    }
}

/// An open client connection, counted until dropped.
#[derive(Debug)]
pub struct OpenConnection {
    listener: Listener,
    client: Option<IpAddr>,
}

/// Counts a new connection from `client`, or refuses it (`None`) when `limit` is given and
/// the client already holds that many.
pub fn open(
    listener: Listener,
    client: Option<IpAddr>,
    limit: Option<u32>,
) -> Option<OpenConnection> {
    if let Some(ip) = client {
        let mut shard = PER_CLIENT.shard(ip);
        let count = shard.entry(ip).or_insert(0);
        if limit.is_some_and(|n| *count >= n) {
            drop(shard);
            REFUSED.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *count += 1;
    }
    gauge(listener).fetch_add(1, Ordering::Relaxed);
    Some(OpenConnection { listener, client })
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        gauge(self.listener).fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.client {
            let mut shard = PER_CLIENT.shard(ip);
            if let Some(count) = shard.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    shard.remove(&ip);
                }
            }
        }
    }
}

fn gauge(listener: Listener) -> &'static AtomicI64 {
    match listener {
        Listener::Http => &OPEN_HTTP,
        Listener::Https => &OPEN_HTTPS,
        Listener::Quic => &OPEN_QUIC,
    }
}

/// Connections open now on each listener kind.
pub fn open_now() -> [(Listener, i64); 3] {
    [
        (Listener::Http, OPEN_HTTP.load(Ordering::Relaxed)),
        (Listener::Https, OPEN_HTTPS.load(Ordering::Relaxed)),
        (Listener::Quic, OPEN_QUIC.load(Ordering::Relaxed)),
    ]
}

/// Connections the client at `ip` holds now.
pub fn held_by(ip: IpAddr) -> u32 {
    PER_CLIENT.shard(ip).get(&ip).copied().unwrap_or(0)
}

/// Heads that ran out of `client_header_timeout`.
pub static HEADER_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// Which client clock ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// `client_header_timeout`: a request head (or TLS handshake, or HTTP/2 preface and first
    /// stream) did not arrive in time.
    Header,
    /// `client_body_timeout`: a request body stopped coming.
    Body,
    /// `send_timeout`: the client stopped taking the response.
    Send,
}

impl TimeoutPhase {
    pub const ALL: [TimeoutPhase; 3] =
        [TimeoutPhase::Header, TimeoutPhase::Body, TimeoutPhase::Send];

    /// The `phase` label.
    pub fn name(self) -> &'static str {
        match self {
            TimeoutPhase::Header => "header",
            TimeoutPhase::Body => "body",
            TimeoutPhase::Send => "send",
        }
    }
}

/// Request bodies that ran out of `client_body_timeout`, and requests whose client ran out of
/// `send_timeout`.
static BODY_TIMEOUTS: AtomicU64 = AtomicU64::new(0);
static SEND_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

/// Counts a request (or, for the header phase, a connection) a client clock ended.
pub fn client_timed_out(phase: TimeoutPhase) {
    client_timeouts(phase).fetch_add(1, Ordering::Relaxed);
}

/// The count of `phase` timeouts so far.
pub fn client_timeouts(phase: TimeoutPhase) -> &'static AtomicU64 {
    match phase {
        TimeoutPhase::Header => &HEADER_TIMEOUTS,
        TimeoutPhase::Body => &BODY_TIMEOUTS,
        TimeoutPhase::Send => &SEND_TIMEOUTS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_at_its_cap_is_refused_until_one_closes() {
        let ip: IpAddr = "192.0.2.77".parse().expect("ip");
        let first = open(Listener::Http, Some(ip), Some(2)).expect("first");
        let second = open(Listener::Https, Some(ip), Some(2)).expect("second");
        assert_eq!(held_by(ip), 2);
        assert!(open(Listener::Http, Some(ip), Some(2)).is_none());
        let other: IpAddr = "192.0.2.78".parse().expect("ip");
        let _unaffected = open(Listener::Http, Some(other), Some(2)).expect("another client");
        drop(first);
        let _third = open(Listener::Http, Some(ip), Some(2)).expect("room again");
        drop(second);
        assert_eq!(held_by(ip), 1);
        // No cap: always admitted.
        let many: Vec<_> = (0..10)
            .map(|_| open(Listener::Http, Some(ip), None).expect("no cap"))
            .collect();
        assert_eq!(held_by(ip), 11);
        drop(many);
    }

    #[test]
    fn rustls_version_names_are_spelled_like_the_config() {
        assert_eq!(tls_version_name("TLSv1_3"), "TLSv1.3");
        assert_eq!(tls_version_name("TLSv1_2"), "TLSv1.2");
    }
}
