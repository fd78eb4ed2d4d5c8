//! The access log: one JSON object per request, written by a thread of its own so that a slow
//! disk or pipe never slows a request. Lines wait in a bounded queue; when it is full a line
//! is dropped and counted rather than blocking. A file target is reopened on SIGUSR1 (after
//! logrotate moves it) and when the file is replaced or removed.

use crate::config::AccessLog;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Lines that may wait for the writer.
const QUEUE: usize = 65_536;

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub timestamp: String,
    pub request_id: String,
    pub client_ip: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub bytes_sent: usize,
    pub duration_ms: f64,
    pub upstream: Option<String>,
    pub server: Option<String>,
    pub upstream_duration_ms: Option<f64>,
    pub route: Option<String>,
    /// The rate-limit outcome: "passed", "delayed", "rejected:ZONE", or none without limits.
    pub limit: Option<String>,
    pub tls_version: Option<String>,
    pub user_agent: Option<String>,
}

/// The process's access log.
pub struct AccessLogger {
    sender: SyncSender<Entry>,
    pub dropped: AtomicU64,
}

static LOGGER: OnceLock<Option<AccessLogger>> = OnceLock::new();

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

/// Queues one entry; never blocks.
pub fn log(entry: Entry) {
    if let Some(Some(logger)) = LOGGER.get() {
        if let Err(TrySendError::Full(_)) = logger.sender.try_send(entry) {
            logger.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether an access log is being written (so requests can skip building entries).
pub fn enabled() -> bool {
    matches!(LOGGER.get(), Some(Some(_)))
}

/// Lines dropped because the writer fell behind.
pub fn dropped() -> u64 {
    match LOGGER.get() {
        Some(Some(l)) => l.dropped.load(Ordering::Relaxed),
        _ => 0,
    }
}

fn spawn(path: Option<PathBuf>) -> std::io::Result<AccessLogger> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(QUEUE);
    let reopen = Arc::new(AtomicBool::new(false));
    if path.is_some() {
        signal_reopen(reopen.clone())?;
    }
    let mut out = Output::open(path)?;
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_loop(receiver, &mut out, &reopen))?;
    Ok(AccessLogger {
        sender,
        dropped: AtomicU64::new(0),
    })
}

fn write_loop(receiver: Receiver<Entry>, out: &mut Output, reopen: &AtomicBool) {
    let mut line = Vec::with_capacity(512);
    let mut write = |out: &mut Output, entry: &Entry| {
        line.clear();
        if serde_json::to_writer(&mut line, entry).is_ok() {
            line.push(b'\n');
            out.write(&line);
        }
    };
    loop {
        let first = match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => Some(e),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if reopen.swap(false, Ordering::Relaxed) || out.replaced() {
            out.reopen();
        }
        if let Some(entry) = first {
            write(out, &entry);
            // Write the whole burst, then flush once: lines are never held while idle.
            while let Ok(entry) = receiver.try_recv() {
                write(out, &entry);
            }
        }
        out.flush();
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
            None => (Box::new(std::io::BufWriter::new(std::io::stdout())), None),
            Some(p) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?;
                let inode = inode_of(p);
                (Box::new(std::io::BufWriter::new(file)), inode)
            }
        };
        Ok(Output {
            path,
            writer,
            inode,
        })
    }

    fn write(&mut self, line: &[u8]) {
        let _ = self.writer.write_all(line);
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sigusr1".into())
        .spawn(move || {
            runtime.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                if let Ok(mut usr1) = signal(SignalKind::user_defined1()) {
                    while usr1.recv().await.is_some() {
                        flag.store(true, Ordering::Relaxed);
                    }
                }
            })
        })?;
    Ok(())
}
