//! `upstream` blocks and `limit_req_zone`s, and the per-location settings that move to an upstream.

use super::super::emit::{line_of, string, Section, Value};
use super::super::parse::{Directive, Place};
use super::super::Kind;
use super::values::{key_name, with_port};
use super::*;

impl Translator<'_> {
    pub(super) fn zone(&mut self, d: &Directive) {
        let mut name = None;
        let mut rate = None;
        let mut size = None;
        for arg in &d.args[d.args.len().min(1)..] {
            if let Some(zone) = arg.strip_prefix("zone=") {
                let (n, s) = zone.split_once(':').unwrap_or((zone, ""));
                name = Some(n.to_string());
                size = edge_syntax::units::parse_size(s).ok();
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
        if edge_syntax::units::parse_rate(&rate).is_err() {
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

    pub(super) fn upstream(&mut self, d: &Directive) {
        let Some(name) = d.args.first() else {
            self.note(d, Kind::NoEquivalent, true, "an upstream needs a name");
            return;
        };
        let edge_name = self.free_name(name);
        let mut section = Section::new(format!("[upstreams.{edge_name}]"), Some(d.at.clone()));
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
        let usable = !servers.is_empty();
        if usable {
            section.set("servers", Value::Items(servers), None);
            self.upstreams.push(section);
        } else {
            self.note(d, Kind::NoEquivalent, true, "no server of this upstream is one the edge can reach (TCP host:port): it is not carried, nor are the locations that proxy to it");
        }
        self.uses.push(UpstreamUse {
            name: name.clone(),
            edge_name,
            usable,
            settings: None,
        });
    }

    /// The edge name for nginx's `name`, not taken by another upstream.
    fn free_name(&self, name: &str) -> String {
        let base = key_name(name);
        let mut candidate = base.clone();
        let mut n = 2;
        while self.uses.iter().any(|u| u.edge_name == candidate) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        candidate
    }

    /// One `server` line of an upstream as an inline table, and whether it is a backup.
    pub(super) fn server_entry(&mut self, d: &Directive) -> Option<(String, bool)> {
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

    /// The upstream a `proxy_pass` names, declaring one for a bare `host:port`.
    pub(super) fn proxy_target(&mut self, d: &Directive, location: &str) -> Option<String> {
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
        if url.contains("unix:") {
            self.note(d, Kind::NoEquivalent, true, "the edge connects to upstreams over TCP only (no unix sockets): this location is not carried");
            return None;
        }
        let Some(rest) = ["http://", "https://", "grpc://", "grpcs://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .or((d.name == "grpc_pass" && !url.contains("://")).then_some(url))
        else {
            self.note(
                d,
                Kind::NoEquivalent,
                true,
                format!("`{url}`: the edge reaches upstreams over http://, https://, grpc:// and grpcs://"),
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
        if let Some(found) = self.uses.iter().find(|u| u.name.eq_ignore_ascii_case(host)) {
            if found.usable {
                return Some(found.edge_name.clone());
            }
            let why = format!("upstream `{host}` is not carried (no server the edge can reach): neither is this location");
            self.note(d, Kind::NoEquivalent, true, why);
            return None;
        }
        let addr = with_port(host);
        if let Some(found) = self.uses.iter().find(|u| u.name == addr) {
            return Some(found.edge_name.clone());
        }
        let name = self.free_name(&addr);
        {
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
                name: addr,
                edge_name: name.clone(),
                usable: true,
                settings: None,
            });
        }
        Some(name)
    }

    /// What a location's `proxy_pass https://`, `grpc_pass grpc://` or `grpcs://` says of how
    /// its upstream is reached: `protocol = "h2"` for gRPC, and `tls` from the location's
    /// `proxy_ssl_*` / `grpc_ssl_*` directives.
    pub(super) fn upstream_protocol(&mut self, upstream: &str, target: &Directive, scope: &Scope) {
        let url = target.args.first().map(String::as_str).unwrap_or("");
        let grpc = target.name == "grpc_pass";
        let tls = url.starts_with("https://") || url.starts_with("grpcs://");
        let header = format!("[upstreams.{upstream}]");
        let Some(index) = self.upstreams.iter().position(|s| s.header == header) else {
            return;
        };
        let at = Some(target.at.clone());
        if grpc {
            self.upstreams[index].set("protocol", Value::Line(string("h2")), at.clone());
        }
        if !tls {
            return;
        }
        let mut keys = scope.upstream_tls.clone();
        if !keys.iter().any(|(k, _, _)| *k == "verify") {
            let directive = if grpc {
                "grpc_ssl_verify"
            } else {
                "proxy_ssl_verify"
            };
            self.note(target, Kind::Differs, true, format!("nginx verifies the server's certificate only with `{directive} on`: carried as tls.verify = false, which the edge warns about at every load; set `ca` (or trust the system's roots) and remove it"));
            keys.push(("verify", "false".into(), target.at.clone()));
        }
        let fields: Vec<String> = keys.iter().map(|(k, v, _)| format!("{k} = {v}")).collect();
        self.upstreams[index].set(
            "tls",
            Value::Line(format!("{{ {} }}", fields.join(", "))),
            at,
        );
    }

    /// Timeouts and retries nginx sets per location, moved to the upstream: the first location
    /// that proxies to it decides, and a later one that wants otherwise is reported.
    pub(super) fn upstream_settings(
        &mut self,
        upstream: &str,
        scope: &Scope,
        location: &Directive,
    ) {
        let Some(index) = self.uses.iter().position(|u| u.edge_name == upstream) else {
            return;
        };
        let wanted = scope.upstream_settings.clone();
        let Some(decided) = self.uses[index].settings.clone() else {
            let header = format!("[upstreams.{upstream}]");
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
                let default = if *key == "next_upstream_tries" {
                    "nginx's default (0: no limit)"
                } else {
                    "nginx's default (60s)"
                };
                let shown = |v: Option<String>| v.unwrap_or_else(|| default.into());
                let why = format!(
                    "nginx sets {directive} per location, the edge per upstream: the location at {} gives `{upstream}` {key} = {}; this location wants {}, which is not carried",
                    line_of(&first),
                    shown(value(&decided[slot])),
                    shown(value(&wanted[slot])),
                );
                self.note(location, Kind::Differs, true, why);
            }
        }
    }
}
