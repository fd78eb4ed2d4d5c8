//! The clocks: the process's monotonic milliseconds (passive failure accounting, rate
//! limits) and RFC 3339 UTC time for JSON and log lines. A leaf: it imports nothing of the
//! edge.

use std::pin::Pin;
use std::sync::LazyLock;
use std::time::{Instant, SystemTime};

/// A timer kept for reuse by the one that waits on it (a connection's reads, its writes),
/// made at its first wait.
pub type Reused = Option<Pin<Box<tokio::time::Sleep>>>;

/// Sets `timer` to end at `end`, making it the first time. A timer still registered with the
/// runtime and moved later only has its end stored (the runtime's driver finds the new end
/// when the old one comes); a new timer per wait is registered each time, and wakes the
/// driver through its eventfd when it is the driver's earliest.
pub fn set_timer(timer: &mut Reused, end: tokio::time::Instant) {
    match timer {
        Some(timer) => timer.as_mut().reset(end),
        None => *timer = Some(Box::pin(tokio::time::sleep_until(end))),
    }
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the process started.
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// Milliseconds from the process's start to `at`: the request path reads the clock once per
/// attempt and derives what else it needs from that reading (a read is 24 ns here, the
/// vDSO's `rdtsc` under KVM, and a request made eleven).
pub fn ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH).as_millis() as u64
}

/// Now as RFC 3339 UTC with seconds ("2024-01-15T10:30:00Z").
pub fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

thread_local! {
    /// The last second formatted on this thread, as (seconds, "YYYY-MM-DDTHH:MM:SS").
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Now as RFC 3339 UTC with milliseconds ("2024-01-15T10:30:00.123Z"), for log lines. The
/// date and time of the current second are formatted once per second and thread.
pub fn rfc3339_millis_now() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != now.as_secs() {
            *second = now.as_secs();
            *text = rfc3339(now.as_secs());
            text.pop(); // the "Z"
        }
        let mut out = String::with_capacity(24);
        out.push_str(text);
        let millis = now.subsec_millis();
        out.push('.');
        out.push(char::from(b'0' + (millis / 100) as u8));
        out.push(char::from(b'0' + (millis / 10 % 10) as u8));
        out.push(char::from(b'0' + (millis % 10) as u8));
        out.push('Z');
        out
    })
}

/// Seconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(secs: u64) -> String {
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_timestamps_have_milliseconds_and_follow_the_clock() {
        let a = super::rfc3339_millis_now();
        assert_eq!(a.len(), 24, "{a}");
        assert!(a.ends_with('Z') && a.as_bytes()[19] == b'.', "{a}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = super::rfc3339_millis_now();
        assert!(b > a, "{a} then {b}");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_705_314_600), "2024-01-15T10:30:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
