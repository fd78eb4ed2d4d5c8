//! Routes: longest prefix, hosts, 404, allow lists, body size.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn longest_prefix_and_host_pick_the_upstream_and_unrouted_paths_get_json_404() {
    let content = backend("content").await;
    let dashboard = backend("dashboard").await;
    let tenant = backend("tenant").await;
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("content", [content.addr])
            .upstream("dashboard", [dashboard.addr])
            .upstream("tenant", [tenant.addr])
            .route("/api/content/", "content")
            .route("/app/", "dashboard")
            .route("/app/", "tenant")
            .with("host", "*.tenant.example"),
    );
    let c = client();
    let (s, body) = get_json(&c, &edge.url("/api/content/items/1?x=1"), &[]).await;
    assert_eq!((s, instance(&body)), (200, "content".to_string()));
    assert_eq!(body["path"], "/api/content/items/1");
    assert_eq!(body["query"], "x=1");
    let (s, body) = get_json(&c, &edge.url("/app/page"), &[]).await;
    assert_eq!((s, instance(&body)), (200, "dashboard".to_string()));
    let (s, body) = get_json(
        &c,
        &edge.url("/app/page"),
        &[("host", "acme.tenant.example")],
    )
    .await;
    assert_eq!((s, instance(&body)), (200, "tenant".to_string()));

    let (s, body) = get_json(&c, &edge.url("/nowhere"), &[]).await;
    assert_eq!(s, 404);
    assert_eq!(body["error"], "not_found");
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_lists_answer_others_403_and_forged_forwarding_does_not_help() {
    let grafana = backend("grafana").await;
    let edge = Edge::start(
        "",
        TestConfig::new()
            .upstream("grafana", [grafana.addr])
            .route("/grafana/", "grafana")
            .with("allow", vec!["10.0.0.0/8"])
            .route("/open/", "grafana")
            .with("allow", vec!["127.0.0.0/8", "::1"]),
    );
    let c = client();
    let (s, body) = get_json(&c, &edge.url("/grafana/d/1"), &[]).await;
    assert_eq!(s, 403);
    assert_eq!(body["error"], "forbidden");
    // The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-For is not believed.
    let (s, _) = get_json(
        &c,
        &edge.url("/grafana/d/1"),
        &[("x-forwarded-for", "10.1.2.3")],
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = get_json(&c, &edge.url("/open/x"), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(
        grafana.requests(),
        1,
        "denied requests never reach the backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_proxies_make_forwarded_clients_count() {
    let grafana = backend("grafana").await;
    let edge = Edge::start(
        table! { trusted_proxies = vec!["127.0.0.1/32"] },
        TestConfig::new()
            .upstream("grafana", [grafana.addr])
            .route("/grafana/", "grafana")
            .with("allow", vec!["10.0.0.0/8"]),
    );
    let c = client();
    let (s, body) = get_json(
        &c,
        &edge.url("/grafana/"),
        &[("x-forwarded-for", "10.1.2.3")],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body["headers"]["x-real-ip"], "10.1.2.3");
    let (s, _) = get_json(
        &c,
        &edge.url("/grafana/"),
        &[("x-forwarded-for", "8.8.8.8")],
    )
    .await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_client_max_body_size_get_413_and_never_reach_the_backend() {
    let app = backend("app").await;
    let edge = Edge::start(table! { client_max_body_size = "1k" }, one_route(app.addr));
    let c = client();
    let resp = c
        .post(edge.url("/upload"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 413);
    let resp = c
        .post(edge.url("/upload"))
        .body(vec![b'x'; 512])
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(app.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_response_reaches_the_client_as_it_is_produced() {
    use std::io::{Read, Write};
    // The backend sends the head and a first chunk, then nothing more for 30 s.
    let app = scripted_backend(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
          transfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n"
            .to_vec(),
        true,
    );
    let edge = Edge::start("", one_route(app));
    let mut client = std::net::TcpStream::connect(edge.http).expect("connect");
    client
        .write_all(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .expect("timeout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("first") {
        match client.read(&mut buf) {
            Ok(0) => panic!("closed after {:?}", String::from_utf8_lossy(&seen)),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "the first chunk did not arrive ({e}); got {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    assert_eq!(status_of(&String::from_utf8_lossy(&seen)), 200);
}
