//! What the backend and the client see in headers.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_are_set_and_hop_by_hop_headers_removed() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    let request = "GET /echo HTTP/1.1\r\nHost: shop.example:8443\r\n\
        X-Forwarded-For: 198.51.100.1\r\n\
        Connection: close, X-Secret\r\nX-Secret: hush\r\nKeep-Alive: timeout=5\r\n\
        Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTE: deflate\r\n\
        X-Custom: kept\r\n\r\n";
    let response = raw_request(edge.http, request.as_bytes());
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = raw_body_json(&response);
    let h = &body["headers"];
    assert_eq!(h["host"], "shop.example:8443", "Host passes as received");
    assert_eq!(h["x-forwarded-for"], "198.51.100.1, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-custom"], "kept");
    for hop in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
        "connection",
    ] {
        assert!(
            h.get(hop).is_none(),
            "{hop} must not reach the backend: {h}"
        );
    }
    let id = h["x-request-id"].as_str().expect("a generated request id");
    assert_eq!(id.len(), 32);
    assert!(
        response
            .to_ascii_lowercase()
            .contains(&format!("x-request-id: {id}")),
        "the client gets the same id: {response}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_request_id_is_kept_and_an_invalid_one_replaced() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    let c = client();
    let resp = c
        .get(edge.url("/"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.headers()["x-request-id"], "trace-42");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["headers"]["x-request-id"], "trace-42");
    let resp = c
        .get(edge.url("/"))
        .header("x-request-id", "no spaces; allowed")
        .send()
        .await
        .expect("request");
    let id = resp.headers()["x-request-id"].to_str().expect("ascii");
    assert_ne!(id, "no spaces; allowed");
    assert_eq!(id.len(), 32);
}
