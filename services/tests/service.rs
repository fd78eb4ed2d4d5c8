//! End-to-end checks of a service started in-process on 127.0.0.1:0, spoken to over raw HTTP/1.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use services::{serve, spawn, HealthOverride, RunningService, ServiceSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Sends one raw request (which should say `Connection: close`) and reads the whole reply.
async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.expect("read reply");
    parse_reply(&buf)
}

fn parse_reply(buf: &[u8]) -> Reply {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&buf[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    }
}

async fn get(addr: SocketAddr, target: &str) -> Reply {
    let request = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    raw(addr, request.as_bytes()).await
}

async fn start(spec: ServiceSpec) -> RunningService {
    spawn(spec, "127.0.0.1:0").await.expect("spawn service")
}

/// An address nothing listens on: bind an ephemeral port, then free it.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr.to_string()
}

#[tokio::test]
async fn health_has_the_documented_shape() {
    let svc = start(ServiceSpec::new("content-manager", "cm-1")).await;
    let reply = get(svc.addr, "/health").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("x-served-by"), Some("cm-1"));

    let body = std::str::from_utf8(&reply.body).expect("UTF-8");
    assert!(
        body.starts_with(r#"{"status":"healthy","timestamp":""#),
        "{body}"
    );
    let v = reply.json();
    let keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
    assert_eq!(
        keys,
        ["checks", "metadata", "status", "timestamp", "version"]
    );
    let ts = v["timestamp"].as_str().expect("timestamp");
    assert_eq!(ts.len(), 20, "{ts}");
    assert!(
        ts.ends_with('Z') && &ts[10..11] == "T" && &ts[4..5] == "-",
        "{ts}"
    );
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["checks"], serde_json::json!({}));
    let meta = &v["metadata"];
    assert!(meta["uptime"].is_u64());
    let mem = meta["memory_usage"].as_str().expect("memory_usage");
    assert!(mem.ends_with('%'), "{mem}");
    assert!(mem.trim_end_matches('%').parse::<u64>().is_ok(), "{mem}");
    // The connection asking is open.
    assert!(meta["active_connections"].as_u64().expect("count") >= 1);
    assert_eq!(svc.requests(), 0, "/health is not counted");
    svc.shutdown().await;
}

#[tokio::test]
async fn health_checks_dependencies() {
    let db = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut spec = ServiceSpec::new("subscriber-manager", "sm-1");
    spec.version = "1.0.0".to_owned();
    spec.dependencies = vec![
        (
            "database".to_owned(),
            db.local_addr().expect("addr").to_string(),
        ),
        ("redis".to_owned(), closed_port().await),
    ];
    let svc = start(spec).await;

    let reply = get(svc.addr, "/health").await;
    assert_eq!(reply.status, 200);
    let body = std::str::from_utf8(&reply.body).expect("UTF-8");
    assert!(
        body.contains(r#""version":"1.0.0","checks":{"database":"healthy","redis":"unhealthy"}"#),
        "{body}"
    );
    assert_eq!(reply.json()["status"], "degraded");

    drop(db);
    let v = get(svc.addr, "/health").await.json();
    assert_eq!(v["checks"]["database"], "unhealthy");
    assert_eq!(v["status"], "degraded");
}

#[tokio::test]
async fn health_override_forces_the_status() {
    let mut spec = ServiceSpec::new("ai-processor", "ai-1");
    spec.dependencies = vec![("external_services".to_owned(), closed_port().await)];
    let svc = start(spec).await;

    svc.set_health(HealthOverride::Unhealthy);
    let reply = get(svc.addr, "/health").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["status"], "unhealthy");
    assert_eq!(reply.json()["checks"]["external_services"], "unhealthy");

    svc.set_health(HealthOverride::Healthy);
    let reply = get(svc.addr, "/health").await;
    assert_eq!(
        (reply.status, reply.json()["status"].clone()),
        (200, "healthy".into())
    );

    svc.set_health(HealthOverride::Degraded);
    let reply = get(svc.addr, "/health").await;
    assert_eq!(
        (reply.status, reply.json()["status"].clone()),
        (200, "degraded".into())
    );

    svc.set_health(HealthOverride::Auto);
    let reply = get(svc.addr, "/health").await;
    assert_eq!(
        (reply.status, reply.json()["status"].clone()),
        (200, "degraded".into())
    );
}

#[tokio::test]
async fn echo_reports_the_request() {
    let svc = start(ServiceSpec::new("content-manager", "cm-7")).await;
    let body = "hello world";
    let request = format!(
        "POST /api/content/items?a=1&b=two HTTP/1.1\r\nHost: test\r\nX-Request-ID: abc\r\n\
         X-Multi: 1\r\nX-Multi: 2\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let reply = raw(svc.addr, request.as_bytes()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-served-by"), Some("cm-7"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let v = reply.json();
    assert_eq!(v["service"], "content-manager");
    assert_eq!(v["instance"], "cm-7");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/api/content/items");
    assert_eq!(v["query"], "a=1&b=two");
    assert_eq!(v["headers"]["x-request-id"], "abc");
    assert_eq!(v["headers"]["x-multi"], "1, 2");
    assert_eq!(v["headers"]["host"], "test");
    assert_eq!(v["body_bytes"], 11);
    assert_eq!(svc.requests(), 1);

    // A chunked PUT body is read fully too.
    let chunked = b"PUT /anything HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\
        Connection: close\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n";
    let v = raw(svc.addr, chunked).await.json();
    assert_eq!(
        (v["method"].clone(), v["body_bytes"].clone()),
        ("PUT".into(), 8.into())
    );
    assert_eq!(v["query"], "");
    assert_eq!(svc.requests(), 2);
}

#[tokio::test]
async fn echo_knobs_shape_the_response() {
    let svc = start(ServiceSpec::new("web-scraper", "ws-1")).await;

    let t = Instant::now();
    let reply = get(svc.addr, "/api/scraper/slow?sleep_ms=300").await;
    assert_eq!(reply.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    let reply = get(svc.addr, "/api/scraper/x?status=503").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["service"], "web-scraper");

    let reply = get(svc.addr, "/x?status=201&bytes=5000").await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.body.len(), 5000);
    assert_eq!(reply.header("content-length"), Some("5000"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let v = reply.json();
    assert_eq!(v["service"], "web-scraper");
    assert!(v["pad"].as_str().expect("pad").bytes().all(|b| b == b'a'));

    let reply = get(svc.addr, "/x?bytes=300&type=text%2Fplain").await;
    assert_eq!(reply.body.len(), 300);
    assert_eq!(reply.header("content-type"), Some("text/plain"));

    let reply = get(svc.addr, "/x?type=text/plain").await;
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.json()["path"], "/x");

    for bad in ["status=abc", "status=42", "sleep_ms=-5", "bytes=lots"] {
        let reply = get(svc.addr, &format!("/x?{bad}")).await;
        assert_eq!(reply.status, 400, "{bad}");
        assert!(reply.json()["error"].is_string());
    }
}

#[tokio::test]
async fn metrics_count_requests() {
    let svc = start(ServiceSpec::new("distributor", "d-1")).await;
    get(svc.addr, "/api/distribution/a").await;
    get(svc.addr, "/api/distribution/b").await;
    get(svc.addr, "/api/distribution/c?status=404").await;
    get(svc.addr, "/health").await;

    let reply = get(svc.addr, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    let text = String::from_utf8(reply.body).expect("UTF-8");
    for expected in [
        r#"service_requests_total{method="GET",service="distributor",status="200"} 2"#,
        r#"service_requests_total{method="GET",service="distributor",status="404"} 1"#,
        r#"service_request_duration_seconds_count{method="GET",service="distributor"} 3"#,
        r#"service_active_connections{service="distributor"} 1"#,
        r#"service_up{service="distributor"} 1"#,
        r#"service_info{instance="d-1",service="distributor",version=""#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    assert_eq!(svc.requests(), 3);
}

#[tokio::test]
async fn keep_alive_and_h2c() {
    let svc = start(ServiceSpec::new("admin-dashboard", "ad-1")).await;

    // HTTP/1.1: several requests over one connection.
    let stream = TcpStream::connect(svc.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    let conn = tokio::spawn(conn);
    for i in 0..3 {
        let req = http::Request::get(format!("/page/{i}"))
            .header("host", "test")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let res = sender.send_request(req).await.expect("h1 response");
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["path"], format!("/page/{i}"));
    }
    let req = http::Request::get("/health")
        .header("host", "test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let res = sender.send_request(req).await.expect("h1 response");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["metadata"]["active_connections"], 1);
    drop(sender);
    conn.await.expect("join").expect("h1 connection");

    // HTTP/2 with prior knowledge.
    let stream = TcpStream::connect(svc.addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/over/h2", svc.addr))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let res = sender.send_request(req).await.expect("h2 response");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-served-by"], "ad-1");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["path"], "/over/h2");
    assert_eq!(svc.requests(), 4);
}

#[tokio::test]
async fn websocket_echoes_messages() {
    let svc = start(ServiceSpec::new("admin-dashboard", "ad-2")).await;
    let stream = TcpStream::connect(svc.addr).await.expect("connect");
    let url = format!("ws://{}/ws/updates", svc.addr);
    let (mut ws, response) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["x-served-by"], "ad-2");

    ws.send(Message::text("hello")).await.expect("send text");
    let reply = ws.next().await.expect("a message").expect("no error");
    assert_eq!(reply, Message::text("hello"));

    let payload = vec![0_u8, 1, 2, 255];
    ws.send(Message::binary(payload.clone()))
        .await
        .expect("send binary");
    let reply = ws.next().await.expect("a message").expect("no error");
    assert_eq!(reply, Message::binary(payload));

    ws.close(None).await.expect("close");
    while let Some(Ok(msg)) = ws.next().await {
        assert!(matches!(msg, Message::Close(_)), "{msg:?}");
    }
    assert_eq!(svc.requests(), 1);
    svc.shutdown().await;
}

#[tokio::test]
async fn websocket_is_closed_on_shutdown() {
    let svc = start(ServiceSpec::new("admin-dashboard", "ad-3")).await;
    let stream = TcpStream::connect(svc.addr).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/", svc.addr), stream)
        .await
        .expect("websocket handshake");
    ws.send(Message::text("ping")).await.expect("send");
    ws.next().await.expect("echo").expect("no error");

    let shutdown = tokio::spawn(svc.shutdown());
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("close in time")
        .expect("a message")
        .expect("no error");
    match msg {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame, got {other:?}"),
    }
    // Finish the close handshake; shutdown then completes.
    while ws.next().await.is_some() {}
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown in time")
        .expect("join");
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let svc = start(ServiceSpec::new("content-manager", "cm-2")).await;
    let addr = svc.addr;
    let slow = tokio::spawn(async move { get(addr, "/api/content/slow?sleep_ms=500").await });
    // Let the request arrive before shutting down.
    tokio::time::sleep(Duration::from_millis(150)).await;

    let t = Instant::now();
    svc.shutdown().await;
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "shutdown returned before the in-flight request finished"
    );
    let reply = slow.await.expect("join");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["path"], "/api/content/slow");

    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[tokio::test]
async fn dropping_the_handle_stops_the_service() {
    let svc = start(ServiceSpec::new("distributor", "d-2")).await;
    let addr = svc.addr;
    assert_eq!(get(addr, "/x").await.status, 200);
    drop(svc);
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn serve_runs_on_a_given_listener_until_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        ServiceSpec::new("subscriber-manager", "sm-9"),
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    let reply = get(addr, "/api/subscribers/1").await;
    assert_eq!(reply.json()["instance"], "sm-9");
    tx.send(()).expect("server alive");
    server.await.expect("join").expect("serve");
}
