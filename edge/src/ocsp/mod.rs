//! OCSP stapling (nginx's `ssl_stapling on; ssl_stapling_verify on;`).
//!
//! One background thread keeps a verified OCSP response for each certificate: fetched (on its
//! own runtime, with the edge's upstream client) from the responder in the leaf's Authority
//! Information Access (`ocsp = "auto"`) or read from a
//! file another tool keeps fresh (`ocsp = "FILE"`, as HAProxy's `.ocsp` files). A handshake
//! never waits for it: [`crate::tls`] staples whatever response is current. Responses are
//! refreshed at half their validity (or every `ocsp_refresh`, if sooner); a failed refresh
//! keeps the last good response until its `nextUpdate`, and a revoked status stops stapling.

pub mod response;
pub mod stapler;

use crate::held;
use crate::upstream::client::{self, Ask};
use response::{Good, OcspError, Query};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long one fetch may take (connect, send, answer).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a failed fetch waits before the next try.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// The largest response accepted.
const MAX_RESPONSE: usize = 64 << 10;

/// Per certificate, for `/metrics` (`edge_ocsp_*`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Unix seconds of the last good response (0: none yet).
    pub last_success: i64,
    /// The stapled response's nextUpdate (0: none stapled).
    pub next_update: i64,
    pub failures: u64,
    pub revoked: u64,
    pub stapled: bool,
}

/// Stats by certificate file.
pub static STATS: LazyLock<Mutex<BTreeMap<String, Stats>>> = LazyLock::new(Default::default);

/// Updates the stats of `cert` with `change`.
pub fn record(cert: &str, change: impl FnOnce(&mut Stats)) {
    let mut all = held::lock(&STATS);
    change(all.entry(cert.to_string()).or_default());
}

/// The time now, in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When a good response should be refreshed: at half its validity, and no later than
/// `refresh` from now. Past half its validity already (a caching responder serving an ageing
/// answer), every minute or half the time left, whichever is longer, still within
/// `refresh`; never sooner than a second.
pub fn refresh_in(good: &Good, now: i64, refresh: Duration) -> Duration {
    let next = match good.next_update {
        None => refresh,
        Some(next) => {
            let half = good.this_update + (next - good.this_update) / 2;
            if half > now {
                Duration::from_secs((half - now) as u64)
            } else {
                Duration::from_secs(((next - now) / 2).max(60) as u64)
            }
        }
    };
    next.min(refresh).max(Duration::from_secs(1))
}

/// When a stapled response stops being stapled: its nextUpdate; for one that names none
/// (RFC 6960: newer information is always available), a minute after the next refresh is
/// due, so it is stapled as long as refreshes succeed.
pub fn expires(good: &Good, refresh: Duration) -> i64 {
    good.next_update
        .unwrap_or(good.fetched + refresh.as_secs() as i64 + 60)
}

/// Asks the responder at `url` (plain HTTP, as RFC 6960 responders are) about `query`, on
/// the edge's upstream client, within [`FETCH_TIMEOUT`] in all (a responder that drips bytes
/// cannot hold it longer).
pub async fn fetch(url: &str, query: &Query) -> Result<Vec<u8>, OcspError> {
    let fail = |what: String| OcspError::Fetch(format!("{url}: {what}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| fail("only http:// responders are fetched".into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let started = std::time::Instant::now();
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(FETCH_TIMEOUT, tokio::net::lookup_host(&with_port))
            .await
            .map_err(|_| fail("cannot resolve in time".into()))?
            .map_err(|e| fail(format!("cannot resolve: {e}")))?
            .collect();
    let ask = Ask {
        method: "POST",
        target: path,
        host: authority,
        fields: &[
            ("content-type", "application/ocsp-request"),
            ("connection", "close"),
        ],
        body: &query.request,
    };
    let mut last = fail("no address".into());
    for addr in addrs {
        let left = FETCH_TIMEOUT.saturating_sub(started.elapsed());
        match client::ask_once(addr, &ask, MAX_RESPONSE, left).await {
            Ok(answer) if answer.status != 200 => {
                return Err(fail(format!("HTTP {}", answer.status)))
            }
            Ok(answer) if answer.body.is_empty() => return Err(fail("an empty body".into())),
            Ok(answer) => return Ok(answer.body.to_vec()),
            Err(e) => last = fail(e.to_string()),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_come_at_half_the_validity_or_sooner() {
        let good = |this, next| Good {
            der: Vec::new(),
            this_update: this,
            next_update: next,
            fetched: 1000,
        };
        let hour = Duration::from_secs(3600);
        // Valid for 4 days from 1000: refresh at 2 days, but no later than the hour.
        assert_eq!(
            refresh_in(&good(1000, Some(1000 + 4 * 86_400)), 1000, hour),
            hour
        );
        // Valid for 60 s: half is 30 s.
        assert_eq!(
            refresh_in(&good(1000, Some(1060)), 1000, hour),
            Duration::from_secs(30)
        );
        // Past half already: not every second, but a minute (or half the time left).
        assert_eq!(
            refresh_in(&good(1000, Some(1060)), 1050, hour),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_in(&good(0, Some(4000)), 3000, hour),
            Duration::from_secs(500)
        );
        assert_eq!(refresh_in(&good(1000, None), 1000, hour), hour);
        // Without a nextUpdate: stapled while refreshes succeed, a minute of grace after.
        assert_eq!(expires(&good(1000, None), hour), 1000 + 3600 + 60);
        assert_eq!(expires(&good(1000, Some(2000)), hour), 2000);
    }
}
