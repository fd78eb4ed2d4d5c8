//! Websocket upgrades pass through routes that allow them, and only those.

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
async fn websocket_echo_passes_through_a_websocket_route() {
    let grafana = backend("grafana").await;
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("grafana", [grafana.addr])
            .route("/grafana/", "grafana")
            .with("websocket", true)
            .route("/plain/", "grafana"),
    );
    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/grafana/api/live/ws", edge.http))
            .await
            .expect("websocket handshake through the edge");
    assert_eq!(response.status().as_u16(), 101);
    for text in ["hello", "grafana live"] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = ws.next().await.expect("a message").expect("not an error");
        assert_eq!(echoed, Message::text(text));
    }
    ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    let echoed = ws.next().await.expect("a message").expect("not an error");
    assert_eq!(echoed, Message::binary(vec![1u8, 2, 3]));
    ws.close(None).await.expect("close");

    let refused = tokio_tungstenite::connect_async(format!("ws://{}/plain/ws", edge.http)).await;
    assert!(
        refused.is_err(),
        "a route without websocket = true does not upgrade"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_upgrade_is_relayed_and_plain_requests_still_proxy() {
    let grafana = backend("grafana").await;
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("grafana", [grafana.addr])
            .route("/", "grafana")
            .with("websocket", true),
    );
    // No Sec-WebSocket-Version: the backend answers 426, which reaches the client as is.
    let response = raw_request(
        edge.http,
        b"GET /ws HTTP/1.1\r\nHost: g\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(response.to_ascii_lowercase().contains("x-request-id:"));
    let (status, body) = get_json(&client(), &edge.url("/api/dashboards"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(instance(&body), "grafana");
}

/// A websocket backend that completes the handshake, then either reads and never answers
/// (`push` false) or sends a message every 100 ms and reads nothing (`push` true).
async fn one_sided_backend(push: bool) -> std::net::SocketAddr {
    serve_each(move |tcp| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        if push {
            while ws.send(Message::text("tick")).await.is_ok() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        } else {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await
}

/// A websocket client's connection.
type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An edge (upstream read_timeout 1s) in front of a [`one_sided_backend`], a websocket
/// client through it, and when the tunnel opened.
async fn one_sided_tunnel(push: bool) -> (Edge, Client, std::time::Instant) {
    let backend = one_sided_backend(push).await;
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("live", [backend])
            .with("read_timeout", "1s")
            .route("/", "live")
            .with("websocket", true),
    );
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/live", edge.http))
        .await
        .expect("handshake");
    (edge, ws, std::time::Instant::now())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_upstream_is_closed_after_read_timeout_though_the_client_keeps_talking() {
    let (_edge, mut ws, started) = one_sided_tunnel(false).await;
    // The client talks every 100 ms; the upstream never answers.
    let closed = loop {
        if started.elapsed() > std::time::Duration::from_secs(5) {
            break false;
        }
        if ws.send(Message::text("ping")).await.is_err() {
            break true;
        }
        match tokio::time::timeout(std::time::Duration::from_millis(100), ws.next()).await {
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break true,
            _ => {}
        }
    };
    assert!(closed, "the tunnel outlived its silent upstream");
    let after = started.elapsed();
    assert!(
        after >= std::time::Duration::from_millis(900),
        "closed after {after:?}, before read_timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_is_closed_after_read_timeout_though_the_upstream_keeps_talking() {
    let (_edge, mut ws, started) = one_sided_tunnel(true).await;
    let mut ticks = 0;
    // The upstream talks every 100 ms; the client only listens.
    let closed = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => ticks += 1,
            Ok(Some(Ok(_))) => {}
            Ok(None) | Ok(Some(Err(_))) => break true,
            Err(_) => break false,
        }
        if started.elapsed() > std::time::Duration::from_secs(5) {
            break false;
        }
    };
    assert!(closed, "the tunnel outlived its silent client");
    assert!(
        ticks >= 5,
        "the upstream's messages came through until then ({ticks})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_is_logged_with_its_upstream_and_server_and_its_retry_counted() {
    let grafana = backend("grafana").await;
    let dead = format!("127.0.0.1:{}", dead_port(0));
    let live = grafana.addr.to_string();
    let (_dir, log, log_line) = access_log_file();
    let edge = Edge::start(
        &log_line,
        TestConfig::new()
            .upstream("grafana", [dead.clone(), live.clone()])
            .route("/", "grafana")
            .with("websocket", true),
    );
    // Round robin starts at the dead server half of the time: ask until an upgrade has
    // moved on from it.
    let mut retried = false;
    for n in 0..6 {
        let url = format!("ws://{}/live/{n}", edge.http);
        let (mut ws, response) = tokio_tungstenite::connect_async(url)
            .await
            .expect("an upgrade through the live server");
        assert_eq!(response.status().as_u16(), 101);
        ws.send(Message::text("ping")).await.expect("send");
        assert_eq!(
            ws.next().await.expect("a message").expect("not an error"),
            Message::text("ping")
        );
        ws.close(None).await.expect("close");
        let line = logged_line(
            &log,
            &format!("/live/{n}"),
            std::time::Duration::from_secs(5),
            "an upgrade",
        )
        .await;
        assert_eq!(line["status"], 101, "{line}");
        assert_eq!(line["upstream"], "grafana", "{line}");
        assert_eq!(line["server"], live.as_str(), "{line}");
        if metric(
            &edge,
            "edge_upstream_retries_total",
            &["upstream=\"grafana\""],
        )
        .await
            >= 1.0
        {
            retried = true;
            break;
        }
    }
    assert!(
        retried,
        "no upgrade was moved on from the dead server, or none was counted"
    );
}
