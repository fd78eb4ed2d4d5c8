//! WebSocket upgrades: answers the handshake and echoes every text and binary message back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::ctx::{error, Ctx};
use crate::state::{ConnectionGuard, State};

/// How long a closing WebSocket waits for the client's close reply during shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the request asks to switch to the WebSocket protocol.
pub(crate) fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    has_token(req.headers(), UPGRADE, "websocket")
}

/// Answers the handshake with 101 and echoes on the upgraded connection in a spawned task.
pub(crate) fn upgrade(ctx: &Ctx, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET || !has_token(req.headers(), CONNECTION, "upgrade") {
        return error(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs GET and Connection: upgrade",
        );
    }
    if req
        .headers()
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = error(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is supported",
        );
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        return error(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "bad accept key");
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    let state = Arc::clone(&ctx.state);
    let stop = ctx.stop.clone();
    let peer = ctx.peer;
    tokio::spawn(async move {
        // The HTTP connection stops counting once upgraded; the WebSocket counts instead.
        let _guard = ConnectionGuard::new(Arc::clone(&state));
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                echo(ws, &state, stop).await;
                tracing::debug!(service = %state.spec.name, %peer, "websocket closed");
            }
            Err(e) => tracing::debug!(%peer, error = %e, "websocket upgrade failed"),
        }
    });

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// Echoes text and binary messages until the peer closes or the service shuts down.
async fn echo<S>(mut ws: WebSocketStream<S>, state: &State, mut stop: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    if let Err(e) = ws.send(msg).await {
                        tracing::debug!(error = %e, "websocket send failed");
                        return;
                    }
                }
                // Pings are answered and close replies sent by tungstenite itself; keep
                // polling until it reports the stream finished.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    return;
                }
                None => return,
            },
            // Either shutdown was signalled or the server is gone: close politely.
            () = stopping(&mut stop) => break,
        }
    }

    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: format!("{} shutting down", state.spec.name).into(),
    };
    if ws.close(Some(frame)).await.is_ok() {
        // Wait briefly for the client's close reply so the close handshake completes.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

/// Resolves once shutdown is signalled or the server is gone.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // The `Ref` this yields is not `Send`, so it must not live across the select's awaits.
    let _ = stop.wait_for(|&s| s).await;
}

/// Whether a comma-separated header contains `token`, ignoring ASCII case.
fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}
