//! Rate-limit zones with nginx `limit_req` semantics, per client IP, in process or in Redis.
//!
//! nginx keeps, per key, `excess` (requests above the rate, in thousandths) and `last`
//! (when it was updated). A request drains `excess` by the rate for the time since `last`,
//! then adds one request; if the result is over the route's `burst` the request is rejected
//! and the state is left as it was; otherwise the state is stored and, without `nodelay`,
//! the request waits `excess / rate` before it goes on. That is a leaky bucket (equivalently
//! GCRA); this module implements it exactly, in process and as one Redis script, so that the
//! two stores behave the same. (`governor`'s quotas bind the burst to the limiter, while an
//! nginx zone shares one state between routes with different bursts, so the zone state is
//! kept here directly.)
//!
//! Memory is bounded by `max_clients`: a full shard first forgets clients whose excess has
//! drained to zero (they would start from zero anyway), and only then its least recently seen
//! client, as nginx expires its zone.

use crate::config::{RedisOnError, RedisSettings, ZoneSettings, ZoneStore};
use crate::held;
use crate::units::Rate;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod redis_store;
pub use redis_store::RedisStore;

const SHARDS: usize = 64;

/// The outcome of one zone's check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; without `nodelay` the request should wait this long first.
    Pass { delay: Duration },
    /// Over the burst; the client may retry after this long.
    Reject { retry_after: Duration },
}

/// Counters per zone, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct ZoneCounters {
    pub passed: AtomicU64,
    pub delayed: AtomicU64,
    pub rejected: AtomicU64,
    pub dry_run_rejected: AtomicU64,
    /// Checks answered by the fallback because Redis was unreachable.
    pub redis_fallbacks: AtomicU64,
}

/// One client's state: nginx's `excess` (thousandths of a request) and `last` (ms).
#[derive(Clone, Copy, Debug)]
struct Entry {
    excess: u64,
    last: u64,
}

/// A zone's clients in process.
#[derive(Debug)]
pub struct LocalStore {
    shards: Vec<Mutex<HashMap<IpAddr, Entry>>>,
    shard_capacity: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl LocalStore {
    pub fn new(max_clients: usize) -> Self {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_capacity: max_clients.div_ceil(SHARDS).max(1),
            hasher: Default::default(),
        }
    }

    /// Clients tracked now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shard that keeps `key`.
    fn shard(&self, key: IpAddr) -> &Mutex<HashMap<IpAddr, Entry>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// nginx's `ngx_http_limit_req_lookup` with accounting, at `now` (ms).
    pub fn check(&self, key: IpAddr, rate: Rate, burst: u32, now: u64) -> Verdict {
        let mut map = held::lock(self.shard(key));
        let rate_milli = rate_milli(rate);
        if let Some(entry) = map.get_mut(&key) {
            let (verdict, next) = leak_and_add(Some(*entry), rate_milli, burst, now);
            if let Some(next) = next {
                *entry = next;
            }
            return verdict;
        }
        if map.len() >= self.shard_capacity {
            evict(&mut map, rate_milli, now);
        }
        let (verdict, next) = leak_and_add(None, rate_milli, burst, now);
        if let Some(next) = next {
            map.insert(key, next);
        }
        verdict
    }
}

/// A client's standing in a zone, without counting a request (`edge explain`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Standing {
    /// Requests above the rate the client has now (nginx's `excess`, drained to now).
    pub excess: f64,
    /// What one more request with the route's `burst` would get.
    pub next: Verdict,
}

impl LocalStore {
    /// Where `key` stands at `now`, and what its next request would get; nothing is stored.
    pub fn peek(&self, key: IpAddr, rate: Rate, burst: u32, now: u64) -> Standing {
        let entry = held::lock(self.shard(key)).get(&key).copied();
        let rate_milli = rate_milli(rate);
        let excess = entry.map_or(0, |e| {
            e.excess
                .saturating_sub(rate_milli * now.saturating_sub(e.last) / 1000)
        });
        let (next, _) = leak_and_add(entry, rate_milli, burst, now);
        Standing {
            excess: excess as f64 / 1000.0,
            next,
        }
    }
}

/// Requests per 1000 seconds, nginx's unit for `rate` (10r/s = 10000).
fn rate_milli(rate: Rate) -> u64 {
    (rate.requests as u64 * 1_000_000 / rate.per.as_millis().max(1) as u64).max(1)
}

/// One step of the leaky bucket: the verdict and the state to store (none on reject).
fn leak_and_add(
    entry: Option<Entry>,
    rate_milli: u64,
    burst: u32,
    now: u64,
) -> (Verdict, Option<Entry>) {
    let excess = match entry {
        None => 0,
        Some(e) => {
            let elapsed = now.saturating_sub(e.last);
            (e.excess + 1000).saturating_sub(rate_milli * elapsed / 1000)
        }
    };
    if excess > burst as u64 * 1000 {
        // Wait until enough has drained for one more request to fit in the burst.
        let over = excess - burst as u64 * 1000;
        let wait_ms = (over * 1000).div_ceil(rate_milli);
        return (
            Verdict::Reject {
                retry_after: Duration::from_millis(wait_ms),
            },
            None,
        );
    }
    let delay_ms = excess * 1000 / rate_milli;
    (
        Verdict::Pass {
            delay: Duration::from_millis(delay_ms),
        },
        Some(Entry { excess, last: now }),
    )
}

/// Frees room in a full shard: clients whose excess has drained, else the least recently seen.
fn evict(map: &mut HashMap<IpAddr, Entry>, rate_milli: u64, now: u64) {
    let before = map.len();
    map.retain(|_, e| e.excess > rate_milli * now.saturating_sub(e.last) / 1000);
    if map.len() < before {
        return;
    }
    if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| *k) {
        map.remove(&oldest);
    }
}

/// A compiled zone: its settings, its store and its counters.
#[derive(Debug)]
pub struct Zone {
    pub name: String,
    pub settings: ZoneSettings,
    pub local: LocalStore,
    pub redis: Option<Arc<RedisStore>>,
    pub counters: ZoneCounters,
    /// Whether the Redis fallback is in force (logged once per outage).
    redis_down: AtomicBool,
}

impl Zone {
    pub fn new(name: &str, settings: ZoneSettings, redis: Option<Arc<RedisStore>>) -> Self {
        Zone {
            name: name.to_string(),
            local: LocalStore::new(settings.max_clients),
            redis: if settings.store == ZoneStore::Redis {
                redis
            } else {
                None
            },
            settings,
            counters: ZoneCounters::default(),
            redis_down: AtomicBool::new(false),
        }
    }

    /// Whether a reload may keep this zone's state for `settings`: the same rate, store and
    /// client capacity (the local store's shards are sized by `max_clients`).
    pub fn keeps_state_for(&self, settings: &ZoneSettings) -> bool {
        self.settings == *settings
    }

    /// Where `client` stands in this zone now, without counting a request (for a Redis zone,
    /// as every replica sees it); an error when Redis cannot be asked.
    pub async fn peek(&self, client: IpAddr, burst: u32) -> Result<Standing, String> {
        if let Some(redis) = &self.redis {
            return redis
                .peek(&self.name, client, self.settings.rate, burst)
                .await;
        }
        Ok(self
            .local
            .peek(client, self.settings.rate, burst, crate::clock::now_ms()))
    }

    /// Checks (and accounts) one request from `client` against this zone with `burst`.
    pub async fn check(&self, client: IpAddr, burst: u32) -> Verdict {
        let rate = self.settings.rate;
        if let Some(redis) = &self.redis {
            // Boxed: the round trip's state (about 3.9 KB) would otherwise be part of every
            // request's future, Redis zone or not, and be copied into each request's box.
            match Box::pin(redis.check(&self.name, client, rate, burst)).await {
                Ok(verdict) => {
                    if self.redis_down.swap(false, Ordering::Relaxed) {
                        tracing::info!(zone = %self.name, "Redis is back; zone shared again");
                    }
                    return verdict;
                }
                Err(e) => {
                    self.counters
                        .redis_fallbacks
                        .fetch_add(1, Ordering::Relaxed);
                    if !self.redis_down.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            zone = %self.name,
                            error = %e,
                            on_error = ?redis.on_error(),
                            "Redis unreachable; zone falls back until it returns"
                        );
                    }
                    if redis.on_error() == RedisOnError::Allow {
                        return Verdict::Pass {
                            delay: Duration::ZERO,
                        };
                    }
                }
            }
        }
        self.local
            .check(client, rate, burst, crate::clock::now_ms())
    }
}

/// One zone applied to a route (a compiled `limit` entry).
#[derive(Debug, Clone)]
pub struct RouteLimit {
    pub zone: Arc<Zone>,
    pub burst: u32,
    pub nodelay: bool,
    pub dry_run: bool,
}

/// What the route's zones decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Go on after `delay` (zero with `nodelay`).
    Pass { delay: Duration },
    /// Refused by `zone`; the client may retry after `retry_after`.
    Reject { zone: String, retry_after: Duration },
}

/// Checks every zone of a route in order (each must admit); the longest delay applies.
/// A `dry_run` zone counts and logs what it would reject but rejects and delays nothing.
pub async fn admit(limits: &[RouteLimit], client: IpAddr) -> Admission {
    let mut delay = Duration::ZERO;
    for limit in limits {
        let counters = &limit.zone.counters;
        match limit.zone.check(client, limit.burst).await {
            Verdict::Pass { delay: wait } => {
                counters.passed.fetch_add(1, Ordering::Relaxed);
                if !limit.nodelay && !limit.dry_run && !wait.is_zero() {
                    counters.delayed.fetch_add(1, Ordering::Relaxed);
                    delay = delay.max(wait);
                }
            }
            Verdict::Reject { retry_after } if limit.dry_run => {
                counters.dry_run_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::info!(zone = %limit.zone.name, %client, ?retry_after, "dry run: would reject");
            }
            Verdict::Reject { retry_after } => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Admission::Reject {
                    zone: limit.zone.name.clone(),
                    retry_after,
                };
            }
        }
    }
    Admission::Pass { delay }
}

/// Builds the Redis store shared by every `store = "redis"` zone, if any zone needs it.
pub fn redis_store_for(
    zones: &std::collections::BTreeMap<String, ZoneSettings>,
    settings: &RedisSettings,
    previous: Option<&Arc<RedisStore>>,
) -> Option<Arc<RedisStore>> {
    if !zones.values().any(|z| z.store == ZoneStore::Redis) {
        return None;
    }
    match previous {
        Some(p) if p.settings() == settings => Some(p.clone()),
        _ => Some(Arc::new(RedisStore::new(settings.clone()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::parse_rate;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(n))
    }

    #[test]
    fn nodelay_admits_burst_plus_rate_over_time() {
        // 50 r/s for 4 s against 10r/s burst 20: 1 + 20 + 10 x 4 (nginx counts the first).
        let store = LocalStore::new(1000);
        let rate = parse_rate("10r/s").expect("rate");
        let mut passed = 0;
        for i in 0..200u64 {
            if let Verdict::Pass { .. } = store.check(ip(1), rate, 20, i * 20) {
                passed += 1;
            }
        }
        assert!((59..=62).contains(&passed), "{passed}");
    }

    #[test]
    fn delay_is_excess_over_rate_and_reject_names_a_wait() {
        let store = LocalStore::new(1000);
        let rate = parse_rate("2r/s").expect("rate");
        assert_eq!(
            store.check(ip(1), rate, 2, 0),
            Verdict::Pass {
                delay: Duration::ZERO
            }
        );
        assert_eq!(
            store.check(ip(1), rate, 2, 0),
            Verdict::Pass {
                delay: Duration::from_millis(500)
            }
        );
        assert_eq!(
            store.check(ip(1), rate, 2, 0),
            Verdict::Pass {
                delay: Duration::from_secs(1)
            }
        );
        match store.check(ip(1), rate, 2, 0) {
            Verdict::Reject { retry_after } => assert_eq!(retry_after, Duration::from_millis(500)),
            other => panic!("{other:?}"),
        }
        // A rejected request does not change the state: after 500 ms one more fits.
        assert!(matches!(
            store.check(ip(1), rate, 2, 500),
            Verdict::Pass { .. }
        ));
        // Other clients are unaffected.
        assert_eq!(
            store.check(ip(2), rate, 2, 0),
            Verdict::Pass {
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_clients() {
        let store = LocalStore::new(10_000);
        let rate = parse_rate("10r/s").expect("rate");
        for n in 0..1_000_000u32 {
            store.check(ip(n), rate, 20, (n / 1000) as u64);
        }
        assert!(store.len() <= 10_000 + SHARDS, "{}", store.len());
    }

    #[test]
    fn a_busy_client_is_not_evicted_for_drained_ones() {
        let store = LocalStore::new(2 * SHARDS); // two clients per shard
        let rate = parse_rate("1r/m").expect("rate");
        for _ in 0..6 {
            store.check(ip(7), rate, 5, 0);
        }
        assert!(matches!(
            store.check(ip(7), rate, 5, 0),
            Verdict::Reject { .. }
        ));
        // A flood of one-off clients (drained at once) makes room among themselves: the busy
        // client keeps its excess and stays limited.
        for n in 100..5000 {
            store.check(ip(n), rate, 5, 1);
            assert!(
                matches!(store.check(ip(7), rate, 5, 1), Verdict::Reject { .. }),
                "client 7 was handed a fresh burst after {n}"
            );
        }
    }
}
