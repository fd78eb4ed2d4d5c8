//! nginx directives to `upstreams.toml` sections.
//!
//! nginx inherits proxy settings, `limit_req`, `allow`/`deny`, headers and TLS from `http` to
//! `server` to `location`, a level's list directives replacing (not extending) what it
//! inherited; [`Scope`] carries that down. The edge differs in shape in three places, each
//! reported where it matters: timeouts and retries belong to an upstream, not a location; the
//! edge has one route table for every listener; and client-facing limits are global.

use super::emit::{self, line_of, string, strings, Section, Value};
use super::parse::{Directive, Paths, Place};
use super::{known, Imported, Kind, Note};
use std::collections::BTreeSet;
use std::time::Duration;

/// The per-upstream settings nginx sets per location: (edge key, nginx directive).
const LOCATION_TO_UPSTREAM: [(&str, &str); 4] = [
    ("connect_timeout", "proxy_connect_timeout"),
    ("read_timeout", "proxy_read_timeout"),
    ("send_timeout", "proxy_send_timeout"),
    ("next_upstream_tries", "proxy_next_upstream_tries"),
];

/// What a location inherits.
#[derive(Clone, Default)]
struct Scope {
    /// Values for [`LOCATION_TO_UPSTREAM`], as TOML.
    upstream_settings: UpstreamSettings,
    limits: Vec<Limit>,
    limit_status: Option<(u16, Place)>,
    dry_run: bool,
    access: Vec<(bool, String, Place)>,
    headers: Vec<(String, String, Place)>,
    hsts: Option<(String, Place)>,
    cert: Option<(String, Place)>,
    key: Option<(String, Place)>,
    protocols: Option<(Vec<String>, Place)>,
    ciphers: Option<(String, Place)>,
}

#[derive(Clone)]
struct Limit {
    zone: String,
    burst: u32,
    nodelay: bool,
    at: Place,
}

/// Which list directives this level has set (and so no longer inherits).
#[derive(Default)]
struct Fresh {
    limits: bool,
    access: bool,
    headers: bool,
    add_header: bool,
}

/// A `server` block, read.
struct Server {
    at: Place,
    tls: bool,
    plain: bool,
    listens: Vec<String>,
    default: bool,
    names: Vec<(String, Place)>,
    redirects: Option<Place>,
    scope: Scope,
    locations: Vec<Directive>,
}

/// An upstream, and the per-location settings the first location that uses it decided.
struct UpstreamUse {
    name: String,
    settings: Option<(Place, UpstreamSettings)>,
}

type UpstreamSettings = [Option<(String, Place)>; 4];

struct Translator<'a> {
    paths: &'a Paths,
    notes: BTreeSet<Note>,
    edge: Section,
    tls: Section,
    gzip: Section,
    gzip_on: Option<Place>,
    gzip_types: Option<(Vec<String>, Place)>,
    zones: Vec<Section>,
    upstreams: Vec<Section>,
    uses: Vec<UpstreamUse>,
    routes: Vec<Section>,
    http_scope: Scope,
    trusted: Vec<(String, Option<Place>)>,
    real_ip_recursive: bool,
    servers: Vec<Server>,
    /// Defaults the edge applies where nginx's differ and the file set nothing.
    unset_defaults: Vec<String>,
    host_header_set: bool,
    /// Whether any server listens with TLS (known before the servers are read).
    any_tls: bool,
}

pub fn translate(source: &str, tree: &[Directive], paths: &Paths) -> Imported {
    let mut t = Translator {
        paths,
        notes: BTreeSet::new(),
        edge: Section::new("[edge]", None),
        tls: Section::new("[tls]", None),
        gzip: Section::new("[gzip]", None),
        gzip_on: None,
        gzip_types: None,
        zones: Vec::new(),
        upstreams: Vec::new(),
        uses: Vec::new(),
        routes: Vec::new(),
        http_scope: Scope::default(),
        trusted: Vec::new(),
        real_ip_recursive: false,
        servers: Vec::new(),
        unset_defaults: Vec::new(),
        host_header_set: false,
        any_tls: false,
    };
    for d in tree {
        match d.name.as_str() {
            "http" => t.http(d),
            "worker_processes" => {
                let value = match d.args.first().map(String::as_str) {
                    Some("auto") => Some("0".to_string()),
                    Some(n) if n.parse::<u32>().is_ok() => Some(n.to_string()),
                    _ => None,
                };
                match value {
                    Some(v) => t.edge.set("threads", Value::Line(v), Some(d.at.clone())),
                    None => t.note(d, Kind::NoEquivalent, true, "not a thread count"),
                }
            }
            "events" => d.children().iter().for_each(|c| t.known_or_not(c)),
            "stream" | "mail" => t.note(d, Kind::NoEquivalent, true, "the edge proxies HTTP only"),
            _ => t.known_or_not(d),
        }
    }
    t.finish(source)
}

impl Translator<'_> {
    fn note(&mut self, d: &Directive, kind: Kind, decide: bool, why: impl Into<String>) {
        self.notes.insert(Note {
            at: d.at.clone(),
            directive: d.text(),
            kind,
            decide,
            why: why.into(),
        });
    }

    /// A directive the translation does not carry: explained by the table, or unknown.
    fn known_or_not(&mut self, d: &Directive) {
        match known::lookup(&d.name) {
            Some((kind, why)) => self.note(d, kind, kind == Kind::NoEquivalent, why),
            None => self.note(
                d,
                Kind::NoEquivalent,
                true,
                "the edge has no equivalent of this directive",
            ),
        }
    }

    fn http(&mut self, http: &Directive) {
        let mut scope = Scope::default();
        let mut fresh = Fresh::default();
        for d in http.children() {
            match d.name.as_str() {
                "server" => {}
                "upstream" => self.upstream(d),
                "limit_req_zone" => self.zone(d),
                "map" => self.map(d),
                _ if self.global(d) => {}
                _ if self.scoped(d, &mut scope, &mut fresh) => {}
                _ => self.known_or_not(d),
            }
        }
        self.http_scope = scope;
        let servers: Vec<&Directive> = http
            .children()
            .iter()
            .filter(|d| d.name == "server")
            .collect();
        let defaults = default_servers(&servers);
        self.any_tls = servers.iter().flat_map(|s| s.children()).any(|c| {
            (c.name == "listen" && c.args.iter().any(|a| a == "ssl"))
                || (c.name == "ssl" && c.args == ["on"])
        });
        for (d, default) in servers.into_iter().zip(defaults) {
            self.server(d, default);
        }
    }

    /// Settings the edge has once for every listener; carried from the http level only.
    fn global(&mut self, d: &Directive) -> bool {
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
            "client_header_timeout" => {
                if let Some(v) = self.duration(d, first) {
                    self.edge.set("client_header_timeout", Value::Line(v), at);
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
                if crate::units::parse_size(first).is_ok() {
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
                let size = d.args.get(1).and_then(|s| crate::units::parse_size(s).ok());
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
            "gzip" => {
                self.gzip_on = (first == "on").then(|| d.at.clone());
                self.gzip
                    .set("enabled", Value::Line((first == "on").to_string()), at);
            }
            "gzip_min_length" => match crate::units::parse_size(first) {
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
    fn narrowed_global(&mut self, d: &Directive) -> bool {
        let globals = [
            "keepalive_timeout",
            "keepalive_requests",
            "client_header_timeout",
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
    fn scoped(&mut self, d: &Directive, scope: &mut Scope, fresh: &mut Fresh) -> bool {
        let first = d.args.first().map(String::as_str).unwrap_or("");
        let at = d.at.clone();
        match d.name.as_str() {
            "proxy_connect_timeout" | "proxy_read_timeout" | "proxy_send_timeout" => {
                let slot = LOCATION_TO_UPSTREAM.iter().position(|(_, n)| *n == d.name);
                if let (Some(slot), Some(v)) = (slot, self.duration(d, first)) {
                    scope.upstream_settings[slot] = Some((v, at));
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
                        limit.burst = burst.parse().unwrap_or(0);
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
                } else {
                    self.note(d, Kind::NoEquivalent, true, "the edge adds no response headers of its own choosing (only Strict-Transport-Security, [tls] hsts)");
                }
            }
            "ssl_certificate" => scope.cert = Some((first.to_string(), at)),
            "ssl_certificate_key" => scope.key = Some((first.to_string(), at)),
            "ssl_protocols" => scope.protocols = Some((d.args.clone(), at)),
            "ssl_ciphers" => scope.ciphers = Some((first.to_string(), at)),
            _ => return false,
        }
        true
    }

    fn map(&mut self, d: &Directive) {
        let upgrade_idiom = d.args.first().is_some_and(|a| a == "$http_upgrade")
            && d.args.get(1).is_some_and(|a| a == "$connection_upgrade");
        if upgrade_idiom {
            self.note(
                d,
                Kind::ByDefault,
                false,
                "the edge sets Connection: upgrade on websocket routes itself",
            );
        } else {
            self.note(d, Kind::NoEquivalent, true, "the edge has no variables");
        }
    }

    fn zone(&mut self, d: &Directive) {
        let mut name = None;
        let mut rate = None;
        let mut size = None;
        for arg in &d.args[d.args.len().min(1)..] {
            if let Some(zone) = arg.strip_prefix("zone=") {
                let (n, s) = zone.split_once(':').unwrap_or((zone, ""));
                name = Some(n.to_string());
                size = crate::units::parse_size(s).ok();
            } else if let Some(r) = arg.strip_prefix("rate=") {
                rate = Some(r.to_string());
            } else if arg == "sync" {
                self.note(
                    d,
                    Kind::Differs,
                    false,
                    "zones shared between replicas use store = \"redis\" (see [redis])",
                );
            }
        }
        let key = d.args.first().map(String::as_str).unwrap_or("");
        if !matches!(key, "$binary_remote_addr" | "$remote_addr") {
            self.note(
                d,
                Kind::NoEquivalent,
                true,
                format!("the edge keys every zone by client address, not by `{key}`"),
            );
        }
        let (Some(name), Some(rate)) = (name, rate) else {
            self.note(
                d,
                Kind::NoEquivalent,
                true,
                "expected zone=NAME:SIZE and rate=",
            );
            return;
        };
        if crate::units::parse_rate(&rate).is_err() {
            self.note(
                d,
                Kind::NoEquivalent,
                true,
                format!("rate `{rate}`: the edge takes r/s or r/m"),
            );
            return;
        }
        let mut section = Section::new(format!("[zones.{}]", key_name(&name)), Some(d.at.clone()));
        section.set("rate", Value::Line(string(&rate)), None);
        if let Some(bytes) = size {
            // nginx: one megabyte holds about 16 thousand 64-byte states.
            let clients = (bytes * 16_000 / (1 << 20)).max(1);
            section.set_commented(
                "max_clients",
                Value::Line(clients.to_string()),
                None,
                Some(format!(
                    "about what nginx's {} zone holds",
                    d.args
                        .iter()
                        .find_map(|a| a.strip_prefix("zone="))
                        .and_then(|z| z.split_once(':'))
                        .map(|(_, s)| s)
                        .unwrap_or("")
                )),
            );
        }
        self.zones.push(section);
    }

    fn upstream(&mut self, d: &Directive) {
        let Some(name) = d.args.first() else {
            self.note(d, Kind::NoEquivalent, true, "an upstream needs a name");
            return;
        };
        let mut section = Section::new(
            format!("[upstreams.{}]", key_name(name)),
            Some(d.at.clone()),
        );
        let mut servers = Vec::new();
        let mut backups = Vec::new();
        let mut keepalive = false;
        for c in d.children() {
            let first = c.args.first().map(String::as_str).unwrap_or("");
            let at = Some(c.at.clone());
            match c.name.as_str() {
                "least_conn" => section.set("balance", Value::Line(string("least_conn")), at),
                "ip_hash" => section.set("balance", Value::Line(string("ip_hash")), at),
                "keepalive" => {
                    keepalive = true;
                    if let Some(n) = self.number(c, first) {
                        section.set("keepalive", Value::Line(n.to_string()), at);
                    }
                }
                "keepalive_requests" => {
                    if let Some(n) = self.number(c, first) {
                        section.set("keepalive_requests", Value::Line(n.to_string()), at);
                    }
                }
                "keepalive_timeout" => {
                    if let Some(v) = self.duration(c, first) {
                        section.set("keepalive_timeout", Value::Line(v), at);
                    }
                }
                "server" => match self.server_entry(c) {
                    Some((entry, false)) => servers.push((entry, at)),
                    Some((entry, true)) => backups.push((entry, at)),
                    None => {}
                },
                _ => self.known_or_not(c),
            }
        }
        if !keepalive {
            section.comment = Some("nginx kept no idle connections to this upstream (no `keepalive`); the edge keeps 32".into());
        }
        if servers.is_empty() && !backups.is_empty() {
            servers = backups;
            self.note(
                d,
                Kind::Differs,
                true,
                "every server is a backup: they are carried as ordinary servers",
            );
        }
        section.set("servers", Value::Items(servers), None);
        self.upstreams.push(section);
        self.uses.push(UpstreamUse {
            name: name.clone(),
            settings: None,
        });
    }

    /// One `server` line of an upstream as an inline table, and whether it is a backup.
    fn server_entry(&mut self, d: &Directive) -> Option<(String, bool)> {
        let Some(addr) = d.args.first() else {
            self.note(d, Kind::NoEquivalent, true, "a server needs an address");
            return None;
        };
        if addr.starts_with("unix:") {
            self.note(
                d,
                Kind::NoEquivalent,
                true,
                "the edge connects to upstreams over TCP only",
            );
            return None;
        }
        let addr = with_port(addr);
        let mut entry = format!("{{ addr = {}", string(&addr));
        let mut backup = false;
        for param in &d.args[1..] {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key {
                "weight" | "max_fails" => match value.parse::<u32>() {
                    Ok(n) => entry.push_str(&format!(", {key} = {n}")),
                    Err(_) => self.note(
                        d,
                        Kind::NoEquivalent,
                        true,
                        format!("`{param}` is not a number"),
                    ),
                },
                "fail_timeout" => {
                    if let Some(v) = self.duration(d, value) {
                        entry.push_str(&format!(", fail_timeout = {v}"));
                    }
                }
                "down" => {
                    self.note(
                        d,
                        Kind::ByDefault,
                        false,
                        "a server marked down is left out",
                    );
                    return None;
                }
                "backup" => {
                    self.note(d, Kind::NoEquivalent, true, "the edge has no backup servers: this one is left out (add it as a server if it should take traffic)");
                    backup = true;
                }
                "resolve" => self.note(
                    d,
                    Kind::ByDefault,
                    false,
                    "the edge resolves server names again as their TTL expires",
                ),
                _ => self.note(
                    d,
                    Kind::NoEquivalent,
                    true,
                    format!(
                        "`{param}`: the edge's servers take weight, max_fails and fail_timeout"
                    ),
                ),
            }
        }
        entry.push_str(" }");
        Some((entry, backup))
    }

    fn server(&mut self, d: &Directive, default: bool) {
        let mut server = Server {
            at: d.at.clone(),
            tls: false,
            plain: false,
            listens: Vec::new(),
            default,
            names: Vec::new(),
            redirects: None,
            scope: self.http_scope.clone(),
            locations: Vec::new(),
        };
        let mut fresh = Fresh::default();
        for c in d.children() {
            match c.name.as_str() {
                "location" => server.locations.push(c.clone()),
                "listen" => self.listen(c, &mut server),
                "server_name" => server
                    .names
                    .extend(c.args.iter().map(|n| (n.clone(), c.at.clone()))),
                "return" if is_https_redirect(c) => server.redirects = Some(c.at.clone()),
                "ssl" if c.args.first().is_some_and(|a| a == "on") => server.tls = true,
                _ if self.narrowed_global(c) => {}
                _ if self.scoped(c, &mut server.scope, &mut fresh) => {}
                _ => self.known_or_not(c),
            }
        }
        if server.listens.is_empty() {
            server.plain = true;
            server.listens.push("0.0.0.0:80".into());
        }
        for location in server.locations.clone() {
            if is_root(&location) {
                if let Some(ret) = location.children().iter().find(|c| is_https_redirect(c)) {
                    server.redirects = Some(ret.at.clone());
                    continue;
                }
            }
            self.location(&location, &server);
        }
        self.servers.push(server);
    }

    fn listen(&mut self, d: &Directive, server: &mut Server) {
        let Some(first) = d.args.first() else { return };
        if first.starts_with("unix:") {
            self.note(d, Kind::NoEquivalent, true, "the edge listens on TCP only");
            return;
        }
        let addr = listen_addr(first);
        if addr.parse::<std::net::SocketAddr>().is_err() {
            self.note(
                d,
                Kind::NoEquivalent,
                true,
                format!("`{first}`: the edge listens on IP addresses, not names"),
            );
            return;
        }
        let tls = d.args.iter().any(|a| a == "ssl");
        for param in &d.args[1..] {
            match param.split_once('=').map(|(k, _)| k).unwrap_or(param) {
                "ssl" => {}
                "http2" if tls => {}
                "http2" => self.note(d, Kind::NoEquivalent, false, "the edge speaks HTTP/2 on TLS listeners only (no h2c)"),
                "default_server" | "default" => {}
                "proxy_protocol" => self.note(d, Kind::NoEquivalent, true, "the edge does not read the PROXY protocol; trust the proxy with trusted_proxies and X-Forwarded-For"),
                "quic" => self.note(d, Kind::NoEquivalent, true, "the edge does not speak HTTP/3"),
                _ => self.note(d, Kind::ByDefault, false, format!("`{param}`: the edge sets its listening sockets' options itself")),
            }
        }
        if tls {
            server.tls = true;
        } else {
            server.plain = true;
        }
        let key = if tls { "https_listen" } else { "http_listen" };
        let mut items = match self.edge.get(key).map(|e| e.value.clone()) {
            Some(Value::Items(items)) => items,
            _ => Vec::new(),
        };
        let quoted = string(&addr);
        if !items.iter().any(|(a, _)| *a == quoted) {
            items.push((quoted, Some(d.at.clone())));
        }
        self.edge.set(key, Value::Items(items), None);
        server.listens.push(addr);
    }

    fn location(&mut self, d: &Directive, server: &Server) {
        let (path, exact) = match d.args.as_slice() {
            [path] if path.starts_with('@') => {
                self.note(
                    d,
                    Kind::NoEquivalent,
                    true,
                    "the edge has no named locations",
                );
                return;
            }
            [path] => (path.clone(), false),
            [m, path] if m == "^~" => (path.clone(), false),
            [m, path] if m == "=" => (path.clone(), true),
            [m, _] if m == "~" || m == "~*" => {
                self.note(d, Kind::NoEquivalent, true, "the edge matches path prefixes, not regular expressions: this location is not carried");
                return;
            }
            _ => {
                self.note(
                    d,
                    Kind::NoEquivalent,
                    true,
                    "not a location the edge can express",
                );
                return;
            }
        };
        let mut scope = server.scope.clone();
        let mut fresh = Fresh::default();
        let mut target = None;
        for c in d.children() {
            match c.name.as_str() {
                "proxy_pass" => target = Some(c.clone()),
                "location" => self.note(
                    c,
                    Kind::NoEquivalent,
                    true,
                    "the edge has no nested locations",
                ),
                "return" => self.note(
                    c,
                    Kind::NoEquivalent,
                    true,
                    "the edge answers only its HTTP-to-HTTPS redirect itself",
                ),
                _ if self.narrowed_global(c) => {}
                _ if self.scoped(c, &mut scope, &mut fresh) => {}
                _ => self.known_or_not(c),
            }
        }
        let Some(target) = target else {
            self.note(
                d,
                Kind::NoEquivalent,
                true,
                "a location without proxy_pass: the edge only proxies, so it has no route for it",
            );
            return;
        };
        let Some(upstream) = self.proxy_target(&target, &path) else {
            return;
        };
        if exact {
            self.note(d, Kind::Differs, true, format!("an exact location: the edge's route `{path}` is a prefix and also takes {path}/... and {path}x"));
        }
        self.upstream_settings(&upstream, &scope, d);
        let hosts = self.hosts(server);
        let mut route = Section::new("[[routes]]", Some(d.at.clone()));
        route.set("path", Value::Line(string(&path)), None);
        route.set(
            "upstream",
            Value::Line(string(&upstream)),
            Some(target.at.clone()),
        );
        self.route_limits(&mut route, &scope);
        if let Some(allow) = self.allow_list(&scope) {
            route.set("allow", Value::Items(allow), None);
        }
        self.route_headers(&mut route, &scope);
        if server.redirects.is_some()
            && !server.tls
            && path != "/health"
            && !path.starts_with("/health/")
        {
            self.note(d, Kind::Differs, true, "this server redirects to HTTPS: the edge redirects every plain-HTTP request but /health, so this location is reached over HTTPS only");
        } else if !server.tls && self.any_tls {
            self.note(d, Kind::Differs, false, "the edge has one route table for every listener: this route answers over HTTPS too");
        }
        for host in hosts {
            let mut r = route.clone();
            if let Some(host) = host {
                r.entries.insert(
                    1,
                    emit::Entry {
                        key: "host",
                        value: Value::Line(string(&host)),
                        from: None,
                        comment: None,
                    },
                );
            }
            let same_key = |other: &Section| {
                other.get("path") == r.get("path")
                    && other.get("host").map(|e| &e.value) == r.get("host").map(|e| &e.value)
            };
            match self.routes.iter().find(|o| same_key(o)) {
                Some(other)
                    if other
                        .entries
                        .iter()
                        .map(|e| &e.value)
                        .eq(r.entries.iter().map(|e| &e.value)) => {}
                Some(other) => {
                    let place = other.from.as_ref().map(line_of).unwrap_or_default();
                    self.note(d, Kind::Differs, true, format!("the edge has one route table for every listener, and {place} already routes this host and path: this location is not carried"));
                }
                None => self.routes.push(r),
            }
        }
    }

    /// The upstream a `proxy_pass` names, declaring one for a bare `host:port`.
    fn proxy_target(&mut self, d: &Directive, location: &str) -> Option<String> {
        let url = d.args.first().map(String::as_str).unwrap_or("");
        if url.contains('$') {
            self.note(
                d,
                Kind::NoEquivalent,
                true,
                "the edge has no variables: the target must be an upstream or host:port",
            );
            return None;
        }
        let Some(rest) = url.strip_prefix("http://") else {
            self.note(
                d,
                Kind::NoEquivalent,
                true,
                "the edge talks plain HTTP to upstreams",
            );
            return None;
        };
        let (host, uri) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !uri.is_empty() && uri != location {
            self.note(d, Kind::NoEquivalent, true, format!("nginx replaces `{location}` with `{uri}` in the path; the edge passes the path unchanged"));
        }
        if self.uses.iter().any(|u| u.name == host) {
            return Some(host.to_string());
        }
        let addr = with_port(host);
        let name = key_name(&addr.replace([':', '.', '-'], "_"));
        if !self.uses.iter().any(|u| u.name == name) {
            let mut section = Section::new(format!("[upstreams.{name}]"), Some(d.at.clone()));
            section.comment = Some(format!("declared for `proxy_pass {url}`; nginx kept no idle connections to it, the edge keeps 32"));
            section.set(
                "servers",
                Value::Items(vec![(
                    format!("{{ addr = {} }}", string(&addr)),
                    Some(d.at.clone()),
                )]),
                None,
            );
            self.upstreams.push(section);
            self.uses.push(UpstreamUse {
                name: name.clone(),
                settings: None,
            });
        }
        Some(name)
    }

    /// Timeouts and retries nginx sets per location, moved to the upstream: the first location
    /// that proxies to it decides, and a later one that wants otherwise is reported.
    fn upstream_settings(&mut self, upstream: &str, scope: &Scope, location: &Directive) {
        let Some(index) = self.uses.iter().position(|u| u.name == upstream) else {
            return;
        };
        let wanted = scope.upstream_settings.clone();
        let Some(decided) = self.uses[index].settings.clone() else {
            let header = format!("[upstreams.{}]", key_name(upstream));
            if let Some(section) = self.upstreams.iter_mut().find(|s| s.header == header) {
                for (slot, (key, _)) in LOCATION_TO_UPSTREAM.iter().enumerate() {
                    if let Some((value, at)) = &wanted[slot] {
                        section.set(key, Value::Line(value.clone()), Some(at.clone()));
                    }
                }
            }
            self.uses[index].settings = Some((location.at.clone(), wanted));
            return;
        };
        let (first, decided) = decided;
        for (slot, (key, directive)) in LOCATION_TO_UPSTREAM.iter().enumerate() {
            let value = |v: &Option<(String, Place)>| v.as_ref().map(|(v, _)| v.clone());
            if value(&decided[slot]) != value(&wanted[slot]) {
                let shown = |v: Option<String>| v.unwrap_or_else(|| "nginx's default".into());
                let why = format!(
                    "nginx sets {directive} per location, the edge per upstream: the location at {} gives `{upstream}` {key} {}; this one's {} is not carried",
                    line_of(&first),
                    shown(value(&decided[slot])),
                    shown(value(&wanted[slot])),
                );
                self.note(location, Kind::Differs, true, why);
            }
        }
    }

    fn route_limits(&mut self, route: &mut Section, scope: &Scope) {
        let mut limits = Vec::new();
        for limit in &scope.limits {
            if !self
                .zones
                .iter()
                .any(|z| z.header == format!("[zones.{}]", key_name(&limit.zone)))
            {
                self.notes.insert(Note {
                    at: limit.at.clone(),
                    directive: format!("limit_req zone={}", limit.zone),
                    kind: Kind::NoEquivalent,
                    decide: true,
                    why: "no limit_req_zone declares this zone".into(),
                });
                continue;
            }
            let mut entry = format!("{{ zone = {}", string(&limit.zone));
            if limit.burst > 0 {
                entry.push_str(&format!(", burst = {}", limit.burst));
            }
            if limit.nodelay {
                entry.push_str(", nodelay = true");
            }
            if scope.dry_run {
                entry.push_str(", dry_run = true");
            }
            entry.push_str(" }");
            limits.push((entry, Some(limit.at.clone())));
        }
        if limits.is_empty() {
            return;
        }
        route.set("limit", Value::Items(limits), None);
        match &scope.limit_status {
            Some((code, at)) => route.set(
                "limit_status",
                Value::Line(code.to_string()),
                Some(at.clone()),
            ),
            None => route.set_commented(
                "limit_status",
                Value::Line("503".into()),
                None,
                Some("nginx's default for limit_req".into()),
            ),
        }
    }

    /// nginx's allow/deny list as the edge's allow list, where it can be one.
    fn allow_list(&mut self, scope: &Scope) -> Option<Vec<(String, Option<Place>)>> {
        let mut allow = Vec::new();
        for (admit, who, at) in &scope.access {
            let directive = format!("{} {who}", if *admit { "allow" } else { "deny" });
            match (*admit, who.as_str()) {
                (true, "all") => return None,
                (false, "all") => return Some(allow),
                (true, who) => allow.push((string(who), Some(at.clone()))),
                (false, _) => {
                    self.notes.insert(Note {
                        at: at.clone(),
                        directive,
                        kind: Kind::NoEquivalent,
                        decide: true,
                        why: "the edge has allow lists only: a deny before the end is not carried"
                            .into(),
                    });
                }
            }
        }
        if let Some((_, _, at)) = scope.access.first() {
            self.notes.insert(Note {
                at: at.clone(),
                directive: "allow".into(),
                kind: Kind::ByDefault,
                decide: false,
                why: "without a final `deny all` nginx admits every client, and so does the edge"
                    .into(),
            });
        }
        None
    }

    /// proxy_set_header: what the edge already sends, websocket upgrades, or not carried.
    fn route_headers(&mut self, route: &mut Section, scope: &Scope) {
        for (name, value, at) in &scope.headers {
            let directive = format!("proxy_set_header {name} {value}");
            let (kind, decide, why) = match (name.to_ascii_lowercase().as_str(), value.as_str()) {
                ("host", "$host" | "$http_host" | "$host:$server_port") => {
                    self.host_header_set = true;
                    (Kind::ByDefault, false, "the edge passes the client's Host")
                }
                ("host", _) => (Kind::NoEquivalent, true, "the edge passes the client's Host unchanged"),
                ("x-real-ip", "$remote_addr") => (Kind::ByDefault, false, "the edge sets X-Real-IP to the client address"),
                ("x-forwarded-for", "$proxy_add_x_forwarded_for" | "$remote_addr") => (Kind::ByDefault, false, "the edge appends the peer to X-Forwarded-For"),
                ("x-forwarded-proto", "$scheme") => (Kind::ByDefault, false, "the edge sets X-Forwarded-Proto"),
                ("x-request-id", "$request_id") => (Kind::ByDefault, false, "the edge sets X-Request-Id (keeping a client's valid one)"),
                ("connection", "" | "$connection_upgrade" | "upgrade" | "close") => (Kind::ByDefault, false, "the edge manages Connection itself: kept-alive upstream connections, upgrades on websocket routes"),
                ("upgrade", "$http_upgrade") => {
                    route.set("websocket", Value::Line("true".into()), Some(at.clone()));
                    continue;
                }
                _ => (Kind::NoEquivalent, true, "the edge sets no request headers of its own choosing"),
            };
            self.notes.insert(Note {
                at: at.clone(),
                directive,
                kind,
                decide,
                why: why.into(),
            });
        }
    }

    /// The route hosts of a server: `None` for a default or catch-all server.
    fn hosts(&mut self, server: &Server) -> Vec<Option<String>> {
        let is_default = server.default
            || server.names.is_empty()
            || server.names.iter().any(|(n, _)| n == "_" || n.is_empty());
        if is_default {
            return vec![None];
        }
        let mut hosts = Vec::new();
        for (name, at) in server.names.clone() {
            if name.starts_with('~') || name.ends_with(".*") {
                let d = Directive {
                    name: "server_name".into(),
                    args: vec![name.clone()],
                    block: None,
                    at,
                };
                self.note(
                    &d,
                    Kind::NoEquivalent,
                    true,
                    "the edge matches exact hosts and *.domain wildcards only",
                );
            } else if let Some(domain) = name.strip_prefix('.') {
                hosts.push(Some(domain.to_string()));
                hosts.push(Some(format!("*.{domain}")));
            } else {
                hosts.push(Some(name.to_ascii_lowercase()));
            }
        }
        hosts.dedup();
        hosts
    }

    fn tls(&mut self) {
        let mut tls_servers: Vec<&Server> = self.servers.iter().filter(|s| s.tls).collect();
        if tls_servers.is_empty() {
            return;
        }
        tls_servers.sort_by_key(|s| !s.default);
        let mut certs: Vec<(String, Option<Place>)> = Vec::new();
        let mut notes = Vec::new();
        for server in &tls_servers {
            let (Some((cert, cert_at)), Some((key, key_at))) =
                (&server.scope.cert, &server.scope.key)
            else {
                notes.push((
                    server.at.clone(),
                    "server".to_string(),
                    Kind::NoEquivalent,
                    "a TLS server without ssl_certificate and ssl_certificate_key".to_string(),
                ));
                continue;
            };
            if cert.contains('$') {
                notes.push((
                    cert_at.clone(),
                    format!("ssl_certificate {cert}"),
                    Kind::NoEquivalent,
                    "the edge picks certificates by SNI from [tls] certificates, not by variables"
                        .into(),
                ));
                continue;
            }
            let (cert_path, key_path) = (self.file(cert), self.file(key));
            for (path, directive, at) in [
                (&cert_path, "ssl_certificate", cert_at),
                (&key_path, "ssl_certificate_key", key_at),
            ] {
                if !std::path::Path::new(path).exists() {
                    let written = if directive == "ssl_certificate" {
                        cert
                    } else {
                        key
                    };
                    notes.push((
                        at.clone(),
                        format!("{directive} {written}"),
                        Kind::Differs,
                        format!(
                            "{path} does not exist here: the edge will not start until it does"
                        ),
                    ));
                }
            }
            let item = format!(
                "{{ cert = {}, key = {} }}",
                string(&cert_path),
                string(&key_path)
            );
            if !certs.iter().any(|(c, _)| *c == item) {
                certs.push((item, Some(cert_at.clone())));
            }
        }
        for (at, directive, kind, why) in notes {
            self.notes.insert(Note {
                at,
                directive,
                kind,
                decide: true,
                why,
            });
        }
        self.tls.set("certificates", Value::Items(certs), None);
        let first = tls_servers[0];
        if let Some((protocols, at)) = first.scope.protocols.clone() {
            let kept: Vec<&str> = protocols
                .iter()
                .map(String::as_str)
                .filter(|p| matches!(*p, "TLSv1.2" | "TLSv1.3"))
                .collect();
            if kept.len() < protocols.len() {
                self.notes.insert(Note {
                    at: at.clone(),
                    directive: format!("ssl_protocols {}", protocols.join(" ")),
                    kind: Kind::Differs,
                    decide: kept.is_empty(),
                    why: "the edge never offers TLS older than 1.2".into(),
                });
            }
            if !kept.is_empty() {
                self.tls
                    .set("protocols", Value::Line(strings(&kept)), Some(at));
            }
        }
        if let Some((ciphers, at)) = first.scope.ciphers.clone() {
            let names: Vec<&str> = ciphers.split(':').filter(|n| !n.is_empty()).collect();
            let keywords = names.iter().any(|n| {
                n.starts_with(['!', '+', '-', '@']) || n.chars().all(|c| c.is_ascii_uppercase())
            });
            let directive = format!("ssl_ciphers {ciphers}");
            if keywords {
                self.notes.insert(Note { at, directive, kind: Kind::Differs, decide: false, why: "OpenSSL cipher-string keywords are not expanded: the edge offers its ECDHE+AEAD set".into() });
            } else {
                let (_, dropped) = crate::tls::cipher_policy(std::slice::from_ref(&ciphers));
                let kept: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|n| !dropped.iter().any(|d| d.contains(&format!("`{n}`"))))
                    .collect();
                if !dropped.is_empty() {
                    let why = format!(
                        "{}; kept {}",
                        dropped.join("; "),
                        if kept.is_empty() {
                            "none: the edge offers its ECDHE+AEAD set".to_string()
                        } else {
                            kept.join(":")
                        }
                    );
                    self.notes.insert(Note {
                        at: at.clone(),
                        directive,
                        kind: Kind::Differs,
                        decide: false,
                        why,
                    });
                }
                self.tls
                    .set("ciphers", Value::Line(strings(&kept)), Some(at));
            }
        }
        match first.scope.hsts.clone() {
            Some((value, at)) => self.tls.set("hsts", Value::Line(string(&value)), Some(at)),
            None => self.tls.set_commented(
                "hsts",
                Value::Line(string("")),
                None,
                Some("nginx sent no Strict-Transport-Security".into()),
            ),
        }
        for other in &tls_servers[1..] {
            let same = other.scope.protocols.as_ref().map(|p| &p.0)
                == first.scope.protocols.as_ref().map(|p| &p.0)
                && other.scope.ciphers.as_ref().map(|c| &c.0)
                    == first.scope.ciphers.as_ref().map(|c| &c.0)
                && other.scope.hsts.as_ref().map(|h| &h.0)
                    == first.scope.hsts.as_ref().map(|h| &h.0);
            if !same {
                self.notes.insert(Note { at: other.at.clone(), directive: "server".into(), kind: Kind::Differs, decide: true, why: format!("the edge has one TLS policy (protocols, ciphers, HSTS) for every certificate: the one of {} is carried", line_of(&first.at)) });
            }
        }
    }

    /// A file a directive names, as an absolute path when it exists here.
    fn file(&self, written: &str) -> String {
        let path = self.paths.resolve(written);
        std::fs::canonicalize(&path)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    fn duration(&mut self, d: &Directive, text: &str) -> Option<String> {
        match nginx_duration(text) {
            Some(t) if t.subsec_millis() == 0 => Some(string(&format!("{}s", t.as_secs()))),
            Some(t) => Some(string(&format!("{}ms", t.as_millis()))),
            None => {
                self.note(
                    d,
                    Kind::NoEquivalent,
                    true,
                    format!("`{text}` is not an nginx time"),
                );
                None
            }
        }
    }

    fn number(&mut self, d: &Directive, text: &str) -> Option<u64> {
        let n = text.parse().ok();
        if n.is_none() {
            self.note(
                d,
                Kind::NoEquivalent,
                true,
                format!("`{text}` is not a number"),
            );
        }
        n
    }

    fn finish(mut self, source: &str) -> Imported {
        self.tls();
        let has_tls = self.servers.iter().any(|s| s.tls);
        let redirect = self
            .servers
            .iter()
            .find_map(|s| s.redirects.clone().filter(|_| !s.tls || s.plain));
        let redirect_on = has_tls && redirect.is_some();
        self.edge.set(
            "redirect_http_to_https",
            Value::Line(redirect_on.to_string()),
            redirect.clone(),
        );
        if let Some(at) = &redirect {
            let handled = self.routes.iter().any(|r| {
                r.get("path")
                    .is_some_and(|p| p.value == Value::Line(string("/health")))
            });
            if !handled {
                self.notes.insert(Note {
                    at: at.clone(),
                    directive: "return https://...".into(),
                    kind: Kind::Differs,
                    decide: false,
                    why: "the edge answers /health over plain HTTP instead of redirecting it"
                        .into(),
                });
            }
        }
        if !self.trusted.is_empty() {
            self.edge.set(
                "trusted_proxies",
                Value::Items(std::mem::take(&mut self.trusted)),
                None,
            );
            if !self.real_ip_recursive {
                self.unset_defaults.push("real_ip_recursive: nginx takes the last X-Forwarded-For address; the edge skips trusted proxies from the right (nginx's `real_ip_recursive on`)".into());
            }
        }
        if self.gzip_on.is_some() {
            let (mut types, at) = self
                .gzip_types
                .take()
                .map(|(t, a)| (t, Some(a)))
                .unwrap_or_default();
            if !types.iter().any(|t| t == "text/html") {
                types.insert(0, "text/html".into());
            }
            self.gzip.set_commented(
                "types",
                Value::Line(strings(&types)),
                at,
                Some("nginx always compresses text/html".into()),
            );
            if self.gzip.get("min_length").is_none() {
                self.gzip.set_commented(
                    "min_length",
                    Value::Line("20".into()),
                    None,
                    Some("nginx's default".into()),
                );
            }
            if self.gzip.get("level").is_none() {
                self.gzip.set_commented(
                    "level",
                    Value::Line("1".into()),
                    None,
                    Some("nginx's default".into()),
                );
            }
        } else if self.gzip.get("enabled").is_none() {
            self.gzip.set_commented(
                "enabled",
                Value::Line("false".into()),
                None,
                Some("nginx's gzip is off unless turned on".into()),
            );
        }
        for (key, nginx, edge) in [
            ("keepalive_timeout", "75s", "65s"),
            ("keepalive_requests", "1000", "100"),
            ("client_header_timeout", "60s", "10s"),
            ("client_max_body_size", "1m", "10m"),
        ] {
            if self.edge.get(key).is_none() {
                self.unset_defaults.push(format!(
                    "{key}: nginx's default is {nginx}, the edge's {edge}"
                ));
            }
        }
        self.unset_defaults
            .push("connect_timeout: nginx's default is 60s, the edge's 5s".into());
        self.unset_defaults.push(
            "max_connections_per_client: nginx has no cap without limit_conn, the edge's is 256"
                .into(),
        );
        if !self.host_header_set && !self.routes.is_empty() {
            self.unset_defaults.push("Host: nginx sends the upstream's name without `proxy_set_header Host $host`; the edge passes the client's Host".into());
        }
        let mut preamble = vec![
            format!("upstreams.toml imported from {source} by `edge import-nginx`."),
            "Each section and value names the nginx file:line it came from; what was not".into(),
            "carried is in the report the import printed. Check it with `edge check`.".into(),
            String::new(),
            "Where nginx's defaults differ from the edge's and the nginx file set nothing:".into(),
        ];
        preamble.extend(self.unset_defaults.iter().map(|l| format!("  {l}")));
        let mut sections = vec![self.edge];
        if !self.tls.entries.is_empty() {
            sections.push(self.tls);
        }
        if !self.gzip.entries.is_empty() {
            sections.push(self.gzip);
        }
        sections.extend(self.zones);
        sections.extend(self.upstreams);
        sections.extend(self.routes);
        Imported {
            toml: emit::write(&preamble, &sections),
            notes: self.notes.into_iter().collect(),
        }
    }
}

/// Which servers take the requests no `server_name` claims: for each listen address, the one
/// marked `default_server`, else the first that listens there (nginx's rule).
fn default_servers(servers: &[&Directive]) -> Vec<bool> {
    let listens = |d: &Directive| -> Vec<(String, bool)> {
        let found: Vec<(String, bool)> = d
            .children()
            .iter()
            .filter(|c| c.name == "listen")
            .filter_map(|c| {
                let addr = listen_addr(c.args.first()?);
                Some((
                    addr,
                    c.args
                        .iter()
                        .any(|a| a == "default_server" || a == "default"),
                ))
            })
            .collect();
        if found.is_empty() {
            vec![("0.0.0.0:80".to_string(), false)]
        } else {
            found
        }
    };
    let all: Vec<Vec<(String, bool)>> = servers.iter().map(|d| listens(d)).collect();
    let mut defaults = vec![false; servers.len()];
    let mut addrs: Vec<&String> = all.iter().flatten().map(|(a, _)| a).collect();
    addrs.sort();
    addrs.dedup();
    for addr in addrs {
        let marked = all
            .iter()
            .position(|l| l.iter().any(|(a, d)| a == addr && *d));
        let first = all.iter().position(|l| l.iter().any(|(a, _)| a == addr));
        if let Some(i) = marked.or(first) {
            defaults[i] = true;
        }
    }
    defaults
}

/// Whether a location is `location /`.
fn is_root(d: &Directive) -> bool {
    d.args == ["/"] || d.args == ["^~", "/"]
}

/// `return 301|302|307|308 https://$host$request_uri` (or `$server_name`).
fn is_https_redirect(d: &Directive) -> bool {
    d.name == "return"
        && matches!(
            d.args.first().map(String::as_str),
            Some("301" | "302" | "307" | "308")
        )
        && d.args.get(1).is_some_and(|u| {
            matches!(
                u.as_str(),
                "https://$host$request_uri"
                    | "https://$server_name$request_uri"
                    | "https://$http_host$request_uri"
            )
        })
}

/// nginx's `listen` address as a socket address: `80`, `*:80`, `[::]:443`, `10.0.0.1`.
fn listen_addr(text: &str) -> String {
    if text.chars().all(|c| c.is_ascii_digit()) {
        return format!("0.0.0.0:{text}");
    }
    if let Some(port) = text.strip_prefix("*:") {
        return format!("0.0.0.0:{port}");
    }
    if text.parse::<std::net::SocketAddr>().is_ok() {
        return text.to_string();
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return std::net::SocketAddr::new(ip, 80).to_string();
    }
    text.to_string()
}

/// `host` or `host:port`, with nginx's default port 80.
fn with_port(addr: &str) -> String {
    let has_port = match addr.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        addr.to_string()
    } else {
        format!("{addr}:80")
    }
}

/// A name as a TOML bare key (quoted when it is not one).
fn key_name(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        string(name)
    }
}

/// nginx's time syntax: `65`, `30s`, `500ms`, `1m30s`, `1h`, `2d`, `1w`.
pub(super) fn nginx_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == ' ')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let ms = match unit {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "M" => 30 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total += Duration::from_millis(number.checked_mul(ms)?);
    }
    Some(total)
}
