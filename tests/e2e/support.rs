//! The end-to-end harness: a real edge process and real backends, all on ephemeral loopback
//! ports, cleaned up when dropped.

use bytes::Bytes;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use services::{RunningService, ServiceSpec};
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port that was free a moment ago, for a server that cannot say which port it bound
/// (redis-server; the edge listens on port 0 and writes its ports to `listening.json`). Taken
/// below the kernel's ephemeral range (32768 and up on Linux): a released ephemeral port can
/// be handed out at once as the source port of any of the suite's many client connections, or
/// to a backend binding port 0. Ports are handed out in turn from a start drawn from the
/// process id, so two tests of one run never get the same one.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = std::process::id().wrapping_mul(7919) % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let port = (FIRST + (start + n) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + COUNT)
}

/// A port where nothing listens and no test can start listening: below 1024, so never handed
/// out for port 0 (a released ephemeral port, as `free_port` gives, can be taken by another
/// test running at the same time), and none of the well-known services. `n` picks one of a
/// few.
pub fn dead_port(n: usize) -> u16 {
    const UNASSIGNED: [u16; 8] = [4, 6, 8, 10, 12, 14, 16, 26];
    let port = UNASSIGNED[n % UNASSIGNED.len()];
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on 127.0.0.1:{port}"
    );
    port
}

/// The edge binary built for these tests.
pub fn edge_bin() -> &'static str {
    env!("CARGO_BIN_EXE_edge")
}

/// A running edge process.
pub struct Edge {
    child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Edge {
    /// Starts an edge whose `[edge]` section has the test listeners plus `edge_lines`, followed
    /// by `rest` (upstreams, routes, zones).
    pub fn start(edge_lines: &str, rest: &str) -> Edge {
        Edge::start_with_env(edge_lines, rest, &[])
    }

    /// [`Edge::start`] with extra environment variables for the edge process. The edge
    /// listens on port 0 and says in its runtime directory which ports it got.
    pub fn start_with_env(edge_lines: &str, rest: &str, env: &[(&str, &str)]) -> Edge {
        let dir = tempfile::tempdir().expect("temp dir");
        let access_log = if edge_lines.contains("access_log") {
            ""
        } else {
            "access_log = \"off\"\n"
        };
        let threads = if edge_lines.contains("threads") {
            ""
        } else {
            "threads = 2\n"
        };
        let config = format!(
            "[edge]\nhttp_listen = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n{threads}\
             {access_log}{edge_lines}\n{rest}"
        );
        let path = dir.path().join("upstreams.toml");
        std::fs::write(&path, config).expect("write config");
        Edge::spawn(dir, &path, env)
    }

    /// Starts an edge on an existing config file.
    pub fn start_with_config_path(path: &std::path::Path) -> Edge {
        Edge::spawn(tempfile::tempdir().expect("temp dir"), path, &[])
    }

    fn spawn(dir: tempfile::TempDir, path: &std::path::Path, env: &[(&str, &str)]) -> Edge {
        let mut child = Command::new(edge_bin())
            .arg("run")
            .arg("--config")
            .arg(path)
            .arg("--runtime-dir")
            .arg(dir.path())
            // `EDGE_TEST_LOG=debug cargo test ...` to see what the edge did (edge.log()).
            .env(
                "RUST_LOG",
                std::env::var("EDGE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("edge.log")).expect("log file"),
            ))
            .spawn()
            .expect("start the edge");
        match blocking(|| listening(dir.path(), &mut child)) {
            Ok((http, admin)) => Edge {
                child,
                http,
                admin,
                dir,
            },
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.path().join("edge.log")).unwrap_or_default();
                panic!("{why}:\n{log}");
            }
        }
    }

    /// The edge's process id.
    /// The process's exit status, if it has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the edge wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("edge.log")).unwrap_or_default()
    }

    /// The first `https_listen` address the edge bound (from its `listening.json`), waiting
    /// up to 10 s for it.
    pub fn https(&self) -> SocketAddr {
        blocking(|| self.wait_https())
    }

    fn wait_https(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let bound: serde_json::Value =
                std::fs::read_to_string(self.dir.path().join("listening.json"))
                    .ok()
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or_default();
            if let Some(addr) = bound["https"][0].as_str().and_then(|a| a.parse().ok()) {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no https listener:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file for an edge's access log in a temp dir of its own: the dir (kept while it lives),
/// the file's path and the `access_log = "..."` line for the edge's `[edge]` section.
pub fn access_log_file() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let line = format!("access_log = \"{}\"", log.display());
    (dir, log, line)
}

/// An HTTP/1.1 server that sends a head and the first 5 of 100,000 body bytes, then goes
/// silent with the connection open.
pub fn stalling_backend() -> SocketAddr {
    scripted_backend(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\nfirst"
            .to_vec(),
        true,
    )
}

/// The first plain HTTP listener and the admin listener of an edge started with `runtime_dir`,
/// once it has bound both (from its `listening.json`), or why not within 20 s.
pub fn listening(
    runtime_dir: &std::path::Path,
    child: &mut Child,
) -> Result<(SocketAddr, SocketAddr), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let file = runtime_dir.join("listening.json");
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the edge exited with {status}"));
        }
        let bound: serde_json::Value = std::fs::read_to_string(&file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        let first = |kind: &str| bound[kind][0].as_str().and_then(|a| a.parse().ok());
        if let (Some(http), Some(admin)) = (first("http"), first("admin")) {
            return Ok((http, admin));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("the edge did not start listening within 20 s".into())
}

/// A backend service from the `services` crate on an ephemeral port.
pub async fn backend(instance: &str) -> RunningService {
    services::spawn(ServiceSpec::new("content-manager", instance), "127.0.0.1:0")
        .await
        .expect("start a backend")
}

/// A backend on a given address (to bring a server back where it was).
pub async fn backend_at(instance: &str, addr: SocketAddr) -> RunningService {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match services::spawn(
            ServiceSpec::new("content-manager", instance),
            &addr.to_string(),
        )
        .await
        {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("rebind {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// An HTTP client that does not pool connections, so each request is a fresh client.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A GET that returns (status, parsed JSON body).
pub async fn get_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.expect("body");
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// Which backend instance answered a JSON echo.
pub fn instance(body: &serde_json::Value) -> String {
    body["instance"].as_str().unwrap_or("").to_string()
}

/// A server that reads a request and closes the connection without answering, counting them.
pub struct Dropper {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
}

pub fn dropper() -> Dropper {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            drop(stream);
        }
    });
    Dropper { addr, requests }
}

/// Runs blocking client code (std sockets, sleeps) from a test: on a multi-thread runtime,
/// the runtime first moves its other tasks (the test's backends) off this thread, so they keep
/// serving while it blocks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Polls `condition` every 20 ms until it holds; fails the test with `why` after `within`.
pub async fn wait_until<F, Fut>(within: Duration, why: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "{why} (waited {within:?})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends raw bytes on a new connection and returns everything the edge answers until it
/// closes (or 5 s pass).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    blocking(|| {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.write_all(request).expect("write");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// The access-log line (JSON) of the first request for `path`, once the edge has written it;
/// `why` names what it means if none comes within `within`.
pub async fn logged_line(
    log: &std::path::Path,
    path: &str,
    within: Duration,
    why: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let logged = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = logged
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["path"] == path)
        {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: no access log line for {path}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The request for `path` was logged as a client that left (499) within `within`, and the
/// first server of `upstream` holds no request since (`why`: what a missing line means).
pub async fn left_and_freed(
    edge: &Edge,
    log: &std::path::Path,
    path: &str,
    upstream: &str,
    within: Duration,
    why: &str,
) -> serde_json::Value {
    let line = logged_line(log, path, within, why).await;
    assert_eq!(line["status"], 499, "{line}");
    let status = admin_json(edge, "/status").await;
    let server = &status["upstreams"][upstream]["servers"][0];
    assert_eq!(server["in_flight"], 0, "{status}");
    server.clone()
}

/// The status code of a raw HTTP/1.1 exchange, or 0 when the edge closed without answering.
pub fn status_of(response: &str) -> u16 {
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of a raw HTTP/1.1 response with Content-Length.
pub fn raw_body_json(response: &str) -> serde_json::Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// GET a JSON document from the edge's admin listener.
pub async fn admin_json(edge: &Edge, path: &str) -> serde_json::Value {
    let url = format!("http://{}{}", edge.admin, path);
    get_json(&client(), &url, &[]).await.1
}

/// A private redis-server on an ephemeral port (Debian's `redis-server`), killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    password: Option<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with_password(None)
    }

    /// A server that refuses commands until AUTH with `password`.
    pub fn start_with_password(password: Option<&str>) -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir,
            password: password.map(str::to_string),
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--requirepass".to_string(), p.clone()]),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/5", self.port)
    }

    /// Kills the server (an outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A misbehaving backend: reads each request, writes `answer` and closes (or, with
/// `hang`, writes it and then keeps the connection open without a word more).
pub fn scripted_backend(answer: Vec<u8>, hang: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(&answer);
                if hang {
                    std::thread::sleep(Duration::from_secs(30));
                }
            });
        }
    });
    addr
}

/// A config with one upstream `app` (one server) routed for every path.
pub fn one_route(addr: SocketAddr) -> String {
    TestConfig::new()
        .upstream("app", [addr])
        .route("/", "app")
        .text()
}

/// A DNS server on loopback answering A queries for every name with the current list
/// (TTL 1 s); `mute` makes it stop answering, like an unreachable resolver.
pub struct TestDns {
    pub addr: SocketAddr,
    answers: Arc<Mutex<Vec<Ipv4Addr>>>,
    pub mute: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    pub queries: Arc<Mutex<Vec<String>>>,
}

impl TestDns {
    pub fn start(first: &[Ipv4Addr]) -> TestDns {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind dns");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let dns = TestDns {
            addr: socket.local_addr().expect("addr"),
            answers: Arc::new(Mutex::new(first.to_vec())),
            mute: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            queries: Arc::new(Mutex::new(Vec::new())),
        };
        let (answers, mute, stop, queries) = (
            dns.answers.clone(),
            dns.mute.clone(),
            dns.stop.clone(),
            dns.queries.clone(),
        );
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if mute.load(Ordering::Relaxed) {
                    continue;
                }
                if let Some((reply, name)) = answer(&buf[..n], &answers.lock().expect("answers")) {
                    queries.lock().expect("queries").push(name);
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        dns
    }

    pub fn set(&self, ips: &[Ipv4Addr]) {
        *self.answers.lock().expect("answers") = ips.to_vec();
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The response to one query: A records for qtype A, no records otherwise.
fn answer(query: &[u8], ips: &[Ipv4Addr]) -> Option<(Vec<u8>, String)> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then qtype and qclass.
    let mut i = 12;
    let mut labels = Vec::new();
    while *query.get(i)? != 0 {
        let len = query[i] as usize;
        labels.push(String::from_utf8_lossy(query.get(i + 1..i + 1 + len)?).to_string());
        i += 1 + len;
    }
    let question_end = i + 5;
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    let records: &[Ipv4Addr] = if qtype == 1 { ips } else { &[] };
    let mut reply = Vec::with_capacity(512);
    reply.extend_from_slice(&query[..2]); // id
    reply.extend_from_slice(&[0x81, 0x80]); // response, recursion desired and available
    reply.extend_from_slice(&[0, 1]); // one question
    reply.extend_from_slice(&(records.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional
    reply.extend_from_slice(query.get(12..question_end)?);
    for ip in records {
        reply.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        reply.extend_from_slice(&[0, 1, 0, 1]); // A, IN
        reply.extend_from_slice(&1u32.to_be_bytes()); // TTL 1 s
        reply.extend_from_slice(&[0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some((reply, labels.join(".")))
}

/// A backend as strict as nginx or Go's net/http about what it is sent: one Host header of
/// host characters and an optional port, or 400. It answers `/health` with the health JSON
/// in a chunked body (as most frameworks stream JSON) saying `healthy` or, after
/// [`StrictBackend::set_unhealthy`], `unhealthy`; every other path gets its name as JSON
/// (`{"instance": ...}`) with a Content-Length. It records every Host it is sent.
pub struct StrictBackend {
    pub addr: SocketAddr,
    unhealthy: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    requests: Arc<AtomicU64>,
}

/// Whether a Host value is `host[:port]` with only the characters a host may have.
fn strict_host(value: &str) -> bool {
    let (host, port) = match value.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (value, None),
    };
    let host_ok = !host.is_empty()
        && (host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            || (host.starts_with('[')
                && host.ends_with(']')
                && host[1..host.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':')));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

type StrictBody = Either<
    Full<Bytes>,
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>,
>;

impl StrictBackend {
    pub async fn start(name: &str) -> StrictBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let backend = StrictBackend {
            addr: listener.local_addr().expect("addr"),
            unhealthy: Arc::new(AtomicBool::new(false)),
            seen: Arc::new(Mutex::new(Vec::new())),
            requests: Arc::new(AtomicU64::new(0)),
        };
        let (unhealthy, seen, requests) = (
            backend.unhealthy.clone(),
            backend.seen.clone(),
            backend.requests.clone(),
        );
        let name = name.to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (unhealthy, seen, requests, name) = (
                    unhealthy.clone(),
                    seen.clone(),
                    requests.clone(),
                    name.clone(),
                );
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let hosts: Vec<String> = req
                            .headers()
                            .get_all(http::header::HOST)
                            .iter()
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .collect();
                        let path = req.uri().path().to_string();
                        seen.lock()
                            .expect("seen")
                            .push((path.clone(), hosts.join(" | ")));
                        let response = if hosts.len() != 1 || !strict_host(&hosts[0]) {
                            strict_answer(400, Either::Left(Full::from("bad Host")))
                        } else if path == "/health" {
                            let status = if unhealthy.load(Ordering::Relaxed) {
                                "unhealthy"
                            } else {
                                "healthy"
                            };
                            let json = format!(r#"{{"status":"{status}","checks":{{}}}}"#);
                            let (a, b) = json.split_at(json.len() / 2);
                            let frames = vec![
                                Ok(Frame::data(Bytes::from(a.to_string()))),
                                Ok(Frame::data(Bytes::from(b.to_string()))),
                            ];
                            strict_answer(
                                200,
                                Either::Right(StreamBody::new(futures_util::stream::iter(frames))),
                            )
                        } else {
                            requests.fetch_add(1, Ordering::Relaxed);
                            let json = format!(r#"{{"instance":"{name}"}}"#);
                            strict_answer(200, Either::Left(Full::from(json)))
                        };
                        async move { Ok::<_, Infallible>(response) }
                    },
                );
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        backend
    }

    /// From now on `/health` says `unhealthy`.
    pub fn set_unhealthy(&self) {
        self.unhealthy.store(true, Ordering::Relaxed);
    }

    /// The Host values sent with requests for `path`.
    pub fn hosts_for(&self, path: &str) -> Vec<String> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
            .collect()
    }

    /// Requests other than `/health` that it answered 200.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

fn strict_answer(status: u16, body: StrictBody) -> hyper::Response<StrictBody> {
    let mut response = hyper::Response::new(body);
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[test]
fn the_strict_backend_knows_a_host_from_a_label() {
    assert!(strict_host("content-manager:8000"));
    assert!(strict_host("grafana"));
    assert!(strict_host("127.0.0.1:9"));
    assert!(strict_host("[::1]:8080"));
    assert!(!strict_host("content-manager:8000 (172.18.0.5)"));
    assert!(!strict_host("a:b"));
    assert!(!strict_host(""));
}

/// Reads request heads (bodies are not expected) from `stream` until it closes, fails or
/// `answer` returns `false`; `answer` gets each head's text, without its blank line.
pub fn each_request_head(
    stream: &mut std::net::TcpStream,
    mut answer: impl FnMut(&mut std::net::TcpStream, &str) -> bool,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        head.extend_from_slice(&buf[..n]);
        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..end]).into_owned();
            head.drain(..end + 4);
            if !answer(stream, &text) {
                return;
            }
        }
    }
}

/// A backend as strict about its connections as real servers are: each connection carries at
/// most `close_after` requests (0: no bound) and is then closed without a word, and one idle
/// for `idle` is closed the same way; nothing says `Connection: close`. It answers every
/// request `{}` with a Content-Length and records how many requests each connection carried.
pub struct KeepaliveBackend {
    pub addr: SocketAddr,
    per_connection: Arc<Mutex<Vec<u32>>>,
}

impl KeepaliveBackend {
    pub fn start(close_after: u32, idle: Duration) -> KeepaliveBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let per_connection = Arc::new(Mutex::new(Vec::new()));
        let counts = per_connection.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let id = {
                    let mut counts = counts.lock().expect("counts");
                    counts.push(0);
                    counts.len() - 1
                };
                let counts = counts.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(idle));
                    each_request_head(&mut stream, |stream, _head| {
                        let served = {
                            let mut counts = counts.lock().expect("counts");
                            counts[id] += 1;
                            counts[id]
                        };
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                        stream.write_all(answer).is_ok()
                            && (close_after == 0 || served < close_after)
                    });
                });
            }
        });
        KeepaliveBackend {
            addr,
            per_connection,
        }
    }

    /// How many requests each connection so far carried, in the order they were accepted.
    pub fn per_connection(&self) -> Vec<u32> {
        self.per_connection.lock().expect("counts").clone()
    }

    /// Requests received in all.
    pub fn requests(&self) -> u32 {
        self.per_connection().iter().sum()
    }
}

/// Replaces a file the way editors and config tools do (a new file renamed over the old), so
/// the edge's watcher never reads it half-written.
pub fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The upstreams and routes of a test's config, built the way the scenario reads:
/// `TestConfig::new().upstream("app", [addr]).with("read_timeout", "20s").route("/", "app")`.
/// `with` sets a key on the upstream or route added last.
#[derive(Default)]
pub struct TestConfig {
    table: toml::Table,
    last: Option<Vec<String>>,
}

impl TestConfig {
    pub fn new() -> TestConfig {
        TestConfig::default()
    }

    /// An upstream whose servers are these addresses (`{ addr = "..." }` each).
    pub fn upstream<A: ToString>(
        mut self,
        name: &str,
        servers: impl IntoIterator<Item = A>,
    ) -> Self {
        let servers: Vec<toml::Value> = servers
            .into_iter()
            .map(|a| {
                toml::Value::Table(toml::Table::from_iter([(
                    "addr".to_string(),
                    a.to_string().into(),
                )]))
            })
            .collect();
        let upstream =
            toml::Table::from_iter([("servers".to_string(), toml::Value::Array(servers))]);
        let upstreams = self
            .table
            .entry("upstreams")
            .or_insert_with(|| toml::Table::new().into());
        if let toml::Value::Table(upstreams) = upstreams {
            upstreams.insert(name.to_string(), upstream.into());
        }
        self.last = Some(vec!["upstreams".into(), name.into()]);
        self
    }

    /// A route from `path` to `upstream`.
    pub fn route(mut self, path: &str, upstream: &str) -> Self {
        let route = toml::Table::from_iter([
            ("path".to_string(), toml::Value::from(path)),
            ("upstream".to_string(), toml::Value::from(upstream)),
        ]);
        let routes = self
            .table
            .entry("routes")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if let toml::Value::Array(routes) = routes {
            routes.push(route.into());
            self.last = Some(vec!["routes".into(), (routes.len() - 1).to_string()]);
        }
        self
    }

    /// Sets `key` on the upstream or route added last.
    pub fn with(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        let last = self
            .last
            .clone()
            .expect("an upstream or a route to set it on");
        let mut at = &mut self.table[&last[0]];
        at = match at {
            toml::Value::Array(routes) => &mut routes[last[1].parse::<usize>().expect("index")],
            other => &mut other[&last[1]],
        };
        if let toml::Value::Table(table) = at {
            table.insert(key.to_string(), value.into());
        }
        self
    }

    /// Adds a rate limit (`{ zone, burst, nodelay }`) to the route added last.
    pub fn limit(mut self, zone: &str, burst: i64, nodelay: bool) -> Self {
        let limit = toml::Table::from_iter([
            ("zone".to_string(), toml::Value::from(zone)),
            ("burst".to_string(), toml::Value::from(burst)),
            ("nodelay".to_string(), toml::Value::from(nodelay)),
        ]);
        if let Some(toml::Value::Array(routes)) = self.table.get_mut("routes") {
            if let Some(toml::Value::Table(route)) = routes.last_mut() {
                let limits = route
                    .entry("limit")
                    .or_insert_with(|| toml::Value::Array(Vec::new()));
                if let toml::Value::Array(limits) = limits {
                    limits.push(limit.into());
                }
            }
        }
        self
    }

    /// Sets `key` on every server of the upstream added last.
    pub fn with_servers(mut self, key: &str, value: impl Into<toml::Value> + Clone) -> Self {
        let last = self.last.clone().expect("an upstream");
        if let Some(toml::Value::Array(servers)) = self.table[&last[0]][&last[1]].get_mut("servers")
        {
            for server in servers {
                if let toml::Value::Table(server) = server {
                    server.insert(key.to_string(), value.clone().into());
                }
            }
        }
        self
    }

    /// The config's TOML text.
    pub fn text(&self) -> String {
        toml::to_string(&self.table).expect("a TOML table")
    }
}

/// What a [`BulkBackend`] saw of one connection.
#[derive(Clone, Debug)]
pub struct BulkConnection {
    /// When its last write of body bytes went through (the edge took them).
    pub last_progress: Instant,
    /// When the edge closed it mid-response (a write failed), if it did.
    pub closed_mid_response: Option<Instant>,
    /// Body bytes written.
    pub sent: u64,
}

/// A backend that answers every request with `len` bytes of body (with a Content-Length),
/// written 64 KiB at a time with blocking writes, and records for each connection when the
/// edge last took bytes and whether (and when) the edge closed it before the body was done:
/// the server side of a client that stops reading.
pub struct BulkBackend {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<BulkConnection>>>,
}

impl BulkBackend {
    pub fn start(len: u64) -> BulkBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(Mutex::new(Vec::new()));
        let record = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let record = record.clone();
                let id = {
                    let mut all = record.lock().expect("connections");
                    all.push(BulkConnection {
                        last_progress: Instant::now(),
                        closed_mid_response: None,
                        sent: 0,
                    });
                    all.len() - 1
                };
                std::thread::spawn(move || {
                    let chunk = vec![b'x'; 64 * 1024];
                    each_request_head(&mut stream, |stream, _head| {
                        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n");
                        if stream.write_all(head.as_bytes()).is_err() {
                            return false;
                        }
                        let mut left = len;
                        while left > 0 {
                            let n = left.min(chunk.len() as u64) as usize;
                            if stream.write_all(&chunk[..n]).is_err() {
                                let mut all = record.lock().expect("connections");
                                all[id].closed_mid_response = Some(Instant::now());
                                return false;
                            }
                            left -= n as u64;
                            let mut all = record.lock().expect("connections");
                            all[id].last_progress = Instant::now();
                            all[id].sent += n as u64;
                        }
                        true
                    });
                });
            }
        });
        BulkBackend { addr, connections }
    }

    /// Every connection so far, in the order they were accepted.
    pub fn connections(&self) -> Vec<BulkConnection> {
        self.connections.lock().expect("connections").clone()
    }
}
