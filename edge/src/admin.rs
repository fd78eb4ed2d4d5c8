//! The admin listener: `/health` (the edge's own health), `/status` (upstreams and servers),
//! `/metrics`, `POST /reload`, and `/explain` (what the edge would do with a request).
//!
//! Loopback by default; validation refuses a public address without `admin_allow_public`.

use crate::clock::{rfc3339, rfc3339_now};
use crate::held;
use crate::reload::{Outcome, Reloader};
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// The live status page: one self-contained file that polls `/status` for JSON.
const STATUS_PAGE: &str = include_str!("observe/status.html");

/// `/status` answers HTML to browsers (`Accept: text/html`, or `?format=html`) and JSON to
/// everyone else (`?format=json` forces it).
fn wants_html(req: &pingora::http::RequestHeader) -> bool {
    match req.uri.query() {
        Some(q) if q.split('&').any(|p| p == "format=json") => return false,
        Some(q) if q.split('&').any(|p| p == "format=html") => return true,
        _ => {}
    }
    req.headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// Serves the admin endpoints from the live snapshot.
pub struct AdminApp {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub started: Instant,
    pub reloader: Arc<Reloader>,
    pub exposition: crate::scrape::Exposition,
    /// What the TLS listeners serve (for `/status`'s `acme`); none without `[tls]`.
    pub certificates: Option<Arc<crate::tls::Certificates>>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let post = session.req_header().method == http::Method::POST;
        let snapshot = self.snapshot.load_full();
        let (status, body) = match (path.as_str(), post) {
            ("/health", _) => self.health(&snapshot),
            ("/status", _) if wants_html(session.req_header()) => {
                return Response::builder()
                    .status(200)
                    .header("content-type", "text/html; charset=utf-8")
                    .header("content-length", STATUS_PAGE.len())
                    .header("cache-control", "no-store")
                    .header(
                        "content-security-policy",
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
                    )
                    .body(STATUS_PAGE.as_bytes().to_vec())
                    .unwrap_or_else(|_| Response::new(Vec::new()));
            }
            ("/status", _) => (200, self.status(&snapshot)),
            ("/metrics", _) => {
                let text = self.exposition.render();
                return Response::builder()
                    .status(200)
                    .header("content-type", "text/plain; version=0.0.4")
                    .header("content-length", text.len())
                    .body(text.into_bytes())
                    .unwrap_or_else(|_| Response::new(Vec::new()));
            }
            ("/explain", _) => {
                let query = session.req_header().uri.query().unwrap_or("");
                let answer = match crate::explain::Question::from_query(query) {
                    Ok(q) => {
                        crate::explain::explain(&snapshot, &q, true, self.certificates.as_deref())
                            .await
                    }
                    Err(e) => Err(e),
                };
                match answer {
                    Ok(explanation) => (200, json!(explanation)),
                    Err(message) => (
                        400,
                        json!({"error": "bad_request", "status": 400, "message": message}),
                    ),
                }
            }
            ("/reload", true) => self.reload().await,
            ("/reload", false) => (
                405,
                json!({"error": "method_not_allowed", "status": 405, "message": "POST /reload"}),
            ),
            _ => (404, json!({"error": "not_found", "status": 404})),
        };
        let body = body.to_string().into_bytes();
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .header("cache-control", "no-store")
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

impl AdminApp {
    /// `POST /reload`: 200 with what changed, or 400 with every error (the config is kept).
    async fn reload(&self) -> (u16, Value) {
        let reloader = self.reloader.clone();
        let result = tokio::task::spawn_blocking(move || reloader.reload("POST /reload")).await;
        match result {
            Ok(Ok(Outcome::Unchanged)) => (200, json!({"result": "unchanged"})),
            Ok(Ok(Outcome::Applied(diff))) => (
                200,
                json!({"result": "applied", "changes": diff.to_string(), "needs_upgrade": diff.needs_upgrade}),
            ),
            Ok(Err(errors)) => (
                400,
                json!({
                    "result": "refused",
                    "errors": errors.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                }),
            ),
            Err(e) => (500, json!({"result": "failed", "error": e.to_string()})),
        }
    }

    fn status(&self, snapshot: &Snapshot) -> Value {
        let mut body = status(snapshot);
        let stats = &self.reloader.stats;
        body["reloads"] = json!({
            "generation": stats.generation.load(Ordering::Relaxed),
            "applied": stats.applied.load(Ordering::Relaxed),
            "refused": stats.refused.load(Ordering::Relaxed),
            "last_applied": rfc3339(stats.last_applied_unix.load(Ordering::Relaxed)),
            // Deprecated names, served for one more release (docs/observability.md, changelog).
            "succeeded": stats.applied.load(Ordering::Relaxed),
            "failed": stats.refused.load(Ordering::Relaxed),
            "last_success": rfc3339(stats.last_applied_unix.load(Ordering::Relaxed)),
            "config_hash": format!("{:016x}", stats.config_hash.load(Ordering::Relaxed)),
            "recent": stats.history().iter().rev().map(|e| json!({
                "at": rfc3339(e.at),
                "trigger": e.trigger,
                "result": e.result,
                "details": e.details,
            })).collect::<Vec<_>>(),
        });
        let edge = &snapshot.config.edge;
        let open = crate::observe::connections::open_now();
        body["http3"] = json!({
            "enabled": edge.http3,
            "early_data": edge.http3_early_data,
            "udp_port": crate::quic::serving_port(),
            "connections": open.iter().find(|(l, _)| l.as_str() == "quic").map_or(0, |(_, n)| *n),
            "handshakes_in_progress": crate::quic::handshakes_in_progress(),
            "retries": crate::quic::RETRIES.load(Ordering::Relaxed),
        });
        let acme = snapshot.config.tls.as_ref().and_then(|t| t.acme.as_ref());
        if let (Some(acme), Some(certificates)) = (acme, &self.certificates) {
            body["acme"] = acme_status(acme, certificates);
        }
        body["time"] = Value::from(rfc3339_now());
        body["uptime_seconds"] = Value::from(self.started.elapsed().as_secs());
        body
    }

    /// The content engine's health format (docs/context.md): healthy when every upstream has a usable
    /// server, degraded otherwise (the edge itself still serves). `unprobed` names the
    /// upstreams with a server counted up that nothing has checked yet (no probe has
    /// answered, no request has reached it).
    fn health(&self, snapshot: &Snapshot) -> (u16, Value) {
        let mut checks = serde_json::Map::new();
        let mut unprobed = Vec::new();
        let mut degraded = false;
        let mut names: Vec<&String> = snapshot.upstreams.keys().collect();
        names.sort();
        for name in names {
            let upstream = &snapshot.upstreams[name];
            let up = upstream.has_usable_server();
            degraded |= !up;
            checks.insert(
                name.clone(),
                Value::from(if up { "healthy" } else { "unhealthy" }),
            );
            if upstream
                .servers
                .iter()
                .any(|s| s.health() == "up (unprobed)")
            {
                unprobed.push(name.clone());
            }
        }
        // A certificate ACME keeps that is missing or within a week of its end.
        let acme = held::lock(&crate::acme::STATS);
        let mut acme_names: Vec<&String> = acme.names.keys().collect();
        acme_names.sort();
        for name in acme_names {
            let word = certificate_health(acme.names[name].expires, unix_now());
            degraded |= word != "healthy";
            checks.insert(format!("certificate:{name}"), Value::from(word));
        }
        drop(acme);
        let in_flight: u32 = snapshot
            .upstreams
            .values()
            .flat_map(|u| &u.servers)
            .map(|s| s.state.in_flight.load(Ordering::Relaxed))
            .sum();
        let body = json!({
            "status": if degraded { "degraded" } else { "healthy" },
            "timestamp": rfc3339_now(),
            "version": env!("CARGO_PKG_VERSION"),
            "checks": checks,
            "unprobed": unprobed,
            "metadata": {
                "uptime": self.started.elapsed().as_secs(),
                "memory_usage": memory_usage(),
                "active_connections": in_flight,
                "config": snapshot.source,
            }
        });
        (200, body)
    }
}

/// A certificate within this of its end makes `/health` degraded.
const EXPIRY_WARNING: u64 = 7 * 86400;

/// `/health`'s word for an ACME certificate expiring at `expires` (Unix seconds, 0: none).
fn certificate_health(expires: u64, now: u64) -> &'static str {
    if expires <= now {
        "missing"
    } else if expires - now <= EXPIRY_WARNING {
        "expiring"
    } else {
        "healthy"
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `/status`'s `acme`: the settings, each name's certificate (which one is served and from
/// where), and this replica's orders and failures.
fn acme_status(
    acme: &crate::config::AcmeSettings,
    certificates: &crate::tls::Certificates,
) -> Value {
    let stats = held::lock(&crate::acme::STATS);
    let names: serde_json::Map<String, Value> = acme
        .domains
        .iter()
        .map(|name| {
            let state = stats.names.get(name).cloned().unwrap_or_default();
            let served = certificates.served_for(name).map(|(from, _)| from);
            let at = |t: u64| {
                if t == 0 {
                    Value::Null
                } else {
                    Value::from(rfc3339(t))
                }
            };
            (
                name.clone(),
                json!({
                    "served_from": served,
                    "expires": at(state.expires),
                    "next_renewal": at(state.next_renewal),
                    "health": certificate_health(state.expires, unix_now()),
                    "last_error": state.last_error,
                }),
            )
        })
        .collect();
    json!({
        "directory": acme.directory,
        "challenge": acme.challenge.name(),
        "store": acme.store.name(),
        "names": names,
        "orders": stats.orders,
        "failures": stats.failures,
    })
}

/// Every upstream and server with its state.
fn status(snapshot: &Snapshot) -> Value {
    let mut upstreams = serde_json::Map::new();
    for (name, u) in &snapshot.upstreams {
        let servers: Vec<Value> = u
            .servers
            .iter()
            .map(|s| {
                json!({
                    "addr": s.label,
                    "resolved": s.addr.map(|a| a.to_string()),
                    "weight": s.weight,
                    "host": s.host,
                    "state": s.health(),
                    "checked": s.state.checked(),
                    "up": s.is_up(),
                    "probe_up": s.state.probe_up(),
                    "degraded": s.state.degraded(),
                    "fails": s.state.fails(),
                    "in_flight": s.state.in_flight.load(Ordering::Relaxed),
                    "attempts": s.state.attempts.load(Ordering::Relaxed),
                    "failures": s.state.failures(),
                    // Deprecated names, served for one more release (docs/observability.md, changelog).
                    "inflight": s.state.in_flight.load(Ordering::Relaxed),
                    "requests": s.state.attempts.load(Ordering::Relaxed),
                })
            })
            .collect();
        upstreams.insert(
            name.clone(),
            json!({
                "balance": u.settings.balance.as_str(),
                "protocol": u.settings.protocol.name(),
                "tls": u.settings.tls.is_some(),
                "servers": servers,
            }),
        );
    }
    let counts = crate::observe::metrics::route_counts();
    let routes: Vec<Value> = snapshot
        .config
        .routes
        .iter()
        .map(|r| {
            let name = crate::snapshot::route_name(r.host.as_deref(), &r.path);
            let [requests, errors] = counts.get(&name).copied().unwrap_or_default();
            json!({
                "name": name,
                "path": r.path,
                "host": r.host,
                "upstream": r.upstream,
                "requests": requests,
                "errors_5xx": errors,
            })
        })
        .collect();
    let mut zones = serde_json::Map::new();
    for (name, z) in &snapshot.zones {
        let c = &z.counters;
        zones.insert(
            name.clone(),
            json!({
                "rate": format!("{}r/{}", z.settings.rate.requests, if z.settings.rate.per.as_secs() == 60 { "m" } else { "s" }),
                "store": if z.redis.is_some() { "redis" } else { "local" },
                "clients": z.local.len(),
                "passed": c.passed.load(Ordering::Relaxed),
                "delayed": c.delayed.load(Ordering::Relaxed),
                "rejected": c.rejected.load(Ordering::Relaxed),
                "dry_run_rejected": c.dry_run_rejected.load(Ordering::Relaxed),
                "redis_fallbacks": c.redis_fallbacks.load(Ordering::Relaxed),
            }),
        );
    }
    json!({ "config": snapshot.source, "upstreams": upstreams, "routes": routes, "zones": zones })
}

/// This process's resident memory as a share of the machine's, like "0.4%".
fn memory_usage() -> String {
    let read_kb = |file: &str, key: &str| -> Option<f64> {
        let text = std::fs::read_to_string(file).ok()?;
        let line = text.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    match (
        read_kb("/proc/self/status", "VmRSS:"),
        read_kb("/proc/meminfo", "MemTotal:"),
    ) {
        (Some(rss), Some(total)) if total > 0.0 => format!("{:.1}%", rss * 100.0 / total),
        _ => "unknown".to_string(),
    }
}

/// The admin listener's service: binds `admin_listen` (taking it over on an upgrade, and
/// recording the address bound, so port 0 works) and serves [`AdminApp`] on each connection
/// through Pingora's HTTP/1 server app.
pub struct AdminListener {
    pub addr: String,
    pub app: Arc<AdminApp>,
    pub bound: Arc<crate::listen::Bound>,
}

#[async_trait]
impl pingora::services::Service for AdminListener {
    async fn start_service(
        &mut self,
        fds: Option<pingora::server::ListenFds>,
        mut shutdown: pingora::server::ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let key = crate::listen::fd_key(&self.addr, "admin");
        let listener = crate::listen::listen_or_exit(&self.addr, &key, fds.as_ref()).await;
        if let Ok(addr) = listener.local_addr() {
            self.bound.record("admin", addr);
        }
        while let Some((tcp, peer)) = crate::listen::next_connection(&listener, &mut shutdown).await
        {
            let (app, shutdown) = (self.app.clone(), shutdown.clone());
            tokio::spawn(async move {
                use pingora::apps::ServerApp;
                let l4 = crate::listen::l4_stream(tcp, peer);
                let mut stream: pingora::protocols::Stream = Box::new(l4);
                while let Some(kept) = app.process_new(stream, &shutdown).await {
                    stream = kept;
                }
            });
        }
    }

    fn name(&self) -> &str {
        "admin"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    /// The socket's name in the upgrade fd table (see `ClientListeners`).
    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(vec![crate::listen::fd_key(&self.addr, "admin")])
    }
}
