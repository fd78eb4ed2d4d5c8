//! Active health probes of one server: a `GET path` on one kept-alive HTTP/1.1 connection
//! every `interval`, judged by the content engine's health format (docs/context.md), moving the server's
//! [`super::ServerState`] out after `fall` failures and back after `rise` successes. The
//! health service ([`crate::health`]) runs one [`probe_loop`] per probed server and follows
//! reloads.
//!
//! A probe is an ordinary HTTP/1.1 request, made with the edge's one upstream client
//! ([`super::client`]): `Host` is the server's configured host (and port unless 80), never
//! its display label, so strict servers accept it; a chunked or length-delimited answer is
//! read to its end (at most [`MAX_BODY`]), and the connection is kept for the next probe
//! unless the server closes it. `timeout` bounds the whole exchange: connect, write and read.
//! A kept-alive connection the server closed while idle is no verdict: the probe is made once
//! more on a new connection.
//!
//! The answer: `healthy` and `degraded` are up (degraded is reported as such), `unhealthy`, a
//! non-2xx status, a timeout or a body that is not that JSON are down.
//!
//! A probe speaks the upstream's protocol and TLS, as its requests do (one kept-alive HTTP/2
//! connection for an h2 server). With `grpc_service`, it is gRPC's standard health check
//! instead (`grpc.health.v1.Health/Check` for that service, "" for the server as a whole):
//! up when the answer is `grpc-status: 0` with status SERVING.

use super::client::{self, Ask};
use super::h1::Connection;
use super::{h2, ServerState, Upstream};
use crate::config::HealthSettings;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The most of a probe's answer body that is read; a longer one is not the health JSON.
pub const MAX_BODY: usize = 64 * 1024;

/// The User-Agent of probes, so that servers can tell them from clients.
const USER_AGENT: &str = "edge-health-check";

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Healthy,
    Degraded,
    Down,
}

/// Probes one server every `interval` for as long as it runs (the health service aborts it
/// when the server goes), and moves its state: out after `fall` failures (not while it is
/// younger than `start_period`), back after `rise` successes. `upstream` and `server` name it
/// in the logs.
pub async fn probe_loop(
    upstream: Arc<Upstream>,
    server: String,
    addr: SocketAddr,
    host: String,
    settings: HealthSettings,
    state: Arc<ServerState>,
) {
    let mut prober = Prober::new(addr, &host, &settings.path);
    prober.grpc_service = settings.grpc_service.clone();
    prober.upstream = Some(upstream.clone());
    let upstream = &upstream.name;
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let probe = prober.probe(settings.timeout).await;
        state.set_checked();
        match probe {
            Probe::Healthy | Probe::Degraded => {
                failures = 0;
                successes += 1;
                state.set_degraded(probe == Probe::Degraded);
                if !state.probe_up() && successes >= settings.rise {
                    state.set_probe_up(true);
                    tracing::info!(upstream = %upstream, server = %server, "health: server is back");
                }
            }
            Probe::Down => {
                successes = 0;
                failures += 1;
                let starting = state.created.elapsed() < settings.start_period;
                if state.probe_up() && failures >= settings.fall && !starting {
                    state.set_probe_up(false);
                    tracing::warn!(
                        upstream = %upstream,
                        server = %server,
                        failures,
                        "health: server taken out"
                    );
                }
            }
        }
        tokio::time::sleep(settings.interval).await;
    }
}

/// Probes one server over one kept-alive connection.
pub struct Prober {
    addr: SocketAddr,
    host: String,
    path: String,
    /// The upstream whose protocol and TLS the probe speaks (none: cleartext HTTP/1.1).
    upstream: Option<Arc<Upstream>>,
    /// gRPC's health check of this service instead of `GET path`.
    grpc_service: Option<String>,
    connection: Option<Link>,
}

/// A probe's kept-alive connection.
enum Link {
    H1(Connection),
    H2(h2::Connection),
}

impl Prober {
    /// A prober of `addr` that asks for `path` with `host` as its Host.
    pub fn new(addr: SocketAddr, host: &str, path: &str) -> Prober {
        Prober {
            addr,
            host: host.to_string(),
            path: path.to_string(),
            upstream: None,
            grpc_service: None,
            connection: None,
        }
    }

    /// A new connection, in the upstream's protocol and TLS.
    async fn open(&self, timeout: Duration) -> pingora::Result<Link> {
        let Some(upstream) = &self.upstream else {
            return Ok(Link::H1(Connection::new(
                client::connect(self.addr, timeout).await?,
            )));
        };
        Ok(
            match client::open(upstream, &self.host, self.addr, false, timeout).await? {
                client::Opened::H1(stream) => Link::H1(Connection::new(stream)),
                client::Opened::H2(connection) => Link::H2(connection),
            },
        )
    }

    /// One probe, bounded by `timeout` for connect, write and read together. A kept-alive
    /// connection the server closed while idle is no verdict: the probe is made again on a
    /// new connection, within what is left of `timeout`.
    pub async fn probe(&mut self, timeout: Duration) -> Probe {
        let started = std::time::Instant::now();
        let reused = self.connection.is_some();
        let verdict = match self.exchange(timeout).await {
            Err(e) if reused && matches!(e.retry, pingora::RetryType::ReusedOnly) => {
                self.exchange(timeout.saturating_sub(started.elapsed()))
                    .await
            }
            other => other,
        };
        verdict.unwrap_or(Probe::Down)
    }

    async fn exchange(&mut self, timeout: Duration) -> pingora::Result<Probe> {
        let started = std::time::Instant::now();
        let link = match self.connection.take() {
            Some(link) => link,
            None => self.open(timeout).await?,
        };
        let grpc_body;
        let ask = match &self.grpc_service {
            Some(service) => {
                grpc_body = grpc_health_request(service);
                Ask {
                    method: "POST",
                    target: GRPC_HEALTH_CHECK,
                    host: &self.host,
                    fields: &[
                        ("user-agent", USER_AGENT),
                        ("content-type", "application/grpc"),
                        ("te", "trailers"),
                    ],
                    body: &grpc_body,
                }
            }
            None => Ask {
                method: "GET",
                target: &self.path,
                host: &self.host,
                fields: &[("user-agent", USER_AGENT), ("accept", "application/json")],
                body: b"",
            },
        };
        let left = timeout.saturating_sub(started.elapsed());
        let answer = match link {
            Link::H1(connection) => {
                let (answer, kept) = client::ask(connection, &ask, MAX_BODY, left).await?;
                self.connection = kept.map(Link::H1);
                answer
            }
            Link::H2(connection) => {
                let tls = self.upstream.as_ref().is_some_and(|u| u.tls.is_some());
                let scheme = if tls { "https" } else { "http" };
                let answer = client::ask_h2(&connection, scheme, &ask, MAX_BODY, left).await?;
                self.connection = Some(Link::H2(connection));
                answer
            }
        };
        Ok(match self.grpc_service {
            Some(_) => judge_grpc(answer.status, answer.grpc_status, &answer.body),
            None => judge(answer.status, &answer.body),
        })
    }
}

/// The method of gRPC's standard health check.
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// A `HealthCheckRequest { service }` in its gRPC frame: no compression, the length, then
/// the message (field 1, a string; nothing for "").
fn grpc_health_request(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a);
        let mut len = service.len();
        while len >= 0x80 {
            message.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        message.push(len as u8);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// The verdict on a gRPC health answer: up when the call succeeded (`grpc-status: 0`) and
/// its `HealthCheckResponse` says SERVING (field 1 = 1).
pub fn judge_grpc(status: u16, grpc_status: Option<u8>, body: &[u8]) -> Probe {
    if status != 200 || grpc_status != Some(0) {
        return Probe::Down;
    }
    // One uncompressed frame of two bytes: field 1, varint, SERVING.
    match body {
        [0, 0, 0, 0, 2, 0x08, 0x01] => Probe::Healthy,
        _ => Probe::Down,
    }
}

/// The verdict on one answer, by the content engine's health format (docs/context.md).
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
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What a scripted server saw: the connections it accepted and the request heads.
    #[derive(Default)]
    struct Seen {
        connections: usize,
        requests: Vec<String>,
    }

    /// A server that answers the n-th request with `answers[n]` (the last one repeats), and
    /// closes the connection after each answer when `close` is set, without saying so.
    async fn scripted(answers: Vec<&'static [u8]>, close: bool) -> (SocketAddr, Arc<Mutex<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                log.lock().expect("seen").connections += 1;
                let (log, answers) = (log.clone(), answers.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while stream.read(&mut byte).await.is_ok_and(|n| n == 1) {
                        head.push(byte[0]);
                        if !head.ends_with(b"\r\n\r\n") {
                            continue;
                        }
                        let n = {
                            let mut seen = log.lock().expect("seen");
                            seen.requests
                                .push(String::from_utf8_lossy(&head).into_owned());
                            seen.requests.len() - 1
                        };
                        head.clear();
                        let answer = answers[n.min(answers.len() - 1)];
                        if stream.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    const CHUNKED_HEALTHY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
        Transfer-Encoding: chunked\r\n\r\n9\r\n{\"status\"\r\nb\r\n:\"healthy\"}\r\n0\r\n\r\n";
    const CHUNKED_UNHEALTHY: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        16\r\n{\"status\":\"unhealthy\"}\r\n0\r\n\r\n";
    const LENGTH_HEALTHY: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"status\":\"healthy\"}";

    #[tokio::test]
    async fn chunked_answers_are_read_to_their_end_on_one_kept_alive_connection() {
        let (addr, seen) = scripted(vec![CHUNKED_HEALTHY], false).await;
        let mut prober = Prober::new(addr, "content-manager:8000", "/health");
        for _ in 0..3 {
            let started = std::time::Instant::now();
            assert_eq!(prober.probe(Duration::from_secs(5)).await, Probe::Healthy);
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "no wait for a close"
            );
        }
        let seen = seen.lock().expect("seen");
        assert_eq!(seen.connections, 1, "the connection is kept alive");
        for request in &seen.requests {
            assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
            assert!(
                request
                    .to_ascii_lowercase()
                    .contains("\r\nhost: content-manager:8000\r\n"),
                "{request}"
            );
        }
    }

    #[tokio::test]
    async fn a_chunked_unhealthy_answer_is_down() {
        let (addr, _) = scripted(vec![CHUNKED_UNHEALTHY], false).await;
        let mut prober = Prober::new(addr, "a", "/health");
        assert_eq!(prober.probe(Duration::from_secs(5)).await, Probe::Down);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_no_verdict() {
        let (addr, seen) = scripted(vec![LENGTH_HEALTHY], true).await;
        let mut prober = Prober::new(addr, "a", "/health");
        for _ in 0..3 {
            assert_eq!(prober.probe(Duration::from_secs(5)).await, Probe::Healthy);
        }
        assert_eq!(seen.lock().expect("seen").connections, 3);
    }

    #[tokio::test]
    async fn half_an_answer_and_silence_is_down_within_the_timeout() {
        let (addr, _) = scripted(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"sta"],
            false,
        )
        .await;
        let mut prober = Prober::new(addr, "a", "/health");
        let started = std::time::Instant::now();
        assert_eq!(prober.probe(Duration::from_millis(300)).await, Probe::Down);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_body_past_the_bound_is_down() {
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        )
        .into_bytes();
        answer.extend(std::iter::repeat_n(b' ', MAX_BODY + 1));
        let answer: &'static [u8] = Vec::leak(answer);
        let (addr, _) = scripted(vec![answer], false).await;
        let mut prober = Prober::new(addr, "a", "/health");
        assert_eq!(prober.probe(Duration::from_secs(5)).await, Probe::Down);
    }

    #[tokio::test]
    async fn a_refused_connection_is_down() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let mut prober = Prober::new(addr, "a", "/health");
        assert_eq!(prober.probe(Duration::from_secs(5)).await, Probe::Down);
    }

    #[test]
    fn answers_are_judged_by_the_health_format() {
        assert_eq!(judge(200, br#"{"status":"healthy"}"#), Probe::Healthy);
        assert_eq!(judge(200, br#"{"status":"degraded"}"#), Probe::Degraded);
        assert_eq!(judge(200, br#"{"status":"unhealthy"}"#), Probe::Down);
        assert_eq!(judge(503, br#"{"status":"healthy"}"#), Probe::Down);
        assert_eq!(judge(200, b"OK"), Probe::Down);
        assert_eq!(judge(200, br#"{"state":"healthy"}"#), Probe::Down);
    }

    #[test]
    fn grpc_health_answers_are_judged_by_status_and_serving() {
        let serving = [0, 0, 0, 0, 2, 0x08, 0x01];
        let not_serving = [0, 0, 0, 0, 2, 0x08, 0x02];
        assert_eq!(judge_grpc(200, Some(0), &serving), Probe::Healthy);
        assert_eq!(judge_grpc(200, Some(0), &not_serving), Probe::Down);
        assert_eq!(judge_grpc(200, Some(5), &[]), Probe::Down, "NOT_FOUND");
        assert_eq!(judge_grpc(200, None, &serving), Probe::Down, "no status");
        assert_eq!(judge_grpc(503, Some(0), &serving), Probe::Down);
    }

    #[test]
    fn grpc_health_requests_carry_the_service() {
        assert_eq!(grpc_health_request(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(
            grpc_health_request("billing"),
            [&[0, 0, 0, 0, 9, 0x0a, 7][..], b"billing"].concat()
        );
    }
}
