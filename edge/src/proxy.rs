//! The request's path through the edge, top to bottom, the same for every protocol a client
//! speaks (an HTTP/1 request, an HTTP/2 stream: a [`Downstream`] session):
//! admit (head checks, the https redirect, route, allow, rate limit, body size) ▸ forward
//! ([`crate::forward`]: body, server, connection, answer, retries; a websocket upgrade's
//! tunnel) ▸ fail (the error the client sees) ▸ log (metrics and the access log).

use crate::client;
use crate::ctx::RequestCtx;
use crate::downstream::Downstream;
use crate::observe::access_log;
use crate::observe::connections::{self, TimeoutPhase};
use crate::observe::metrics::{METRICS, UNROUTED};
use crate::ratelimit::{self, Admission};
use crate::request;
use crate::respond;
use crate::route::normalize_host;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use http::StatusCode;
use pingora::prelude::*;
use pingora::{ErrorSource, ErrorType};
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// The edge's request path; the config it follows is swapped underneath by reloads.
pub struct EdgeProxy {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
}

/// How a request ended, for the session it came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Answered whole.
    Whole,
    /// Failed before any answer went out, and was answered with the error (or its client is
    /// gone).
    Failed,
    /// Failed after its answer's head went out: the answer is cut short.
    Cut,
}

impl EdgeProxy {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> EdgeProxy {
        EdgeProxy { snapshot }
    }

    /// One request, whatever protocol carries it, top to bottom: its context on the config
    /// of now ▸ compression as the client asks ▸ admit ▸ forward (or the upgrade's tunnel)
    /// ▸ an error answer if it failed ([`fail`]) ▸ metrics and the access log ([`log`]).
    pub async fn serve(&self, session: &mut impl Downstream) -> Served {
        let mut ctx = RequestCtx::new(self.snapshot.load_full());
        session.compress(compression_level(
            &ctx.snapshot.config.gzip,
            session.req_header(),
        ));
        let result = match admit(session, &mut ctx).await {
            Ok(Verdict::Answered) => Ok(()),
            Ok(Verdict::Forward(route)) => {
                crate::forward::forward(session, &mut ctx, &route, false).await
            }
            Ok(Verdict::Upgrade(route)) => {
                crate::forward::forward(session, &mut ctx, &route, true).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            fail(session, e, &ctx).await;
        }
        log(session, result.as_ref().err().map(|e| &**e), &ctx);
        match result {
            Ok(()) => Served::Whole,
            Err(_) if session.response_status().is_some_and(answered) => Served::Cut,
            Err(_) => Served::Failed,
        }
    }
}

/// Whether a response head with `status` is the answer (not an interim one): a final status,
/// or 101, after which the connection is a tunnel.
fn answered(status: StatusCode) -> bool {
    !status.is_informational() || status == StatusCode::SWITCHING_PROTOCOLS
}

/// What [`admit`] decided.
pub enum Verdict {
    /// The edge has answered the request itself.
    Answered,
    /// To the route's upstream.
    Forward(Arc<crate::snapshot::Route>),
    /// A websocket upgrade on a route that allows it: forwarded with its `Upgrade`, and
    /// tunnelled after a 101 ([`crate::websocket`]).
    Upgrade(Arc<crate::snapshot::Route>),
}

/// The checks before a request may go upstream, in order: who asks (client IP, request id),
/// what it asks for (head size, framing, Host, path), the https redirect, the route, its
/// allow list, its zones, the declared body size, and websocket upgrades.
pub async fn admit(session: &mut impl Downstream, ctx: &mut RequestCtx) -> Result<Verdict> {
    // Who is asking.
    identify(session, ctx);

    // The config is read through the request context's own reference: a copy of the `Arc`
    // would be two more writes per request to a count every thread writes.
    let snapshot = &ctx.snapshot;
    let edge = &snapshot.config.edge;

    // Early data (0-RTT) can be replayed by anyone who saw it: only a safe method is served
    // from it; the client sends anything else again after its handshake (RFC 8470).
    if session.early_data() {
        ctx.early_data = true;
        if !matches!(
            session.req_header().method.as_str(),
            "GET" | "HEAD" | "OPTIONS"
        ) {
            return refuse(
                session,
                ctx,
                425,
                "request sent in early data; send it again",
            )
            .await;
        }
    }

    // What it asks for: one sane Host, a path normalised for matching.
    let Checked {
        host,
        path,
        declared,
    } = match host_and_path(session, edge) {
        Ok(found) => found,
        Err((status, why)) => {
            // Whatever follows on this connection cannot be trusted to be a request.
            session.set_keepalive_off();
            return refuse(session, ctx, status, why).await;
        }
    };

    // An ACME CA validating a name by HTTP-01: answered before routing and the redirect.
    if !ctx.tls {
        let answer = path
            .strip_prefix("/.well-known/acme-challenge/")
            .and_then(crate::acme::http01_answer);
        if let Some(answer) = answer {
            respond::acme_http01(session, answer, &ctx.request_id).await?;
            return Ok(Verdict::Answered);
        }
    }

    // Plain HTTP goes to https, except the health check and cleartext HTTP/2 (which a
    // client speaks only when the config opens it: `http2_cleartext`, gRPC inside a
    // cluster, whose clients follow no redirect).
    let h2c = session.req_header().version >= http::Version::HTTP_2;
    if !ctx.tls && snapshot.redirects_to_https() && path != "/health" && !h2c {
        let target = session.req_header().uri.path_and_query();
        let location = snapshot.https_location(host, target.map_or("/", |pq| pq.as_str()));
        respond::redirect_to_https(session, &location, &ctx.request_id).await?;
        return Ok(Verdict::Answered);
    }

    // Which route.
    let Some(route) = snapshot.router.find(&normalize_host(host), &path).cloned() else {
        return refuse(session, ctx, 404, "no route for this path").await;
    };

    ctx.route = Some(route.clone());

    // Who may use it.
    if !route.allows(ctx.client_ip) {
        return refuse(session, ctx, 403, "forbidden").await;
    }

    // How fast it may come (nginx limit_req): every zone of the route must admit.
    let admission = ratelimit::admit(&route.limit, ctx.client_ip).await;
    if !route.limit.is_empty() {
        ctx.limit = Some(match &admission {
            Admission::Pass { delay } if !delay.is_zero() => "delayed".into(),
            Admission::Pass { .. } => "passed".into(),
            Admission::Reject { zone, .. } => format!("rejected:{zone}").into(),
        });
    }
    match admission {
        Admission::Pass { delay } if !delay.is_zero() => tokio::time::sleep(delay).await,
        Admission::Pass { .. } => {}
        Admission::Reject { zone, retry_after } => {
            respond::rate_limited(session, &route, &zone, retry_after, ctx).await?;
            return Ok(Verdict::Answered);
        }
    }

    // How much it may send.
    if declared.is_some_and(|len| len > edge.client_max_body_size) {
        let too_large = "request body is larger than client_max_body_size";
        return refuse(session, ctx, 413, too_large).await;
    }

    // Websocket upgrades are relayed by the edge itself (see websocket.rs).
    if route.settings.websocket && session.is_upgrade_req() {
        return Ok(Verdict::Upgrade(route));
    }
    Ok(Verdict::Forward(route))
}

/// Refuses the request with the edge's JSON error (its request id, HSTS where due); nothing
/// more is done with it.
async fn refuse(
    session: &mut impl Downstream,
    ctx: &RequestCtx,
    status: u16,
    message: &str,
) -> Result<Verdict> {
    respond::json_error(session, status, message, ctx).await?;
    Ok(Verdict::Answered)
}

/// Who is asking: TLS or not, the peer, the client behind trusted proxies, the request id.
fn identify(session: &impl Downstream, ctx: &mut RequestCtx) {
    ctx.tls = session.ssl_digest().is_some();
    ctx.peer_ip = session.peer_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let headers = &session.req_header().headers;
    let trusted = ctx.snapshot.trusted_proxies();
    // The forwarded chain names the client only behind a trusted proxy: without one it is
    // not looked up (a map lookup per request).
    let forwarded_for = match trusted.is_empty() {
        true => None,
        false => headers.get(crate::ctx::X_FORWARDED_FOR),
    };
    ctx.client_ip = client::client_ip(ctx.peer_ip, forwarded_for.map(|v| v.as_bytes()), trusted);
    ctx.request_id =
        client::request_id(headers.get(crate::ctx::X_REQUEST_ID).map(|v| v.as_bytes()));
    ctx.grpc = crate::grpc::is_call(session.req_header());
}

/// What the head checks found: the request's one Host, its path normalised for matching,
/// and the body length it declares.
struct Checked<'s> {
    host: &'s str,
    path: Cow<'s, str>,
    declared: Option<u64>,
}

/// The head's size and framing checked, its one Host, its path normalised for matching, and
/// the body length it declares; or the status and reason it is refused with.
fn host_and_path<'s>(
    session: &'s impl Downstream,
    edge: &crate::config::EdgeSettings,
) -> Result<Checked<'s>, (u16, &'static str)> {
    let req = session.req_header();
    let raw_head = session.raw_head();
    request::refused_method(req)?;
    request::size(req, raw_head.as_deref(), edge.head_limits())?;
    request::target(req.raw_path())?;
    let declared = request::framing(req)?;
    let host = request::host(req)?;
    let path = request::normalize_path(req.uri.path())?;
    Ok(Checked {
        host,
        path,
        declared,
    })
}

/// Counts the finished request in its route's metrics and writes its access-log line.
pub fn log(session: &impl Downstream, e: Option<&Error>, ctx: &RequestCtx) {
    let status = match e.and_then(client_timeout) {
        Some(phase) => {
            connections::client_timed_out(phase);
            CLIENT_TIMED_OUT
        }
        None if e.is_some_and(client_left) => {
            METRICS.client_closed(ctx.route.as_ref().map_or("none", |r| &r.name));
            CLIENT_CLOSED
        }
        None => session.response_status().map_or(0, |s| s.as_u16()),
    };
    let elapsed = ctx.started.elapsed();
    let req = session.req_header();
    METRICS.client_request(req.version);
    let metrics = ctx.route.as_ref().map_or(&*UNROUTED, |r| &r.metrics);
    metrics.observe(&req.method, status, elapsed.as_secs_f64());
    if !access_log::enabled() {
        return;
    }
    let server = ctx
        .route
        .as_ref()
        .zip(ctx.server.as_ref().map(|(i, _)| *i).or(ctx.attempts.last()))
        .and_then(|(r, i)| r.upstream.servers.get(i));
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let timestamp = crate::clock::rfc3339_millis_now();
    access_log::log(&access_log::Entry {
        timestamp: &timestamp,
        request_id: &ctx.request_id,
        client_ip: ctx.client_ip,
        method: req.method.as_str(),
        host: host
            .or(req.uri.authority().map(|a| a.as_str()))
            .unwrap_or(""),
        path: req.uri.path(),
        protocol: crate::observe::metrics::protocol_name(req.version),
        status,
        bytes_sent: session.body_bytes_sent(),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        upstream: ctx
            .route
            .as_ref()
            .filter(|_| ctx.went_upstream)
            .map(|r| r.upstream.name.as_str()),
        server: server.map(|s| s.label.as_str()),
        upstream_duration_ms: ctx.upstream_elapsed.map(|d| d.as_secs_f64() * 1000.0),
        upstream_protocol: ctx.upstream_protocol,
        grpc_status: session.grpc_status(),
        route: ctx.route.as_ref().map(|r| r.name.as_str()),
        limit: ctx.limit.as_deref(),
        tls_version: session
            .ssl_digest()
            .map(|t| connections::tls_version_name(&t.version)),
        user_agent: req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    });
}

/// Answers a request that failed with the error's status, unless a response has begun or the
/// client is gone; the status, or 0 for none.
pub async fn fail(session: &mut impl Downstream, e: &Error, ctx: &RequestCtx) -> u16 {
    let status = error_status(e);
    // An informational head (103) may have gone out: the final answer is still owed.
    if status > 0 && !session.response_status().is_some_and(answered) {
        // The connection ends after an error answer: the answer says so.
        session.set_keepalive_off();
        let message = match status {
            // A gRPC client gets the edge's own words where it made them (a call to an
            // upstream that does not speak HTTP/2).
            _ if ctx.grpc && matches!(e.etype(), ErrorType::HTTPStatus(_)) => {
                e.context.as_ref().map_or("", |c| c.as_str())
            }
            502 => "the upstream server could not be reached or failed",
            504 => "the upstream server did not answer in time",
            413 => "request body is larger than client_max_body_size",
            400 => "malformed request",
            _ => respond::error_name(status),
        };
        if let Err(write_error) = respond::json_error(session, status, message, ctx).await {
            tracing::debug!(error = %write_error, "could not send the error response");
        }
    }
    status
}

/// The compression level for a request: `[gzip] level` when enabled, none for HTTP/1.0
/// clients (compressed bodies have no length, and HTTP/1.0 has no chunked coding: nginx's
/// `gzip_http_version 1.1`).
fn compression_level(
    gzip: &crate::config::GzipSettings,
    req: &pingora::http::RequestHeader,
) -> u32 {
    if gzip.enabled && req.version >= http::Version::HTTP_11 {
        gzip.level
    } else {
        0
    }
}

/// The status logged for a request whose client closed its connection before the whole
/// response reached it (nginx's 499; no client ever sees it).
pub const CLIENT_CLOSED: u16 = 499;

/// The status logged for a request a client clock ended: its body stopped coming
/// (`client_body_timeout`), or it stopped taking the response (`send_timeout`). A client
/// whose body timed out before any answer went out is answered 408 too.
pub const CLIENT_TIMED_OUT: u16 = 408;

/// Which client clock ended the request, if one did: a write toward the client that made no
/// progress for `send_timeout` (on the own sessions a `WriteTimedout`; on Pingora's, a write
/// error whose cause is the connection's send clock), or a request body that stopped coming
/// for `client_body_timeout`.
fn client_timeout(e: &Error) -> Option<TimeoutPhase> {
    if matches!(e.esource(), ErrorSource::Upstream | ErrorSource::Internal) {
        return None;
    }
    match e.etype() {
        ErrorType::WriteTimedout => Some(TimeoutPhase::Send),
        ErrorType::ReadTimedout => Some(TimeoutPhase::Body),
        ErrorType::WriteError => e
            .root_cause()
            .downcast_ref::<std::io::Error>()
            .filter(|io| crate::downstream::clocks::is_send_timeout(io))
            .map(|_| TimeoutPhase::Send),
        _ => None,
    }
}

/// Whether the error is the client's connection closing or breaking under the request.
fn client_left(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        )
}

/// The status the client gets for an error that ended the request (0: the client is gone).
fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if *e.esource() == ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            // A client that left, or stopped taking bytes, can be told nothing more.
            ErrorSource::Downstream if client_left(e) => 0,
            ErrorSource::Downstream => match client_timeout(e) {
                Some(TimeoutPhase::Send) => 0,
                Some(TimeoutPhase::Body) => CLIENT_TIMED_OUT,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}
