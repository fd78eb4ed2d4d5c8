//! The compiled runtime configuration: one immutable [`Snapshot`] behind one `ArcSwap`.
//!
//! A request loads the snapshot once and uses it to the end, so a reload never changes the
//! rules under a request in flight. Compiling keeps the state that must survive a reload
//! (each server's [`ServerState`]) by taking it from the previous snapshot.

use crate::client::net_contains;
use crate::config::{Config, RouteSettings, ZoneStore};
use crate::discovery::Target;
use crate::observe::metrics::RouteMetrics;
use crate::ratelimit::{self, RouteLimit, Zone};
use crate::route::Router;
use crate::upstream::{Server, ServerState, Upstream};
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Its name in logs and metrics: "host/path" or "path".
    pub name: String,
    pub settings: RouteSettings,
    pub upstream: Arc<Upstream>,
    /// The rate-limit zones every request must pass, in order.
    pub limit: Vec<RouteLimit>,
    /// Its request metrics, resolved once.
    pub metrics: RouteMetrics,
}

impl Route {
    /// Whether the route's `allow` list admits `client`.
    pub fn allows(&self, client: IpAddr) -> bool {
        let allow = &self.settings.allow;
        allow.is_empty() || allow.iter().any(|net| net_contains(net, client))
    }
}

/// A route's name in logs, metrics and `/status`: "host/path", or "path" without a host.
pub fn route_name(host: Option<&str>, path: &str) -> String {
    match host {
        Some(h) => format!("{h}{path}"),
        None => path.to_string(),
    }
}

/// Everything a request needs, compiled from one config.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    /// What the config came from (a path, or the embedded default).
    pub source: String,
    pub router: Router<Arc<Route>>,
    pub upstreams: HashMap<String, Arc<Upstream>>,
    pub zones: HashMap<String, Arc<Zone>>,
    pub redis: Option<Arc<ratelimit::RedisStore>>,
    /// `Strict-Transport-Security` as https answers carry it (`[tls] hsts`), made once: each
    /// answer clones it (a reference count), where converting the text was an allocation per
    /// answer.
    pub hsts: Option<http::HeaderValue>,
}

impl Snapshot {
    /// Compiles `config`, reusing the server state of `previous` for servers it still has.
    pub fn compile(source: &str, config: Config, previous: Option<&Snapshot>) -> Snapshot {
        let dns = crate::discovery::global();
        // The names the servers are given by: resolved at once, then kept fresh.
        let names: HashSet<String> = config
            .upstreams
            .values()
            .flat_map(|u| &u.servers)
            .filter_map(|s| match Target::parse(&s.addr) {
                Target::Name { host, .. } => Some(host.to_string()),
                _ => None,
            })
            .collect();
        if !names.is_empty() {
            dns.configure(&config.edge.resolver, config.edge.dns_min_ttl);
            // Every name at once; the servers below find their answers known.
            dns.prefetch(&names);
        }
        let mut upstreams = HashMap::new();
        for (name, settings) in &config.upstreams {
            let mut servers = Vec::new();
            for s in &settings.servers {
                for Expanded { label, host, addr } in expand(&s.addr, dns) {
                    // The same address of the same upstream keeps its state across reloads
                    // (not when the way to it changed: its pooled connections speak the old
                    // protocol or TLS).
                    let state = previous
                        .and_then(|p| p.upstreams.get(name))
                        .filter(|u| {
                            u.settings.protocol == settings.protocol
                                && u.settings.tls == settings.tls
                        })
                        .and_then(|u| u.servers.iter().find(|old| old.label == label))
                        .map(|old| old.state.clone())
                        .unwrap_or_else(|| Arc::new(ServerState::default()));
                    servers.push(Server {
                        label,
                        host,
                        addr,
                        weight: s.weight,
                        max_fails: s.max_fails,
                        fail_timeout: s.fail_timeout,
                        state,
                    });
                }
            }
            let upstream = Upstream::new(name.clone(), settings.clone(), servers);
            upstreams.insert(name.clone(), Arc::new(upstream));
        }
        let redis = ratelimit::redis_store_for(
            &config.zones,
            &config.redis,
            previous.and_then(|p| p.redis.as_ref()),
        );
        let mut zones = HashMap::new();
        for (name, settings) in &config.zones {
            // A zone whose settings are unchanged keeps its clients' state across a reload; a
            // Redis zone also needs the same Redis connection.
            let kept = previous.and_then(|p| p.zones.get(name)).filter(|z| {
                z.keeps_state_for(settings)
                    && (settings.store == ZoneStore::Local || redis_unchanged(previous, &redis))
            });
            let zone = match kept {
                Some(z) => z.clone(),
                None => Arc::new(Zone::new(name, settings.clone(), redis.clone())),
            };
            zones.insert(name.clone(), zone);
        }
        let mut router = Router::default();
        for settings in &config.routes {
            let Some(upstream) = upstreams.get(&settings.upstream) else {
                continue; // validation guarantees every route's upstream exists
            };
            let name = route_name(settings.host.as_deref(), &settings.path);
            let limits = settings
                .limit
                .iter()
                .filter_map(|l| {
                    Some(RouteLimit {
                        zone: zones.get(&l.zone)?.clone(),
                        burst: l.burst,
                        nodelay: l.nodelay,
                        dry_run: l.dry_run,
                    })
                })
                .collect();
            let route = Route {
                metrics: RouteMetrics::new(&name, &upstream.name),
                name,
                settings: settings.clone(),
                upstream: upstream.clone(),
                limit: limits,
            };
            router.add(settings.host.as_deref(), &settings.path, Arc::new(route));
        }
        dns.track(names);
        let hsts = config
            .tls
            .as_ref()
            .and_then(|tls| tls.hsts.as_deref())
            .and_then(|v| http::HeaderValue::from_str(v).ok());
        Snapshot {
            hsts,
            config,
            source: source.to_string(),
            router,
            upstreams,
            zones,
            redis,
        }
    }

    /// Whether plain HTTP requests are redirected to https.
    pub fn redirects_to_https(&self) -> bool {
        self.config.edge.redirect_http_to_https && !self.config.edge.https_listen.is_empty()
    }

    /// Where a plain-HTTP request for `host` and `target` (path and query) is redirected:
    /// the same host without its port (nginx's `$host`), on the first https listener's port
    /// when that is not 443 (the port bound, for a listener on port 0).
    pub fn https_location(&self, host: &str, target: &str) -> String {
        let host = crate::route::normalize_host(host);
        let port = match self.config.edge.https_listen.first().map(|a| a.port()) {
            Some(0) => Some(FIRST_HTTPS_PORT.load(std::sync::atomic::Ordering::Relaxed)),
            configured => configured,
        };
        match port {
            Some(443) | None => format!("https://{host}{target}"),
            Some(port) => format!("https://{host}:{port}{target}"),
        }
    }

    /// The trusted proxy networks.
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.config.edge.trusted_proxies
    }
}

/// The port the first `https_listen` listener bound (set by the listeners; what redirects
/// name when the config says port 0).
pub static FIRST_HTTPS_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// One server a configured `addr` stands for.
struct Expanded {
    label: String,
    host: String,
    addr: Option<SocketAddr>,
}

/// The servers one configured `addr` stands for: a literal address is itself; a name is one
/// server per address it resolves to, labelled "name:port (ip)", or one server without an
/// address (taking no traffic) while it resolves to none. Each keeps the configured host as
/// the Host of the edge's own requests to it.
fn expand(addr: &str, dns: &crate::discovery::Discovery) -> Vec<Expanded> {
    let unresolved = |host: String| {
        vec![Expanded {
            label: addr.to_string(),
            host,
            addr: None,
        }]
    };
    match Target::parse(addr) {
        Target::Literal(a) => vec![Expanded {
            label: addr.to_string(),
            host: host_header(&a.ip().to_string(), a.is_ipv6(), a.port()),
            addr: Some(a),
        }],
        Target::Name { host, port } => {
            let ips = dns.addresses(host);
            if ips.is_empty() {
                tracing::warn!(
                    server = addr,
                    "server name has no address yet; it takes no traffic until it resolves"
                );
                return unresolved(host_header(host, false, port));
            }
            ips.into_iter()
                .map(|ip| Expanded {
                    label: format!("{addr} ({ip})"),
                    host: host_header(host, false, port),
                    addr: Some(SocketAddr::new(ip, port)),
                })
                .collect()
        }
        Target::Invalid => unresolved(addr.to_string()),
    }
}

/// A Host header value (RFC 9110 §7.2): the host, bracketed if it is an IPv6 address, and
/// the port unless it is http's default.
fn host_header(host: &str, ipv6: bool, port: u16) -> String {
    let host = if ipv6 {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 80 {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// Whether the Redis store is the same object as the previous snapshot's (or absent in both).
fn redis_unchanged(
    previous: Option<&Snapshot>,
    redis: &Option<Arc<ratelimit::RedisStore>>,
) -> bool {
    match (previous.and_then(|p| p.redis.as_ref()), redis) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(zones: &str, previous: Option<&Snapshot>) -> Snapshot {
        let text = format!(
            "{zones}\n[upstreams.app]\nservers = [{{ addr = \"127.0.0.1:9\" }}]\n\
             [[routes]]\npath = \"/\"\nupstream = \"app\"\n"
        );
        let validated = crate::config::validate("t.toml", &text).expect("valid");
        Snapshot::compile("t.toml", validated.config, previous)
    }

    fn kept(old: &Snapshot, new: &Snapshot, zone: &str) -> bool {
        Arc::ptr_eq(&old.zones[zone], &new.zones[zone])
    }

    #[test]
    fn a_zone_keeps_its_state_only_while_its_settings_stay() {
        let base = "[zones.a]\nrate = \"10r/s\"\n[zones.b]\nrate = \"10r/s\"\n";
        let old = compile(base, None);
        let same = compile(base, Some(&old));
        assert!(kept(&old, &same, "a") && kept(&old, &same, "b"));

        let rate = compile(
            "[zones.a]\nrate = \"20r/s\"\n[zones.b]\nrate = \"10r/s\"\n",
            Some(&same),
        );
        assert!(!kept(&same, &rate, "a"), "a changed rate starts afresh");
        assert!(kept(&same, &rate, "b"), "an unchanged zone is kept");

        let capacity = compile(
            "[zones.a]\nrate = \"20r/s\"\nmax_clients = 50\n[zones.b]\nrate = \"10r/s\"\n",
            Some(&rate),
        );
        assert!(
            !kept(&rate, &capacity, "a"),
            "a changed max_clients takes effect"
        );
        assert!(kept(&rate, &capacity, "b"));
    }

    #[test]
    fn the_host_of_the_edges_own_requests_is_the_configured_host_and_port() {
        assert_eq!(
            host_header("content-manager", false, 8000),
            "content-manager:8000"
        );
        assert_eq!(host_header("grafana", false, 80), "grafana");
        assert_eq!(host_header("127.0.0.1", false, 9), "127.0.0.1:9");
        assert_eq!(host_header("::1", true, 8080), "[::1]:8080");
        let dns = crate::discovery::global();
        let literal = expand("[::1]:8080", dns);
        assert_eq!(literal[0].host, "[::1]:8080");
        assert_eq!(literal[0].label, "[::1]:8080");
    }

    #[test]
    fn a_redis_change_resets_redis_zones_only() {
        let zones = "[zones.local]\nrate = \"10r/s\"\n\
                     [zones.shared]\nrate = \"10r/s\"\nstore = \"redis\"\n";
        let old = compile(
            &format!("{zones}[redis]\nurl = \"redis://127.0.0.1:1/0\"\n"),
            None,
        );
        let new = compile(
            &format!("{zones}[redis]\nurl = \"redis://127.0.0.1:2/0\"\n"),
            Some(&old),
        );
        assert!(kept(&old, &new, "local"));
        assert!(!kept(&old, &new, "shared"));
    }
}
