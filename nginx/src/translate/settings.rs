//! The edge-wide settings (`[edge]`, `[gzip]`) and what a level passes down to its locations.

use super::super::emit::{string, Value};
use super::super::parse::Directive;
use super::super::Kind;
use super::*;

impl Translator<'_> {
    /// Settings the edge has once for every listener; carried from the http level only.
    pub(super) fn global(&mut self, d: &Directive) -> bool {
        let at = Some(d.at.clone());
        let first = d.args.first().map(String::as_str).unwrap_or("");
        match d.name.as_str() {
            "keepalive_timeout" => {
                if let Some(v) = self.duration(d, first) {
                    self.edge.set("keepalive_timeout", Value::Line(v), at);
                }
                if d.args.len() > 1 {
                    self.note(
                        d,
                        Kind::Differs,
                        false,
                        "the edge sends no Keep-Alive: timeout= header (the second value)",
                    );
                }
            }
            name @ ("client_header_timeout" | "client_body_timeout" | "send_timeout") => {
                let key = match name {
                    "client_body_timeout" => "client_body_timeout",
                    "send_timeout" => "send_timeout",
                    _ => "client_header_timeout",
                };
                if let Some(v) = self.duration(d, first) {
                    self.edge.set(key, Value::Line(v), at);
                }
            }
            "http2_max_concurrent_streams" => {
                if let Some(n) = self.number(d, first) {
                    self.edge.set(
                        "http2_max_concurrent_streams",
                        Value::Line(n.to_string()),
                        at,
                    );
                }
            }
            "keepalive_requests" => {
                if let Some(n) = self.number(d, first) {
                    self.edge
                        .set("keepalive_requests", Value::Line(n.to_string()), at);
                }
            }
            "client_max_body_size" if first == "0" => self.note(
                d,
                Kind::NoEquivalent,
                true,
                "nginx's 0 turns the check off; the edge always has a limit (set a large one)",
            ),
            "client_max_body_size" | "client_body_buffer_size" => {
                if edge_syntax::units::parse_size(first).is_ok() {
                    let key = if d.name == "client_max_body_size" {
                        "client_max_body_size"
                    } else {
                        "client_body_buffer_size"
                    };
                    self.edge.set(key, Value::Line(string(first)), at);
                } else {
                    self.note(d, Kind::NoEquivalent, true, "not a size");
                }
            }
            "large_client_header_buffers" => {
                let count = d.args.first().and_then(|n| n.parse::<u64>().ok());
                let size = d
                    .args
                    .get(1)
                    .and_then(|s| edge_syntax::units::parse_size(s).ok());
                if let (Some(count), Some(size)) = (count, size) {
                    self.edge
                        .set("max_uri_size", Value::Line(string(&d.args[1])), at.clone());
                    self.edge.set(
                        "max_header_size",
                        Value::Line(string(&format!("{}k", count * size / 1024))),
                        at,
                    );
                    self.note(d, Kind::Differs, false, "the edge bounds the request target by one buffer (414) and the whole head by all of them (431), not each header line by one buffer");
                } else {
                    self.note(d, Kind::NoEquivalent, true, "expected a count and a size");
                }
            }
            _ => return self.logs_and_addresses(d) || self.gzip_setting(d),
        }
        true
    }

    /// `access_log`, `resolver` and the real-IP directives (edge-wide).
    fn logs_and_addresses(&mut self, d: &Directive) -> bool {
        let at = Some(d.at.clone());
        let first = d.args.first().map(String::as_str).unwrap_or("");
        match d.name.as_str() {
            "access_log" if first == "off" => {
                self.edge.set("access_log", Value::Line(string("off")), at);
            }
            "access_log" if first.starts_with("syslog:") => {
                self.note(
                    d,
                    Kind::NoEquivalent,
                    true,
                    "the edge writes its access log to stdout or a file, not syslog",
                );
            }
            "access_log" => {
                self.edge.set("access_log", Value::Line(string(first)), at);
                self.note(
                    d,
                    Kind::Differs,
                    false,
                    "the edge writes one JSON object per line, not nginx's log_format",
                );
            }
            "resolver" => {
                let mut servers = Vec::new();
                for arg in &d.args {
                    if arg.contains('=') {
                        self.note(d, Kind::Differs, false, format!("`{arg}`: the edge keeps an answer for its TTL, at least dns_min_ttl"));
                    } else if let Ok(ip) = arg.trim_matches(['[', ']']).parse::<std::net::IpAddr>()
                    {
                        servers.push((
                            string(&std::net::SocketAddr::new(ip, 53).to_string()),
                            Some(d.at.clone()),
                        ));
                    } else if let Ok(addr) = arg.parse::<std::net::SocketAddr>() {
                        servers.push((string(&addr.to_string()), Some(d.at.clone())));
                    } else {
                        self.note(
                            d,
                            Kind::NoEquivalent,
                            true,
                            format!("`{arg}`: the edge's resolvers are IP addresses"),
                        );
                    }
                }
                self.edge.set("resolver", Value::Items(servers), None);
            }
            "set_real_ip_from" if first.starts_with("unix:") => {
                self.note(d, Kind::ByDefault, false, "the edge listens on TCP only");
            }
            "set_real_ip_from" => self.trusted.push((string(first), Some(d.at.clone()))),
            "real_ip_header" if first.eq_ignore_ascii_case("x-forwarded-for") => {}
            "real_ip_header" => self.note(
                d,
                Kind::NoEquivalent,
                true,
                "the edge reads the client address of a trusted proxy from X-Forwarded-For only",
            ),
            "real_ip_recursive" => self.real_ip_recursive = first == "on",
            _ => return false,
        }
        true
    }

    /// `gzip` and its settings (edge-wide).
    fn gzip_setting(&mut self, d: &Directive) -> bool {
        let at = Some(d.at.clone());
        let first = d.args.first().map(String::as_str).unwrap_or("");
        match d.name.as_str() {
            "gzip" => {
                self.gzip_on = (first == "on").then(|| d.at.clone());
                self.gzip
                    .set("enabled", Value::Line((first == "on").to_string()), at);
            }
            "gzip_min_length" => match edge_syntax::units::parse_size(first) {
                Ok(n) => self.gzip.set("min_length", Value::Line(n.to_string()), at),
                Err(_) => self.note(d, Kind::NoEquivalent, true, "not a size"),
            },
            "gzip_comp_level" => match first.parse::<u32>() {
                Ok(n @ 1..=9) => self.gzip.set("level", Value::Line(n.to_string()), at),
                _ => self.note(d, Kind::NoEquivalent, true, "not a level from 1 to 9"),
            },
            "gzip_types" if d.args.iter().any(|a| a == "*") => self.note(
                d,
                Kind::Differs,
                false,
                "the edge compresses the types it lists, not every type; its default list applies",
            ),
            "gzip_types" => self.gzip_types = Some((d.args.clone(), d.at.clone())),
            _ => return false,
        }
        true
    }

    /// A global setting met in a server or location: the edge cannot narrow it.
    pub(super) fn narrowed_global(&mut self, d: &Directive) -> bool {
        let globals = [
            "keepalive_timeout",
            "keepalive_requests",
            "client_header_timeout",
            "client_body_timeout",
            "send_timeout",
            "http2_max_concurrent_streams",
            "client_max_body_size",
            "client_body_buffer_size",
            "large_client_header_buffers",
            "access_log",
            "gzip",
            "gzip_min_length",
            "gzip_comp_level",
            "gzip_types",
            "resolver",
            "set_real_ip_from",
            "real_ip_header",
        ];
        if !globals.contains(&d.name.as_str()) {
            return false;
        }
        let why = "the edge has one value for every server and location: set it in [edge] or [gzip] if it should apply everywhere";
        self.note(d, Kind::Differs, true, why);
        true
    }

    /// Directives a level passes down to the locations below it.
    pub(super) fn scoped(&mut self, d: &Directive, scope: &mut Scope, fresh: &mut Fresh) -> bool {
        let first = d.args.first().map(String::as_str).unwrap_or("");
        let at = d.at.clone();
        match d.name.as_str() {
            "proxy_connect_timeout" | "proxy_read_timeout" | "proxy_send_timeout" => {
                let slot = LOCATION_TO_UPSTREAM.iter().position(|(_, n)| *n == d.name);
                if let (Some(slot), Some(v)) = (slot, self.duration(d, first)) {
                    scope.upstream_settings[slot] = Some((v, at));
                }
            }
            "proxy_ssl_verify" | "grpc_ssl_verify" => {
                set_tls(scope, "verify", (first == "on").to_string(), at);
            }
            "proxy_ssl_trusted_certificate" | "grpc_ssl_trusted_certificate" => {
                set_tls(scope, "ca", string(&self.file(first)), at);
            }
            "proxy_ssl_certificate" | "grpc_ssl_certificate" => {
                set_tls(scope, "cert", string(&self.file(first)), at);
            }
            "proxy_ssl_certificate_key" | "grpc_ssl_certificate_key" => {
                set_tls(scope, "key", string(&self.file(first)), at);
            }
            "proxy_ssl_name" | "grpc_ssl_name" => {
                if first.contains('$') {
                    self.note(d, Kind::NoEquivalent, true, "the edge has no variables: the name verified is `tls.server_name`, or the server's own host");
                } else {
                    set_tls(scope, "server_name", string(first), at);
                }
            }
            "proxy_ssl_server_name" | "grpc_ssl_server_name" => {
                if first != "on" {
                    self.note(d, Kind::Differs, false, "the edge always sends the name it verifies as SNI (nginx sends none unless this is on)");
                }
            }
            "proxy_next_upstream_tries" => {
                if let Some(n) = self.number(d, first) {
                    scope.upstream_settings[3] = Some((n.to_string(), at));
                }
            }
            "proxy_next_upstream" => {
                if first == "off" {
                    scope.upstream_settings[3] = Some(("1".into(), at));
                } else {
                    let other: Vec<&String> = d
                        .args
                        .iter()
                        .filter(|a| !matches!(a.as_str(), "error" | "timeout" | "invalid_header"))
                        .collect();
                    if other.is_empty() {
                        self.note(d, Kind::ByDefault, false, "the edge tries the next server on a connection error, a timeout or an invalid answer");
                    } else {
                        self.note(d, Kind::NoEquivalent, true, format!("the edge tries the next server on errors and timeouts only, never on {}", other.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")));
                    }
                }
            }
            "limit_req" => {
                if !std::mem::replace(&mut fresh.limits, true) {
                    scope.limits.clear();
                }
                let mut limit = Limit {
                    zone: String::new(),
                    burst: 0,
                    nodelay: false,
                    at,
                };
                for arg in &d.args {
                    if let Some(zone) = arg.strip_prefix("zone=") {
                        limit.zone = zone.to_string();
                    } else if let Some(burst) = arg.strip_prefix("burst=") {
                        match burst.parse() {
                            Ok(n) => limit.burst = n,
                            Err(_) => self.note(d, Kind::NoEquivalent, true, format!("burst=`{burst}` is not a number (nginx -t refuses it): burst 0 is written")),
                        }
                    } else if arg == "nodelay" {
                        limit.nodelay = true;
                    } else if let Some(delay) = arg.strip_prefix("delay=") {
                        self.note(d, Kind::NoEquivalent, true, format!("delay={delay}: the edge either delays every request over the rate (no nodelay) or none (nodelay)"));
                    }
                }
                scope.limits.push(limit);
            }
            "limit_req_status" => match first.parse::<u16>() {
                Ok(code @ 400..=599) => scope.limit_status = Some((code, at)),
                _ => self.note(d, Kind::NoEquivalent, true, "not a status from 400 to 599"),
            },
            "limit_req_dry_run" => scope.dry_run = first == "on",
            "allow" | "deny" => {
                if !std::mem::replace(&mut fresh.access, true) {
                    scope.access.clear();
                }
                scope
                    .access
                    .push((d.name == "allow", first.to_string(), at));
            }
            "proxy_set_header" => {
                if !std::mem::replace(&mut fresh.headers, true) {
                    scope.headers.clear();
                }
                let value = d.args.get(1).cloned().unwrap_or_default();
                scope.headers.push((first.to_string(), value, at));
            }
            "add_header" => {
                if !std::mem::replace(&mut fresh.add_header, true) {
                    scope.hsts = None;
                }
                if first.eq_ignore_ascii_case("strict-transport-security") {
                    let value = d.args.get(1).cloned().unwrap_or_default();
                    if !d.args.iter().any(|a| a == "always") {
                        self.note(d, Kind::Differs, false, "the edge sends Strict-Transport-Security on every HTTPS response, not only on 2xx and 3xx");
                    }
                    scope.hsts = Some((value, at));
                } else if first.eq_ignore_ascii_case("alt-svc") {
                    self.note(d, Kind::ByDefault, false, "the edge advertises HTTP/3 itself (Alt-Svc: h3=\":PORT\"; ma=86400) on HTTPS answers while its QUIC listener is up");
                } else {
                    self.note(d, Kind::NoEquivalent, true, "the edge adds no response headers of its own choosing (only Strict-Transport-Security, [tls] hsts, and Alt-Svc for HTTP/3)");
                }
            }
            _ => return self.tls_scoped(d, scope),
        }
        true
    }

    /// The TLS directives a level passes down to its servers.
    fn tls_scoped(&mut self, d: &Directive, scope: &mut Scope) -> bool {
        let first = d.args.first().map(String::as_str).unwrap_or("");
        let at = d.at.clone();
        match d.name.as_str() {
            "ssl_certificate" => scope.cert = Some((first.to_string(), at)),
            "ssl_certificate_key" => scope.key = Some((first.to_string(), at)),
            "ssl_protocols" => scope.protocols = Some((d.args.clone(), at)),
            "ssl_ciphers" => scope.ciphers = Some((first.to_string(), at)),
            "ssl_stapling" => scope.stapling = first == "on",
            "ssl_early_data" => {
                if first == "on" {
                    self.early_data.get_or_insert(at);
                }
            }
            "ssl_reject_handshake" => {
                scope.reject_handshake = first == "on";
                self.note(d, Kind::Differs, false, "the edge has no handshake refusal: a client naming an unknown host gets the first certificate (the default)");
            }
            "ssl_stapling_file" => scope.stapling_file = Some(first.to_string()),
            "ssl_stapling_verify" if first == "on" => self.note(
                d,
                Kind::ByDefault,
                false,
                "the edge always verifies a response (signature and signer, certificate, status, time) before stapling it",
            ),
            "ssl_stapling_verify" => self.note(
                d,
                Kind::Differs,
                false,
                "the edge always verifies a response before stapling it",
            ),
            _ => return false,
        }
        true
    }
}

/// Sets a `tls` key of the upstreams a scope proxies to (a later directive wins, as nginx's
/// inner levels do).
fn set_tls(scope: &mut Scope, key: &'static str, value: String, at: Place) {
    scope.upstream_tls.retain(|(k, _, _)| *k != key);
    scope.upstream_tls.push((key, value, at));
}
