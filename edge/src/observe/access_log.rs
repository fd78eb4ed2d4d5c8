//! The access log: one JSON object per request.
//!
//! A request formats its line into a shared buffer (a short lock, no wake-up of anything); a
//! writer thread of its own swaps the buffer out every 100 ms (sooner when it fills) and
//! writes it, so a slow disk or pipe never slows a request and no syscall is made per line.
//! If the writer falls behind by more than [`MAX_PENDING`] bytes, lines are dropped and
//! counted rather than blocking. A file target is reopened on SIGUSR1 and when the file is
//! moved or removed (logrotate).

use crate::client::IpText;
use crate::config::AccessLog;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Bytes that may wait for the writer before lines are dropped.
const MAX_PENDING: usize = 16 << 20;
/// A buffer this full wakes the writer early.
const WAKE_AT: usize = 256 << 10;

/// One request, as logged (borrowed from the request). The fields serialize in this order.
#[derive(Debug, serde::Serialize)]
pub struct Entry<'a> {
    pub timestamp: &'a str,
    pub request_id: &'a str,
    #[serde(serialize_with = "ip_text")]
    pub client_ip: std::net::IpAddr,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// What the client spoke: "HTTP/1.0", "HTTP/1.1", "HTTP/2" or "HTTP/3".
    pub protocol: &'a str,
    pub status: u16,
    pub bytes_sent: usize,
    pub duration_ms: f64,
    pub upstream: Option<&'a str>,
    pub server: Option<&'a str>,
    pub upstream_duration_ms: Option<f64>,
    /// What the edge spoke to the server: "HTTP/1.1" or "HTTP/2".
    pub upstream_protocol: Option<&'a str>,
    /// A gRPC call's status, relayed or the edge's own.
    pub grpc_status: Option<u8>,
    pub route: Option<&'a str>,
    /// The rate-limit outcome: "passed", "delayed", "rejected:ZONE", or none without limits.
    pub limit: Option<&'a str>,
    pub tls_version: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

impl Entry<'_> {
    /// Appends the entry as one JSON line, durations with three decimals.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut json = serde_json::Serializer::with_formatter(&mut *out, Milliseconds);
        // Writing into a Vec cannot fail, and every field serializes.
        let _ = serde::Serialize::serialize(self, &mut json);
        out.push(b'\n');
    }
}

/// An address without the formatting machinery, which serde's own `IpAddr` goes through.
fn ip_text<S: serde::Serializer>(ip: &std::net::IpAddr, to: S) -> Result<S::Ok, S::Error> {
    let mut text = IpText::default();
    // IpText writes ASCII digits, dots, colons and hex only.
    to.serialize_str(std::str::from_utf8(text.format(*ip)).unwrap_or_default())
}

/// serde_json's compact output, but floats (the durations, in milliseconds) with three
/// decimals ("1.800"): microsecond precision, the same width in every line.
struct Milliseconds;

impl serde_json::ser::Formatter for Milliseconds {
    fn write_f64<W: ?Sized + Write>(&mut self, out: &mut W, ms: f64) -> std::io::Result<()> {
        let micros = (ms.max(0.0) * 1000.0).round() as u64;
        out.write_all(itoa::Buffer::new().format(micros / 1000).as_bytes())?;
        let frac = micros % 1000;
        out.write_all(&[
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ])
    }
}

/// The process's access log.
struct AccessLogger {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: AtomicU64,
    /// The writer holds a batch it has not finished writing (set under the `pending` lock).
    writing: AtomicBool,
}

static LOGGER: OnceLock<Option<Arc<AccessLogger>>> = OnceLock::new();

/// Starts the writer for `target` (once per process); `Off` logs nothing.
pub fn start(target: &AccessLog) -> std::io::Result<()> {
    let logger = match target {
        AccessLog::Off => None,
        AccessLog::Stdout => Some(spawn(None)?),
        AccessLog::File(path) => Some(spawn(Some(path.clone()))?),
    };
    let _ = LOGGER.set(logger);
    Ok(())
}

/// Whether an access log is being written (so requests can skip building entries).
pub fn enabled() -> bool {
    matches!(LOGGER.get(), Some(Some(_)))
}

thread_local! {
    /// The line being formatted, outside the shared buffer's lock.
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
}

/// Appends one entry; never blocks on I/O. The line is formatted on the request's thread
/// and only copied under the lock, so worker threads hold it for a copy.
pub fn log(entry: &Entry<'_>) {
    let Some(Some(logger)) = LOGGER.get() else {
        return;
    };
    LINE.with_borrow_mut(|line| {
        line.clear();
        entry.write_json(line);
        let mut pending = logger.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() > MAX_PENDING {
            logger.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.extend_from_slice(line);
        if pending.len() >= WAKE_AT {
            logger.wake.notify_one();
        }
    });
}

/// Waits (up to a second) until every line logged so far is written: before the process exits.
pub fn flush() {
    let Some(Some(logger)) = LOGGER.get() else {
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        let idle = logger
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
            && !logger.writing.load(Ordering::Acquire);
        if idle {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Lines dropped because the writer fell behind.
pub fn dropped() -> u64 {
    match LOGGER.get() {
        Some(Some(l)) => l.dropped.load(Ordering::Relaxed),
        _ => 0,
    }
}

fn spawn(path: Option<PathBuf>) -> std::io::Result<Arc<AccessLogger>> {
    let logger = Arc::new(AccessLogger {
        pending: Mutex::new(Vec::with_capacity(WAKE_AT * 2)),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
        writing: AtomicBool::new(false),
    });
    let reopen = Arc::new(AtomicBool::new(false));
    if path.is_some() {
        signal_reopen(reopen.clone())?;
    }
    let mut out = Output::open(path)?;
    let writer = logger.clone();
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_loop(&writer, &mut out, &reopen))?;
    Ok(logger)
}

fn write_loop(logger: &AccessLogger, out: &mut Output, reopen: &AtomicBool) {
    let mut batch = Vec::with_capacity(WAKE_AT * 2);
    loop {
        {
            let pending = logger.pending.lock().unwrap_or_else(|p| p.into_inner());
            let (mut pending, _) = logger
                .wake
                .wait_timeout_while(pending, Duration::from_millis(100), |p| p.len() < WAKE_AT)
                .unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *pending, &mut batch);
            logger.writing.store(!batch.is_empty(), Ordering::Release);
        }
        if reopen.swap(false, Ordering::Relaxed) || out.replaced() {
            out.reopen();
        }
        if !batch.is_empty() {
            out.write(&batch);
            out.flush();
            batch.clear();
            logger.writing.store(false, Ordering::Release);
        }
    }
}

/// Where lines go: stdout or a file that can be reopened.
struct Output {
    path: Option<PathBuf>,
    writer: Box<dyn Write + Send>,
    inode: Option<u64>,
}

impl Output {
    fn open(path: Option<PathBuf>) -> std::io::Result<Output> {
        let (writer, inode): (Box<dyn Write + Send>, _) = match &path {
            None => (Box::new(std::io::stdout()), None),
            Some(p) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?;
                (Box::new(file), inode_of(p))
            }
        };
        Ok(Output {
            path,
            writer,
            inode,
        })
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Err(e) = self.writer.write_all(bytes) {
            tracing::error!(error = %e, "cannot write the access log");
        }
    }

    fn flush(&mut self) {
        let _ = self.writer.flush();
    }

    /// Whether the file at the path is no longer the one being written (rotated away).
    fn replaced(&self) -> bool {
        match &self.path {
            Some(p) => inode_of(p) != self.inode,
            None => false,
        }
    }

    fn reopen(&mut self) {
        self.flush();
        match Output::open(self.path.clone()) {
            Ok(fresh) => *self = fresh,
            Err(e) => tracing::error!(error = %e, "cannot reopen the access log"),
        }
    }
}

fn inode_of(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// SIGUSR1 asks the writer to reopen its file.
fn signal_reopen(flag: Arc<AtomicBool>) -> std::io::Result<()> {
    crate::signals::on_signal(
        tokio::signal::unix::SignalKind::user_defined1(),
        move || flag.store(true, Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry whose client-sent fields need JSON escapes.
    fn escaped() -> Entry<'static> {
        Entry {
            timestamp: "2026-01-01T00:00:00.000Z",
            request_id: "abc",
            client_ip: "203.0.113.1".parse().expect("ip"),
            method: "GET",
            host: "a\"b",
            path: "/x\\y\u{1}",
            protocol: "HTTP/1.1",
            status: 200,
            bytes_sent: 12,
            duration_ms: 1.5,
            upstream: Some("app"),
            server: None,
            upstream_duration_ms: Some(0.25),
            upstream_protocol: Some("HTTP/1.1"),
            grpc_status: None,
            route: Some("/"),
            limit: None,
            tls_version: None,
            user_agent: Some("ü\n"),
        }
    }

    #[test]
    fn lines_are_valid_json_whatever_the_client_sent() {
        let mut out = Vec::new();
        escaped().write_json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v["host"], "a\"b");
        assert_eq!(v["path"], "/x\\y\u{1}");
        assert_eq!(v["user_agent"], "ü\n");
        assert_eq!(v["server"], serde_json::Value::Null);
        assert_eq!(v["upstream_duration_ms"], 0.25);
        assert_eq!(v["status"], 200);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("\"duration_ms\":1.500,"), "{text}");
        assert!(text.contains("\"request_id\":\"abc\","), "{text}");
    }

    #[test]
    fn a_line_has_every_field_in_its_order() {
        // Every field set but the ones left null, an IPv6 client, no decimals to round.
        let entry = Entry {
            client_ip: "2001:db8::7".parse().expect("ip"),
            method: "POST",
            host: "a.example",
            path: "/api/",
            protocol: "HTTP/3",
            status: 502,
            bytes_sent: 18_446_744,
            duration_ms: 12.0,
            server: Some("app-1:8000"),
            upstream_duration_ms: None,
            route: Some("/api/"),
            limit: Some("passed"),
            tls_version: Some("TLSv1.3"),
            user_agent: None,
            ..escaped()
        };
        let mut out = Vec::new();
        entry.write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "{\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"request_id\":\"abc\",\
             \"client_ip\":\"2001:db8::7\",\"method\":\"POST\",\"host\":\"a.example\",\
             \"path\":\"/api/\",\"protocol\":\"HTTP/3\",\"status\":502,\"bytes_sent\":18446744,\"duration_ms\":12.000,\
             \"upstream\":\"app\",\"server\":\"app-1:8000\",\"upstream_duration_ms\":null,\
             \"upstream_protocol\":\"HTTP/1.1\",\"grpc_status\":null,\
             \"route\":\"/api/\",\"limit\":\"passed\",\"tls_version\":\"TLSv1.3\",\
             \"user_agent\":null}\n"
        );
    }

    #[test]
    fn durations_have_three_decimals() {
        for (ms, text) in [
            (0.0, "0.000"),
            (1.8, "1.800"),
            (0.0004, "0.000"),
            (12.3456, "12.346"),
            (1500.0, "1500.000"),
        ] {
            let mut out = Vec::new();
            serde_json::ser::Formatter::write_f64(&mut Milliseconds, &mut out, ms).expect("vec");
            assert_eq!(String::from_utf8(out).expect("utf-8"), text);
        }
    }
}
