//! The `/health` report: dependency checks, overall status, uptime and memory usage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use http::StatusCode;
use serde::Serialize;

use crate::spec::HealthOverride;
use crate::state::State;

/// How long a dependency's TCP connect may take before it counts as unhealthy.
const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(2);

/// Health of the service or of one dependency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Status {
    fn http_status(self) -> StatusCode {
        match self {
            Self::Healthy | Self::Degraded => StatusCode::OK,
            Self::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    status: Status,
    timestamp: String,
    version: &'a str,
    #[serde(serialize_with = "ordered_map")]
    checks: Vec<(&'a str, Status)>,
    metadata: Metadata,
}

#[derive(Serialize)]
struct Metadata {
    uptime: u64,
    memory_usage: String,
    active_connections: usize,
}

/// Serializes pairs as a JSON object keeping their order (the configured dependency order).
fn ordered_map<S: serde::Serializer>(
    pairs: &[(&str, Status)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// Runs the dependency checks and builds the `/health` response status and JSON body.
pub(crate) async fn report(state: &State) -> (StatusCode, Vec<u8>) {
    let checks: Vec<(&str, Status)> = join_all(
        state
            .spec
            .dependencies
            .iter()
            .map(|(name, addr)| async move { (name.as_str(), check_tcp(addr).await) }),
    )
    .await;

    let computed = if checks.iter().all(|(_, s)| *s == Status::Healthy) {
        Status::Healthy
    } else {
        Status::Degraded
    };
    let status = match state.health_override() {
        HealthOverride::Auto => computed,
        HealthOverride::Healthy => Status::Healthy,
        HealthOverride::Degraded => Status::Degraded,
        HealthOverride::Unhealthy => Status::Unhealthy,
    };

    let report = Report {
        status,
        timestamp: rfc3339_utc(SystemTime::now()),
        version: &state.spec.version,
        checks,
        metadata: Metadata {
            uptime: state.started.elapsed().as_secs(),
            memory_usage: memory_usage().await,
            active_connections: state.active_connections(),
        },
    };
    let body = serde_json::to_vec(&report).unwrap_or_else(|_| b"{}".to_vec());
    (status.http_status(), body)
}

/// A dependency is healthy when a TCP connection to it opens within [`DEPENDENCY_TIMEOUT`].
async fn check_tcp(addr: &str) -> Status {
    match tokio::time::timeout(DEPENDENCY_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Status::Healthy,
        _ => Status::Unhealthy,
    }
}

/// This process's resident memory as a share of the machine's, e.g. `"45%"`.
async fn memory_usage() -> String {
    let rss = tokio::fs::read_to_string("/proc/self/status").await;
    let total = tokio::fs::read_to_string("/proc/meminfo").await;
    match (rss, total) {
        (Ok(rss), Ok(total)) => memory_percent(&rss, &total),
        _ => None,
    }
    .map_or_else(|| "unknown".to_owned(), |p| format!("{p}%"))
}

/// Rounded `VmRSS / MemTotal` percentage from the texts of `/proc/self/status` and `/proc/meminfo`.
fn memory_percent(status: &str, meminfo: &str) -> Option<u64> {
    let rss = proc_kb(status, "VmRSS:")?;
    let total = proc_kb(meminfo, "MemTotal:")?;
    (total > 0).then(|| (rss * 100 + total / 2) / total)
}

/// Reads the number of a `Key:   1234 kB` line of a procfs file.
fn proc_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Formats a time as RFC 3339 in UTC with whole seconds, e.g. `2024-01-15T10:30:00Z`.
pub(crate) fn rfc3339_utc(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Converts days since 1970-01-01 into a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days` algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // day is in [1, 31] and month in [1, 12], so both fit.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> String {
        rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_705_314_600), "2024-01-15T10:30:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_735_689_599), "2024-12-31T23:59:59Z");
        assert_eq!(at(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31T23:59:59Z"
        );
    }

    #[test]
    fn civil_from_days_round_trips_every_day_of_four_centuries() {
        // Walk day by day from 1900-01-01 and compare with a naive calendar.
        let mut days = -25_567; // 1900-01-01
        for year in 1900..2300_i64 {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let lengths = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            for (m, &len) in lengths.iter().enumerate() {
                for d in 1..=len {
                    assert_eq!(civil_from_days(days), (year, m as u32 + 1, d));
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn memory_percent_from_procfs_text() {
        let status = "Name:\tservices\nVmPeak:\t  9000 kB\nVmRSS:\t    4500 kB\n";
        let meminfo = "MemTotal:       10000 kB\nMemFree:         100 kB\n";
        assert_eq!(memory_percent(status, meminfo), Some(45));
        assert_eq!(memory_percent("", meminfo), None);
        assert_eq!(memory_percent(status, "MemTotal: 0 kB"), None);
    }

    #[test]
    fn override_round_trips() {
        for h in [
            HealthOverride::Auto,
            HealthOverride::Healthy,
            HealthOverride::Degraded,
            HealthOverride::Unhealthy,
        ] {
            assert_eq!(HealthOverride::from_u8(h.to_u8()), h);
        }
    }
}
