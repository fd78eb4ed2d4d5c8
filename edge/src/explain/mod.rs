//! `edge explain` and the admin `GET /explain`: what the edge will do with a request, and why.
//!
//! The answer follows the request's path in [`crate::proxy::admit`] and [`crate::forward`]:
//! head checks ▸ the https redirect ▸ route (and the routes it beat) ▸ allow list ▸ zones ▸
//! body size ▸ the server the balancer would pick ▸ the head sent upstream ▸ compression.
//! Nothing is counted: zones are peeked, and the balancer is asked on a copy of its state.
//! Against a config file (no running edge) there is no live state: zones show no standing and
//! the pick is a fresh edge's first.

mod compression;
pub mod query;
mod render;

pub use query::Question;
pub use render::render;

use crate::config::{Balance, RouteSettings, ZoneStore};
use crate::ctx::RequestCtx;
use crate::ratelimit::Verdict;
use crate::route::normalize_host;
use crate::snapshot::{Route, Snapshot};
use crate::{client, forward, request};
use pingora::http::RequestHeader;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;

/// Everything `edge explain` says about one request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Explanation {
    pub request: Asked,
    /// What happens to the request, in the end.
    pub verdict: Outcome,
    pub route: Option<Candidate>,
    /// Routes whose prefix matched too, and why each lost.
    pub beaten: Vec<Candidate>,
    pub allow: Option<AllowCheck>,
    pub zones: Vec<ZoneCheck>,
    pub balance: Option<BalanceCheck>,
    /// The clocks the request runs under, client side and upstream side.
    pub timeouts: Option<Timeouts>,
    /// The request head the upstream would receive.
    pub upstream_headers: Vec<(String, String)>,
    pub compression: Compression,
    /// Whether this came from a running edge (zone standing, in-flight counts, health).
    pub live: bool,
    /// What the client may speak to reach the edge for this request: HTTP/1.1, HTTP/2 and,
    /// on https with `http3`, HTTP/3 (and what early data gets).
    #[serde(default)]
    pub client_protocols: String,
    /// On https: the certificate the client gets for its host and where it comes from (a
    /// file, ACME, the default).
    #[serde(default)]
    pub certificate: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Asked {
    pub method: String,
    pub scheme: String,
    pub host: String,
    pub path: String,
    /// The socket peer.
    pub peer: IpAddr,
    /// The client as allow lists, zones and ip_hash see it (X-Forwarded-For from a trusted
    /// proxy, else the peer).
    pub client: IpAddr,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// "proxy", "redirect" or "refuse".
    pub action: String,
    /// The status the edge answers itself with (redirects and refusals).
    pub status: Option<u16>,
    pub reason: String,
    pub location: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Candidate {
    pub route: String,
    pub host: Option<String>,
    pub path: String,
    pub upstream: String,
    pub why: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AllowCheck {
    pub allow: Vec<String>,
    pub admitted: bool,
    /// The network that admits the client.
    pub matched: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ZoneCheck {
    pub zone: String,
    pub rate: String,
    pub burst: u32,
    pub nodelay: bool,
    pub dry_run: bool,
    pub store: String,
    /// The client's standing now (a running edge only).
    pub standing: Option<ZoneStanding>,
    /// Why the standing could not be read (Redis unreachable).
    pub unread: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ZoneStanding {
    /// Requests above the rate the client has now.
    pub excess: f64,
    /// "pass", "delay" or "reject": what this request would get.
    pub next: String,
    pub delay_ms: u64,
    pub retry_after_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BalanceCheck {
    pub upstream: String,
    pub balance: String,
    /// The server the request would go to; `None` when no server is usable.
    pub pick: Option<String>,
    pub why: String,
    pub servers: Vec<ServerView>,
    /// How the servers are reached: "HTTP/1.1", "HTTP/2 (prior knowledge)", "HTTP/1.1 over
    /// TLS, verifying billing.internal", ...
    #[serde(default)]
    pub reached: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ServerView {
    pub server: String,
    pub state: String,
    pub up: bool,
    pub weight: u32,
    pub in_flight: u32,
}

/// The clocks of a request that goes upstream, in seconds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Timeouts {
    /// `client_body_timeout`: the longest the client may pause its body (when it has one).
    pub client_body: Option<f64>,
    /// `send_timeout`: the longest the client may take no bytes of the answer.
    pub client_send: f64,
    pub upstream_connect: f64,
    pub upstream_read: f64,
    pub upstream_send: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Compression {
    pub enabled: bool,
    /// The codings the client accepts that the edge speaks (gzip, br, zstd).
    pub accepted: Vec<String>,
    pub min_length: u64,
    pub types: Vec<String>,
    pub says: String,
}

/// Explains `question` against `snapshot`; `live` when the snapshot is a running edge's.
/// `certificates`: what the TLS listeners serve (the running edge's, or loaded from the
/// config's files).
pub async fn explain(
    snapshot: &Arc<Snapshot>,
    question: &Question,
    live: bool,
    certificates: Option<&crate::tls::Certificates>,
) -> Result<Explanation, String> {
    let (req, scheme) = request_head(question)?;
    let tls = scheme == "https";
    let header = |name: &str| req.headers.get(name).map(|v| v.as_bytes());
    let client_ip = client::client_ip(
        question.peer,
        header("x-forwarded-for"),
        snapshot.trusted_proxies(),
    );
    // The checks of `proxy::admit`, in its order; the first refusal is the verdict.
    let checked = request::refused_method(&req)
        .and_then(|()| request::size(&req, None, snapshot.config.edge.head_limits()))
        .and_then(|()| request::target(req.raw_path()))
        .and_then(|()| request::framing(&req))
        .and_then(|_| request::host(&req))
        .and_then(|host| {
            Ok((
                host.to_string(),
                request::normalize_path(req.uri.path())?.into_owned(),
            ))
        });
    let (host, path) = match &checked {
        Ok((h, p)) => (h.clone(), p.clone()),
        Err(_) => (
            String::from_utf8_lossy(header("host").unwrap_or_default()).into_owned(),
            req.uri.path().to_string(),
        ),
    };
    let mut e = Explanation {
        request: Asked {
            method: question.method.clone(),
            scheme,
            host: host.clone(),
            path: path.clone(),
            peer: question.peer,
            client: client_ip,
        },
        verdict: Outcome {
            action: "proxy".into(),
            status: None,
            reason: String::new(),
            location: None,
        },
        route: None,
        beaten: Vec::new(),
        allow: None,
        zones: Vec::new(),
        balance: None,
        timeouts: None,
        upstream_headers: Vec::new(),
        compression: compression::compression(snapshot, &req),
        live,
        client_protocols: client_protocols(snapshot, tls, &question.method),
        certificate: match tls {
            true => certificate(snapshot, certificates, &normalize_host(&host)),
            false => String::new(),
        },
    };
    if let Err((status, why)) = checked {
        e.refuse(status, format!("the request head is refused: {why}"));
    }
    if !tls && snapshot.redirects_to_https() && path != "/health" {
        e.refuse(
            308,
            "plain HTTP is redirected to https (all but /health)".into(),
        );
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        e.verdict.location = Some(snapshot.https_location(&host, target));
    }
    let normalized = normalize_host(&host).into_owned();
    let Some(route) = snapshot.router.find(&normalized, &path).cloned() else {
        e.refuse(404, "no route matches this host and path".into());
        e.beaten = beaten(snapshot, None, &normalized, &path);
        return Ok(e);
    };
    e.route = Some(candidate(
        &route.settings,
        winner_why(&route.settings, &normalized),
    ));
    e.beaten = beaten(snapshot, Some(&route.settings), &normalized, &path);
    e.allow_and_zones(&route, client_ip).await;
    let declared = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > snapshot.config.edge.client_max_body_size) {
        e.refuse(
            413,
            "the declared body is larger than client_max_body_size".into(),
        );
    }
    e.balance = Some(balance(&route, client_ip, live));
    let edge = &snapshot.config.edge;
    let upstream = &route.upstream.settings;
    let has_body = declared.is_some_and(|len| len > 0)
        || req.headers.contains_key(http::header::TRANSFER_ENCODING);
    e.timeouts = Some(Timeouts {
        client_body: has_body.then_some(edge.client_body_timeout.as_secs_f64()),
        client_send: edge.send_timeout.as_secs_f64(),
        upstream_connect: upstream.connect_timeout.as_secs_f64(),
        upstream_read: upstream.read_timeout.as_secs_f64(),
        upstream_send: upstream.send_timeout.as_secs_f64(),
    });
    e.upstream_headers = upstream_headers(snapshot, &req, question.peer, client_ip, tls, &route);
    e.settle(&route.upstream.name);
    Ok(e)
}

/// The request head the upstream would receive (`forward::upstream_request` itself), with
/// the Connection and Upgrade a websocket route relays.
/// How a client may bring this request: the protocols of its listener, and over HTTP/3 what
/// 0-RTT early data gets.
fn client_protocols(snapshot: &Snapshot, tls: bool, method: &str) -> String {
    let edge = &snapshot.config.edge;
    if !tls {
        return match edge.http2_cleartext {
            true => "HTTP/1.1, or HTTP/2 with prior knowledge (http2_cleartext)".into(),
            false => "HTTP/1.1".into(),
        };
    }
    if !edge.http3 {
        return "HTTP/1.1 or HTTP/2 (by ALPN); no HTTP/3 (http3 = false)".into();
    }
    let ports: Vec<String> = edge
        .https_listen
        .iter()
        .map(|a| a.port().to_string())
        .collect();
    let early = match (edge.http3_early_data, matches!(method, "GET" | "HEAD" | "OPTIONS")) {
        (false, _) => "no 0-RTT (http3_early_data = false)",
        (true, true) => "in 0-RTT early data it is served, with Early-Data: 1 upstream",
        (true, false) => "in 0-RTT early data it is answered 425 Too Early (the client sends it again after its handshake)",
    };
    format!(
        "HTTP/1.1 or HTTP/2 (by ALPN), or HTTP/3 on UDP port {} (advertised by Alt-Svc); {early}",
        ports.join(", ")
    )
}

/// The certificate a TLS client asking for `host` gets, and where it comes from.
fn certificate(
    snapshot: &Snapshot,
    certificates: Option<&crate::tls::Certificates>,
    host: &str,
) -> String {
    let Some(certificates) = certificates else {
        return "none: the [tls] certificate files cannot be loaded here (`edge run` would not start)"
            .into();
    };
    let served = certificates.describe(host);
    let acme = snapshot.config.tls.as_ref().and_then(|t| t.acme.as_ref());
    let Some(acme) = acme.filter(|a| a.domains.iter().any(|d| d == host)) else {
        return served;
    };
    let from = format!(
        "ACME from {} ({}, store {})",
        acme.directory,
        acme.challenge.name(),
        acme.store.name()
    );
    match certificates.served_for(host) {
        Some(("file", _)) => format!("{served}; a file names it, so it wins over {from}"),
        Some(("acme", _)) => format!("obtained by {from}"),
        _ => format!("{from}, once ordered; until then {served}"),
    }
}

fn upstream_headers(
    snapshot: &Arc<Snapshot>,
    req: &RequestHeader,
    peer: IpAddr,
    client_ip: IpAddr,
    tls: bool,
    route: &Route,
) -> Vec<(String, String)> {
    let header = |name: &str| req.headers.get(name).map(|v| v.as_bytes());
    let mut headers = Vec::new();
    let mut ctx = RequestCtx::new(snapshot.clone());
    ctx.tls = tls;
    ctx.peer_ip = peer;
    ctx.client_ip = client_ip;
    ctx.request_id = client::request_id(header("x-request-id"));
    // A websocket route forwards an upgrade with its `Upgrade` and `Connection: upgrade`.
    let text = |name: &str| header(name).map(|v| String::from_utf8_lossy(v).to_ascii_lowercase());
    let upgrade = route.settings.websocket
        && text("upgrade").is_some()
        && text("connection").is_some_and(|c| c.split(',').any(|t| t.trim() == "upgrade"));
    let mut out = Vec::new();
    // The query always has a Host (see `request_head`): no server name is needed for one.
    let body = &forward::Body::Empty;
    if forward::upstream_request(req, &ctx, body, upgrade, "", &mut out).is_ok() {
        headers = head_fields(&out);
    }
    headers
}

/// The fields of a request head as written (names in lower case, as `http` spells them).
fn head_fields(head: &[u8]) -> Vec<(String, String)> {
    // Room for every line of it, so no field is left out.
    let lines = head.iter().filter(|&&b| b == b'\n').count();
    let mut fields = vec![httparse::EMPTY_HEADER; lines];
    let mut parsed = httparse::Request::new(&mut fields);
    if parsed.parse(head).is_err() {
        return Vec::new();
    }
    parsed
        .headers
        .iter()
        .map(|f| {
            (
                f.name.to_ascii_lowercase(),
                String::from_utf8_lossy(f.value).into_owned(),
            )
        })
        .collect()
}

/// The request head the question describes, and its scheme.
fn request_head(question: &Question) -> Result<(RequestHeader, String), String> {
    let target = question.target()?;
    let mut req = RequestHeader::build(question.method.as_str(), target.path.as_bytes(), None)
        .map_err(|e| format!("not a request: {e}"))?;
    let has_host = question
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("host"));
    if !has_host {
        req.insert_header("host", target.host.as_str())
            .map_err(|e| format!("bad host: {e}"))?;
    }
    for (name, value) in &question.headers {
        req.append_header(name.clone(), value.as_str())
            .map_err(|e| format!("bad header {name}: {e}"))?;
    }
    Ok((req, target.scheme))
}

impl Explanation {
    /// The edge answers the request itself, unless an earlier check already did.
    fn refuse(&mut self, status: u16, reason: String) {
        if self.verdict.status.is_none() {
            self.verdict = Outcome {
                action: if status == 308 { "redirect" } else { "refuse" }.into(),
                status: Some(status),
                reason,
                location: None,
            };
        }
    }

    /// The route's allow list and zones (with the client's standing on a running edge).
    async fn allow_and_zones(&mut self, route: &Route, client_ip: IpAddr) {
        if !route.settings.allow.is_empty() {
            let matched = route
                .settings
                .allow
                .iter()
                .find(|n| client::net_contains(n, client_ip))
                .map(|n| n.to_string());
            self.allow = Some(AllowCheck {
                allow: route.settings.allow.iter().map(|n| n.to_string()).collect(),
                admitted: matched.is_some(),
                matched: matched.clone(),
            });
            if matched.is_none() {
                self.refuse(403, format!("{client_ip} is not in the route's allow list"));
            }
        }
        self.zones = zones(route, client_ip, self.live).await;
        let rejected = self
            .zones
            .iter()
            .find(|z| !z.dry_run && z.standing.as_ref().is_some_and(|s| s.next == "reject"))
            .map(|z| z.zone.clone());
        if let Some(zone) = rejected {
            self.refuse(
                route.settings.limit_status,
                format!("zone `{zone}` rejects this client now"),
            );
        }
    }

    /// Nothing refused the request: it goes to the server the balancer picks, if any.
    fn settle(&mut self, upstream: &str) {
        if self.verdict.status.is_some() {
            return;
        }
        let pick = self.balance.as_ref().and_then(|b| b.pick.clone());
        self.verdict = match pick {
            Some(server) => Outcome {
                action: "proxy".into(),
                status: None,
                reason: format!(
                    "to `{upstream}`, server {server}{}",
                    if self.live {
                        ""
                    } else {
                        " (as a fresh edge would: no failures counted, no probe answered yet)"
                    }
                ),
                location: None,
            },
            None => Outcome {
                action: "refuse".into(),
                status: Some(502),
                reason: format!("no server of `{upstream}` is usable"),
                location: None,
            },
        };
    }
}

fn candidate(settings: &RouteSettings, why: String) -> Candidate {
    Candidate {
        route: crate::snapshot::route_name(settings.host.as_deref(), &settings.path),
        host: settings.host.clone(),
        path: settings.path.clone(),
        upstream: settings.upstream.clone(),
        why,
    }
}

/// How a route's host relates to the request's: 0 the same host, 1 a wildcard (longer
/// suffixes first, as the router tries them), 2 any host; `None` when it does not apply.
fn host_rank(route_host: Option<&str>, host: &str) -> Option<(u8, usize)> {
    match route_host {
        None => Some((2, 0)),
        Some(h) => match h.strip_prefix('*') {
            Some(suffix) if host.len() > suffix.len() && host.ends_with(suffix) => {
                Some((1, usize::MAX - suffix.len()))
            }
            Some(_) => None,
            None if h == host => Some((0, 0)),
            None => None,
        },
    }
}

fn host_words(route_host: Option<&str>) -> String {
    match route_host {
        None => "any host".into(),
        Some(h) if h.starts_with('*') => format!("hosts {h}"),
        Some(h) => format!("host {h}"),
    }
}

fn winner_why(settings: &RouteSettings, host: &str) -> String {
    let group = match host_rank(settings.host.as_deref(), host) {
        Some((0, _)) => format!("a route for this host ({host})"),
        Some((1, _)) => format!("a route for {}", host_words(settings.host.as_deref())),
        _ => "a route for any host".into(),
    };
    format!(
        "{group}, and the longest prefix of the path among that host's routes (`{}`)",
        settings.path
    )
}

/// The other routes whose host and prefix match the request, each with why it lost.
fn beaten(
    snapshot: &Snapshot,
    winner: Option<&RouteSettings>,
    host: &str,
    path: &str,
) -> Vec<Candidate> {
    let win_rank = winner.and_then(|w| host_rank(w.host.as_deref(), host));
    // (host rank, prefix length, candidate): sorted as the router tries them.
    let mut out: Vec<((u8, usize), usize, Candidate)> = Vec::new();
    for route in &snapshot.config.routes {
        if winner.is_some_and(|w| w.host == route.host && w.path == route.path)
            || !path.starts_with(route.path.as_str())
        {
            continue;
        }
        let Some(rank) = host_rank(route.host.as_deref(), host) else {
            continue;
        };
        let why = match (winner, win_rank) {
            (Some(w), Some(wr)) if rank > wr => format!(
                "routes for {} are tried before routes for {}, and one of them matched",
                host_words(w.host.as_deref()),
                host_words(route.host.as_deref())
            ),
            (Some(w), _) if route.path.len() < w.path.len() => format!(
                "`{}` is a shorter prefix than `{}`: the longest prefix wins",
                route.path, w.path
            ),
            (Some(_), _) => "the same host and prefix as the chosen route, listed after it".into(),
            (None, _) => "no route matched".into(),
        };
        out.push((rank, route.path.len(), candidate(route, why)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    out.into_iter().map(|(_, _, c)| c).collect()
}

async fn zones(route: &Route, client: IpAddr, live: bool) -> Vec<ZoneCheck> {
    let mut out = Vec::new();
    for limit in &route.limit {
        let rate = limit.zone.settings.rate;
        let (standing, unread) = if live {
            match limit.zone.peek(client, limit.burst).await {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e)),
            }
        } else {
            (None, None)
        };
        out.push(ZoneCheck {
            zone: limit.zone.name.clone(),
            rate: if rate.per.as_secs() == 60 {
                format!("{}r/m", rate.requests)
            } else {
                format!("{}r/s", rate.requests)
            },
            burst: limit.burst,
            nodelay: limit.nodelay,
            dry_run: limit.dry_run,
            store: match limit.zone.settings.store {
                ZoneStore::Local => "local".into(),
                ZoneStore::Redis => "redis".into(),
            },
            standing: standing.map(|s| {
                let (next, delay_ms, retry_after_ms) = match s.next {
                    Verdict::Reject { retry_after } => {
                        ("reject", 0, retry_after.as_millis() as u64)
                    }
                    Verdict::Pass { delay } if !delay.is_zero() && !limit.nodelay => {
                        ("delay", delay.as_millis() as u64, 0)
                    }
                    Verdict::Pass { .. } => ("pass", 0, 0),
                };
                ZoneStanding {
                    excess: s.excess,
                    next: next.into(),
                    delay_ms,
                    retry_after_ms,
                }
            }),
            unread,
        });
    }
    out
}

fn balance(route: &Route, client: IpAddr, live: bool) -> BalanceCheck {
    let upstream = &route.upstream;
    let servers: Vec<ServerView> = upstream
        .servers
        .iter()
        .map(|s| ServerView {
            server: s.label.clone(),
            state: s.health().into(),
            up: s.is_up(),
            weight: s.weight,
            in_flight: s.state.in_flight.load(std::sync::atomic::Ordering::Relaxed),
        })
        .collect();
    let pick = upstream.preview(client, !live);
    let down: Vec<&str> = servers
        .iter()
        .filter(|s| live && !s.up)
        .map(|s| s.server.as_str())
        .collect();
    let mut why = match upstream.settings.balance {
        Balance::IpHash => {
            let key = match client {
                IpAddr::V4(a) => {
                    let o = a.octets();
                    format!("{}.{}.{}.0/24", o[0], o[1], o[2])
                }
                IpAddr::V6(a) => a.to_string(),
            };
            format!("ip_hash: the client's key {key} hashes to this server (nginx's hash)")
        }
        Balance::LeastConn => {
            "least_conn: the fewest requests in flight relative to weight (ties by round robin)"
                .into()
        }
        Balance::RoundRobin => "round_robin: next in the smooth weighted rotation".into(),
    };
    if !down.is_empty() {
        why.push_str(&format!("; not usable now: {}", down.join(", ")));
    }
    BalanceCheck {
        upstream: upstream.name.clone(),
        balance: upstream.settings.balance.as_str().into(),
        pick: pick.map(|i| upstream.servers[i].label.clone()),
        why,
        servers,
        reached: reached(&upstream.settings),
    }
}

/// How an upstream's servers are reached, in words.
fn reached(settings: &crate::config::UpstreamSettings) -> String {
    use crate::config::UpstreamProtocol;
    let Some(tls) = &settings.tls else {
        return match settings.protocol {
            UpstreamProtocol::H2 => "HTTP/2 with prior knowledge (cleartext)".into(),
            _ => "HTTP/1.1 (cleartext)".into(),
        };
    };
    let protocol = match settings.protocol {
        UpstreamProtocol::Http1 => "HTTP/1.1",
        UpstreamProtocol::H2 => "HTTP/2",
        UpstreamProtocol::Auto => "HTTP/2 or HTTP/1.1 as the server chooses",
    };
    let name = tls
        .server_name
        .as_deref()
        .map_or("each server's host".to_string(), |n| format!("`{n}`"));
    let roots = tls
        .ca
        .as_ref()
        .map_or("the system's roots".to_string(), |p| {
            p.display().to_string()
        });
    let mut words = if tls.verify {
        format!("{protocol} over TLS, the certificate verified for {name} against {roots}")
    } else {
        format!("{protocol} over TLS, the certificate NOT verified (verify = false)")
    };
    if tls.cert.is_some() {
        words.push_str(", with a client certificate");
    }
    words
}

#[cfg(test)]
mod tests;
