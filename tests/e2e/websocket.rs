//! Websocket upgrades pass through routes that allow them, and only those.

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
async fn websocket_echo_passes_through_a_websocket_route() {
    let grafana = backend("grafana").await;
    let edge = Edge::start(
        "",
        &format!(
            r#"
[upstreams.grafana]
servers = [{{ addr = "{}" }}]
[[routes]]
path = "/grafana/"
upstream = "grafana"
websocket = true
[[routes]]
path = "/plain/"
upstream = "grafana"
"#,
            grafana.addr
        ),
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
        &format!(
            "[upstreams.grafana]\nservers = [{{ addr = \"{}\" }}]\n[[routes]]\npath = \"/\"\nupstream = \"grafana\"\nwebsocket = true\n",
            grafana.addr
        ),
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
