//! The validated configuration: plain Rust values with every default applied.
//!
//! [`super::validate`] turns the file into these; [`crate::snapshot`] compiles them into the
//! runtime state the proxy reads. Defaults are the named constants below; they mirror the nginx
//! edge (docs/context.md) unless their comment says otherwise.

use crate::units::Rate;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:80";
pub const DEFAULT_HTTPS_LISTEN: &str = "0.0.0.0:443";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9180";
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(65);
pub const DEFAULT_KEEPALIVE_REQUESTS: u32 = 100;
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// nginx's `client_body_timeout`.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `send_timeout`: a write toward a client that makes no progress this long ends it.
pub const DEFAULT_CLIENT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `http2_max_concurrent_streams`.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Request target and head limits (nginx: `large_client_header_buffers 4 8k`).
pub const DEFAULT_MAX_URI_SIZE: u64 = 8 * 1024;
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 32 * 1024;
pub const DEFAULT_MAX_HEADERS: u32 = 100;
/// Connections one client address may hold at once (nginx `limit_conn`, off there).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: u32 = 256;
/// Upstream names are resolved again no sooner than this, whatever their TTL.
pub const DEFAULT_DNS_MIN_TTL: Duration = Duration::from_secs(5);
pub const DEFAULT_CLIENT_MAX_BODY_SIZE: u64 = 10 << 20;
/// nginx's `client_body_buffer_size` on 64-bit machines.
pub const DEFAULT_CLIENT_BODY_BUFFER_SIZE: u64 = 16 << 10;
/// nginx's `keepalive` keeps no idle connections unless set; every upstream of the nginx edge
/// sets it, so the edge keeps 32 by default.
pub const DEFAULT_UPSTREAM_KEEPALIVE: usize = 32;
pub const DEFAULT_UPSTREAM_KEEPALIVE_REQUESTS: u32 = 1000;
pub const DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx waits 60 s to connect; an edge that must fail over quickly waits 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// 0 = no limit other than the number of servers (nginx's `proxy_next_upstream_tries 0`).
pub const DEFAULT_NEXT_UPSTREAM_TRIES: u32 = 0;
pub const DEFAULT_WEIGHT: u32 = 1;
pub const DEFAULT_MAX_FAILS: u32 = 1;
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEALTH_PATH: &str = "/health";
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEALTH_RISE: u32 = 2;
pub const DEFAULT_HEALTH_FALL: u32 = 3;
pub const DEFAULT_HEALTH_START_PERIOD: Duration = Duration::from_secs(40);
/// nginx answers a rejected `limit_req` with 503; 429 says what happened.
pub const DEFAULT_LIMIT_STATUS: u16 = 429;
/// About what nginx's 10m `limit_req_zone` holds.
pub const DEFAULT_ZONE_MAX_CLIENTS: usize = 160_000;
/// nginx refreshes a stapled response about hourly.
pub const DEFAULT_OCSP_REFRESH: Duration = Duration::from_secs(3600);
pub const DEFAULT_HSTS: &str = "max-age=31536000; includeSubDomains; preload";
pub const DEFAULT_GZIP_MIN_LENGTH: u64 = 1024;
pub const DEFAULT_GZIP_LEVEL: u32 = 6;
pub const DEFAULT_GZIP_TYPES: &[&str] = &[
    "text/plain",
    "text/css",
    "application/json",
    "application/javascript",
    "text/xml",
    "application/xml",
    "application/xml+rss",
    "text/javascript",
];
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/5";

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub edge: EdgeSettings,
    pub tls: Option<TlsSettings>,
    pub gzip: GzipSettings,
    pub redis: RedisSettings,
    pub zones: BTreeMap<String, ZoneSettings>,
    pub upstreams: BTreeMap<String, UpstreamSettings>,
    pub routes: Vec<RouteSettings>,
}

/// `[edge]`.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeSettings {
    /// Plain HTTP listeners.
    pub http_listen: Vec<SocketAddr>,
    /// TLS listeners; empty unless `[tls]` is configured.
    pub https_listen: Vec<SocketAddr>,
    /// The admin listener: /health, /status, /metrics, /reload.
    pub admin_listen: SocketAddr,
    /// Worker threads; never 0 here (0 in the file is one per core).
    pub threads: usize,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Plain HTTP answers 308 to https (except /health) when an https listener exists.
    pub redirect_http_to_https: bool,
    pub access_log: AccessLog,
    pub keepalive_timeout: Duration,
    pub keepalive_requests: u32,
    pub client_header_timeout: Duration,
    /// The longest a client may leave its request body without sending more (408 before the
    /// request went upstream).
    pub client_body_timeout: Duration,
    /// The longest a write toward a client (an HTTP/1.1 socket write, an HTTP/2 stream
    /// waiting for flow-control window, an HTTP/2 connection's socket write) may make no
    /// progress before the request (or connection) is ended.
    pub send_timeout: Duration,
    /// Streams in flight per HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 with prior knowledge (h2c) on the plain listeners too.
    pub http2_cleartext: bool,
    /// HTTP/3 (QUIC on UDP) at every `https_listen` address; only with `[tls]`.
    pub http3: bool,
    /// 0-RTT on the QUIC listeners: safe methods served from early data, others 425.
    pub http3_early_data: bool,
    pub client_max_body_size: u64,
    /// Request bodies up to this size are read whole before the request goes upstream
    /// (nginx's `client_body_buffer_size` with `proxy_request_buffering on`); larger ones
    /// stream.
    pub client_body_buffer_size: u64,
    /// Connections one client address may hold; 0 = no cap. Trusted proxies are exempt.
    pub max_connections_per_client: u32,
    /// Request target bytes before 414.
    pub max_uri_size: u64,
    /// Request head bytes before 431.
    pub max_header_size: u64,
    /// Header fields before 431.
    pub max_headers: u32,
    /// DNS servers for upstream names; empty = the system's (/etc/resolv.conf, /etc/hosts).
    pub resolver: Vec<SocketAddr>,
    /// The shortest time an answer is kept before the name is resolved again.
    pub dns_min_ttl: Duration,
}

impl EdgeSettings {
    /// The request head limits as the request checks use them.
    pub fn head_limits(&self) -> HeadLimits {
        HeadLimits {
            uri: self.max_uri_size as usize,
            head: self.max_header_size as usize,
            fields: self.max_headers as usize,
        }
    }
}

/// Where access log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    Off,
    File(PathBuf),
}

/// `[tls]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsSettings {
    pub certificates: Vec<CertificatePaths>,
    pub protocols: Vec<TlsVersion>,
    pub ciphers: Vec<String>,
    /// The Strict-Transport-Security value; `None` when turned off with "".
    pub hsts: Option<String>,
    /// The longest time between two OCSP fetches (responses are also refreshed at half
    /// their validity).
    pub ocsp_refresh: Duration,
    /// `[tls.acme]`: certificates the edge obtains and renews itself.
    pub acme: Option<AcmeSettings>,
}

/// Let's Encrypt's production directory, `[tls.acme] directory`'s default.
pub const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// `[tls.acme]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeSettings {
    pub directory: String,
    pub email: Option<String>,
    /// The names a certificate is obtained for, one certificate each.
    pub domains: Vec<String>,
    pub challenge: AcmeChallenge,
    /// Where a local store keeps its files (and a Redis store's key prefix is named from).
    pub storage: PathBuf,
    pub store: AcmeStore,
    /// PEM roots for the directory's HTTPS; `None`: the system's.
    pub ca: Option<PathBuf>,
    /// External account binding: the key id and the base64url HMAC key.
    pub eab: Option<(String, String)>,
}

/// How the CA checks that the edge answers for a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// A certificate for `acme-tls/1` on the TLS listeners (RFC 8737).
    TlsAlpn01,
    /// `/.well-known/acme-challenge/` on the plain listeners.
    Http01,
}

impl AcmeChallenge {
    /// The key's value in `upstreams.toml`.
    pub fn name(self) -> &'static str {
        match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }
}

/// Where the account, certificates and pending answers live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcmeStore {
    /// Files under `storage` (0600).
    Local,
    /// Redis (`[redis]`), shared by every replica.
    Redis,
}

impl AcmeStore {
    /// The key's value in `upstreams.toml`.
    pub fn name(self) -> &'static str {
        match self {
            AcmeStore::Local => "local",
            AcmeStore::Redis => "redis",
        }
    }
}

/// One certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificatePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Where its stapled OCSP response comes from.
    pub ocsp: OcspSource,
}

/// A certificate's `ocsp` key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OcspSource {
    /// From the responder named in the certificate (nginx's `ssl_stapling on`).
    #[default]
    Auto,
    /// No stapling.
    Off,
    /// A DER response in this file, kept fresh by another tool.
    File(PathBuf),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `[gzip]`.
#[derive(Clone, Debug, PartialEq)]
pub struct GzipSettings {
    pub enabled: bool,
    pub min_length: u64,
    pub level: u32,
    pub types: Vec<String>,
}

/// `[redis]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RedisSettings {
    pub url: String,
    pub on_error: RedisOnError,
}

/// What a `store = "redis"` zone does while Redis is unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisOnError {
    /// Fall back to the in-process limiter.
    Local,
    /// Admit every request.
    Allow,
}

/// `[zones.NAME]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneSettings {
    pub rate: Rate,
    pub max_clients: usize,
    pub store: ZoneStore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneStore {
    Local,
    Redis,
}

/// How an upstream picks a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    /// nginx's smooth weighted round robin.
    RoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConn,
    /// nginx's ip_hash: the client's /24 (IPv4) or whole address (IPv6).
    IpHash,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::IpHash => "ip_hash",
        }
    }
}

/// `[upstreams.NAME]`.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamSettings {
    pub balance: Balance,
    pub keepalive: usize,
    pub keepalive_requests: u32,
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    pub next_upstream_tries: u32,
    pub servers: Vec<ServerSettings>,
    pub health: Option<HealthSettings>,
    /// The protocol spoken to the servers.
    pub protocol: UpstreamProtocol,
    /// TLS to every server, when set.
    pub tls: Option<UpstreamTlsSettings>,
}

/// `protocol`: what the edge speaks to an upstream's servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http1,
    /// HTTP/2: over TLS with ALPN h2 (a server that does not select it is refused), or
    /// cleartext with prior knowledge.
    H2,
    /// TLS only: ALPN offers h2 and http/1.1, and the server's choice is used.
    Auto,
}

impl UpstreamProtocol {
    /// The word the config writes it with.
    pub fn name(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::Auto => "auto",
        }
    }
}

/// An upstream's `tls`.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamTlsSettings {
    /// The name sent as SNI and verified; the server's host name when unset.
    pub server_name: Option<String>,
    /// PEM roots to trust; the system's when unset.
    pub ca: Option<PathBuf>,
    /// Whether the server's certificate is verified at all.
    pub verify: bool,
    /// A client certificate chain and its key, for servers that require mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl UpstreamTlsSettings {
    /// The files it reads, to watch for changes.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.ca.iter().chain(&self.cert).chain(&self.key)
    }
}

/// One server of an upstream.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    /// "host:port" as written; a name stands for every address it resolves to (discovery.rs).
    pub addr: String,
    pub weight: u32,
    /// Failures within `fail_timeout` that take the server out; 0 never does.
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

/// Active health probing of an upstream's servers.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSettings {
    pub path: String,
    /// Probe with gRPC's `grpc.health.v1.Health/Check` for this service ("" is the server
    /// as a whole) instead of `GET path`.
    pub grpc_service: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub start_period: Duration,
}

/// `[[routes]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteSettings {
    /// Path prefix; the longest match wins.
    pub path: String,
    /// Exact host, `*.domain` wildcard, or any host.
    pub host: Option<String>,
    pub upstream: String,
    pub limit: Vec<LimitSettings>,
    pub limit_status: u16,
    /// Client networks admitted; empty admits everyone.
    pub allow: Vec<IpNet>,
    /// Pass websocket upgrades through.
    pub websocket: bool,
}

/// One zone's limit on a route (nginx's `limit_req`).
#[derive(Clone, Debug, PartialEq)]
pub struct LimitSettings {
    pub zone: String,
    pub burst: u32,
    pub nodelay: bool,
    pub dry_run: bool,
}

/// How large a request head may be (nginx's `large_client_header_buffers 4 8k`).
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Bytes of the request target; longer is 414.
    pub uri: usize,
    /// Bytes of the whole head; larger is 431.
    pub head: usize,
    /// Header fields; more is 431.
    pub fields: usize,
}
