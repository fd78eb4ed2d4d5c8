//! nginx directives to `upstreams.toml` sections.
//!
//! nginx inherits proxy settings, `limit_req`, `allow`/`deny`, headers and TLS from `http` to
//! `server` to `location`, a level's list directives replacing (not extending) what it
//! inherited; [`Scope`] carries that down. The edge differs in shape in three places, each
//! reported where it matters: timeouts and retries belong to an upstream, not a location; the
//! edge has one route table for every listener; and client-facing limits are global.

mod acme;
mod servers;
mod settings;
mod tls;
mod upstreams;
mod values;

use super::emit::{self, string, strings, Section, Value};
use super::parse::{Directive, Paths, Place};
use super::{known, Imported, Kind, Note};
use std::collections::BTreeSet;

use servers::{catch_all_owners, default_servers};
pub(super) use values::nginx_duration;

/// The per-upstream settings nginx sets per location: (edge key, nginx directive).
const LOCATION_TO_UPSTREAM: [(&str, &str); 4] = [
    ("connect_timeout", "proxy_connect_timeout"),
    ("read_timeout", "proxy_read_timeout"),
    ("send_timeout", "proxy_send_timeout"),
    ("next_upstream_tries", "proxy_next_upstream_tries"),
];

/// The http-level TLS directives the translation hands to TLS servers (others are in the
/// table of known directives).
const TLS_SERVER_SETTINGS: [&str; 6] = [
    "ssl_certificate",
    "ssl_certificate_key",
    "ssl_protocols",
    "ssl_ciphers",
    "ssl_stapling",
    "ssl_stapling_file",
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
    /// `ssl_stapling on` (nginx's default is off), and `ssl_stapling_file`.
    stapling: bool,
    stapling_file: Option<String>,
    /// `ssl_reject_handshake on`: a TLS server that serves no certificate.
    reject_handshake: bool,
    /// `proxy_ssl_*` (and `grpc_ssl_*`) toward TLS upstreams, by the edge's `tls` key:
    /// `server_name`, `ca`, `verify`, `cert`, `key` (TOML values).
    upstream_tls: Vec<(&'static str, String, Place)>,
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
    /// Some location of it became a route.
    proxied: bool,
    /// It takes the requests no server name claims (see `hosts`).
    owns_catch_all: bool,
    listens: Vec<String>,
    default: bool,
    names: Vec<(String, Place)>,
    redirects: Option<Place>,
    scope: Scope,
    locations: Vec<Directive>,
}

/// An upstream, and the per-location settings the first location that uses it decided.
struct UpstreamUse {
    /// As nginx spells it (nginx matches upstream names without regard to case).
    name: String,
    /// As the edge's config names it.
    edge_name: String,
    /// Whether it has a server the edge can reach (else routes to it are not carried).
    usable: bool,
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
    /// Whether any server listens with TLS (known before the servers are read).
    any_tls: bool,
    /// The first `listen ... quic`: nginx served HTTP/3.
    quic: Option<Place>,
    /// `ssl_early_data on`.
    early_data: Option<Place>,
    /// nginx's ACME module: the `acme_issuer` blocks by name, the servers' uses of them,
    /// and the `[tls.acme]` they become.
    acme_issuers: Vec<(String, Directive)>,
    acme_uses: Vec<acme::AcmeUse>,
    acme_section: Option<Section>,
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
        any_tls: false,
        quic: None,
        early_data: None,
        acme_issuers: Vec::new(),
        acme_uses: Vec::new(),
        acme_section: None,
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
                "acme_issuer" => {
                    let name = d.args.first().cloned().unwrap_or_default();
                    self.acme_issuers.push((name, d.clone()));
                }
                _ if self.global(d) => {}
                _ if self.scoped(d, &mut scope, &mut fresh) => {}
                _ => self.known_or_not(d),
            }
        }
        self.http_scope = scope;
        let tls_server = http
            .children()
            .iter()
            .filter(|d| d.name == "server")
            .any(|server| {
                server.children().iter().any(|c| {
                    (c.name == "listen" && c.args.iter().any(|a| a == "ssl"))
                        || (c.name == "ssl" && c.args == ["on"])
                })
            });
        if !tls_server {
            // Debian's nginx.conf sets ssl_protocols at the http level for servers that may
            // never come: say so rather than drop them silently.
            for d in http
                .children()
                .iter()
                .filter(|d| TLS_SERVER_SETTINGS.contains(&d.name.as_str()))
            {
                self.note(
                    d,
                    Kind::ByDefault,
                    false,
                    "no server listens with TLS: nothing uses it",
                );
            }
        }
        let servers: Vec<&Directive> = http
            .children()
            .iter()
            .filter(|d| d.name == "server")
            .collect();
        let defaults = default_servers(&servers);
        let owners = catch_all_owners(&servers, &defaults);
        self.any_tls = servers.iter().flat_map(|s| s.children()).any(|c| {
            (c.name == "listen" && c.args.iter().any(|a| a == "ssl"))
                || (c.name == "ssl" && c.args == ["on"])
        });
        for ((d, default), owns) in servers.into_iter().zip(defaults).zip(owners) {
            self.server(d, default, owns);
        }
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
        self.acme();
        self.http3();
        self.redirect();
        self.gzip_defaults();
        self.unset_defaults();
        let mut preamble = vec![
            format!("upstreams.toml imported from {source} by `edge import-nginx`."),
            "Each section and value names the nginx file:line it came from; what was not".into(),
            "carried is in the report the import printed. Check it with `edge check`.".into(),
            String::new(),
            "Where nginx's defaults differ from the edge's and the nginx file set nothing:".into(),
        ];
        preamble.extend(self.unset_defaults.iter().map(|l| format!("  {l}")));
        let mut sections = vec![self.edge];
        if !self.tls.entries.is_empty() || self.acme_section.is_some() {
            sections.push(self.tls);
        }
        sections.extend(self.acme_section);
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

    /// `http3` and `http3_early_data`: what nginx served over QUIC. The edge offers HTTP/3
    /// wherever it has TLS unless told not to, so a config that had no `listen ... quic` says
    /// `http3 = false` (the move changes nothing until someone opens UDP and turns it on).
    fn http3(&mut self) {
        if !self.servers.iter().any(|s| s.tls) {
            return;
        }
        match self.quic.clone() {
            Some(at) => self.edge.set("http3", Value::Line("true".into()), Some(at)),
            None => self.edge.set_commented(
                "http3",
                Value::Line("false".into()),
                None,
                Some("nginx served no HTTP/3 (no `listen ... quic`); true offers it on UDP".into()),
            ),
        }
        if let Some(at) = self.early_data.clone() {
            let on = self.quic.is_some();
            self.edge.set(
                "http3_early_data",
                Value::Line(on.to_string()),
                Some(at.clone()),
            );
            self.notes.insert(Note {
                at,
                directive: "ssl_early_data".into(),
                kind: Kind::Differs,
                decide: false,
                why: "the edge takes early data (0-RTT) over HTTP/3 only, where it serves GET, HEAD and OPTIONS from it and answers anything else 425; TLS over TCP gets a full handshake".into(),
            });
        }
    }

    /// `redirect_http_to_https`: whether a plain-HTTP server only redirects.
    fn redirect(&mut self) {
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
        if !redirect_on {
            return;
        }
        // One switch for every plain listener: a plain server that proxies is redirected too.
        let serving: Vec<Place> = self
            .servers
            .iter()
            .filter(|s| s.plain && s.redirects.is_none() && s.proxied)
            .map(|s| s.at.clone())
            .collect();
        for at in serving {
            self.notes.insert(Note {
                at,
                directive: "server".into(),
                kind: Kind::Differs,
                decide: true,
                why: "this plain-HTTP server serves requests, but another redirects to https: the edge's redirect_http_to_https is one switch for every plain listener, so these requests (but /health) will get 308".into(),
            });
        }
    }

    /// What nginx does by default with gzip on that the edge's defaults would not.
    fn gzip_defaults(&mut self) {
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
    }

    /// The defaults that differ, for the preamble, and the trusted proxies.
    fn unset_defaults(&mut self) {
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
    }
}
