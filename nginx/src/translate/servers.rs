//! `server` and `location` blocks: listeners, hosts and routes.

use super::super::emit::{self, line_of, string, Section, Value};
use super::super::parse::{Directive, Place};
use super::super::{Kind, Note};
use super::values::key_name;
use super::*;

/// TOML array items with the places they came from.
type Items = Vec<(String, Option<Place>)>;

impl Translator<'_> {
    pub(super) fn server(&mut self, d: &Directive, default: bool, owns_catch_all: bool) {
        let mut server = Server {
            at: d.at.clone(),
            tls: false,
            plain: false,
            proxied: false,
            owns_catch_all,
            listens: Vec::new(),
            default,
            names: Vec::new(),
            redirects: None,
            scope: self.http_scope.clone(),
            locations: Vec::new(),
        };
        let mut fresh = Fresh::default();
        let mut acme_certificate = None;
        for c in d.children() {
            match c.name.as_str() {
                "acme_certificate" => acme_certificate = Some(c),
                "location" => server.locations.push(c.clone()),
                "listen" => self.listen(c, &mut server),
                "server_name" => server
                    .names
                    .extend(c.args.iter().map(|n| (n.clone(), c.at.clone()))),
                "return" if is_https_redirect(c) => server.redirects = Some(c.at.clone()),
                "return" => self.note(c, Kind::NoEquivalent, true, "the edge answers only its HTTP-to-HTTPS redirect itself: requests for this server's names take its routes, and a host no route knows gets 404"),
                "ssl" if c.args.first().is_some_and(|a| a == "on") => server.tls = true,
                _ if self.narrowed_global(c) => {}
                _ if self.scoped(c, &mut server.scope, &mut fresh) => {}
                _ => self.known_or_not(c),
            }
        }
        if let Some(c) = acme_certificate {
            self.acme_certificate(c, &server.names.clone());
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
            server.proxied |= self.location(&location, &server);
        }
        self.servers.push(server);
    }

    pub(super) fn listen(&mut self, d: &Directive, server: &mut Server) {
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
        // A QUIC listener is TLS too: nginx pairs it with a `listen ... ssl` on the same port,
        // which the edge's https listener (TCP and, with http3, UDP) stands for.
        let quic = d.args.iter().any(|a| a == "quic");
        let tls = quic || d.args.iter().any(|a| a == "ssl");
        for param in &d.args[1..] {
            match param.split_once('=').map(|(k, _)| k).unwrap_or(param) {
                "ssl" => {}
                "http2" if tls => {}
                "http2" => self.edge.set("http2_cleartext", Value::Line("true".into()), Some(d.at.clone())),
                "default_server" | "default" => {}
                "proxy_protocol" => self.note(d, Kind::NoEquivalent, true, "the edge does not read the PROXY protocol; trust the proxy with trusted_proxies and X-Forwarded-For"),
                "quic" => {
                    self.quic.get_or_insert_with(|| d.at.clone());
                    self.note(d, Kind::ByDefault, false, "HTTP/3 on UDP at every https_listen address (`http3 = true`), with Alt-Svc on HTTPS answers");
                }
                "reuseport" | "backlog" | "rcvbuf" | "sndbuf" | "deferred" | "bind" | "ipv6only"
                | "so_keepalive" | "fastopen" | "accept_filter" | "setfib" => self.note(d, Kind::ByDefault, false, format!("`{param}`: the edge sets its listening sockets' options itself")),
                _ => self.note(d, Kind::NoEquivalent, true, format!("`{param}` is not a listen parameter (nginx -t refuses it; a missing `;`?)")),
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

    /// A location as a route; `true` when one was added. A location the edge cannot carry
    /// is reported with where its requests go instead (the next shorter prefix).
    pub(super) fn location(&mut self, d: &Directive, server: &Server) -> bool {
        let Some((path, exact)) = self.location_path(d) else {
            return false;
        };
        let mut scope = server.scope.clone();
        let mut fresh = Fresh::default();
        let mut target = None;
        for c in d.children() {
            match c.name.as_str() {
                "proxy_pass" | "grpc_pass" => target = Some(c.clone()),
                "location" => self.note(c, Kind::NoEquivalent, true, format!("the edge has no nested locations: these requests take the route for `{path}`")),
                "return" => self.note(c, Kind::NoEquivalent, true, "the edge answers only its HTTP-to-HTTPS redirect itself"),
                _ if self.narrowed_global(c) => {}
                _ if self.scoped(c, &mut scope, &mut fresh) => {}
                _ => self.known_or_not(c),
            }
        }
        let (allow, nobody) = self.allow_list(&scope);
        let upstream = match &target {
            Some(target) => match self.proxy_target(target, &path) {
                Some(upstream) => upstream,
                None => return false,
            },
            // `deny all` and nothing else: a route that admits no client (403), so that
            // these requests do not fall through to a shorter prefix.
            None if nobody => match self.uses.first() {
                Some(any) => any.edge_name.clone(),
                None => return false,
            },
            None => {
                self.note(d, Kind::NoEquivalent, true, format!("a location without proxy_pass: the edge only proxies, so requests for `{path}` take the route of the next shorter prefix"));
                return false;
            }
        };
        if exact {
            self.note(d, Kind::Differs, true, format!("an exact location: the edge's route `{path}` is a prefix, so it also takes every path that starts with `{path}`"));
        }
        if let Some(target) = &target {
            self.upstream_settings(&upstream, &scope, d);
            self.upstream_protocol(&upstream, target, &scope);
        }
        let hosts = self.hosts(server);
        let mut route = Section::new("[[routes]]", Some(d.at.clone()));
        route.set("path", Value::Line(string(&path)), None);
        route.set(
            "upstream",
            Value::Line(string(&upstream)),
            target.as_ref().map(|t| t.at.clone()),
        );
        self.route_limits(&mut route, &scope);
        if let Some(allow) = allow {
            route.set("allow", Value::Items(allow), None);
        }
        if nobody {
            route.comment = Some(
                "nginx `deny all`: no client is admitted (403); the upstream is never asked".into(),
            );
        }
        self.route_headers(&mut route, &scope, d);
        if server.redirects.is_some()
            && !server.tls
            && path != "/health"
            && !path.starts_with("/health/")
        {
            self.note(d, Kind::Differs, true, "this server redirects to HTTPS: the edge redirects every plain-HTTP request but /health, so this location is reached over HTTPS only");
        } else if !server.tls && self.any_tls {
            self.note(d, Kind::Differs, false, "the edge has one route table for every listener: this route answers over HTTPS too");
        }
        self.add_routes(d, &route, hosts)
    }

    /// A location's path and whether it is exact (`=`); regex and named ones are reported.
    fn location_path(&mut self, d: &Directive) -> Option<(String, bool)> {
        let path = match d.args.as_slice() {
            [path] if path.starts_with('@') => {
                self.note(
                    d,
                    Kind::NoEquivalent,
                    true,
                    "the edge has no named locations",
                );
                return None;
            }
            [path] => (path.clone(), false),
            [m, path] if m == "^~" => (path.clone(), false),
            [m, path] if m == "=" => (path.clone(), true),
            [m, _] if m == "~" || m == "~*" => {
                self.note(d, Kind::NoEquivalent, true, "the edge matches path prefixes, not regular expressions: this location is not carried");
                return None;
            }
            _ => {
                self.note(
                    d,
                    Kind::NoEquivalent,
                    true,
                    "not a location the edge can express",
                );
                return None;
            }
        };
        Some(path)
    }

    /// The route once per host, unless another server already routes that host and path.
    fn add_routes(&mut self, d: &Directive, route: &Section, hosts: Vec<Option<String>>) -> bool {
        let mut added = false;
        for host in hosts {
            let shown = host.clone().unwrap_or_else(|| "any host".into());
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
                    self.note(d, Kind::Differs, true, format!("the edge has one route table for every listener, and the location at {place} already routes this path for {shown}: this one is not carried for {shown}"));
                }
                None => {
                    self.routes.push(r);
                    added = true;
                }
            }
        }
        added
    }

    pub(super) fn route_limits(&mut self, route: &mut Section, scope: &Scope) {
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
            let mut entry = format!("{{ zone = {}", string(&key_name(&limit.zone)));
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
    /// nginx's allow/deny list as the edge's allow list, where it can be one, and whether it
    /// admits nobody (`deny all` with no allow before it: written as the unspecified
    /// addresses, which no client has).
    pub(super) fn allow_list(&mut self, scope: &Scope) -> (Option<Items>, bool) {
        let mut allow = Vec::new();
        for (admit, who, at) in &scope.access {
            let directive = format!("{} {who}", if *admit { "allow" } else { "deny" });
            match (*admit, who.as_str()) {
                (true, "all") => return (None, false),
                (false, "all") if allow.is_empty() => {
                    let nobody = vec![
                        (string("0.0.0.0/32"), Some(at.clone())),
                        (string("::/128"), Some(at.clone())),
                    ];
                    return (Some(nobody), true);
                }
                (false, "all") => return (Some(allow), false),
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
        (None, false)
    }

    /// proxy_set_header: what the edge already sends, websocket upgrades, or not carried.
    pub(super) fn route_headers(
        &mut self,
        route: &mut Section,
        scope: &Scope,
        location: &Directive,
    ) {
        if !scope
            .headers
            .iter()
            .any(|(n, _, _)| n.eq_ignore_ascii_case("host"))
        {
            self.note(location, Kind::Differs, false, "no `proxy_set_header Host` applies here: nginx sends the upstream's name (`$proxy_host`) as Host, the edge sends the client's Host");
        }
        for (name, value, at) in &scope.headers {
            let directive = format!("proxy_set_header {name} {}", crate::parse::written(value));
            let (kind, decide, why) = match (name.to_ascii_lowercase().as_str(), value.as_str()) {
                ("host", "$http_host") => (Kind::ByDefault, false, "the edge passes the client's Host as sent"),
                ("host", "$host" | "$host:$server_port") => (Kind::Differs, false, "the edge passes the client's Host as sent (nginx's $http_host): a port and upper case stay, where $host has neither"),
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

    /// The route hosts of a server: its names (exact, `*.domain`, `.domain` as both), and
    /// `None` (any host) for the server that takes the requests no name claims: a default
    /// server without names, or, when every default server has names, the first of them.
    pub(super) fn hosts(&mut self, server: &Server) -> Vec<Option<String>> {
        let mut hosts = Vec::new();
        for (name, at) in server.names.clone() {
            let d = Directive {
                name: "server_name".into(),
                args: vec![name.clone()],
                block: None,
                at,
            };
            if name == "_" {
                continue;
            } else if name.is_empty() {
                self.note(&d, Kind::Differs, false, "\"\" (requests without a Host) has no route of its own in the edge: such requests take the routes for any host");
            } else if name.starts_with('~') || name.ends_with(".*") {
                self.note(&d, Kind::NoEquivalent, true, "the edge matches exact hosts and *.domain wildcards only: requests for these names take the routes for any host");
            } else if let Some(domain) = name.strip_prefix('.') {
                hosts.push(Some(domain.to_ascii_lowercase()));
                hosts.push(Some(format!("*.{}", domain.to_ascii_lowercase())));
            } else {
                hosts.push(Some(name.to_ascii_lowercase()));
            }
        }
        hosts.dedup();
        let nameless = hosts.is_empty();
        if server.default && (nameless || server.owns_catch_all) {
            hosts.push(None);
        } else if nameless {
            let d = Directive {
                name: "server".into(),
                args: Vec::new(),
                block: None,
                at: server.at.clone(),
            };
            self.note(&d, Kind::Differs, false, "a server with no name the edge can route and not the default of its address: nginx gives it no request either, so its locations are not carried");
        }
        hosts
    }
}

/// Which servers take the requests no `server_name` claims: for each listen address, the one
/// marked `default_server`, else the first that listens there (nginx's rule).
pub(super) fn default_servers(servers: &[&Directive]) -> Vec<bool> {
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

/// When every default server has names, the first of them also takes the requests no name
/// claims (the edge has one set of routes for any host); otherwise the nameless default
/// servers do, and nobody is marked here.
pub(super) fn catch_all_owners(servers: &[&Directive], defaults: &[bool]) -> Vec<bool> {
    let named = |d: &Directive| {
        d.children()
            .iter()
            .filter(|c| c.name == "server_name")
            .flat_map(|c| &c.args)
            .any(|n| n != "_" && !n.is_empty())
    };
    let mut owners = vec![false; servers.len()];
    let nameless_default = servers
        .iter()
        .zip(defaults)
        .any(|(d, &default)| default && !named(d));
    if !nameless_default {
        if let Some(first) = defaults.iter().position(|&d| d) {
            owners[first] = true;
        }
    }
    owners
}

/// Whether a location is `location /`.
pub(super) fn is_root(d: &Directive) -> bool {
    d.args == ["/"] || d.args == ["^~", "/"]
}

/// `return 301|302|307|308 https://$host$request_uri` (or `$server_name`).
pub(super) fn is_https_redirect(d: &Directive) -> bool {
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
pub(super) fn listen_addr(text: &str) -> String {
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
