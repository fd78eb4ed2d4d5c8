//! From file to [`Config`]: every mistake in one pass, each with file:line:col.

use super::file::*;
use super::model::*;
use crate::units::{parse_duration, parse_rate, parse_size};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// One problem found in a config file, located by line and column (both from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every error in a config file that could not be loaded.
#[derive(Clone, Debug, thiserror::Error)]
pub struct ConfigErrors {
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A config that passed validation, with what is worth a warning.
#[derive(Clone, Debug)]
pub struct Validated {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates config text. `file` names it in messages.
pub fn validate(file: &str, source: &str) -> Result<Validated, ConfigErrors> {
    let mut v = Validator {
        file,
        source,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let parsed = v.parse();
    let config = parsed.map(|f| v.config(f));
    match config {
        Some(config) if v.errors.is_empty() => Ok(Validated {
            config,
            warnings: v.warnings,
        }),
        _ => {
            v.errors.sort_by_key(|d| (d.line, d.column));
            Err(ConfigErrors { errors: v.errors })
        }
    }
}

struct Validator<'a> {
    file: &'a str,
    source: &'a str,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn at(&self, span: Range<usize>, message: String) -> Diagnostic {
        let offset = span.start.min(self.source.len());
        let before = &self.source[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.source[line_start..offset].chars().count() + 1;
        Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            message,
        }
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.at(span, message.into());
        self.errors.push(d);
    }

    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.at(span, message.into());
        self.warnings.push(d);
    }

    /// Deserializes the file, recording unknown keys (all of them) and the first type error.
    fn parse(&mut self) -> Option<FileConfig> {
        let mut unknown: Vec<Vec<String>> = Vec::new();
        let result = {
            let deserializer = toml::Deserializer::new(self.source);
            serde_ignored::deserialize(deserializer, |path| {
                unknown.push(path_segments(&path));
            })
        };
        if !unknown.is_empty() {
            let document = self.source.parse::<toml_edit::ImDocument<String>>().ok();
            for segments in unknown {
                let span = document
                    .as_ref()
                    .and_then(|d| key_span(d.as_item(), &segments))
                    .unwrap_or(0..0);
                let (name, parent) = segments
                    .split_last()
                    .map_or(("?", &[][..]), |(n, p)| (n.as_str(), p));
                let place = if parent.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in `{}`", parent.join("."))
                };
                self.error(span, format!("unknown key `{name}` {place}"));
            }
        }
        match result {
            Ok(file) => Some(file),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                // The parser leaves some messages empty (a lone carriage return, found by the
                // property tests): say at least what kind of problem it is.
                let message = match e.message().trim() {
                    "" => "invalid TOML syntax".to_string(),
                    m => m.to_string(),
                };
                self.error(span, message);
                None
            }
        }
    }

    fn config(&mut self, file: FileConfig) -> Config {
        let edge_file = file.edge.unwrap_or_default();
        let tls = file.tls.as_ref().map(|t| self.tls(t));
        let edge = self.edge(&edge_file, tls.is_some());
        let gzip = self.gzip(file.gzip.unwrap_or_default());
        let redis = self.redis(file.redis.unwrap_or_default());
        let mut zones = BTreeMap::new();
        for (name, zone) in &file.zones {
            if let Some(z) = self.zone(name, zone) {
                zones.insert(name.clone(), z);
            }
        }
        let mut upstreams = BTreeMap::new();
        for (name, upstream) in &file.upstreams {
            self.check_name(name, upstream.span(), "upstream");
            if let Some(u) = self.upstream(name, upstream) {
                upstreams.insert(name.clone(), u);
            }
        }
        let mut routes = Vec::new();
        let mut seen = HashSet::new();
        for route in &file.routes {
            if let Some(r) = self.route(route, &file.upstreams, &file.zones, &mut seen) {
                routes.push(r);
            }
        }
        let used: HashSet<&str> = routes.iter().map(|r| r.upstream.as_str()).collect();
        for (name, upstream) in &file.upstreams {
            if !used.contains(name.as_str()) {
                self.warn(
                    upstream.span(),
                    format!("upstream `{name}` is not used by any route"),
                );
            }
        }
        Config {
            edge,
            tls,
            gzip,
            redis,
            zones,
            upstreams,
            routes,
        }
    }

    fn check_name(&mut self, name: &str, span: Range<usize>, what: &str) {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            self.error(
                span,
                format!("{what} name `{name}` must be letters, digits, `_` or `-`"),
            );
        }
    }

    fn edge(&mut self, f: &EdgeFile, has_tls: bool) -> EdgeSettings {
        let http_listen = match &f.http_listen {
            Some(list) => self.listeners(list),
            None => vec![parse_default(DEFAULT_HTTP_LISTEN)],
        };
        let https_listen = match &f.https_listen {
            Some(list) => {
                let addrs = self.listeners(list.get_ref());
                if !addrs.is_empty() && !has_tls {
                    self.error(
                        list.span(),
                        "`https_listen` needs a `[tls]` section with certificates",
                    );
                }
                addrs
            }
            None if has_tls => vec![parse_default(DEFAULT_HTTPS_LISTEN)],
            None => Vec::new(),
        };
        let mut all: Vec<SocketAddr> = http_listen.iter().chain(&https_listen).copied().collect();
        all.sort();
        if all.windows(2).any(|w| w[0] == w[1]) {
            let span = f.https_listen.as_ref().map_or(0..0, |s| s.span());
            self.error(span, "the same address is listed twice among the listeners");
        }
        let admin_listen = match &f.admin_listen {
            Some(text) => match text.get_ref().parse::<SocketAddr>() {
                Ok(addr) => {
                    if !addr.ip().is_loopback() && f.admin_allow_public != Some(true) {
                        self.error(
                            text.span(),
                            format!(
                                "admin_listen `{addr}` is not a loopback address; the admin \
                                 endpoints (reload, status) must not be public unless \
                                 `admin_allow_public = true` says so"
                            ),
                        );
                    }
                    if all.contains(&addr) {
                        self.error(
                            text.span(),
                            format!("admin_listen `{addr}` is also a client listener"),
                        );
                    }
                    addr
                }
                Err(_) => {
                    self.error(
                        text.span(),
                        format!(
                            "`{}` is not an address like \"127.0.0.1:9180\"",
                            text.get_ref()
                        ),
                    );
                    parse_default(DEFAULT_ADMIN_LISTEN)
                }
            },
            None => parse_default(DEFAULT_ADMIN_LISTEN),
        };
        let threads = match &f.threads {
            Some(n) if *n.get_ref() < 0 || *n.get_ref() > 1024 => {
                self.error(
                    n.span(),
                    "threads must be between 0 (one per core) and 1024",
                );
                1
            }
            Some(n) if *n.get_ref() > 0 => *n.get_ref() as usize,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let trusted_proxies = f
            .trusted_proxies
            .iter()
            .flatten()
            .filter_map(|t| self.cidr(t))
            .collect();
        let access_log = match f.access_log.as_ref().map(|t| (t, t.get_ref().as_str())) {
            None | Some((_, "stdout")) => AccessLog::Stdout,
            Some((_, "off")) => AccessLog::Off,
            Some((t, "")) => {
                self.error(t.span(), "access_log is \"stdout\", \"off\" or a file path");
                AccessLog::Off
            }
            Some((_, path)) => AccessLog::File(PathBuf::from(path)),
        };
        let resolver = f
            .resolver
            .iter()
            .flatten()
            .filter_map(|t| {
                let text = t.get_ref();
                let parsed = text
                    .parse::<SocketAddr>()
                    .ok()
                    .or_else(|| text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
                if parsed.is_none() {
                    self.error(
                        t.span(),
                        format!("`{text}` is not a DNS server address like \"127.0.0.11\" or \"10.0.0.2:53\""),
                    );
                }
                parsed
            })
            .collect();
        let dns_min_ttl = self.duration_or(&f.dns_min_ttl, DEFAULT_DNS_MIN_TTL);
        if dns_min_ttl.is_zero() {
            if let Some(t) = &f.dns_min_ttl {
                self.error(t.span(), "dns_min_ttl must be at least 1s");
            }
        }
        let client_max_body_size = match &f.client_max_body_size {
            Some(t) => self.size(t),
            None => DEFAULT_CLIENT_MAX_BODY_SIZE,
        };
        let client_body_buffer_size = match &f.client_body_buffer_size {
            Some(t) => self.size(t),
            None => DEFAULT_CLIENT_BODY_BUFFER_SIZE,
        };
        EdgeSettings {
            http_listen,
            https_listen,
            admin_listen,
            threads,
            trusted_proxies,
            redirect_http_to_https: f.redirect_http_to_https.unwrap_or(true),
            access_log,
            keepalive_timeout: self.duration_or(&f.keepalive_timeout, DEFAULT_KEEPALIVE_TIMEOUT),
            keepalive_requests: self.int_or(
                &f.keepalive_requests,
                DEFAULT_KEEPALIVE_REQUESTS,
                1,
                u32::MAX as i64,
                "keepalive_requests",
            ),
            client_header_timeout: self
                .duration_or(&f.client_header_timeout, DEFAULT_CLIENT_HEADER_TIMEOUT),
            client_max_body_size,
            client_body_buffer_size,
            max_connections_per_client: self.int_or(
                &f.max_connections_per_client,
                DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
                0,
                u32::MAX as i64,
                "max_connections_per_client",
            ),
            max_uri_size: f
                .max_uri_size
                .as_ref()
                .map_or(DEFAULT_MAX_URI_SIZE, |t| self.size(t)),
            max_header_size: f
                .max_header_size
                .as_ref()
                .map_or(DEFAULT_MAX_HEADER_SIZE, |t| self.size(t)),
            max_headers: self.int_or(&f.max_headers, DEFAULT_MAX_HEADERS, 1, 256, "max_headers"),
            resolver,
            dns_min_ttl,
        }
    }

    fn listeners(&mut self, list: &[Spanned<String>]) -> Vec<SocketAddr> {
        list.iter()
            .filter_map(|t| match t.get_ref().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.error(
                        t.span(),
                        format!(
                            "`{}` is not a listen address like \"0.0.0.0:80\" or \"[::]:443\"",
                            t.get_ref()
                        ),
                    );
                    None
                }
            })
            .collect()
    }

    /// A certificate's `ocsp`: "auto", "off", or a file holding a DER OCSP response.
    fn ocsp(&mut self, t: &Spanned<String>) -> OcspSource {
        match t.get_ref().as_str() {
            "auto" => OcspSource::Auto,
            "off" => OcspSource::Off,
            path => {
                let problem = match std::fs::read(path) {
                    Err(e) => Some(format!("cannot read the OCSP response file `{path}`: {e}")),
                    Ok(bytes) => crate::der::is_successful_ocsp_response(&bytes)
                        .err()
                        .map(|e| format!("`{path}` is not a usable OCSP response: {e}")),
                };
                if let Some(problem) = problem {
                    self.error(
                        t.span(),
                        format!("{problem} (ocsp is \"auto\", \"off\" or a file)"),
                    );
                }
                OcspSource::File(PathBuf::from(path))
            }
        }
    }

    fn tls(&mut self, t: &Spanned<TlsFile>) -> TlsSettings {
        let f = t.get_ref();
        if f.certificates.is_empty() {
            self.error(t.span(), "[tls] needs at least one certificate");
        }
        let mut certificates = Vec::new();
        for c in &f.certificates {
            let (cert, key) = (&c.get_ref().cert, &c.get_ref().key);
            let ocsp = c
                .get_ref()
                .ocsp
                .as_ref()
                .map_or(OcspSource::Auto, |o| self.ocsp(o));
            match (cert, key) {
                (Some(cert), Some(key)) => certificates.push(CertificatePaths {
                    cert: PathBuf::from(cert.get_ref()),
                    key: PathBuf::from(key.get_ref()),
                    ocsp,
                }),
                _ => self.error(c.span(), "a certificate needs both `cert` and `key`"),
            }
        }
        let mut protocols = Vec::new();
        for p in f.protocols.iter().flatten() {
            match p.get_ref().as_str() {
                "TLSv1.2" => protocols.push(TlsVersion::Tls12),
                "TLSv1.3" => protocols.push(TlsVersion::Tls13),
                "TLSv1" | "TLSv1.0" | "TLSv1.1" | "SSLv3" | "SSLv2" => self.error(
                    p.span(),
                    format!(
                        "`{}` is insecure and never offered; use TLSv1.2 and TLSv1.3",
                        p.get_ref()
                    ),
                ),
                other => self.error(
                    p.span(),
                    format!("unknown protocol `{other}` (use \"TLSv1.2\", \"TLSv1.3\")"),
                ),
            }
        }
        if f.protocols.is_none() {
            protocols = vec![TlsVersion::Tls12, TlsVersion::Tls13];
        } else if protocols.is_empty() && f.protocols.as_ref().is_some_and(|p| p.is_empty()) {
            self.error(t.span(), "`protocols` must list TLSv1.2, TLSv1.3 or both");
        }
        let ciphers: Vec<String> = f
            .ciphers
            .iter()
            .flatten()
            .map(|c| c.get_ref().clone())
            .collect();
        for c in f.ciphers.iter().flatten() {
            for note in crate::tls::cipher_policy(std::slice::from_ref(c.get_ref())).1 {
                self.warn(c.span(), note);
            }
        }
        if !ciphers.is_empty()
            && crate::tls::cipher_policy(&ciphers)
                .0
                .is_some_and(|c| c.is_empty())
            && protocols.contains(&TlsVersion::Tls12)
        {
            let span = f
                .ciphers
                .as_ref()
                .and_then(|c| c.first())
                .map_or(0..0, |c| c.span());
            self.error(span, "none of `ciphers` can be offered for TLS 1.2 (rustls offers ECDHE with AES-GCM or ChaCha20-Poly1305)");
        }
        let hsts = match &f.hsts {
            None => Some(DEFAULT_HSTS.to_string()),
            Some(h) if h.get_ref().is_empty() => None,
            Some(h) => {
                if !h.get_ref().starts_with("max-age=") {
                    self.error(
                        h.span(),
                        "hsts must start with `max-age=` (or be \"\" to turn it off)",
                    );
                }
                Some(h.get_ref().clone())
            }
        };
        TlsSettings {
            certificates,
            protocols,
            ciphers,
            hsts,
            ocsp_refresh: {
                let refresh = self.duration_or(&f.ocsp_refresh, DEFAULT_OCSP_REFRESH);
                if refresh < Duration::from_secs(1) {
                    if let Some(t) = &f.ocsp_refresh {
                        self.error(t.span(), "ocsp_refresh must be at least 1s");
                    }
                }
                refresh
            },
        }
    }

    fn gzip(&mut self, f: GzipFile) -> GzipSettings {
        GzipSettings {
            enabled: f.enabled.unwrap_or(true),
            min_length: self.int_or(
                &f.min_length,
                DEFAULT_GZIP_MIN_LENGTH as u32,
                0,
                u32::MAX as i64,
                "min_length",
            ) as u64,
            level: self.int_or(&f.level, DEFAULT_GZIP_LEVEL, 1, 9, "level"),
            types: match f.types {
                Some(types) => types.into_iter().map(|t| t.into_inner()).collect(),
                None => DEFAULT_GZIP_TYPES.iter().map(|t| t.to_string()).collect(),
            },
        }
    }

    fn redis(&mut self, f: RedisFile) -> RedisSettings {
        let url = match &f.url {
            Some(u) => {
                let text = u.get_ref();
                if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
                    self.error(u.span(), format!("`{text}` is not a redis:// URL"));
                }
                text.clone()
            }
            None => DEFAULT_REDIS_URL.to_string(),
        };
        let on_error = match f.on_error.as_ref().map(|t| (t, t.get_ref().as_str())) {
            None | Some((_, "local")) => RedisOnError::Local,
            Some((_, "allow")) => RedisOnError::Allow,
            Some((t, other)) => {
                self.error(
                    t.span(),
                    format!("on_error is \"local\" or \"allow\", not `{other}`"),
                );
                RedisOnError::Local
            }
        };
        RedisSettings { url, on_error }
    }

    fn zone(&mut self, name: &str, z: &Spanned<ZoneFile>) -> Option<ZoneSettings> {
        self.check_name(name, z.span(), "zone");
        let f = z.get_ref();
        let rate = match &f.rate {
            Some(r) => match parse_rate(r.get_ref()) {
                Ok(rate) => Some(rate),
                Err(e) => {
                    self.error(r.span(), e.to_string());
                    None
                }
            },
            None => {
                self.error(
                    z.span(),
                    format!("zone `{}` needs a `rate`, like \"10r/s\"", name),
                );
                None
            }
        };
        let max_clients = self.int_or(
            &f.max_clients,
            DEFAULT_ZONE_MAX_CLIENTS as u32,
            1,
            100_000_000,
            "max_clients",
        ) as usize;
        let store = match f.store.as_ref().map(|t| (t, t.get_ref().as_str())) {
            None | Some((_, "local")) => ZoneStore::Local,
            Some((_, "redis")) => ZoneStore::Redis,
            Some((t, other)) => {
                self.error(
                    t.span(),
                    format!("store is \"local\" or \"redis\", not `{other}`"),
                );
                ZoneStore::Local
            }
        };
        Some(ZoneSettings {
            rate: rate?,
            max_clients,
            store,
        })
    }

    fn upstream(&mut self, name: &str, u: &Spanned<UpstreamFile>) -> Option<UpstreamSettings> {
        let f = u.get_ref();
        let balance = match f.balance.as_ref().map(|t| (t, t.get_ref().as_str())) {
            None | Some((_, "round_robin")) => Balance::RoundRobin,
            Some((_, "least_conn")) => Balance::LeastConn,
            Some((_, "ip_hash")) => Balance::IpHash,
            Some((t, other)) => {
                self.error(
                    t.span(),
                    format!(
                        "balance is \"round_robin\", \"least_conn\" or \"ip_hash\", not `{other}`"
                    ),
                );
                Balance::RoundRobin
            }
        };
        let mut servers = Vec::new();
        match &f.servers {
            Some(list) if !list.get_ref().is_empty() => {
                let mut seen = HashSet::new();
                for s in list.get_ref() {
                    if let Some(server) = self.server(s) {
                        if !seen.insert(server.addr.clone()) {
                            self.error(
                                s.span(),
                                format!(
                                    "server `{}` is listed twice in upstream `{}`",
                                    server.addr, name
                                ),
                            );
                        }
                        servers.push(server);
                    }
                }
            }
            Some(list) => self.error(list.span(), format!("upstream `{}` has no servers", name)),
            None => self.error(u.span(), format!("upstream `{}` needs `servers`", name)),
        }
        let health = f.health.as_ref().map(|h| self.health(h));
        Some(UpstreamSettings {
            balance,
            keepalive: self.int_or(
                &f.keepalive,
                DEFAULT_UPSTREAM_KEEPALIVE as u32,
                0,
                100_000,
                "keepalive",
            ) as usize,
            keepalive_requests: self.int_or(
                &f.keepalive_requests,
                DEFAULT_UPSTREAM_KEEPALIVE_REQUESTS,
                1,
                u32::MAX as i64,
                "keepalive_requests",
            ),
            keepalive_timeout: self
                .duration_or(&f.keepalive_timeout, DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT),
            connect_timeout: self.positive_duration_or(&f.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
            read_timeout: self.positive_duration_or(&f.read_timeout, DEFAULT_READ_TIMEOUT),
            send_timeout: self.positive_duration_or(&f.send_timeout, DEFAULT_SEND_TIMEOUT),
            next_upstream_tries: self.int_or(
                &f.next_upstream_tries,
                DEFAULT_NEXT_UPSTREAM_TRIES,
                0,
                1000,
                "next_upstream_tries",
            ),
            servers,
            health,
        })
    }

    fn server(&mut self, s: &Spanned<ServerFile>) -> Option<ServerSettings> {
        let f = s.get_ref();
        let Some(addr) = &f.addr else {
            self.error(
                s.span(),
                "a server needs an `addr` like \"content-manager:8000\"",
            );
            return None;
        };
        if let Err(e) = check_server_addr(addr.get_ref()) {
            self.error(addr.span(), e);
        }
        let weight = self.int_or(&f.weight, DEFAULT_WEIGHT, 1, 1_000_000, "weight");
        Some(ServerSettings {
            addr: addr.get_ref().clone(),
            weight,
            max_fails: self.int_or(&f.max_fails, DEFAULT_MAX_FAILS, 0, 1_000_000, "max_fails"),
            fail_timeout: self.duration_or(&f.fail_timeout, DEFAULT_FAIL_TIMEOUT),
        })
    }

    fn health(&mut self, h: &Spanned<HealthFile>) -> HealthSettings {
        let f = h.get_ref();
        let path = match &f.path {
            Some(p) if !p.get_ref().starts_with('/') => {
                self.error(p.span(), "a health `path` starts with `/`");
                DEFAULT_HEALTH_PATH.to_string()
            }
            Some(p) => p.get_ref().clone(),
            None => DEFAULT_HEALTH_PATH.to_string(),
        };
        HealthSettings {
            path,
            interval: self.positive_duration_or(&f.interval, DEFAULT_HEALTH_INTERVAL),
            timeout: self.positive_duration_or(&f.timeout, DEFAULT_HEALTH_TIMEOUT),
            rise: self.int_or(&f.rise, DEFAULT_HEALTH_RISE, 1, 1000, "rise"),
            fall: self.int_or(&f.fall, DEFAULT_HEALTH_FALL, 1, 1000, "fall"),
            start_period: self.duration_or(&f.start_period, DEFAULT_HEALTH_START_PERIOD),
        }
    }

    fn route(
        &mut self,
        r: &Spanned<RouteFile>,
        upstreams: &BTreeMap<String, Spanned<UpstreamFile>>,
        zones: &BTreeMap<String, Spanned<ZoneFile>>,
        seen: &mut HashSet<(Option<String>, String)>,
    ) -> Option<RouteSettings> {
        let f = r.get_ref();
        let path = match &f.path {
            Some(p) if !p.get_ref().starts_with('/') => {
                self.error(
                    p.span(),
                    format!("route path `{}` must start with `/`", p.get_ref()),
                );
                None
            }
            Some(p) => Some(p),
            None => {
                self.error(r.span(), "a route needs a `path`");
                None
            }
        };
        let host = f.host.as_ref().and_then(|h| {
            let text = h.get_ref().to_ascii_lowercase();
            let bare = text.strip_prefix("*.").unwrap_or(&text);
            let valid = !bare.is_empty()
                && !bare.contains('*')
                && bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if valid {
                Some(text)
            } else {
                self.error(
                    h.span(),
                    format!(
                        "host `{}` is not a host name or a `*.domain` wildcard",
                        h.get_ref()
                    ),
                );
                None
            }
        });
        if let Some(p) = path {
            if !seen.insert((host.clone(), p.get_ref().clone())) {
                self.error(
                    p.span(),
                    format!(
                        "duplicate route: path `{}` is already routed{}",
                        p.get_ref(),
                        host.as_ref()
                            .map_or(String::new(), |h| format!(" for host `{h}`"))
                    ),
                );
            }
        }
        let upstream = match &f.upstream {
            Some(u) if upstreams.contains_key(u.get_ref().as_str()) => Some(u.get_ref().clone()),
            Some(u) => {
                let known: Vec<&str> = upstreams.keys().map(|k| k.as_str()).collect();
                self.error(
                    u.span(),
                    format!(
                        "unknown upstream `{}` (defined: {})",
                        u.get_ref(),
                        known.join(", ")
                    ),
                );
                None
            }
            None => {
                self.error(r.span(), "a route needs an `upstream`");
                None
            }
        };
        let mut limits = Vec::new();
        for l in &f.limit {
            let lf = l.get_ref();
            let zone = match &lf.zone {
                Some(z) if zones.contains_key(z.get_ref().as_str()) => z.get_ref().clone(),
                Some(z) => {
                    self.error(
                        z.span(),
                        format!(
                            "unknown zone `{}`; define it as [zones.{}]",
                            z.get_ref(),
                            z.get_ref()
                        ),
                    );
                    continue;
                }
                None => {
                    self.error(l.span(), "a limit needs a `zone`");
                    continue;
                }
            };
            limits.push(LimitSettings {
                zone,
                burst: self.int_or(&lf.burst, 0, 0, 1_000_000, "burst"),
                nodelay: lf.nodelay.unwrap_or(false),
                dry_run: lf.dry_run.unwrap_or(false),
            });
        }
        let limit_status = self.int_or(
            &f.limit_status,
            DEFAULT_LIMIT_STATUS as u32,
            400,
            599,
            "limit_status",
        ) as u16;
        let allow = f
            .allow
            .iter()
            .flatten()
            .filter_map(|t| self.cidr(t))
            .collect();
        Some(RouteSettings {
            path: path?.get_ref().clone(),
            host,
            upstream: upstream?,
            limits,
            limit_status,
            allow,
            websocket: f.websocket.unwrap_or(false),
        })
    }

    fn cidr(&mut self, t: &Spanned<String>) -> Option<IpNet> {
        let text = t.get_ref().trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Some(net.trunc());
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(IpNet::from(ip));
        }
        self.error(
            t.span(),
            format!("`{text}` is not an address or CIDR like \"10.0.0.0/8\""),
        );
        None
    }

    fn duration_or(&mut self, t: &Option<Spanned<String>>, default: Duration) -> Duration {
        match t {
            Some(t) => match parse_duration(t.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.error(t.span(), e.to_string());
                    default
                }
            },
            None => default,
        }
    }

    fn positive_duration_or(&mut self, t: &Option<Spanned<String>>, default: Duration) -> Duration {
        let d = self.duration_or(t, default);
        if d.is_zero() {
            if let Some(t) = t {
                self.error(t.span(), "this duration must be longer than 0");
            }
            return default;
        }
        d
    }

    fn size(&mut self, t: &Spanned<String>) -> u64 {
        parse_size(t.get_ref()).unwrap_or_else(|e| {
            self.error(t.span(), e.to_string());
            0
        })
    }

    fn int_or(
        &mut self,
        t: &Option<Spanned<i64>>,
        default: u32,
        min: i64,
        max: i64,
        key: &str,
    ) -> u32 {
        match t {
            Some(n) if (min..=max).contains(n.get_ref()) => {
                u32::try_from(*n.get_ref()).unwrap_or(u32::MAX)
            }
            Some(n) => {
                self.error(
                    n.span(),
                    format!("{key} = {} is out of range ({min} to {max})", n.get_ref()),
                );
                default
            }
            None => default,
        }
    }
}

fn parse_default(text: &str) -> SocketAddr {
    text.parse().expect("built-in default addresses are valid")
}

/// Checks "host:port" (host a name, IPv4 or bracketed IPv6; port 1-65535).
pub fn check_server_addr(addr: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!("server addr `{addr}` {why}; expected \"host:port\" like \"content-manager:8000\"")
    };
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("has no valid port")),
    }
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if valid_host {
        Ok(())
    } else {
        Err(bad("is not a valid host name"))
    }
}

fn path_segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path;
    let mut out = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_segments(parent),
    };
    match path {
        Path::Seq { index, .. } => out.push(index.to_string()),
        Path::Map { key, .. } => out.push(key.clone()),
        _ => {}
    }
    // toml's Spanned travels through a private map key; it is not a part of the user's path.
    out.retain(|s| !s.starts_with("$__"));
    out
}

/// Finds where the key at `segments` is written, walking tables, arrays and inline tables.
fn key_span(item: &toml_edit::Item, segments: &[String]) -> Option<Range<usize>> {
    let (first, rest) = segments.split_first()?;
    let table_like = item.as_table_like();
    if let Some(table) = table_like {
        let (key, child) = table.get_key_value(first)?;
        if rest.is_empty() {
            return key.span().or_else(|| child.span());
        }
        return key_span(child, rest);
    }
    let index: usize = first.parse().ok()?;
    let child = match item {
        toml_edit::Item::ArrayOfTables(a) => toml_edit::Item::Table(a.get(index)?.clone()),
        toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
            toml_edit::Item::Value(a.get(index)?.clone())
        }
        _ => return None,
    };
    if rest.is_empty() {
        return child.span();
    }
    key_span(&child, rest)
}
