//! The same phases as Pingora's `ProxyHttp` callbacks, for `EDGE_REQUEST_LOOP=pingora`: every
//! request goes through Pingora's proxy pipeline instead of the edge's own loop, on the same
//! admit, fail and log. A fallback kept while the own loop settles in.
//!
//! early_request_filter: compression level
//! request_filter: snapshot ▸ client ▸ framing, host and path checks ▸ redirect ▸ route ▸ allow ▸ rate limit ▸ body size
//!                 ▸ (websocket tunnel)
//! upstream_peer: balance ▸ peer with the upstream's timeouts
//! upstream_request_filter: forwarding headers
//! fail_to_connect / error_while_proxy: passive failures ▸ next upstream (a client that left
//!                 counts against no server and is not retried)
//! upstream_response_filter / response_filter: success ▸ response headers (HSTS) ▸ gzip or not
//! fail_to_proxy: the error the client sees
//! logging: metrics ▸ access log (queued to its writer thread; 499 for a client that left)

use super::*;
use crate::upstream::InFlightGuard;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp};
use pingora::upstreams::peer::HttpUpstreamRequestPolicy;
use pingora::RetryType;
use std::time::Instant;

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        // Enabled here so it reads Accept-Encoding; each request sets the level it uses.
        modules.add_module(ResponseCompressionBuilder::enable(DEFAULT_GZIP_LEVEL));
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.snapshot.load_full())
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Compression follows [gzip]; the module reads Accept-Encoding after this.
        let level = compression_level(&ctx.snapshot.config.gzip, session.req_header());
        if let Some(compression) = session
            .downstream_modules_ctx
            .get_mut::<ResponseCompression>()
        {
            compression.adjust_level(level);
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Keep-alive as configured, unless the request or Pingora already ended it; the last
        // of keepalive_requests says so (Connection: close), as nginx's does.
        if session.get_keepalive_reuses_remaining() == Some(0) {
            session.set_keepalive(None);
        } else if session.get_keepalive().is_some() {
            let timeout = ctx.snapshot.config.edge.keepalive_timeout;
            session.set_keepalive(keepalive_secs(timeout));
        }
        match admit(session, ctx).await? {
            Verdict::Answered => Ok(true),
            Verdict::Forward(_) => Ok(false),
            Verdict::Upgrade(route) => {
                websocket::tunnel(session, ctx, &route).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Chunked bodies declare no length: count what arrives.
        if let Some(chunk) = body {
            let limit = ctx.snapshot.config.edge.client_max_body_size as usize;
            if _session.body_bytes_read() > limit || chunk.len() > limit {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body is larger than client_max_body_size",
                );
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let route = ctx
            .route
            .clone()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no route chosen"))?;
        let upstream = &route.upstream;
        ctx.went_upstream = true;
        let index = crate::forward::pick_server(ctx, upstream)?;
        let server = &upstream.servers[index];
        ctx.server = Some((index, InFlightGuard::new(server.state.clone())));
        ctx.upstream_started = Some(Instant::now());
        let addr = server.addr.ok_or_else(|| {
            Error::explain(ErrorType::ConnectNoRoute, "server address does not resolve")
        })?;

        let settings = &upstream.settings;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(settings.connect_timeout);
        peer.options.read_timeout = Some(settings.read_timeout);
        peer.options.write_timeout = Some(settings.send_timeout);
        peer.options.idle_timeout = Some(if settings.keepalive == 0 {
            std::time::Duration::ZERO
        } else {
            settings.keepalive_timeout
        });
        if !route.settings.websocket {
            peer.options.http_upstream_request_policy = HttpUpstreamRequestPolicy::deny_upgrades();
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        for (name, value) in ctx.forwarding_headers(session.get_header("x-forwarded-for")) {
            upstream_request.insert_header(name, value)?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // A connect error or timeout: count it against the server, try the next one.
        if let (Some(route), Some((index, _))) = (&ctx.route, ctx.server.take()) {
            route.upstream.report_failure(index);
            e.set_retry(ctx.attempts.count < route.upstream.max_attempts());
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("server: {peer}"));
        if *e.esource() == ErrorSource::Downstream {
            // The client failed or left: nothing is learnt of the server, and nobody is left
            // to retry for.
            ctx.server.take();
            e.set_retry(false);
            return e;
        }
        let safe_to_resend = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && !ctx.response_started;
        let (Some(route), Some((index, _))) = (&ctx.route, ctx.server.take()) else {
            e.set_retry(false);
            return e;
        };
        if client_reused && matches!(e.retry, RetryType::ReusedOnly) {
            // A pooled connection the server had already closed says nothing about the server.
            ctx.attempts.unmark(index);
            e.set_retry(safe_to_resend);
            return e;
        }
        if !ctx.response_started {
            route.upstream.report_failure(index);
        }
        e.set_retry(safe_to_resend && ctx.attempts.count < route.upstream.max_attempts());
        e
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.response_started = true;
        if let (Some(route), Some((index, _))) = (&ctx.route, &ctx.server) {
            route.upstream.report_success(*index);
            if let Some(started) = ctx.upstream_started {
                let elapsed = started.elapsed();
                ctx.upstream_elapsed = Some(elapsed);
                route.metrics.observe_upstream(elapsed.as_secs_f64());
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        respond::upstream_response(session, response, ctx)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        log(session, e, ctx);
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        FailToProxy {
            error_code: fail(session, e, ctx).await,
            can_reuse_downstream: false,
        }
    }
}
