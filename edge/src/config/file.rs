//! The config file as written: serde types that mirror `upstreams.toml` key for key, with spans.
//!
//! Every leaf a user can get wrong is a [`Spanned`] so that validation can point at it, and
//! everything is optional here: defaults and required keys are the validator's business, so that
//! one run reports every mistake instead of the first. The meaning of each key is documented in
//! `docs/configuration.md` and in the annotated `upstreams.toml`.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// A string value with its place in the file.
pub type Text = Spanned<String>;
/// An integer value with its place in the file (signed, so a negative one is a clear error).
pub type Int = Spanned<i64>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    pub edge: Option<EdgeFile>,
    pub tls: Option<Spanned<TlsFile>>,
    pub gzip: Option<GzipFile>,
    pub redis: Option<RedisFile>,
    #[serde(default)]
    pub zones: BTreeMap<String, Spanned<ZoneFile>>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<UpstreamFile>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteFile>>,
}

/// `[edge]`: listeners and client-side behaviour.
#[derive(Debug, Default, Deserialize)]
pub struct EdgeFile {
    pub http_listen: Option<Vec<Text>>,
    pub https_listen: Option<Spanned<Vec<Text>>>,
    pub admin_listen: Option<Text>,
    pub admin_allow_public: Option<bool>,
    pub threads: Option<Int>,
    pub trusted_proxies: Option<Vec<Text>>,
    pub redirect_http_to_https: Option<bool>,
    pub access_log: Option<Text>,
    pub keepalive_timeout: Option<Text>,
    pub keepalive_requests: Option<Int>,
    pub client_header_timeout: Option<Text>,
    pub client_body_timeout: Option<Text>,
    pub send_timeout: Option<Text>,
    pub http2_max_concurrent_streams: Option<Int>,
    pub http2_cleartext: Option<bool>,
    pub http3: Option<bool>,
    pub http3_early_data: Option<bool>,
    pub client_max_body_size: Option<Text>,
    pub client_body_buffer_size: Option<Text>,
    pub max_connections_per_client: Option<Int>,
    pub max_uri_size: Option<Text>,
    pub max_header_size: Option<Text>,
    pub max_headers: Option<Int>,
    pub resolver: Option<Vec<Text>>,
    pub dns_min_ttl: Option<Text>,
}

/// `[tls]`: certificates and protocol policy.
#[derive(Debug, Default, Deserialize)]
pub struct TlsFile {
    #[serde(default)]
    pub certificates: Vec<Spanned<CertificateFile>>,
    pub protocols: Option<Vec<Text>>,
    pub ciphers: Option<Vec<Text>>,
    pub hsts: Option<Text>,
    pub ocsp_refresh: Option<Text>,
    pub acme: Option<Spanned<AcmeFile>>,
}

/// `[tls.acme]`: certificates obtained and renewed by the edge (RFC 8555).
#[derive(Debug, Default, Deserialize)]
pub struct AcmeFile {
    pub directory: Option<Text>,
    pub email: Option<Text>,
    pub domains: Option<Vec<Text>>,
    pub challenge: Option<Text>,
    pub storage: Option<Text>,
    pub store: Option<Text>,
    pub ca: Option<Text>,
    pub eab: Option<Spanned<EabFile>>,
}

/// `eab = { kid, hmac_key }`: external account binding.
#[derive(Debug, Default, Deserialize)]
pub struct EabFile {
    pub kid: Option<Text>,
    pub hmac_key: Option<Text>,
}

/// One `{ cert, key }` pair of PEM files.
#[derive(Debug, Default, Deserialize)]
pub struct CertificateFile {
    pub cert: Option<Text>,
    pub key: Option<Text>,
    pub ocsp: Option<Text>,
}

/// `[gzip]`: response compression.
#[derive(Debug, Default, Deserialize)]
pub struct GzipFile {
    pub enabled: Option<bool>,
    pub min_length: Option<Int>,
    pub level: Option<Int>,
    pub types: Option<Vec<Text>>,
}

/// `[redis]`: the store shared by edge replicas.
#[derive(Debug, Default, Deserialize)]
pub struct RedisFile {
    pub url: Option<Text>,
    pub on_error: Option<Text>,
}

/// `[zones.NAME]`: one rate-limit zone.
#[derive(Debug, Default, Deserialize)]
pub struct ZoneFile {
    pub rate: Option<Text>,
    pub max_clients: Option<Int>,
    pub store: Option<Text>,
}

/// `[upstreams.NAME]`: a pool of servers and how to use them.
#[derive(Debug, Default, Deserialize)]
pub struct UpstreamFile {
    pub balance: Option<Text>,
    pub keepalive: Option<Int>,
    pub keepalive_requests: Option<Int>,
    pub keepalive_timeout: Option<Text>,
    pub connect_timeout: Option<Text>,
    pub read_timeout: Option<Text>,
    pub send_timeout: Option<Text>,
    pub next_upstream_tries: Option<Int>,
    pub servers: Option<Vec<Spanned<ServerFile>>>,
    pub health: Option<Spanned<HealthFile>>,
    pub protocol: Option<Text>,
    pub tls: Option<Spanned<UpstreamTlsFile>>,
}

/// An upstream's `tls = { ... }`.
#[derive(Debug, Default, Deserialize)]
pub struct UpstreamTlsFile {
    pub server_name: Option<Text>,
    pub ca: Option<Text>,
    pub verify: Option<bool>,
    pub cert: Option<Text>,
    pub key: Option<Text>,
}

/// One server of an upstream.
#[derive(Debug, Default, Deserialize)]
pub struct ServerFile {
    pub addr: Option<Text>,
    pub weight: Option<Int>,
    pub max_fails: Option<Int>,
    pub fail_timeout: Option<Text>,
}

/// An upstream's active health probe.
#[derive(Debug, Default, Deserialize)]
pub struct HealthFile {
    pub path: Option<Text>,
    pub grpc_service: Option<Text>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub rise: Option<Int>,
    pub fall: Option<Int>,
    pub start_period: Option<Text>,
}

/// `[[routes]]`: where a request goes.
#[derive(Debug, Default, Deserialize)]
pub struct RouteFile {
    pub path: Option<Text>,
    pub host: Option<Text>,
    pub upstream: Option<Text>,
    #[serde(default)]
    pub limit: Vec<Spanned<LimitFile>>,
    pub limit_status: Option<Int>,
    pub allow: Option<Vec<Text>>,
    pub websocket: Option<Spanned<bool>>,
}

/// One rate-limit zone applied to a route.
#[derive(Debug, Default, Deserialize)]
pub struct LimitFile {
    pub zone: Option<Text>,
    pub burst: Option<Int>,
    pub nodelay: Option<bool>,
    pub dry_run: Option<bool>,
}
