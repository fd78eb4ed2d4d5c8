//! Forwarding a request to its upstream in the edge's own loop, as plain calls on the task of
//! the client connection: read the body (whole when it is small), pick a server, take one of
//! its kept-alive connections or open one, send the request, relay the answer, keep the
//! connection for the next request. Toward the client the codec is whichever session
//! carries the request ([`crate::downstream`]); toward the server it is the edge's own
//! ([`crate::upstream::h1`]): the request head is written as bytes from the client's head,
//! the answer's head parsed straight into the map the client's response is built from.
//! There are no channels and no spawned tasks.
//!
//! Which failures move a request to the next server, and which count against a server,
//! follow nginx: a failed connect always moves on; a failure after the request went out moves
//! an idempotent request whose body can be sent again; a reused connection that fails before
//! any answer byte is sent again on a new connection without counting; a client that left
//! ends the request.

mod heads;

use crate::config::UpstreamProtocol;
use crate::ctx::RequestCtx;
use crate::downstream::Downstream;
use crate::downstream::TakenBody;
use crate::observe::metrics::METRICS;
use crate::snapshot::Route;
use crate::upstream::client;
use crate::upstream::exchange::Exchange;
use crate::upstream::h1::{self, Connection};
use crate::upstream::h2;
use crate::upstream::{InFlightGuard, Upstream};
use bytes::{Bytes, BytesMut};
use http::header;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::ErrorType;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use heads::upstream_request;
use heads::{client_head, client_response, upgraded_head, upstream_h2_request};

/// A request body as the edge holds it before going upstream.
pub enum Body {
    /// No body.
    Empty,
    /// The whole body, read before any server was chosen: it can be sent again.
    Whole(Bytes),
    /// The first `client_body_buffer_size` bytes; the rest is read from the client while it
    /// is sent, so it can go to one server only.
    Streaming(Bytes),
}

/// Reads the request body: whole when it ends within `buffer` bytes. A body over `limit` is
/// 413 and a malformed one 400, before anything was sent upstream.
pub async fn read_body(session: &mut impl Downstream, buffer: u64, limit: u64) -> Result<Body> {
    if session.is_body_empty() {
        return Ok(Body::Empty);
    }
    if expects_continue(session.req_header()) {
        // As nginx: the edge itself asks for the body it is about to read.
        session.write_continue().await.map_err(|e| e.into_down())?;
    }
    let mut body = BytesMut::new();
    loop {
        let chunk = session.read_body().await.map_err(|e| e.into_down())?;
        let Some(chunk) = chunk else {
            return Ok(Body::Whole(body.freeze()));
        };
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body is larger than client_max_body_size",
            );
        }
        if body.len() as u64 > buffer {
            return Ok(Body::Streaming(body.freeze()));
        }
    }
}

fn expects_continue(req: &RequestHeader) -> bool {
    req.headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// How one attempt on one server failed.
struct Failed {
    error: Box<Error>,
    /// The failure was the client's (it left, or its body broke off).
    client: bool,
    /// The connection was a kept-alive one and no byte of an answer arrived: the server may
    /// simply have closed it.
    stale: bool,
    /// Some of a streamed body was read from the client and sent: it cannot be sent again.
    body_spent: bool,
    /// Some of the body went to this server: a non-idempotent request is not sent again.
    body_sent: bool,
    /// The request could not be written for this server (nothing went out): no server is
    /// to blame, and no other server would take it either.
    unsendable: bool,
}

impl Failed {
    fn upstream(error: Box<Error>) -> Failed {
        Failed {
            error: error.into_up(),
            client: false,
            stale: false,
            body_spent: false,
            body_sent: false,
            unsendable: false,
        }
    }

    fn client(error: Box<Error>) -> Failed {
        Failed {
            error: error.into_down(),
            client: true,
            stale: false,
            body_spent: false,
            body_sent: false,
            unsendable: false,
        }
    }

    /// The request head could not be written for the server (a target or field its protocol
    /// cannot carry): found before anything was sent.
    fn unsendable(error: Box<Error>) -> Failed {
        Failed {
            unsendable: true,
            ..Failed::upstream(error)
        }
    }
}

/// Picks the server for the next attempt of a request (nginx's `tried` set, bounded by
/// `next_upstream_tries`) and records the attempt. 502 when none is left.
pub fn pick_server(ctx: &mut RequestCtx, upstream: &Upstream, now: Instant) -> Result<usize> {
    if ctx.attempts.count >= upstream.max_attempts() {
        return Error::e_explain(ErrorType::HTTPStatus(502), "next_upstream_tries exhausted");
    }
    let now = crate::clock::ms_at(now);
    let Some(index) = upstream.select_at(ctx.client_ip, &mut ctx.attempts, now) else {
        return Error::e_explain(
            ErrorType::HTTPStatus(502),
            format!("no live servers in upstream {}", upstream.name),
        );
    };
    if ctx.attempts.count > 0 {
        METRICS.retry(&upstream.name);
    }
    ctx.attempts.mark(index);
    Ok(index)
}

/// Sends the request to a server of the route's upstream, moving to the next server as
/// nginx's `proxy_next_upstream error timeout` does, and relays the answer to the client.
/// With `upgrade` (a websocket handshake on a route that allows it), the request keeps its
/// `Upgrade` and goes on a new connection, and a 101 answer turns the client's connection and
/// the server's into a tunnel ([`crate::websocket`]).
pub async fn forward(
    session: &mut impl Downstream,
    ctx: &mut RequestCtx,
    route: &Arc<Route>,
    upgrade: bool,
) -> Result<()> {
    let upstream = &route.upstream;
    let edge = &ctx.snapshot.config.edge;
    let mut body = if ctx.grpc {
        // A call's messages stream both ways: none is read before a server is chosen.
        if session.is_body_empty() {
            Body::Empty
        } else {
            Body::Streaming(Bytes::new())
        }
    } else {
        read_body(
            session,
            edge.client_body_buffer_size,
            edge.client_max_body_size,
        )
        .await?
    };
    ctx.went_upstream = true;
    if ctx.grpc && upstream.settings.protocol == UpstreamProtocol::Http1 {
        // A mistake `edge check` cannot see (it does not know which calls are gRPC).
        upstream.grpc_to_http1_once();
        return Error::e_explain(
            ErrorType::HTTPStatus(502),
            format!(
                "gRPC needs HTTP/2 to the servers, and upstream `{}` has protocol \"http1\"",
                upstream.name
            ),
        );
    }
    let idempotent = session.req_header().method.is_idempotent();
    // Sends of the same request again that counted against nobody: bounded, so that a server
    // that refuses every stream (or a pool of closed connections) cannot hold a request.
    let mut resends = 0u32;
    loop {
        // One reading of the clock for the attempt: the server's health, the pool's idle
        // ages and the upstream time all start from it.
        let now = Instant::now();
        let index = pick_server(ctx, upstream, now)?;
        let server = &upstream.servers[index];
        let Some(addr) = server.addr else {
            upstream.report_failure(index);
            ctx.server = None;
            continue;
        };
        let attempt = attempt(session, ctx, upstream, addr, index, &mut body, upgrade, now);
        let failed = match attempt.await {
            Ok(()) => return Ok(()),
            Err(failed) => failed,
        };
        ctx.server = None;
        let facts = Facts {
            client: failed.client,
            unsendable: failed.unsendable,
            stale: failed.stale
                && resends < MAX_RESENDS.max(upstream.settings.keepalive as u32 + 1),
            body_spent: failed.body_spent,
            body_sent: failed.body_sent,
            streaming: matches!(body, Body::Streaming(_)),
            response_started: ctx.response_started,
            idempotent,
            connect_failed: matches!(
                failed.error.etype(),
                ErrorType::ConnectTimedout | ErrorType::ConnectRefused | ErrorType::ConnectError
            ),
            attempts_left: ctx.attempts.count < upstream.max_attempts(),
        };
        let decision = decide(&facts);
        if matches!(
            decision,
            Decision::NextServer | Decision::End { blame: true }
        ) {
            // As nginx's error log says each upstream failure, with its cause (a refused
            // connect, a certificate that does not verify, a timeout).
            tracing::warn!(
                upstream = %upstream.name,
                server = %upstream.servers[index].label,
                error = %failed.error,
                "an attempt on a server failed"
            );
        }
        match decision {
            Decision::End { blame } => {
                if blame {
                    upstream.report_failure(index);
                }
                return Err(failed.error);
            }
            Decision::Resend => {
                // A kept-alive connection the server had closed says nothing about the server.
                ctx.attempts.unmark(index);
                resends += 1;
            }
            Decision::NextServer => upstream.report_failure(index),
        }
    }
}

/// The most times one request is sent again without counting against a server (or the
/// upstream's `keepalive` and one, if more): a pool's worth of connections the server closed
/// while idle, or streams it refused.
const MAX_RESENDS: u32 = 32;

/// What is known of an attempt that failed, for [`decide`].
#[derive(Clone, Copy, Debug, Default)]
struct Facts {
    /// The client failed or left.
    client: bool,
    /// The request could not be written for the server.
    unsendable: bool,
    /// A kept-alive connection that failed before any byte of an answer.
    stale: bool,
    /// Some of a streamed body was read from the client and sent.
    body_spent: bool,
    /// Some of the body went to the server.
    body_sent: bool,
    /// The body is larger than the buffer: it streams, and can go to one server only.
    streaming: bool,
    /// The server's answer had begun.
    response_started: bool,
    idempotent: bool,
    /// The connect itself failed (the server never saw the request).
    connect_failed: bool,
    /// `next_upstream_tries` allows another attempt.
    attempts_left: bool,
}

/// What comes after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// The request ends with the error; `blame`: the server is counted failed.
    End { blame: bool },
    /// The same request again, on a new connection, the server not counted failed (it had
    /// closed a kept-alive connection while it was idle).
    Resend,
    /// The server is counted failed and the request moves on to the next server.
    NextServer,
}

/// nginx's `proxy_next_upstream error timeout`: a failed connect always moves on (the server
/// saw nothing), as long as no streamed body was spent; a failure after the request went out
/// moves an idempotent request whose body can be sent again; a kept-alive connection that
/// failed before any answer is sent again without counting against the server (for any
/// request whose body did not go out), and is never counted against it (a POST whose body
/// went out ends with 502, as in nginx: the server closing a connection it kept idle is no
/// sign of its health, and counting it took healthy servers out under POSTs); once the
/// answer began, nothing is sent again and the server is not blamed for what follows; a
/// client that left ends the request and blames nobody, and so does a request the edge
/// could not write for the server (nothing went out, and the next server would get the same
/// head: counted, one such request took every server of an upstream out).
fn decide(f: &Facts) -> Decision {
    if f.client || f.unsendable {
        return Decision::End { blame: false };
    }
    let resendable = !f.response_started
        && !f.body_spent
        && !f.streaming
        && (f.idempotent || (f.stale && !f.body_sent));
    if f.stale && resendable {
        return Decision::Resend;
    }
    let blame = !f.response_started && !f.stale;
    let may_retry = (f.connect_failed && !f.body_spent) || resendable;
    if may_retry && f.attempts_left {
        Decision::NextServer
    } else {
        Decision::End { blame }
    }
}

/// One attempt on server `index`, begun at `now`: the request out, the answer back.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    session: &mut impl Downstream,
    ctx: &mut RequestCtx,
    upstream: &Upstream,
    addr: SocketAddr,
    index: usize,
    body: &mut Body,
    upgrade: bool,
    now: Instant,
) -> Result<(), Failed> {
    let server = &upstream.servers[index];
    let settings = &upstream.settings;
    ctx.server = Some((index, InFlightGuard::new(server.state.clone())));
    ctx.upstream_started = Some(now);
    let (link, reused) = connection_for(upstream, server, addr, body, upgrade, now).await?;
    // Only a close or a socket error on a reused HTTP/1.1 connection, before any answer, is
    // taken for a connection the server closed while idle; over HTTP/2, only a stream the
    // server says it did not process (refused, or above its GOAWAY). A timeout or a broken
    // answer is a failure.
    let h2 = matches!(link, Link::H2(_));
    let stale = |error: Box<Error>| Failed {
        stale: if h2 {
            matches!(error.retry, pingora::RetryType::ReusedOnly)
        } else {
            reused && closed_under_us(&error)
        },
        ..Failed::upstream(error)
    };

    let req = session.req_header();
    let head_request = req.method == http::Method::HEAD;
    let whole = match body {
        Body::Whole(bytes) => Some(bytes.clone()),
        _ => None,
    };
    let mut up = match link {
        Link::H1(_) if ctx.grpc => {
            return Err(Failed::upstream(Error::explain(
                ErrorType::ConnectError,
                "the server chose HTTP/1.1 by ALPN, and gRPC needs HTTP/2",
            )))
        }
        Link::H1(connection) => {
            let mut up =
                h1::Exchange::new(connection, settings.read_timeout, settings.send_timeout);
            let host = &server.host;
            let upload = upstream_request(req, ctx, body, upgrade, host, up.head_buffer())
                .map_err(Failed::unsendable)?;
            up.send_head(upload, head_request, whole.as_deref())
                .await
                .map_err(|e| Failed {
                    body_sent: whole.is_some(),
                    ..stale(e)
                })?;
            Exchange::H1(up)
        }
        Link::H2(connection) => {
            let scheme = if upstream.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let host = &server.host;
            let request =
                upstream_h2_request(req, ctx, body, scheme, host).map_err(Failed::unsendable)?;
            let end = matches!(body, Body::Empty);
            let read_timeout = match crate::grpc::timeout(req) {
                Some(deadline) if ctx.grpc => deadline.min(settings.read_timeout),
                _ => settings.read_timeout,
            };
            let mut up = h2::Exchange::start(
                connection,
                request,
                end,
                read_timeout,
                settings.send_timeout,
            )
            .await
            .map_err(stale)?;
            if let Some(bytes) = whole {
                up.write_body(bytes, true).await.map_err(|e| Failed {
                    body_sent: true,
                    ..stale(e)
                })?;
            }
            Exchange::H2(up)
        }
    };
    ctx.upstream_protocol = Some(up.protocol());
    if ctx.grpc {
        // Boxed: only gRPC calls take this path.
        return Box::pin(call(session, ctx, upstream, index, up)).await;
    }
    // The answer when the server gave it before it took the whole body.
    let mut early = None;
    if let Body::Streaming(head) = body {
        let limit = ctx.snapshot.config.edge.client_max_body_size;
        // Boxed: only a body larger than the buffer streams.
        early = Box::pin(stream_upload(session, &mut up, head, limit, reused)).await?;
    }
    let cut_short = early.is_some();

    let client_http11 = session.req_header().version == http::Version::HTTP_11;
    let sent = !matches!(body, Body::Empty);
    let head = final_head(session, &mut up, early, upgrade)
        .await
        .map_err(|e| match e {
            Answer::Client(e) => Failed::client(e),
            Answer::Upstream(e) => Failed::upstream(e),
            Answer::Read(e) => Failed {
                body_sent: sent,
                ..stale(e)
            },
        })?;
    // When the answer's head was in: the time its connection goes idle from, if it does.
    let answered_at = answered(ctx, upstream, index);

    if upgrade && head.status == http::StatusCode::SWITCHING_PROTOCOLS {
        // The server took the upgrade: the connections are joined until either closes.
        let response = upgraded_head(head, ctx).map_err(Failed::upstream)?;
        session
            .write_head(response, false)
            .await
            .map_err(Failed::client)?;
        ctx.server = None;
        let Exchange::H1(up) = up else {
            return Err(Failed::upstream(Error::explain(
                ErrorType::InternalError,
                "an upgrade went out on an HTTP/2 connection",
            )));
        };
        let (socket, early_bytes) = up.into_upgraded();
        return session
            .tunnel(socket, early_bytes, settings.read_timeout)
            .await
            .map_err(Failed::client);
    }
    if upgrade {
        // Refused: its answer is relayed, and neither connection is used again.
        session.set_keepalive_off();
    }

    let no_body = head_request || up.is_body_done();
    let (response, framed) =
        client_response(head, no_body, client_http11, ctx).map_err(Failed::upstream)?;
    if !framed {
        // An HTTP/1.0 client reads a body of unknown length to the close.
        session.set_keepalive_off();
    }
    crate::respond::choose_compression(session, &response, ctx);
    // The server is done with the request once its answer is all in: it leaves the
    // in-flight count (least_conn's, /status's) before the client has the last byte, so the
    // client's next request is balanced without it, as nginx frees its peer. The access
    // log still names it (the attempt's last server).
    if no_body {
        ctx.server = None;
    }
    relay(session, ctx, &mut up, response, no_body, !cut_short).await?;

    // The connection is kept for the next request if both ends allow it (never one whose
    // request body was cut short by an early answer: the client's session reads and drops
    // the rest of that body after the answer, HTTP/1's lingering close).
    if cut_short || upgrade {
        return Ok(());
    }
    // (An HTTP/2 connection stays in its pool while it has room: the stream ended here.)
    if let Exchange::H1(up) = up {
        if let Some(connection) = up.into_reusable() {
            let (keepalive, max_requests) = (settings.keepalive, settings.keepalive_requests);
            let idle_timeout = settings.keepalive_timeout;
            server.state.pool.put(
                connection,
                keepalive,
                max_requests,
                idle_timeout,
                answered_at,
            );
        }
    }
    Ok(())
}

/// The server's answer has begun: no more retries, the server counted well, the time it
/// took observed. Returns when.
fn answered(ctx: &mut RequestCtx, upstream: &Upstream, index: usize) -> Instant {
    ctx.response_started = true;
    upstream.report_success(index);
    let now = Instant::now();
    if let Some(started) = ctx.upstream_started {
        let elapsed = now.saturating_duration_since(started);
        ctx.upstream_elapsed = Some(elapsed);
        if let Some(route) = &ctx.route {
            route.metrics.observe_upstream(elapsed.as_secs_f64());
        }
    }
    now
}

/// A gRPC call on its stream: the request's messages go up while the answer's come down
/// (a bidirectional stream may answer each message before the next is sent), nothing is
/// compressed or held whole, and the answer's trailers (`grpc-status`, `grpc-message`,
/// metadata) follow its body. The call ends with its answer: a server that answers before
/// it has read every message ends the upload. `grpc-timeout` bounds the whole call (the
/// shorter of it and `read_timeout` bounds each wait for the server).
async fn call(
    session: &mut impl Downstream,
    ctx: &mut RequestCtx,
    upstream: &Upstream,
    index: usize,
    mut up: Exchange,
) -> Result<(), Failed> {
    let limit = ctx.snapshot.config.edge.client_max_body_size;
    let deadline = crate::grpc::timeout(session.req_header()).map(|t| ctx.started + t);
    let upload = match &mut up {
        Exchange::H2(up) => up.take_upload(),
        Exchange::H1(_) => None,
    };
    let body = session.take_body();
    let pump = async move {
        match (upload, body) {
            (Some(upload), Some(body)) => pump(body, upload, limit).await,
            (Some(upload), None) => upload.finish(None).map_err(Failed::upstream),
            _ => Ok(()),
        }
    };
    let answer = async {
        let head = final_head(session, &mut up, None, false)
            .await
            .map_err(|e| match e {
                Answer::Client(e) => Failed::client(e),
                Answer::Upstream(e) | Answer::Read(e) => Failed {
                    body_sent: true,
                    ..Failed::upstream(e)
                },
            })?;
        let _ = answered(ctx, upstream, index);
        let no_body = up.is_body_done();
        let (response, _) = client_response(head, no_body, true, ctx).map_err(Failed::upstream)?;
        session.compression_off();
        relay(session, ctx, &mut up, response, no_body, true).await
    };
    let both = async {
        let mut pump = std::pin::pin!(pump);
        let mut answer = std::pin::pin!(answer);
        let mut pumping = true;
        loop {
            tokio::select! {
                done = &mut answer => return done,
                sent = &mut pump, if pumping => {
                    pumping = false;
                    match sent {
                        Err(failed) if failed.client => return Err(failed),
                        // The server stopped taking messages: its answer says why.
                        Err(failed) => tracing::debug!(error = %failed.error, "a gRPC upload ended"),
                        Ok(()) => {}
                    }
                }
            }
        }
    };
    match deadline {
        None => both.await,
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), both).await {
            Ok(done) => done,
            Err(_) => Err(Failed {
                body_sent: true,
                body_spent: true,
                ..Failed::upstream(Error::explain(
                    ErrorType::ReadTimedout,
                    "the call's grpc-timeout passed",
                ))
            }),
        },
    }
}

/// A call's request messages from the client to the server as they come, counted against
/// `limit` (`client_max_body_size`).
async fn pump(mut body: TakenBody, mut upload: h2::Upload, limit: u64) -> Result<(), Failed> {
    loop {
        let piece = body.next().await.map_err(|e| Failed {
            body_spent: true,
            ..Failed::client(e)
        })?;
        if body.read() as u64 > limit {
            return Err(Failed {
                body_spent: true,
                ..Failed::client(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body is larger than client_max_body_size",
                ))
            });
        }
        let sent = match piece {
            Some(piece) => upload.write(piece, false).await,
            None => return upload.finish(None).map_err(Failed::upstream),
        };
        sent.map_err(|e| Failed {
            body_spent: true,
            ..Failed::upstream(e)
        })?;
    }
}

/// The connection an attempt goes out on.
enum Link {
    H1(Connection),
    /// A stream will be opened on it.
    H2(h2::Connection),
}

/// A kept-alive connection to `server` or a new one, and whether it was kept. Over HTTP/2,
/// a connection with room for one more stream. An HTTP/1.1 request whose body streams can
/// be sent once only: it gets a new connection, never one the server may have closed while
/// idle; so does an upgrade, whose connection becomes a tunnel (and speaks HTTP/1.1).
async fn connection_for(
    upstream: &Upstream,
    server: &crate::upstream::Server,
    addr: SocketAddr,
    body: &Body,
    upgrade: bool,
    now: Instant,
) -> Result<(Link, bool), Failed> {
    let settings = &upstream.settings;
    // Held while this request opens an HTTP/2 connection others may wait for.
    let mut opening = None;
    if settings.protocol != UpstreamProtocol::Http1 && !upgrade {
        let pool = &server.state.h2;
        let (timeout, requests) = (settings.keepalive_timeout, settings.keepalive_requests);
        if let Some(connection) = pool.take(timeout, requests) {
            return Ok((Link::H2(connection), true));
        }
        // Not with `keepalive = 0` (a connection is then its opener's alone). Boxed, as the
        // connect below: rare, and kept out of every request's future.
        if settings.keepalive > 0 && pool.waits_for_openings() {
            let got = pool.wait_or_open(timeout, requests, settings.connect_timeout);
            match Box::pin(got).await.map_err(Failed::upstream)? {
                h2::Got::Connection(connection) => return Ok((Link::H2(connection), true)),
                h2::Got::Open(own) => opening = own,
            }
        }
    }
    let pooled = match body {
        _ if upgrade => None,
        Body::Streaming(_) => None,
        _ if settings.protocol == UpstreamProtocol::H2 => None,
        _ => server.state.pool.take(settings.keepalive_timeout, now),
    };
    if let Some(pooled) = pooled {
        return Ok((Link::H1(pooled), true));
    }
    // Boxed: a connect is rare on kept-alive traffic, and its state would otherwise be part
    // of every request's future.
    let opened = Box::pin(client::open(
        upstream,
        &server.host,
        addr,
        upgrade,
        settings.connect_timeout,
    ))
    .await;
    Ok(match opened {
        Err(e) => {
            if let Some(opening) = opening {
                opening.failed(&e);
            }
            return Err(Failed::upstream(e));
        }
        Ok(client::Opened::H1(stream)) => {
            if settings.protocol == UpstreamProtocol::Auto && !upgrade {
                server.state.h2.chose(false);
            }
            (Link::H1(Connection::new(stream)), false)
        }
        Ok(client::Opened::H2(connection)) => {
            let idle_timeout = settings.keepalive_timeout;
            server
                .state
                .h2
                .put(connection.clone(), settings.keepalive, idle_timeout);
            if let Some(opening) = opening {
                opening.ready();
            }
            (Link::H2(connection), false)
        }
    })
}

/// How waiting for the final head failed: the client left or its connection broke, the
/// server's answer could not be read (which may be a stale connection), or what it answered
/// cannot be relayed.
enum Answer {
    Client(Box<Error>),
    Read(Box<Error>),
    Upstream(Box<Error>),
}

/// The server's final head (`early`, if it answered before it took the whole body), read
/// while watching the client: one that leaves ends the request at once (its server is not
/// held, nor counted against, until read_timeout). Informational heads (103 Early Hints) are
/// relayed to HTTP/1.1 and HTTP/2 clients; 100 Continue was the edge's own.
async fn final_head(
    session: &mut impl Downstream,
    up: &mut Exchange,
    mut early: Option<h1::Response>,
    upgrade: bool,
) -> Result<h1::Response, Answer> {
    let client_takes_1xx = session.req_header().version >= http::Version::HTTP_11;
    loop {
        let head = match early.take() {
            Some(head) => head,
            None => {
                let read = tokio::select! {
                    biased;
                    read = up.read_response() => read,
                    idle = session.watch_idle() => return Err(Answer::Client(client_left(idle))),
                };
                read.map_err(Answer::Read)?
            }
        };
        if head.status == 101 && upgrade {
            return Ok(head);
        }
        if head.status == 101 {
            // Upgrades are taken only for requests that asked, on routes that allow them.
            return Err(Answer::Upstream(Error::explain(
                ErrorType::InvalidHTTPHeader,
                "101 Switching Protocols to a request that asked for no upgrade",
            )));
        }
        if head.status.is_informational() {
            if head.status != 100 && client_takes_1xx {
                let info = client_head(head).map_err(Answer::Upstream)?;
                session
                    .write_head(info, false)
                    .await
                    .map_err(Answer::Client)?;
            }
            continue;
        }
        return Ok(head);
    }
}

/// The error of a client that left while the server's answer was awaited: what
/// `watch_idle` saw, or "went idle" when it ended without an error.
fn client_left(idle: pingora::Result<()>) -> Box<Error> {
    idle.err()
        .unwrap_or_else(|| Error::explain(ErrorType::ConnectionClosed, "the client went idle"))
}

/// Sends the final head to the client and relays the body after it; the server leaves the
/// in-flight count once its answer is all in. With `watch`, a client that leaves while the
/// server's body is slow to come ends the request at once, as while waiting for the head
/// (not after an early answer: the client may still be sending its body then).
async fn relay(
    session: &mut impl Downstream,
    ctx: &mut RequestCtx,
    up: &mut Exchange,
    response: Box<pingora::http::ResponseHeader>,
    no_body: bool,
    watch: bool,
) -> Result<(), Failed> {
    session
        .write_head(response, no_body)
        .await
        .map_err(Failed::client)?;
    if !no_body {
        loop {
            let read = tokio::select! {
                biased;
                read = up.read_body() => read,
                idle = session.watch_idle(), if watch => return Err(Failed::client(client_left(idle))),
            };
            match read {
                Ok(Some(chunk)) => {
                    if up.is_body_done() {
                        ctx.server = None;
                    }
                    session
                        .write_body(Some(chunk), false)
                        .await
                        .map_err(Failed::client)?
                }
                Ok(None) => break,
                Err(e) => return Err(Failed::upstream(e)),
            }
        }
        ctx.server = None;
    }
    let end = match up.take_trailers() {
        Some(trailers) => session.write_trailers(trailers).await,
        None => session.write_body(None, true).await,
    };
    end.map_err(Failed::client)
}

/// Sends a body larger than the buffer: `head`, then the rest as the client sends it.
/// `Some(answer)` when the server answered before it took it all (a 413, a 401) and stopped
/// reading or closed: what it said is already in the socket, and it is relayed, as nginx
/// does, instead of a 502 counted against the server. The client's body is then not read to
/// its end, so its connection ends with this request.
async fn stream_upload(
    session: &mut impl Downstream,
    up: &mut Exchange,
    head: &Bytes,
    limit: u64,
    reused: bool,
) -> Result<Option<h1::Response>, Failed> {
    let sent = match up.write_body(head).await {
        Ok(()) => stream_body(session, up, limit).await,
        Err(e) => Err(Failed {
            stale: reused && closed_under_us(&e),
            body_spent: true,
            body_sent: true,
            ..Failed::upstream(e)
        }),
    };
    let Err(failed) = sent else {
        return Ok(None);
    };
    if failed.client {
        return Err(failed);
    }
    let Some(answer) = early_answer(up).await else {
        return Err(failed);
    };
    session.set_keepalive_off();
    Ok(Some(answer))
}

/// How long a server whose body upload broke off gets to show the answer it sent first.
const EARLY_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The answer the server sent before the body upload broke off, if a response head is (or
/// arrives very soon) in the socket.
async fn early_answer(up: &mut Exchange) -> Option<h1::Response> {
    match tokio::time::timeout(EARLY_ANSWER_WAIT, up.read_response()).await {
        Ok(Ok(answer)) => Some(answer),
        _ => None,
    }
}

/// Whether an error says the connection was closed or reset under the request (what a server
/// that closed a kept-alive connection while it was idle looks like), not that it timed out
/// or answered badly.
fn closed_under_us(error: &Error) -> bool {
    matches!(error.retry, pingora::RetryType::ReusedOnly)
        || matches!(error.etype(), ErrorType::WriteError)
}

/// Relays the rest of a body larger than the buffer from the client to the upstream, counting
/// it against `limit` (`client_max_body_size`) as it arrives.
async fn stream_body(
    session: &mut impl Downstream,
    up: &mut Exchange,
    limit: u64,
) -> Result<(), Failed> {
    let spent = |error: Box<Error>| Failed {
        body_spent: true,
        ..Failed::upstream(error)
    };
    loop {
        let chunk = session.read_body().await.map_err(|e| Failed {
            body_spent: true,
            ..Failed::client(e)
        })?;
        if session.body_bytes_read() as u64 > limit {
            return Err(Failed {
                body_spent: true,
                ..Failed::client(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body is larger than client_max_body_size",
                ))
            });
        }
        match chunk {
            Some(chunk) => up.write_body(&chunk).await.map_err(spent)?,
            None => {
                up.finish_body().await.map_err(spent)?;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            attempts_left: true,
            idempotent: true,
            ..Facts::default()
        }
    }

    #[test]
    fn a_failed_connect_moves_on_whatever_the_method() {
        let connect = Facts {
            connect_failed: true,
            ..facts()
        };
        assert_eq!(decide(&connect), Decision::NextServer);
        let post = Facts {
            idempotent: false,
            ..connect
        };
        assert_eq!(
            decide(&post),
            Decision::NextServer,
            "the server saw nothing"
        );
        let spent = Facts {
            body_spent: true,
            ..post
        };
        assert_eq!(
            decide(&spent),
            Decision::End { blame: true },
            "a streamed body read once cannot go elsewhere"
        );
    }

    #[test]
    fn a_failure_after_the_request_went_out_moves_only_an_idempotent_request() {
        assert_eq!(
            decide(&facts()),
            Decision::NextServer,
            "a GET that timed out"
        );
        let post = Facts {
            idempotent: false,
            body_sent: true,
            ..facts()
        };
        assert_eq!(decide(&post), Decision::End { blame: true });
        let streaming = Facts {
            streaming: true,
            ..facts()
        };
        assert_eq!(decide(&streaming), Decision::End { blame: true });
    }

    #[test]
    fn a_request_that_cannot_be_written_for_the_server_ends_and_blames_none() {
        let unsendable = Facts {
            unsendable: true,
            ..facts()
        };
        assert_eq!(decide(&unsendable), Decision::End { blame: false });
    }

    #[test]
    fn a_stale_kept_alive_connection_is_resent_without_blame() {
        let stale = Facts {
            stale: true,
            ..facts()
        };
        assert_eq!(decide(&stale), Decision::Resend);
        let post = Facts {
            idempotent: false,
            ..stale
        };
        assert_eq!(decide(&post), Decision::Resend, "its body never went out");
        let sent = Facts {
            body_sent: true,
            ..post
        };
        assert_eq!(
            decide(&sent),
            Decision::End { blame: false },
            "not sent again, and the server that closed its idle connection not blamed"
        );
        let last = Facts {
            attempts_left: false,
            ..stale
        };
        assert_eq!(
            decide(&last),
            Decision::Resend,
            "a resend is not a new attempt: next_upstream_tries does not bound it"
        );
    }

    #[test]
    fn once_the_answer_began_nothing_is_sent_again_and_nobody_is_blamed() {
        let started = Facts {
            response_started: true,
            ..facts()
        };
        assert_eq!(decide(&started), Decision::End { blame: false });
        let stale = Facts {
            stale: true,
            ..started
        };
        assert_eq!(decide(&stale), Decision::End { blame: false });
    }

    #[test]
    fn a_client_that_left_ends_the_request_and_blames_no_server() {
        let client = Facts {
            client: true,
            connect_failed: true,
            ..facts()
        };
        assert_eq!(decide(&client), Decision::End { blame: false });
    }

    #[test]
    fn no_attempt_is_made_past_next_upstream_tries() {
        let last = Facts {
            attempts_left: false,
            connect_failed: true,
            ..facts()
        };
        assert_eq!(decide(&last), Decision::End { blame: true });
    }
}
