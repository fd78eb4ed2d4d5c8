//! `[edge]`, `[gzip]` and `[redis]`: listeners, limits, timeouts, logs, DNS.

use super::{parse_default, Validator};
use crate::config::file::*;
use crate::config::model::*;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn edge(&mut self, f: &EdgeFile, has_tls: bool) -> EdgeSettings {
        let (http_listen, https_listen, admin_listen) = self.listen_addresses(f, has_tls);
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
        let trusted_proxies = self.cidrs(&f.trusted_proxies);
        let access_log = match f.access_log.as_ref().map(|t| (t, t.get_ref().as_str())) {
            None | Some((_, "stdout")) => AccessLog::Stdout,
            Some((_, "off")) => AccessLog::Off,
            Some((t, "")) => {
                self.error(t.span(), "access_log is \"stdout\", \"off\" or a file path");
                AccessLog::Off
            }
            Some((_, path)) => AccessLog::File(PathBuf::from(path)),
        };
        let resolver = self.resolver(f);
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
        // On by default wherever there is a TLS listener to stand beside.
        let http3 = f.http3.unwrap_or(true) && !https_listen.is_empty();
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
            client_body_timeout: self
                .positive_duration_or(&f.client_body_timeout, DEFAULT_CLIENT_BODY_TIMEOUT),
            send_timeout: self.positive_duration_or(&f.send_timeout, DEFAULT_CLIENT_SEND_TIMEOUT),
            http2_max_concurrent_streams: self.int_or(
                &f.http2_max_concurrent_streams,
                DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
                1,
                65_535,
                "http2_max_concurrent_streams",
            ),
            http2_cleartext: f.http2_cleartext.unwrap_or(false),
            http3,
            http3_early_data: f.http3_early_data.unwrap_or(false),
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

    /// The client listeners (http, https) and the admin one, each address once.
    fn listen_addresses(
        &mut self,
        f: &EdgeFile,
        has_tls: bool,
    ) -> (Vec<SocketAddr>, Vec<SocketAddr>, SocketAddr) {
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
        // Port 0 (the kernel picks a free port, see `listening.json`) never collides.
        let mut all: Vec<SocketAddr> = http_listen
            .iter()
            .chain(&https_listen)
            .filter(|a| a.port() != 0)
            .copied()
            .collect();
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
        (http_listen, https_listen, admin_listen)
    }

    /// `resolver`: DNS servers, port 53 unless given.
    fn resolver(&mut self, f: &EdgeFile) -> Vec<SocketAddr> {
        f
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
            .collect()
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

    pub(super) fn gzip(&mut self, f: GzipFile) -> GzipSettings {
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

    pub(super) fn redis(&mut self, f: RedisFile) -> RedisSettings {
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
        let on_error = self.choice(
            "on_error",
            &f.on_error,
            &[
                ("local", RedisOnError::Local),
                ("allow", RedisOnError::Allow),
            ],
        );
        RedisSettings { url, on_error }
    }
}
