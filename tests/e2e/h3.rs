//! HTTP/3 on the https listeners: a QUIC listener on the same UDP port, reached by a client on
//! quinn and h3 (and by ngtcp2's, in `peers.rs`), over real UDP on loopback. Each phase that
//! the other protocols have is shown working over HTTP/3 too, and the listener is attacked as
//! a public UDP port is.

use crate::support::*;
use bytes::{Buf, Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// An HTTP/3 client connection.
pub struct H3 {
    pub quic: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    _endpoint: quinn::Endpoint,
}

/// A QUIC client endpoint on loopback whose TLS trusts any certificate, offers `h3`, and
/// keeps session tickets (0-RTT on a second connection when `early` is on).
pub fn h3_endpoint(early: bool) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("udp");
    endpoint.set_default_client_config(client_config(early));
    endpoint
}

/// The client side's QUIC settings of [`h3_endpoint`], without 0-RTT.
pub fn endpoint_config() -> quinn::ClientConfig {
    client_config(false)
}

fn client_config(early: bool) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(edge::upstream::tls::AnyCertificate::new(
            provider,
        )))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.enable_early_data = early;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    quinn::ClientConfig::new(Arc::new(crypto))
}

impl H3 {
    /// A connection to the edge's QUIC listener at `addr`, asking for `sni`.
    pub async fn connect(addr: SocketAddr, sni: &str) -> H3 {
        H3::connect_on(h3_endpoint(false), addr, sni).await
    }

    /// A connection from `endpoint` (whose session tickets it may resume with).
    pub async fn connect_on(endpoint: quinn::Endpoint, addr: SocketAddr, sni: &str) -> H3 {
        let quic = endpoint
            .connect(addr, sni)
            .expect("connect")
            .await
            .expect("QUIC handshake");
        H3::over(endpoint, quic).await
    }

    /// HTTP/3 over an established (or 0-RTT) QUIC connection.
    pub async fn over(endpoint: quinn::Endpoint, quic: quinn::Connection) -> H3 {
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .expect("HTTP/3 set-up");
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        H3 {
            quic,
            send,
            _endpoint: endpoint,
        }
    }

    /// One request: its status, head and whole body.
    pub async fn request(
        &mut self,
        method: &str,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String> {
        request(&mut self.send, method, url, &[], body).await
    }

    /// A GET of `url`.
    pub async fn get(&mut self, url: &str) -> (http::StatusCode, http::HeaderMap, Bytes) {
        self.request("GET", url, None).await.expect("HTTP/3 GET")
    }

    /// A sender of requests on this connection, for concurrent streams.
    pub fn sender(&self) -> h3::client::SendRequest<h3_quinn::OpenStreams, Bytes> {
        self.send.clone()
    }
}

/// One request on `send`: its status, head and whole body, or what went wrong.
pub async fn request(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String> {
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(()).expect("request");
    let mut stream = send
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(body) = body {
        stream.send_data(body).await.map_err(|e| e.to_string())?;
    }
    stream.finish().await.map_err(|e| e.to_string())?;
    let response = stream.recv_response().await.map_err(|e| e.to_string())?;
    let mut body = BytesMut::new();
    while let Some(mut chunk) = stream.recv_data().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    Ok((response.status(), response.headers().clone(), body.freeze()))
}

/// An HTTP/1.1 server that answers each request with a JSON echo of what it was sent (method,
/// path, its `early-data` field, the body's length) and keeps nothing between requests.
async fn echo() -> SocketAddr {
    serve_each(|tcp| async move {
        let service =
            hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                use http_body_util::BodyExt;
                if req.uri().path() == "/big" {
                    return Ok(http::Response::builder()
                        .header("content-type", "application/octet-stream")
                        .body(http_body_util::Full::new(big()))
                        .expect("response"));
                }
                let method = req.method().to_string();
                let path = req.uri().path().to_string();
                let early = req
                    .headers()
                    .get("early-data")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let answer = serde_json::json!({
                    "method": method,
                    "path": path,
                    "early_data": early,
                    "body_length": body.len(),
                    "body_head": String::from_utf8_lossy(&body[..body.len().min(32)]),
                });
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(Bytes::from(answer.to_string())))
                        .expect("response"),
                )
            });
        let io = hyper_util::rt::TokioIo::new(tcp);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    })
    .await
}

/// What `/big` answers: 10 MiB of a pattern that repeats every 251 bytes.
fn big() -> Bytes {
    (0..10 * 1024 * 1024).map(|i| (i % 251) as u8).collect()
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).expect("JSON body")
}

#[tokio::test(flavor = "multi_thread")]
async fn get_and_post_with_bodies_over_http3_on_the_https_port() {
    let backend = echo().await;
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge("", one_route(backend).certificate(&a));
    let mut h3 = H3::connect(https, "a.example").await;

    let (status, head, body) = h3.get("https://a.example/hello").await;
    assert_eq!(status, 200, "{}", edge.log());
    assert_eq!(json(&body)["method"], "GET");
    assert_eq!(json(&body)["path"], "/hello");
    assert!(head.contains_key("x-request-id"));
    assert!(head.contains_key("date"));
    assert!(
        head.contains_key("strict-transport-security"),
        "HSTS as on HTTPS"
    );

    let upload = Bytes::from(vec![b'x'; 300_000]);
    let (status, _, body) = h3
        .request("POST", "https://a.example/upload", Some(upload))
        .await
        .expect("POST");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["method"], "POST");
    assert_eq!(json(&body)["body_length"], 300_000);
    assert_eq!(json(&body)["early_data"], serde_json::Value::Null);

    // The access log and the metrics name the protocol.
    let (status, _, _) = h3.get("https://a.example/nowhere-else").await;
    assert_eq!(status, 200);
    assert!(
        metric(&edge, "edge_client_requests_total", &["HTTP/3"]).await >= 3.0,
        "HTTP/3 requests are counted"
    );
    let opened = metric(&edge, "edge_client_connections", &["quic"]).await;
    assert_eq!(opened, 1.0, "the QUIC connection is counted open");
    let status = admin_json(&edge, "/status").await;
    assert_eq!(status["http3"]["enabled"], true, "{status}");
    assert_eq!(status["http3"]["udp_port"], https.port());
    assert_eq!(status["http3"]["connections"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_says_http3() {
    let backend = echo().await;
    let a = Certificate::self_signed(&["a.example"]);
    let (_dir, log, line) = access_log_file();
    let (_edge, https) = https_edge(line, one_route(backend).certificate(&a));
    let mut h3 = H3::connect(https, "a.example").await;
    let (status, _, _) = h3.get("https://a.example:8443/logged").await;
    assert_eq!(status, 200);
    let entry = logged_line(&log, "/logged", Duration::from_secs(5), "an HTTP/3 request").await;
    assert_eq!(entry["protocol"], "HTTP/3");
    // The authority as the client sent it (and the server got it), port and all, as an
    // HTTP/1.1 request's Host is logged.
    assert_eq!(entry["host"], "a.example:8443");
    assert_eq!(entry["tls_version"], "TLSv1.3");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_phase_works_over_http3_as_over_http2() {
    let backend = echo().await;
    let content = crate::support::backend("content").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let a = Certificate::self_signed(&["a.example"]);
    let config = TestConfig::new()
        .zone("tight", "1r/m")
        .upstream("app", [backend])
        .upstream("flaky", [dead, backend])
        .route("/limited/", "app")
        .limit(table! { zone = "tight", burst = 1, nodelay = true })
        .route("/private/", "app")
        .with("allow", vec!["10.0.0.0/8"])
        .route("/flaky/", "flaky")
        .upstream("content", [content.addr])
        .route("/api/", "content")
        .route("/", "app")
        .certificate(&a);
    let (edge, https) = https_edge("", config);
    let mut h3 = H3::connect(https, "a.example").await;

    // 100 streams at once on one connection, each answered whole.
    let mut streams = Vec::new();
    for i in 0..100 {
        let mut send = h3.sender();
        streams.push(tokio::spawn(async move {
            let url = format!("https://a.example/stream/{i}");
            request(&mut send, "GET", &url, &[], None).await
        }));
    }
    for (i, stream) in streams.into_iter().enumerate() {
        let (status, _, body) = stream.await.expect("task").expect("answered");
        assert_eq!(status, 200);
        assert_eq!(json(&body)["path"], format!("/stream/{i}"));
    }

    // 10 MiB, byte for byte.
    let (status, head, body) = h3.get("https://a.example/big").await;
    assert_eq!(status, 200);
    assert_eq!(head["content-length"], "10485760");
    assert!(
        body == big(),
        "the download arrived intact ({} bytes)",
        body.len()
    );

    // Rate limits: the burst passes, the next is 429 with Retry-After.
    let (first, _, _) = h3.get("https://a.example/limited/1").await;
    let (second, _, _) = h3.get("https://a.example/limited/2").await;
    let (third, head, _) = h3.get("https://a.example/limited/3").await;
    assert_eq!((first.as_u16(), second.as_u16()), (200, 200));
    assert_eq!(third, 429);
    assert!(head.contains_key("retry-after"));

    // A route's allow list.
    let (status, _, _) = h3.get("https://a.example/private/x").await;
    assert_eq!(status, 403);

    // A dead server costs no idempotent request: each goes on to the next.
    for i in 0..4 {
        let (status, _, _) = h3.get(&format!("https://a.example/flaky/{i}")).await;
        assert_eq!(status, 200, "{}", edge.log());
    }
    assert!(metric(&edge, "edge_upstream_retries_total", &["flaky"]).await >= 1.0);

    // No websocket over HTTP/3 (no extended CONNECT), and CONNECT is no forward proxy.
    let mut send = h3.sender();
    let refused = request(&mut send, "CONNECT", "https://a.example:443", &[], None).await;
    match refused {
        Ok((status, _, _)) => assert_eq!(status, 405),
        // h3 may refuse to send a CONNECT without the extended-CONNECT setting.
        Err(why) => assert!(!why.is_empty()),
    }
    let (status, _, _) = h3.get("https://a.example/after").await;
    assert_eq!(status, 200, "the connection still serves");

    // Compression, as the client asks.
    let (status, head, body) = request(
        &mut h3.sender(),
        "GET",
        "https://a.example/api/content/x?bytes=32768",
        &[("accept-encoding", "gzip")],
        None,
    )
    .await
    .expect("a compressed answer");
    assert_eq!(status, 200);
    assert_eq!(head["content-encoding"], "gzip");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
        .expect("gzip");
    assert!(plain.len() >= 32768, "{} bytes", plain.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn https_answers_advertise_http3_unless_it_is_off() {
    let backend = echo().await;
    let a = Certificate::self_signed(&["a.example"]);
    let (_edge, https) = https_edge(
        table! { redirect_http_to_https = false },
        one_route(backend).certificate(&a),
    );
    let want = format!("h3=\":{}\"; ma=86400", https.port());
    // HTTP/1.1 over TLS.
    let tls = connector(&[b"http/1.1"]);
    let mut stream = connect(&tls, https, "a.example").await;
    let (status, head, _) = http1(&mut stream, "/", "").await;
    assert_eq!(status, "http/1.1 200 ok");
    assert!(head.contains(&format!("alt-svc: {want}")), "{head}");
    // HTTP/2.
    let mut h2 = h2_client(connect(&connector(&[b"h2"]), https, "a.example").await).await;
    let response = h2_get(&mut h2, "https://a.example/").await;
    assert_eq!(response.headers()["alt-svc"], want.as_str());
    // The edge's own answers too (a 404 of no route is not possible here: a refused method).
    let mut stream = connect(&tls, https, "a.example").await;
    let (_, head, _) = http1(&mut stream, "/", "X-Forwarded-For: x\r\n").await;
    assert!(head.contains("alt-svc"), "{head}");

    // Off: no QUIC listener, no advertisement.
    let (_off, https) = https_edge(
        table! { redirect_http_to_https = false, http3 = false },
        one_route(backend).certificate(&a),
    );
    let mut stream = connect(&tls, https, "a.example").await;
    let (status, head, _) = http1(&mut stream, "/", "").await;
    assert_eq!(status, "http/1.1 200 ok");
    assert!(!head.contains("alt-svc"), "{head}");
    let endpoint = h3_endpoint(false);
    let attempt = endpoint.connect(https, "a.example").expect("connect");
    let attempt = tokio::time::timeout(Duration::from_secs(2), attempt).await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "no QUIC handshake with http3 = false"
    );
    // Nor does a plain-HTTP answer advertise it.
    let (status, head, _) = http1(
        &mut tokio::net::TcpStream::connect(_off.http)
            .await
            .expect("tcp"),
        "/",
        "",
    )
    .await;
    assert_eq!(status, "http/1.1 200 ok");
    assert!(!head.contains("alt-svc"), "{head}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_swapped_on_disk_is_what_the_next_quic_handshake_gets() {
    let backend = echo().await;
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge("", one_route(backend).certificate(&a));
    let names = |h3: &H3| -> Vec<String> {
        let identity = h3.quic.peer_identity().expect("a peer identity");
        let chain = identity
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .expect("a certificate chain");
        let (_, parsed) = x509_parser::parse_x509_certificate(chain[0].as_ref()).expect("x509");
        let san = parsed
            .subject_alternative_name()
            .expect("san")
            .expect("san");
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect()
    };
    let mut before = H3::connect(https, "a.example").await;
    assert!(!names(&before).contains(&"renewed.a.example".to_string()));

    a.renew(&["a.example", "renewed.a.example"]);
    wait_until(
        Duration::from_secs(10),
        "a new QUIC handshake gets the renewed certificate",
        async || {
            names(&H3::connect(https, "a.example").await).contains(&"renewed.a.example".to_string())
        },
    )
    .await;
    let (status, _, _) = before.get("https://a.example/still").await;
    assert_eq!(
        status,
        200,
        "a connection from before keeps working: {}",
        edge.log()
    );
}

/// A UDP relay in front of `target` for one client that holds back what the edge sends
/// during the first `hold`: the client cannot complete its handshake before then, so what it
/// sends meanwhile goes in 0-RTT packets, and the edge reads it before the handshake is
/// complete, as it does on a long path.
async fn delaying_relay(target: SocketAddr, hold: Duration) -> SocketAddr {
    let front = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let back = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    back.connect(target).await.expect("connect");
    let addr = front.local_addr().expect("addr");
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let release = Arc::new(std::sync::Mutex::new(None::<tokio::time::Instant>));
    {
        let (front, back, client, release) =
            (front.clone(), back.clone(), client.clone(), release.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().expect("client") = Some(from);
                release
                    .lock()
                    .expect("release")
                    .get_or_insert_with(|| tokio::time::Instant::now() + hold);
                let _ = back.send(&buf[..n]).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = back.recv(&mut buf).await {
            let (Some(to), Some(at)) = (
                *client.lock().expect("client"),
                *release.lock().expect("release"),
            ) else {
                continue;
            };
            let (front, datagram) = (front.clone(), buf[..n].to_vec());
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let _ = front.send_to(&datagram, to).await;
            });
        }
    });
    addr
}

/// A 0-RTT connection from `endpoint` (which holds a ticket from an earlier one) through a
/// relay that holds back the rest of its handshake, and one request on it.
async fn in_early_data(
    endpoint: &quinn::Endpoint,
    https: SocketAddr,
    method: &str,
    path: &str,
) -> (http::StatusCode, Bytes) {
    let relay = delaying_relay(https, Duration::from_millis(300)).await;
    let connecting = endpoint.connect(relay, "a.example").expect("connect");
    let (quic, _accepted) = match connecting.into_0rtt() {
        Ok(early) => early,
        Err(_) => panic!("no 0-RTT: the client holds no ticket"),
    };
    let mut h3 = H3::over(endpoint.clone(), quic).await;
    let body = (method == "POST").then(|| Bytes::from_static(b"replayable"));
    let (status, _, body) = h3
        .request(method, &format!("https://a.example{path}"), body)
        .await
        .expect("an answer");
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_rtt_serves_a_safe_method_and_answers_anything_else_425() {
    let backend = echo().await;
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge(
        table! { http3_early_data = true },
        one_route(backend).certificate(&a),
    );
    // A first connection, for a ticket.
    let endpoint = h3_endpoint(true);
    {
        let mut h3 = H3::connect_on(endpoint.clone(), https, "a.example").await;
        let (status, _, body) = h3.get("https://a.example/first").await;
        assert_eq!(status, 200);
        assert_eq!(
            json(&body)["early_data"],
            serde_json::Value::Null,
            "not early"
        );
        h3.quic.close(0u32.into(), b"");
    }

    let (status, body) = in_early_data(&endpoint, https, "GET", "/early").await;
    assert_eq!(status, 200, "{}", edge.log());
    assert_eq!(
        json(&body)["early_data"],
        "1",
        "the server is told it may be a replay"
    );

    let (status, body) = in_early_data(&endpoint, https, "POST", "/early-post").await;
    assert_eq!(status, 425, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["error"], "too_early");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_http3_early_data_there_is_no_zero_rtt() {
    let backend = echo().await;
    let a = Certificate::self_signed(&["a.example"]);
    let (_edge, https) = https_edge("", one_route(backend).certificate(&a));
    let endpoint = h3_endpoint(true);
    {
        let mut h3 = H3::connect_on(endpoint.clone(), https, "a.example").await;
        assert_eq!(h3.get("https://a.example/first").await.0, 200);
        // Time for the ticket to arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        h3.quic.close(0u32.into(), b"");
    }
    let connecting = endpoint.connect(https, "a.example").expect("connect");
    match connecting.into_0rtt() {
        // The client may try; the edge accepts none of it.
        Ok((_, accepted)) => assert!(!accepted.await, "0-RTT was accepted"),
        Err(connecting) => {
            connecting.await.expect("a full handshake");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_under_http3_load_fails_no_request() {
    let a_backend = backend("a").await;
    let b_backend = backend("b").await;
    let a = Certificate::self_signed(&["a.example"]);
    let config = |addr| one_route(addr).certificate(&a);
    let (edge, https) = https_edge("", config(a_backend.addr));
    let path = edge.dir.path().join("upstreams.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let head = text[..text.find("\n[").expect("a table") + 1].to_string();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut h3 = H3::connect(https, "a.example").await;
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match h3
                    .request("GET", "https://a.example/api/content/x", None)
                    .await
                {
                    Ok((status, _, _)) if status == 200 => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        }));
    }
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let next = if i % 2 == 0 {
            b_backend.addr
        } else {
            a_backend.addr
        };
        write_atomically(&path, &format!("{head}{}", config(next)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut served = 0;
    for task in load {
        let (ok, failed) = task.await.expect("load");
        assert!(failed.is_empty(), "{failed:?}");
        served += ok;
    }
    assert!(served > 50, "only {served} requests served");
    let generation = admin_json(&edge, "/status").await["reloads"]["generation"].as_u64();
    assert!(
        generation >= Some(3),
        "the reloads were applied: {generation:?}"
    );
}

// Hostile clients: what a public UDP port gets.

/// The edge's resident memory, in KiB.
fn rss_kib(edge: &Edge) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", edge.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The first datagram a real QUIC client sends to `to`: an Initial with a ClientHello, for a
/// connection of its own (a new connection id each time).
fn initial_packet(to: SocketAddr) -> Vec<u8> {
    let mut endpoint = quinn_proto::Endpoint::new(Arc::default(), None, false, None);
    let config = client_config(false);
    let now = std::time::Instant::now();
    let (_, mut connection) = endpoint
        .connect(now, config, to, "a.example")
        .expect("a connection");
    let mut datagram = Vec::new();
    let transmit = connection
        .poll_transmit(now, 1, &mut datagram)
        .expect("an Initial");
    datagram.truncate(transmit.size);
    datagram
}

/// Whether `datagram` is a QUIC v1 Retry packet (long header, type 3).
fn is_retry(datagram: &[u8]) -> bool {
    datagram
        .first()
        .is_some_and(|b| b & 0x80 != 0 && (b >> 4) & 0x3 == 3)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_initials_from_many_ports_gets_retries_and_bounded_memory() {
    let backend = echo().await;
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge(
        table! { client_header_timeout = "2s" },
        one_route(backend).certificate(&a),
    );
    let mut h3 = H3::connect(https, "a.example").await;
    assert_eq!(h3.get("https://a.example/warm").await.0, 200);
    let before = rss_kib(&edge);

    // 1,000 connection attempts from 1,000 source ports, none of which goes on.
    let mut sources = Vec::new();
    for _ in 0..1000 {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.send_to(&initial_packet(https), https).expect("send");
        sources.push(socket);
    }
    let mut retries = 0;
    for socket in &sources {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        if let Ok(n) = socket.recv(&mut buf) {
            retries += usize::from(is_retry(&buf[..n]));
        }
    }
    let in_progress = metric(&edge, "edge_quic_handshakes_in_progress", &[]).await;
    assert!(
        in_progress <= edge::quic::RETRY_ABOVE as f64 + 1.0,
        "{in_progress} handshakes in progress"
    );
    assert!(retries >= 900, "only {retries} attempts were sent a Retry");
    assert!(metric(&edge, "edge_quic_retries_total", &[]).await >= 900.0);
    let grown = rss_kib(&edge).saturating_sub(before);
    assert!(grown < 32 * 1024, "the flood cost {grown} KiB");

    // Clients that prove their address (quinn's client follows a Retry) are served, during
    // the flood's handshakes and after they have timed out.
    let mut during = H3::connect(https, "a.example").await;
    assert_eq!(during.get("https://a.example/during").await.0, 200);
    assert_eq!(h3.get("https://a.example/still").await.0, 200);
    wait_until(
        Duration::from_secs(10),
        "the flood's handshakes end with client_header_timeout",
        async || metric(&edge, "edge_quic_handshakes_in_progress", &[]).await == 0.0,
    )
    .await;
    let retried = metric(&edge, "edge_quic_retries_total", &[]).await;
    let mut after = H3::connect(https, "a.example").await;
    assert_eq!(after.get("https://a.example/after").await.0, 200);
    assert_eq!(
        metric(&edge, "edge_quic_retries_total", &[]).await,
        retried,
        "with few handshakes under way, no Retry"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_datagrams_change_nothing() {
    let backend = echo().await;
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge("", one_route(backend).certificate(&a));
    let mut h3 = H3::connect(https, "a.example").await;
    assert_eq!(h3.get("https://a.example/before").await.0, 200);
    let before = rss_kib(&edge);

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let initial = initial_packet(https);
    for i in 0..5000 {
        let len = (next() % 1400) as usize + 1;
        let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match i % 4 {
            // A long header of version 1 with random contents.
            0 => {
                datagram[0] = 0xc0 | (datagram[0] & 0x3f);
                if datagram.len() > 5 {
                    datagram[1..5].copy_from_slice(&[0, 0, 0, 1]);
                }
            }
            // A real Initial with bytes flipped.
            1 => {
                datagram = initial.clone();
                let at = (next() as usize) % datagram.len();
                datagram[at] ^= 0xff;
            }
            // An unknown version (the edge may answer with Version Negotiation).
            2 if datagram.len() > 5 => {
                datagram[0] |= 0x80;
                datagram[1..5].copy_from_slice(&[0x1a, 0x2a, 0x3a, 0x4a]);
            }
            _ => {}
        }
        let _ = socket.send_to(&datagram, https);
    }
    assert_eq!(
        h3.get("https://a.example/after").await.0,
        200,
        "{}",
        edge.log()
    );
    let mut fresh = H3::connect(https, "a.example").await;
    assert_eq!(fresh.get("https://a.example/fresh").await.0, 200);
    let grown = rss_kib(&edge).saturating_sub(before);
    assert!(grown < 16 * 1024, "garbage cost {grown} KiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_that_are_never_read_are_reset_within_send_timeout_and_free_their_upstream() {
    let bulk = BulkBackend::start(32 << 20);
    let app = backend("app").await;
    let (_a, edge, https) = crate::slow_clients::bulk_edge(&bulk, app.addr);

    // A client with small windows that asks for 10 large bodies and reads none of them.
    let endpoint = h3_endpoint(false);
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(64_000u32.into())
        .receive_window(1_000_000u32.into());
    let mut config = endpoint_config();
    config.transport_config(Arc::new(transport));
    let quic = endpoint
        .connect_with(config, https, "a.example")
        .expect("connect")
        .await
        .expect("handshake");
    let h3 = H3::over(endpoint, quic).await;
    let stopped = std::time::Instant::now();
    let mut streams = Vec::new();
    for i in 0..10 {
        let mut send = h3.sender();
        let request = http::Request::get(format!("https://a.example/big/{i}"))
            .body(())
            .expect("request");
        let mut stream = send.send_request(request).await.expect("send");
        stream.finish().await.expect("finish");
        let response = stream.recv_response().await.expect("a head");
        assert_eq!(response.status(), 200);
        streams.push(stream);
    }
    // Others are served meanwhile, on the same connection and on another.
    let mut other = H3::connect(https, "a.example").await;
    assert_eq!(other.get("https://a.example/api/content/x").await.0, 200);
    wait_until(
        Duration::from_secs(10),
        "an upstream connection is still open",
        async || bulk.closed_mid_response(10),
    )
    .await;
    crate::slow_clients::closed_after_send_timeout(&bulk, 10, stopped);
    let send = ["phase=\"send\""];
    let timeouts = metric_reaching(&edge, "edge_client_timeouts_total", &send, 10.0).await;
    assert_eq!(timeouts, 10.0);
    // Each stream was reset: reading it now ends in an error.
    for mut stream in streams {
        let mut ended = None;
        for _ in 0..10_000 {
            match stream.recv_data().await {
                Ok(Some(_)) => continue,
                end => {
                    ended = Some(end.is_err());
                    break;
                }
            }
        }
        assert_eq!(ended, Some(true), "the stream was reset, not ended whole");
    }
    let server = server(&edge, "bulk", 0).await;
    assert_eq!(server["failures"], 0, "{server}");
    assert_eq!(server["in_flight"], 0, "{server}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binary_upgrade_finishes_http3_streams_on_the_old_process_then_the_new_one_serves() {
    let app = backend("app").await;
    let a = Certificate::self_signed(&["a.example"]);
    let (mut old, https) = https_edge("", one_route(app.addr).certificate(&a));
    let mut h3 = H3::connect(https, "a.example").await;
    assert_eq!(h3.get("https://a.example/before").await.0, 200);
    // A request in flight across the hand-over.
    let mut send = h3.sender();
    let slow = tokio::spawn(async move {
        request(
            &mut send,
            "GET",
            "https://a.example/slow?sleep_ms=1500",
            &[],
            None,
        )
        .await
    });
    wait_until(
        Duration::from_secs(10),
        "the slow request is not in flight",
        async || server(&old, "app", 0).await["in_flight"] == 1,
    )
    .await;

    let config = old.dir.path().join("upstreams.toml");
    let upgrade_socket = old.dir.path().join("edge-upgrade.sock");
    let mut new = std::process::Command::new(edge_bin())
        .args(["run", "--upgrade", "--config"])
        .arg(&config)
        .arg("--runtime-dir")
        .arg(old.dir.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the new edge");
    wait_until(
        Duration::from_secs(10),
        "the new edge waits for the sockets",
        async || upgrade_socket.exists(),
    )
    .await;
    old.signal("QUIT");

    // The stream in flight is answered whole by the old process.
    let (status, _, _) = slow
        .await
        .expect("task")
        .expect("the slow request is answered");
    assert_eq!(status, 200);
    // While the old process drains, a new QUIC connection is refused at once (a browser goes
    // on over TCP, which the new process already serves).
    let refused = tokio::time::timeout(Duration::from_secs(3), async {
        h3_endpoint(false)
            .connect(https, "a.example")
            .expect("connect")
            .await
    })
    .await;
    // Refused, or (if the old process was already gone) served by the new one.
    if let Ok(Ok(quic)) = refused {
        let mut fresh = H3::over(h3_endpoint(false), quic).await;
        assert_eq!(fresh.get("https://a.example/fresh").await.0, 200);
    }
    // The old process ends once its connections are done; then HTTP/3 is the new one's.
    wait_until(
        Duration::from_secs(20),
        "the old edge still runs",
        async || old.exited().is_some(),
    )
    .await;
    let served = app.requests();
    let mut after = H3::connect(https, "a.example").await;
    assert_eq!(after.get("https://a.example/after").await.0, 200);
    assert!(app.requests() > served);
    assert!(
        new.try_wait().expect("status").is_none(),
        "the new edge runs"
    );
    let _ = new.kill();
    let _ = new.wait();
}

/// ngtcp2's example HTTP/3 client (Debian's `ngtcp2-client`, on GnuTLS) against the edge at
/// `addr` with `options`, asking for `url`: whether it ended well, and what it printed.
fn ngtcp2(addr: SocketAddr, options: &[&str], url: &str) -> (bool, String) {
    let output = std::process::Command::new("gtlsclient")
        .args([
            "--exit-on-all-streams-close",
            "--no-quic-dump",
            "--sni=a.example",
            "--timeout=5s",
        ])
        .args(options)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(url)
        .output()
        .expect("gtlsclient (apt install ngtcp2-client)");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_independent_client_ngtcp2_downloads_uploads_and_migrates() {
    let backend = echo().await;
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge("", one_route(backend).certificate(&a));
    let dir = tempfile::tempdir().expect("dir");

    // 10 MiB, byte for byte.
    let download = format!("--download={}", dir.path().display());
    let (ok, text) = blocking(|| {
        ngtcp2(
            https,
            &["--no-http-dump", &download],
            "https://a.example/big",
        )
    });
    assert!(ok, "{text}\n{}", edge.log());
    let got = std::fs::read(dir.path().join("big")).expect("the download");
    assert!(
        got == big(),
        "the download arrived intact ({} bytes)",
        got.len()
    );

    // An upload.
    let upload = dir.path().join("body");
    std::fs::write(&upload, vec![b'u'; 100_000]).expect("write");
    let data = format!("--data={}", upload.display());
    let (ok, text) = blocking(|| {
        ngtcp2(
            https,
            &["-m", "POST", &data, &download],
            "https://a.example/upload",
        )
    });
    assert!(ok, "{text}");
    assert!(text.contains("[:status: 200]"), "{text}");
    let answer = std::fs::read(dir.path().join("upload")).expect("the answer");
    let answer = json(&Bytes::from(answer));
    assert_eq!(answer["method"], "POST");
    assert_eq!(answer["body_length"], 100_000);

    // The client moves to a new address (a new port) before its request: the edge validates
    // the new path and answers there.
    let (ok, text) = blocking(|| {
        ngtcp2(
            https,
            &["--change-local-addr=200ms", "--delay-stream=600ms"],
            "https://a.example/moved",
        )
    });
    assert!(ok, "{text}");
    assert!(text.contains("Local address is now"), "{text}");
    assert!(text.contains("succeeded"), "path validation: {text}");
    assert!(text.contains("[:status: 200]"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn quic_connections_count_against_the_per_client_cap_and_the_clocks_close_idle_ones() {
    let backend = echo().await;
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge(
        table! {
            max_connections_per_client = 2,
            client_header_timeout = "1s",
            keepalive_timeout = "2s",
        },
        one_route(backend).certificate(&a),
    );
    let silent = H3::connect(https, "a.example").await;
    let mut busy = H3::connect(https, "a.example").await;
    let asked = std::time::Instant::now();
    assert_eq!(busy.get("https://a.example/one").await.0, 200);
    // A third connection from the same address is refused.
    let third = h3_endpoint(false)
        .connect(https, "a.example")
        .expect("connect")
        .await;
    assert!(third.is_err(), "over max_connections_per_client");
    assert!(metric(&edge, "edge_client_connections_refused_total", &[]).await >= 1.0);

    // No request within client_header_timeout: closed.
    tokio::time::timeout(Duration::from_secs(4), silent.quic.closed())
        .await
        .expect("a connection that asks nothing is closed");
    assert!(metric(&edge, "edge_client_header_timeouts_total", &[]).await >= 1.0);
    // No stream in flight for keepalive_timeout: closed, not before.
    tokio::time::timeout(Duration::from_secs(6), busy.quic.closed())
        .await
        .expect("an idle connection is closed");
    let idle = asked.elapsed();
    assert!(idle >= Duration::from_millis(1900), "closed after {idle:?}");
    // The slots are free again.
    let mut again = H3::connect(https, "a.example").await;
    assert_eq!(again.get("https://a.example/again").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http3_request_body_that_stops_is_408_before_it_goes_upstream() {
    let app = crate::support::backend("app").await;
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge(
        table! { client_body_timeout = "1s" },
        one_route(app.addr).certificate(&a),
    );
    let h3 = H3::connect(https, "a.example").await;
    let request = http::Request::post("https://a.example/api/content/upload")
        .header("content-length", "1000")
        .body(())
        .expect("request");
    let mut stream = h3.sender().send_request(request).await.expect("send");
    stream
        .send_data(Bytes::from_static(b"ten bytes!"))
        .await
        .expect("data");
    // ... and nothing more.
    let response = tokio::time::timeout(Duration::from_secs(4), stream.recv_response())
        .await
        .expect("answered within client_body_timeout")
        .expect("a response");
    assert_eq!(response.status(), 408);
    assert_eq!(app.requests(), 0, "nothing went upstream");
    let body = ["phase=\"body\""];
    assert_eq!(
        metric_reaching(&edge, "edge_client_timeouts_total", &body, 1.0).await,
        1.0
    );
}
