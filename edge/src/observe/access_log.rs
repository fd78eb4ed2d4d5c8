//! The access log: one JSON object per request.
//!
//! A request formats its line into its worker thread's buffer (its stripe: a lock no other
//! worker's request takes, no wake-up of anything); a writer thread of its own swaps the
//! buffers out every 100 ms (sooner when one fills) and writes them, so a slow disk or pipe
//! never slows a request and no syscall is made per line. If the writer falls behind by more
//! than [`MAX_PENDING`] bytes, lines are dropped and counted rather than blocking. A file
//! target is reopened on SIGUSR1 and when the file is moved or removed (logrotate).

use crate::client::IpText;
use crate::config::AccessLog;
use crate::held::lock;
use crate::stripe::{self, Padded, STRIPES};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Bytes that may wait for the writer before lines are dropped (shared out among the stripes
/// in use).
const MAX_PENDING: usize = 16 << 20;
/// A stripe's buffer this full wakes the writer early.
const WAKE_AT: usize = 128 << 10;

/// One request, as logged (borrowed from the request), its fields in this order in the line.
#[derive(Debug)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Entry<'a> {
    pub timestamp: &'a str,
    pub request_id: &'a str,
    #[cfg_attr(test, serde(serialize_with = "ip_text"))]
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

/// A field's name as it follows the one before it in the line: `,"name":`, made at compile
/// time (the names are the struct's, none needs an escape).
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":").as_bytes()
    };
}

impl Entry<'_> {
    /// Appends the entry as one JSON line, durations in milliseconds with three decimals.
    ///
    /// Written field by field: the names are constants and most values need no escape, where
    /// serde_json escaped every name and went through its serializer for each of the 19
    /// fields (6,200 instructions a line, a fifth of a kept-alive request's; about 1,500
    /// now). The line is the same, byte for byte (a test holds the two side by side).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut ip = IpText::default();
        out.extend_from_slice(b"{\"timestamp\":");
        string(out, self.timestamp);
        text(out, key!("request_id"), self.request_id);
        // IpText writes ASCII digits, dots, colons and hex only: no escape.
        out.extend_from_slice(key!("client_ip"));
        out.push(b'"');
        out.extend_from_slice(ip.format(self.client_ip));
        out.push(b'"');
        text(out, key!("method"), self.method);
        text(out, key!("host"), self.host);
        text(out, key!("path"), self.path);
        text(out, key!("protocol"), self.protocol);
        number(out, key!("status"), Some(self.status));
        number(out, key!("bytes_sent"), Some(self.bytes_sent));
        duration(out, key!("duration_ms"), Some(self.duration_ms));
        optional(out, key!("upstream"), self.upstream);
        optional(out, key!("server"), self.server);
        duration(out, key!("upstream_duration_ms"), self.upstream_duration_ms);
        optional(out, key!("upstream_protocol"), self.upstream_protocol);
        number(out, key!("grpc_status"), self.grpc_status);
        optional(out, key!("route"), self.route);
        optional(out, key!("limit"), self.limit);
        optional(out, key!("tls_version"), self.tls_version);
        optional(out, key!("user_agent"), self.user_agent);
        out.extend_from_slice(b"}\n");
    }
}

/// A field with a string value.
fn text(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.extend_from_slice(key);
    string(out, value);
}

/// A field with a string value or null.
fn optional(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
    out.extend_from_slice(key);
    match value {
        Some(value) => string(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// A field with a whole number or null.
fn number(out: &mut Vec<u8>, key: &[u8], value: Option<impl itoa::Integer>) {
    out.extend_from_slice(key);
    match value {
        Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// A field with a duration in milliseconds, or null.
fn duration(out: &mut Vec<u8>, key: &[u8], ms: Option<f64>) {
    out.extend_from_slice(key);
    match ms {
        Some(ms) => milliseconds(out, ms),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string: `"`, `\\` and control characters escaped (the short forms where JSON has
/// them, `\u00XX` otherwise), everything else as it is (UTF-8 included), as serde_json does.
fn string(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    // The usual value (a path, a host, a user agent) has nothing to escape: found out a word
    // at a time and copied whole.
    if plain(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut rest = bytes;
    loop {
        let plain = plain_len(rest);
        out.extend_from_slice(&rest[..plain]);
        let Some(&b) = rest.get(plain) else {
            break;
        };
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
        };
        out.extend_from_slice(short);
        rest = &rest[plain + 1..];
    }
    out.push(b'"');
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// Whether a word (eight bytes) has a byte a JSON string escapes: `"`, `\\` or one below
/// 0x20.
fn special(word: u64) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of `word` is below `n` (exact for n <= 128).
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH != 0;
    below(word, 0x20)
        || below(word ^ (ONES * u64::from(b'"')), 1)
        || below(word ^ (ONES * u64::from(b'\\')), 1)
}

/// Whether nothing in `bytes` needs an escape: a word at a time, the last word overlapping
/// the one before it (or, under eight bytes, padded with spaces), so no byte is looked at
/// alone.
fn plain(bytes: &[u8]) -> bool {
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    if bytes.len() < 8 {
        let mut w = [b' '; 8];
        w[..bytes.len()].copy_from_slice(bytes);
        return !special(u64::from_le_bytes(w));
    }
    let mut at = 0;
    while at + 8 < bytes.len() {
        if special(word(at)) {
            return false;
        }
        at += 8;
    }
    !special(word(bytes.len() - 8))
}

/// How many bytes at the start of `bytes` need no escape in a JSON string: eight at a time,
/// then one at a time.
fn plain_len(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        if special(word) {
            break;
        }
        at += 8;
    }
    while bytes
        .get(at)
        .is_some_and(|&b| b >= 0x20 && b != b'"' && b != b'\\')
    {
        at += 1;
    }
    at
}

/// A duration in milliseconds with three decimals ("1.800"): microsecond precision, the same
/// width in every line.
fn milliseconds(out: &mut Vec<u8>, ms: f64) {
    let micros = (ms.max(0.0) * 1000.0).round() as u64;
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// An address as serde would see it, for the comparison with serde_json's line.
#[cfg(test)]
fn ip_text<S: serde::Serializer>(ip: &std::net::IpAddr, to: S) -> Result<S::Ok, S::Error> {
    let mut text = IpText::default();
    to.serialize_str(std::str::from_utf8(text.format(*ip)).unwrap_or_default())
}

/// serde_json's compact output with durations as [`milliseconds`] writes them: the line as it
/// was written before `write_json`, kept to hold the two side by side.
#[cfg(test)]
struct Milliseconds;

#[cfg(test)]
impl serde_json::ser::Formatter for Milliseconds {
    fn write_f64<W: ?Sized + Write>(&mut self, out: &mut W, ms: f64) -> std::io::Result<()> {
        let mut text = Vec::new();
        milliseconds(&mut text, ms);
        out.write_all(&text)
    }
}

/// The process's access log.
struct AccessLogger {
    /// A buffer per stripe ([`crate::stripe`]: one per worker thread, up to `STRIPES`): a
    /// line is formatted straight into its thread's, whose lock only the writer otherwise
    /// takes (for a swap). One buffer for all threads made every line move the lock's and
    /// the buffer's cache lines between cores.
    stripes: [Padded<Mutex<Stripe>>; STRIPES],
    /// Bytes a stripe may hold: [`MAX_PENDING`] shared by the stripes in use (changed only
    /// when one comes into use).
    stripe_cap: AtomicUsize,
    /// Stripes that have had a line.
    in_use: AtomicUsize,
    /// Set (and `wake` notified) by a thread whose buffer filled up.
    woken: Mutex<bool>,
    wake: Condvar,
    dropped: AtomicU64,
    /// The writer holds lines it has taken and not finished writing.
    writing: AtomicBool,
}

/// One stripe's lines not yet taken by the writer.
#[derive(Default)]
struct Stripe {
    lines: Vec<u8>,
    /// It has had a line (it counts in `in_use`).
    used: bool,
}

// Every stripe's share of the backlog is room for twice the fill that wakes the writer
// early, however many stripes log: a buffer wakes the writer before it drops a line.
const _: () = assert!(MAX_PENDING / STRIPES >= 2 * WAKE_AT);

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

/// Appends one entry; never blocks on I/O. Lines reach the file in their thread's order; the
/// lines of different threads are interleaved a batch at a time (each line has its
/// timestamp).
pub fn log(entry: &Entry<'_>) {
    let Some(Some(logger)) = LOGGER.get() else {
        return;
    };
    let mut stripe = lock(&logger.stripes[stripe::mine()]);
    if !stripe.used {
        stripe.used = true;
        let in_use = logger.in_use.fetch_add(1, Ordering::Relaxed) + 1;
        logger
            .stripe_cap
            .store(MAX_PENDING / in_use, Ordering::Relaxed);
    }
    if stripe.lines.len() > logger.stripe_cap.load(Ordering::Relaxed) {
        logger.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let before = stripe.lines.len();
    entry.write_json(&mut stripe.lines);
    if before < WAKE_AT && stripe.lines.len() >= WAKE_AT {
        drop(stripe);
        *lock(&logger.woken) = true;
        logger.wake.notify_one();
    }
}

/// Waits (up to a second) until every line logged so far is written: before the process exits.
pub fn flush() {
    let Some(Some(logger)) = LOGGER.get() else {
        return;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        // Buffers first, then the writer: one it has just emptied counts as written only
        // once the writer says so.
        let idle = logger.stripes.iter().all(|s| lock(s).lines.is_empty())
            && !logger.writing.load(Ordering::SeqCst);
        if idle {
            return;
        }
        *lock(&logger.woken) = true;
        logger.wake.notify_one();
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
        stripes: Default::default(),
        stripe_cap: AtomicUsize::new(MAX_PENDING),
        in_use: AtomicUsize::new(0),
        woken: Mutex::new(false),
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

/// Every 100 ms, or when a buffer fills: takes each stripe's lines (a swap with an emptied
/// buffer, so capacity goes round) and writes them.
fn write_loop(logger: &AccessLogger, out: &mut Output, reopen: &AtomicBool) {
    let mut batch = Vec::with_capacity(WAKE_AT * 2);
    loop {
        {
            let woken = lock(&logger.woken);
            let (mut woken, _) = logger
                .wake
                .wait_timeout_while(woken, Duration::from_millis(100), |woken| !*woken)
                .unwrap_or_else(|p| p.into_inner());
            *woken = false;
        }
        if reopen.swap(false, Ordering::Relaxed) || out.replaced() {
            out.reopen();
        }
        logger.writing.store(true, Ordering::SeqCst);
        for stripe in &logger.stripes {
            std::mem::swap(&mut lock(stripe).lines, &mut batch);
            if !batch.is_empty() {
                out.write(&batch);
                batch.clear();
            }
        }
        out.flush();
        logger.writing.store(false, Ordering::SeqCst);
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

    /// The line as serde_json writes the same entry (with the same durations).
    fn serde_line(entry: &Entry<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut json = serde_json::Serializer::with_formatter(&mut out, Milliseconds);
        serde::Serialize::serialize(entry, &mut json).expect("serialize");
        out.push(b'\n');
        out
    }

    #[test]
    fn the_line_is_serde_jsons_byte_for_byte() {
        // Every byte a client could put in a field, alone and among others.
        let mut texts: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        texts.push((0u8..0x80).map(char::from).collect());
        texts.extend(
            [
                "",
                "ü\u{7f}\u{2028}日本",
                "a\"b\\c",
                "\u{1}\u{1f}\u{8}\u{c}",
            ]
            .map(String::from),
        );
        // A byte to escape at every place of the words the scan reads eight at a time.
        for at in 0..24 {
            for special in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
                let mut text: String = "abcdefghijklmnopqrstuvwxyz".into();
                text.insert(at, special);
                texts.push(text);
            }
        }
        for text in &texts {
            let entry = Entry {
                host: text,
                path: text,
                user_agent: Some(text),
                limit: Some(text),
                grpc_status: Some(14),
                upstream_duration_ms: None,
                duration_ms: 0.0004,
                ..escaped()
            };
            let mut out = Vec::new();
            entry.write_json(&mut out);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&serde_line(&entry)),
                "{text:?}"
            );
        }
        for entry in [
            escaped(),
            Entry {
                client_ip: "::ffff:10.0.0.1".parse().expect("ip"),
                ..escaped()
            },
        ] {
            let mut out = Vec::new();
            entry.write_json(&mut out);
            assert_eq!(out, serde_line(&entry));
        }
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
            milliseconds(&mut out, ms);
            assert_eq!(String::from_utf8(out).expect("utf-8"), text);
        }
    }
}
