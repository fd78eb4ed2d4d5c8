//! The end-to-end harness: a real edge process and real backends, all on ephemeral loopback
//! ports, cleaned up when dropped.

use bytes::Bytes;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use rustls::pki_types::ServerName;
use services::{RunningService, ServiceSpec};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream as StdTcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

// The edge under test, in a process of its own.

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
    /// by `rest` (a [`TestConfig`]: upstreams, routes, zones).
    pub fn start(edge_lines: impl EdgeLines, rest: impl std::fmt::Display) -> Edge {
        Edge::start_with_env(edge_lines, rest, &[])
    }

    /// [`Edge::start`] with extra environment variables for the edge process. The edge
    /// listens on port 0 and says in its runtime directory which ports it got.
    pub fn start_with_env(
        edge_lines: impl EdgeLines,
        rest: impl std::fmt::Display,
        env: &[(&str, &str)],
    ) -> Edge {
        let edge_lines = edge_lines.edge_lines();
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

    /// [`Edge::start_with_config_path`] with extra environment variables (`RUST_LOG` among
    /// them: they come after the test's own).
    pub fn start_with_config_path_env(path: &std::path::Path, env: &[(&str, &str)]) -> Edge {
        Edge::spawn(tempfile::tempdir().expect("temp dir"), path, env)
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

    /// The process's exit status, if it has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// The edge's process id.
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

    /// The URL of `path` on the edge's plain HTTP listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Sends `signal` ("HUP", "QUIT", "TERM", "USR1") to the edge process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{signal} {}", self.pid());
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test puts in its edge's `[edge]` section besides the listeners: nothing (`""`),
/// lines of TOML (as [`access_log_file`] gives), or `table! { keepalive_timeout = "1s" }`.
pub trait EdgeLines {
    /// The TOML lines.
    fn edge_lines(&self) -> String;
}

impl EdgeLines for str {
    fn edge_lines(&self) -> String {
        self.to_string()
    }
}

impl EdgeLines for String {
    fn edge_lines(&self) -> String {
        self.clone()
    }
}

impl EdgeLines for toml::Value {
    fn edge_lines(&self) -> String {
        toml::to_string(self).expect("a TOML table")
    }
}

impl<T: EdgeLines + ?Sized> EdgeLines for &T {
    fn edge_lines(&self) -> String {
        (**self).edge_lines()
    }
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

/// A file for an edge's access log in a temp dir of its own: the dir (kept while it lives),
/// the file's path and the `access_log = "..."` line for the edge's `[edge]` section.
pub fn access_log_file() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let line = format!("access_log = \"{}\"", log.display());
    (dir, log, line)
}

// Its config, built the way a scenario reads.

/// A TOML table written the way the config writes an inline table:
/// `table! { zone = "api", burst = 20, nodelay = true }`.
macro_rules! table {
    ($($key:ident = $value:expr),* $(,)?) => {
        toml::Value::Table(toml::Table::from_iter([
            $((stringify!($key).to_string(), toml::Value::from($value))),*
        ]))
    };
}
pub(crate) use table;

/// A test's config below `[edge]`, built the way the scenario reads:
/// `TestConfig::new().upstream("app", [addr]).with("read_timeout", "20s").route("/", "app")`.
/// `with` sets a key on what was added last: an upstream, a route, a zone, a certificate or a
/// section such as `[redis]`.
#[derive(Clone, Debug, Default)]
pub struct TestConfig {
    table: toml::Table,
    /// Where `with` writes: the keys (and array indexes) of what was added last.
    last: Vec<String>,
    /// The upstream added last: the one `with_servers` and `weights` set.
    upstream: Option<String>,
}

impl TestConfig {
    /// An empty config.
    pub fn new() -> TestConfig {
        TestConfig::default()
    }

    /// An upstream whose servers are these addresses (`{ addr = "..." }` each): socket
    /// addresses, or `name:port` for servers found by DNS.
    pub fn upstream<A: ToString>(
        mut self,
        name: &str,
        servers: impl IntoIterator<Item = A>,
    ) -> Self {
        let servers: Vec<toml::Value> = servers
            .into_iter()
            .map(|a| table! { addr = a.to_string() })
            .collect();
        self.table_at(&["upstreams"])
            .insert(name.to_string(), table! { servers = servers });
        self.upstream = Some(name.to_string());
        self.added(&["upstreams", name])
    }

    /// A route from `path` to `upstream`.
    pub fn route(mut self, path: &str, upstream: &str) -> Self {
        let index = self.push(&[], "routes", table! { path = path, upstream = upstream });
        self.added(&["routes", &index.to_string()])
    }

    /// Adds a rate limit to the route added last:
    /// `.limit(table! { zone = "api", burst = 20, nodelay = true })`.
    pub fn limit(mut self, limit: toml::Value) -> Self {
        let routes = self.table.get("routes").and_then(toml::Value::as_array);
        let route = routes
            .map_or(0, Vec::len)
            .checked_sub(1)
            .expect("a route to limit");
        self.push(&["routes", &route.to_string()], "limit", limit);
        self
    }

    /// A rate-limit zone (`[zones.NAME]`) of `rate`, "10r/s" or "1r/m".
    pub fn zone(mut self, name: &str, rate: &str) -> Self {
        self.table_at(&["zones"])
            .insert(name.to_string(), table! { rate = rate });
        self.added(&["zones", name])
    }

    /// A certificate the edge serves on its https listeners (`[tls] certificates`, the first
    /// the default).
    pub fn certificate(mut self, certificate: &Certificate) -> Self {
        let entry = table! {
            cert = certificate.cert.display().to_string(),
            key = certificate.key.display().to_string(),
        };
        let index = self.push(&["tls"], "certificates", entry);
        self.added(&["tls", "certificates", &index.to_string()])
    }

    /// A section of its own (`[redis]`, `[gzip]`, `[tls]`, `[edge]`) for `with` to fill in.
    pub fn section(mut self, name: &str) -> Self {
        self.table_at(&[name]);
        self.added(&[name])
    }

    /// A table nested in another (`["tls", "acme"]` for `[tls.acme]`) for `with` to fill in.
    pub fn nested(mut self, path: &[&str]) -> Self {
        self.table_at(path);
        self.added(path)
    }

    /// Sets `key` on what was added last.
    pub fn with(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        assert!(!self.last.is_empty(), "nothing to set {key} on");
        let last = self.last.clone();
        let last: Vec<&str> = last.iter().map(String::as_str).collect();
        self.table_at(&last).insert(key.to_string(), value.into());
        self
    }

    /// Sets `key` on every server of the upstream added last.
    pub fn with_servers(mut self, key: &str, value: impl Into<toml::Value> + Clone) -> Self {
        for server in self.servers() {
            server.insert(key.to_string(), value.clone().into());
        }
        self
    }

    /// Gives the servers of the upstream added last these weights, in order.
    pub fn weights(mut self, weights: impl IntoIterator<Item = i64>) -> Self {
        for (server, weight) in self.servers().into_iter().zip(weights) {
            server.insert("weight".to_string(), weight.into());
        }
        self
    }

    /// The config's TOML text.
    pub fn text(&self) -> String {
        toml::to_string(&self.table).expect("a TOML table")
    }

    fn added(mut self, path: &[&str]) -> Self {
        self.last = path.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The servers of the upstream added last.
    fn servers(&mut self) -> Vec<&mut toml::Table> {
        let upstream = self.upstream.clone().expect("an upstream");
        let servers = self.table_at(&["upstreams", &upstream]).get_mut("servers");
        let Some(toml::Value::Array(servers)) = servers else {
            panic!("{upstream} has no servers");
        };
        servers
            .iter_mut()
            .filter_map(toml::Value::as_table_mut)
            .collect()
    }

    /// Appends `item` to the array `name` of the table at `path`; its index.
    fn push(&mut self, path: &[&str], name: &str, item: toml::Value) -> usize {
        let array = self
            .table_at(path)
            .entry(name.to_string())
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        let toml::Value::Array(items) = array else {
            panic!("{name} is not an array");
        };
        items.push(item);
        items.len() - 1
    }

    /// The table at `path` (keys, and indexes into arrays), made if it is missing.
    fn table_at(&mut self, path: &[&str]) -> &mut toml::Table {
        fn walk<'a>(value: &'a mut toml::Value, path: &[&str]) -> &'a mut toml::Table {
            match (value, path.split_first()) {
                (toml::Value::Table(table), None) => table,
                (toml::Value::Table(table), Some((key, rest))) => walk(
                    table
                        .entry(key.to_string())
                        .or_insert_with(|| toml::Table::new().into()),
                    rest,
                ),
                (toml::Value::Array(items), Some((index, rest))) => {
                    walk(&mut items[index.parse::<usize>().expect("an index")], rest)
                }
                (other, _) => panic!("no table at {path:?}: {other}"),
            }
        }
        let Some((first, rest)) = path.split_first() else {
            return &mut self.table;
        };
        walk(
            self.table
                .entry(first.to_string())
                .or_insert_with(|| toml::Table::new().into()),
            rest,
        )
    }
}

impl std::fmt::Display for TestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

/// A config with one upstream `app` (one server) routed for every path.
pub fn one_route(addr: SocketAddr) -> TestConfig {
    TestConfig::new().upstream("app", [addr]).route("/", "app")
}

/// Where the value of the first `key = ...` in `text` starts (an array's first element), as
/// `line:column` (both counted from 1): where `edge check` places a mistake in it.
pub fn place_of_value(text: &str, key: &str) -> String {
    let assignment = format!("{key} = ");
    let mut at = text
        .find(&assignment)
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
        + assignment.len();
    if text[at..].starts_with('[') {
        at += 1;
    }
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{line}:{column}")
}

/// Replaces a file the way editors and config tools do (a new file renamed over the old), so
/// the edge's watcher never reads it half-written.
pub fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

// Waiting: for a state, never for a time.

/// Polls `condition` every 20 ms until it holds; fails the test with `why` after `within`.
/// The one way these tests wait for a state: of the edge (`/status`, a metric, a log line) or
/// of a backend (what it recorded).
pub async fn wait_until(within: Duration, why: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "{why} (waited {within:?})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

// What the edge exposes: its admin endpoints, its metrics, its access log.

/// GET a JSON document from the edge's admin listener.
pub async fn admin_json(edge: &Edge, path: &str) -> serde_json::Value {
    let url = format!("http://{}{}", edge.admin, path);
    get_json(&client(), &url, &[]).await.1
}

/// Server `index` of `upstream` as `/status` shows it (`state`, `up`, `in_flight`, `fails`,
/// `failures`, `attempts`, ...).
pub async fn server(edge: &Edge, upstream: &str, index: usize) -> serde_json::Value {
    admin_json(edge, "/status").await["upstreams"][upstream]["servers"][index].clone()
}

/// Scrapes the edge's `/metrics`: the exposition's text, and each series (`name{labels}`)
/// with its value.
pub async fn scrape(edge: &Edge) -> (String, BTreeMap<String, f64>) {
    let text = client()
        .get(format!("http://{}/metrics", edge.admin))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let mut series = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        if let Some((name, value)) = line.rsplit_once(' ') {
            series.insert(name.to_string(), value.parse().unwrap_or(f64::NAN));
        }
    }
    (text, series)
}

/// The sum of the series of metric `name` whose labels include every one of `labels`
/// (written `name="value"`).
pub fn value(series: &BTreeMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    series
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| *v)
        .sum()
}

/// One metric's value now: [`scrape`], then [`value`].
pub async fn metric(edge: &Edge, name: &str, labels: &[&str]) -> f64 {
    value(&scrape(edge).await.1, name, labels)
}

/// Metric `name` (with `labels`) once it has reached `least`, waiting for it: the edge counts
/// some things (a timeout, a refusal) just after the client has seen them.
pub async fn metric_reaching(edge: &Edge, name: &str, labels: &[&str], least: f64) -> f64 {
    let why = format!("{name} {labels:?} stays below {least}");
    wait_until(Duration::from_secs(10), &why, async || {
        metric(edge, name, labels).await >= least
    })
    .await;
    metric(edge, name, labels).await
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

/// Every line of a JSON access log written so far.
pub fn logged_lines(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
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

// HTTPS: certificates, the edge on an https listener, TLS and HTTP/2 clients.

/// A certificate and its key in PEM files (a self-signed one in a temp dir of its own, gone
/// when it drops: keep it while the edge runs).
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Certificate {
    /// A self-signed certificate for `names`.
    pub fn self_signed(names: &[&str]) -> Certificate {
        let dir = tempfile::tempdir().expect("dir");
        let certificate = Certificate {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            _dir: Some(dir),
        };
        certificate.renew(names);
        certificate
    }

    /// The certificate (or chain) and key in these files, made elsewhere (a test CA's).
    pub fn at(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Certificate {
        Certificate {
            cert: cert.into(),
            key: key.into(),
            _dir: None,
        }
    }

    /// Writes a new self-signed certificate for `names` over its files, as a renewal does.
    pub fn renew(&self, names: &[&str]) {
        edge::tls::generate_self_signed(names, &self.cert, &self.key).expect("certificate");
    }
}

/// An edge with an https listener (and its plain one) serving the certificates of `config`
/// ([`TestConfig::certificate`]), with `edge_lines` in its `[edge]`: the edge and its https
/// address.
pub fn https_edge(edge_lines: impl EdgeLines, config: TestConfig) -> (Edge, SocketAddr) {
    let edge = Edge::start(
        format!(
            "https_listen = [\"127.0.0.1:0\"]\n{}",
            edge_lines.edge_lines()
        ),
        config,
    );
    let https = edge.https();
    (edge, https)
}

/// A TLS client (1.2 and 1.3) offering `alpn`, trusting any certificate; one connector keeps
/// its sessions, so a second handshake resumes.
pub fn connector(alpn: &[&[u8]]) -> TlsConnector {
    connector_for(alpn, &[&rustls::version::TLS12, &rustls::version::TLS13])
}

/// A [`connector`] that speaks only `versions`.
pub fn connector_for(
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        // Trusts whatever the edge presents: these tests look at which certificate it is.
        .with_custom_certificate_verifier(Arc::new(edge::upstream::tls::AnyCertificate::new(
            provider,
        )))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr`, asking for `sni`.
pub async fn connect(tls: &TlsConnector, addr: SocketAddr, sni: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    tls.connect(ServerName::try_from(sni.to_string()).expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

/// One HTTP/1.1 GET of `path` (with `extra` header lines) on an open stream: (status line,
/// lowercase head, body).
pub async fn http1<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    path: &str,
    extra: &str,
) -> (String, String, Vec<u8>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.lines().next().unwrap_or("").to_string();
    let mut rest = buf[head_end..].to_vec();
    let mut more = async |rest: &mut Vec<u8>| {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "closed mid-body");
        rest.extend_from_slice(&chunk[..n]);
    };
    if head.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                more(&mut rest).await;
            };
            let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .expect("chunk size");
            while rest.len() < line_end + 2 + size + 2 {
                more(&mut rest).await;
            }
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return (status, head, body);
            }
        }
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("length"));
    while rest.len() < length {
        more(&mut rest).await;
    }
    (status, head, rest)
}

/// The sending half of a hyper HTTP/2 client.
pub type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>;

/// A hyper HTTP/2 client over an established TLS stream (its connection driven in the
/// background).
pub async fn h2_client(stream: TlsStream<TcpStream>) -> H2Sender {
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// One HTTP/2 GET of `path` on a.example.
pub async fn h2_get(sender: &mut H2Sender, path: &str) -> http::Response<hyper::body::Incoming> {
    let request = http::Request::get(format!("https://a.example{path}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    sender.send_request(request).await.expect("h2 response")
}

/// A frame-level HTTP/2 client (the h2 crate: resets, stream ids, windows) for a.example at
/// `https`, its connection driven in the background.
pub async fn h2_frames_client(https: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let stream = connect(&connector(&[b"h2"]), https, "a.example").await;
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    tokio::spawn(connection);
    client.ready().await.expect("ready")
}

/// Drives an h2 client connection until the edge's first SETTINGS have come (the stream
/// limit it advertises is known, no longer h2's unlimited default), for at most `within`.
pub async fn until_settings<T: AsyncRead + AsyncWrite + Unpin, B: bytes::Buf>(
    connection: &mut std::pin::Pin<Box<h2::client::Connection<T, B>>>,
    within: Duration,
) {
    use std::future::Future;
    let settled = std::future::poll_fn(|cx| {
        if connection.as_mut().poll(cx).is_ready()
            || connection.max_concurrent_send_streams() != usize::MAX
        {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    });
    let _ = tokio::time::timeout(within, settled).await;
}

/// What an HTTP/2 client sends first.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// A header block of literal fields (HPACK "without indexing", no Huffman), written as
/// given, so that a malformed request can be sent at all.
pub fn hpack_literal(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0x00);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// `openssl s_client` against `addr` with `args`: (whether a cipher was agreed, what it
/// printed).
pub fn s_client(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .output()
        .expect("openssl (Debian's openssl package)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (
        out.status.success() && !text.contains("Cipher is (NONE)"),
        text,
    )
}

// Plain HTTP clients.

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

/// Sends raw bytes on a new connection and returns everything the edge answers until it
/// closes (or 5 s pass).
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    blocking(|| {
        let mut stream = StdTcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.write_all(request).expect("write");
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
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

// Backends, well-behaved and not.

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

/// A server that reads a request and closes the connection without answering, counting them.
pub struct Dropper {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
}

/// A [`Dropper`] on an ephemeral port.
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

/// A server on an ephemeral loopback port that gives each connection it accepts to `serve`,
/// on a thread of its own; its address.
pub fn each_connection(serve: impl Fn(StdTcpStream) + Clone + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// A misbehaving backend: reads each request, writes `answer` and closes (or, with
/// `hang`, writes it and then keeps the connection open without a word more).
pub fn scripted_backend(answer: Vec<u8>, hang: bool) -> SocketAddr {
    each_connection(move |mut stream| {
        let mut buf = [0u8; 8192];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(&answer);
        if hang {
            // A time wait: the connection is held open, with nothing more said.
            std::thread::sleep(Duration::from_secs(30));
        }
    })
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

/// A server on an ephemeral loopback port that runs `handle` on a task of its own for each
/// connection it accepts, for as long as the test runs; its address.
pub async fn serve_each<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(handle(tcp));
        }
    });
    addr
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

/// A [`StrictBackend`] answer: a JSON body whole, or the health JSON in two chunks.
type StrictBody = Either<
    Full<Bytes>,
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>,
>;

impl StrictBackend {
    /// A backend named `name` on an ephemeral port.
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

/// A [`StrictBackend`] answer of `status` with a JSON `body`.
fn strict_answer(status: u16, body: StrictBody) -> hyper::Response<StrictBody> {
    let mut response = hyper::Response::new(body);
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
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
/// request `{}` with a Content-Length and records how many requests each connection carried,
/// and which connections it has closed.
pub struct KeepaliveBackend {
    pub addr: SocketAddr,
    per_connection: Arc<Mutex<Vec<u32>>>,
    closed: Arc<AtomicU64>,
}

impl KeepaliveBackend {
    /// A backend on an ephemeral port that closes connections after `close_after` requests
    /// (0: never) or `idle`.
    pub fn start(close_after: u32, idle: Duration) -> KeepaliveBackend {
        KeepaliveBackend::answering_after(close_after, idle, Duration::ZERO)
    }

    /// [`KeepaliveBackend::start`] that takes `delay` over each answer (so that concurrent
    /// requests hold as many connections).
    pub fn answering_after(close_after: u32, idle: Duration, delay: Duration) -> KeepaliveBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let per_connection = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicU64::new(0));
        let (counts, ended) = (per_connection.clone(), closed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let id = {
                    let mut counts = counts.lock().expect("counts");
                    counts.push(0);
                    counts.len() - 1
                };
                let (counts, ended) = (counts.clone(), ended.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(idle));
                    each_request_head(&mut stream, |stream, _head| {
                        let served = {
                            let mut counts = counts.lock().expect("counts");
                            counts[id] += 1;
                            counts[id]
                        };
                        std::thread::sleep(delay);
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                        stream.write_all(answer).is_ok()
                            && (close_after == 0 || served < close_after)
                    });
                    drop(stream);
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        KeepaliveBackend {
            addr,
            per_connection,
            closed,
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

    /// Connections accepted and not yet closed.
    pub fn open(&self) -> usize {
        self.per_connection().len() - self.closed.load(Ordering::SeqCst) as usize
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
    /// A backend on an ephemeral port answering `len` bytes to every request.
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

    /// Whether `n` connections have come and the edge closed each of them mid-response.
    pub fn closed_mid_response(&self, n: usize) -> bool {
        let connections = self.connections();
        connections.len() >= n && connections.iter().all(|c| c.closed_mid_response.is_some())
    }
}

// Other servers the edge talks to, and ports for them.

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

/// A private redis-server on an ephemeral port (Debian's `redis-server`), killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    password: Option<String>,
}

impl Redis {
    /// A server without a password.
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
        while StdTcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its URL for the edge's `[redis] url` (database 5).
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
    /// A server answering `first` until [`TestDns::set`] says otherwise.
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

    /// From now on, answers `ips`.
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

// The repository's files.

/// The repository's root directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A file of the repository (`path` from its root), as text.
pub fn repo_file(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file of the repository, with `<<` merge keys applied.
pub fn repo_yaml(path: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&repo_file(path))
        .map(|doc| {
            let mut value =
                serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}"));
            value.apply_merge().expect("merge keys");
            value
        })
        .filter(|v| !v.is_null())
        .collect()
}

// The harness's own tests.

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

#[test]
fn edge_lines_are_toml_lines() {
    let lines = table! { keepalive_timeout = "1s", trusted_proxies = vec!["127.0.0.1"] };
    let parsed: toml::Table = lines.edge_lines().parse().expect("TOML");
    assert_eq!(parsed["keepalive_timeout"].as_str(), Some("1s"));
    assert_eq!(parsed["trusted_proxies"][0].as_str(), Some("127.0.0.1"));
}

#[test]
fn a_test_config_reads_as_the_config_it_builds() {
    let config = TestConfig::new()
        .zone("api", "10r/s")
        .with("store", "redis")
        .upstream("app", ["127.0.0.1:1", "127.0.0.1:2"])
        .with("balance", "round_robin")
        .weights([3, 1])
        .with_servers("max_fails", 1)
        .route("/api/", "app")
        .with("allow", vec!["10.0.0.0/8"])
        .limit(table! { zone = "api", burst = 20, nodelay = true })
        .section("redis")
        .with("url", "redis://127.0.0.1:1/5");
    let parsed: toml::Table = config.text().parse().expect("TOML");
    let (app, route) = (&parsed["upstreams"]["app"], &parsed["routes"][0]);
    assert_eq!(
        parsed["redis"]["url"].as_str(),
        Some("redis://127.0.0.1:1/5")
    );
    assert_eq!(parsed["zones"]["api"]["rate"].as_str(), Some("10r/s"));
    assert_eq!(parsed["zones"]["api"]["store"].as_str(), Some("redis"));
    assert_eq!(app["balance"].as_str(), Some("round_robin"));
    for (server, (addr, weight)) in [("127.0.0.1:1", 3), ("127.0.0.1:2", 1)].iter().enumerate() {
        let server = &app["servers"][server];
        assert_eq!(server["addr"].as_str(), Some(*addr));
        assert_eq!(server["weight"].as_integer(), Some(*weight));
        assert_eq!(server["max_fails"].as_integer(), Some(1));
    }
    assert_eq!(route["path"].as_str(), Some("/api/"));
    assert_eq!(route["upstream"].as_str(), Some("app"));
    assert_eq!(route["allow"][0].as_str(), Some("10.0.0.0/8"));
    let limit = &route["limit"][0];
    assert_eq!(limit["zone"].as_str(), Some("api"));
    assert_eq!(limit["burst"].as_integer(), Some(20));
    assert_eq!(limit["nodelay"].as_bool(), Some(true));
    assert_eq!(place_of_value("a = 1\nbb = 2\n", "bb"), "2:6");
    assert_eq!(place_of_value("a = [\"x\"]\n", "a"), "1:6");
}
