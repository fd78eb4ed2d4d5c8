//! Active health probing: a background service that sends `GET path` to every server of
//! every upstream with `health`, each server on its own schedule and kept-alive connection,
//! and takes servers out after `fall` failures and back after `rise` successes.
//!
//! The answer is the architecture document's health JSON: `healthy` and `degraded` are up
//! (degraded is reported as such), `unhealthy`, a non-2xx status, a timeout or a body that is
//! not that JSON are down. A server younger than `start_period` is not taken out. The probers
//! follow reloads: servers that stay keep their prober (and its counts), new ones get one,
//! removed ones lose theirs.

use crate::config::HealthSettings;
use crate::snapshot::Snapshot;
use crate::upstream::ServerState;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How often the prober set is compared with the live snapshot.
const SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// The probing background service.
pub struct HealthService {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
}

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Healthy,
    Degraded,
    Down,
}

/// Identifies a prober: the server and the settings it probes with.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ProbeKey {
    upstream: String,
    server: String,
    addr: SocketAddr,
    settings: String,
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut probers: HashMap<ProbeKey, JoinHandle<()>> = HashMap::new();
        loop {
            self.sync(&mut probers);
            tokio::select! {
                _ = tokio::time::sleep(SYNC_INTERVAL) => {}
                _ = shutdown.changed() => break,
            }
        }
        for (_, task) in probers {
            task.abort();
        }
    }
}

impl HealthService {
    /// Starts probers for servers that need one and stops those whose server is gone.
    fn sync(&self, probers: &mut HashMap<ProbeKey, JoinHandle<()>>) {
        let snapshot = self.snapshot.load();
        let mut wanted = HashMap::new();
        for upstream in snapshot.upstreams.values() {
            for server in &upstream.servers {
                let Some(health) = &upstream.settings.health else {
                    // No probing: active health never keeps the server out.
                    server.state.set_probe_up(true);
                    continue;
                };
                let Some(addr) = server.addr else { continue };
                let key = ProbeKey {
                    upstream: upstream.name.clone(),
                    server: server.addr_text.clone(),
                    addr,
                    settings: format!("{health:?}"),
                };
                wanted.insert(key, (health.clone(), server.state.clone()));
            }
        }
        probers.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (settings, state)) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = probers.entry(key) {
                let task = tokio::spawn(probe_loop(slot.key().clone(), settings, state));
                slot.insert(task);
            }
        }
    }
}

async fn probe_loop(key: ProbeKey, settings: HealthSettings, state: Arc<ServerState>) {
    let mut connection: Option<TcpStream> = None;
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let probe = match tokio::time::timeout(
            settings.timeout,
            probe_once(&mut connection, key.addr, &key.server, &settings.path),
        )
        .await
        {
            Ok(p) => p,
            Err(_) => {
                connection = None;
                Probe::Down
            }
        };
        match probe {
            Probe::Healthy | Probe::Degraded => {
                failures = 0;
                successes += 1;
                state.set_degraded(probe == Probe::Degraded);
                if !state.probe_up() && successes >= settings.rise {
                    state.set_probe_up(true);
                    tracing::info!(upstream = %key.upstream, server = %key.server, "health: server is back");
                }
            }
            Probe::Down => {
                successes = 0;
                failures += 1;
                let starting = state.created.elapsed() < settings.start_period;
                if state.probe_up() && failures >= settings.fall && !starting {
                    state.set_probe_up(false);
                    tracing::warn!(
                        upstream = %key.upstream,
                        server = %key.server,
                        failures,
                        "health: server taken out"
                    );
                }
            }
        }
        tokio::time::sleep(settings.interval).await;
    }
}

/// One `GET path` on the kept-alive connection (opened if there is none).
async fn probe_once(
    connection: &mut Option<TcpStream>,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Probe {
    if connection.is_none() {
        match TcpStream::connect(addr).await {
            Ok(c) => *connection = Some(c),
            Err(_) => return Probe::Down,
        }
    }
    let Some(stream) = connection.as_mut() else {
        return Probe::Down;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: edge-health-check\r\nAccept: application/json\r\n\r\n"
    );
    let (probe, keep) = match exchange(stream, request.as_bytes()).await {
        Some((status, body, keep)) => (judge(status, &body), keep),
        None => (Probe::Down, false),
    };
    if !keep {
        *connection = None;
    }
    probe
}

/// Sends a request and reads one response: (status, body, connection reusable).
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Option<(u16, Vec<u8>, bool)> {
    stream.write_all(request).await.ok()?;
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        if stream.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = response.parse(&buf).ok()? else {
            if buf.len() > 64 * 1024 {
                return None;
            }
            continue;
        };
        let status = response.code?;
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
        };
        let keep = !header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let length: Option<usize> = header("content-length").and_then(|v| v.trim().parse().ok());
        let mut body = buf.split_off(head_len).to_vec();
        match length {
            Some(len) => {
                while body.len() < len {
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
                return Some((status, body, keep));
            }
            None => {
                // No length: read to the end and do not reuse the connection.
                stream.read_to_end(&mut body).await.ok()?;
                return Some((status, body, false));
            }
        }
    }
}

/// The verdict on one answer, by the architecture document's health format.
pub fn judge(status: u16, body: &[u8]) -> Probe {
    if !(200..300).contains(&status) {
        return Probe::Down;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Probe::Down;
    };
    match json.get("status").and_then(|s| s.as_str()) {
        Some("healthy") => Probe::Healthy,
        Some("degraded") => Probe::Degraded,
        _ => Probe::Down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_judged_by_the_health_format() {
        assert_eq!(judge(200, br#"{"status":"healthy"}"#), Probe::Healthy);
        assert_eq!(judge(200, br#"{"status":"degraded"}"#), Probe::Degraded);
        assert_eq!(judge(200, br#"{"status":"unhealthy"}"#), Probe::Down);
        assert_eq!(judge(503, br#"{"status":"healthy"}"#), Probe::Down);
        assert_eq!(judge(200, b"OK"), Probe::Down);
        assert_eq!(judge(200, br#"{"state":"healthy"}"#), Probe::Down);
    }
}
