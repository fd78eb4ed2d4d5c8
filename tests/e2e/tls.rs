//! The HTTPS front: protocols, SNI, ALPN h2, resumption, certificate reload, HSTS, redirects
//! and gzip, seen by real TLS clients (rustls, and openssl s_client for what rustls refuses
//! to speak).

use crate::support::*;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The DNS names of the certificate the server presented.
fn served_names(stream: &TlsStream<TcpStream>) -> Vec<String> {
    let cert = &stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).expect("x509");
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
}

/// What most of these tests talk to: an edge ([`https_edge`]) for two sites, a.example (its
/// default certificate) and b.example, in front of a content service.
struct TwoSites {
    edge: Edge,
    https: SocketAddr,
    app: services::RunningService,
    /// The a.example certificate's files (to renew them).
    a: Certificate,
    _b: Certificate,
}

/// [`TwoSites`], with `edge_lines` in the edge's [edge].
async fn two_sites(edge_lines: impl EdgeLines) -> TwoSites {
    let app = backend("app").await;
    let a = Certificate::self_signed(&["a.example"]);
    let b = Certificate::self_signed(&["b.example"]);
    let (edge, https) = https_edge(
        edge_lines,
        one_route(app.addr).certificate(&a).certificate(&b),
    );
    TwoSites {
        edge,
        https,
        app,
        a,
        _b: b,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_tls12_aead_and_tls13_are_spoken() {
    let t = two_sites(table! { redirect_http_to_https = false }).await;
    let (ok, out) = s_client(t.https, &["-tls1_3", "-servername", "a.example"]);
    assert!(ok && out.contains("TLSv1.3"), "{out}");
    let (ok, out) = s_client(
        t.https,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256",
        ],
    );
    assert!(ok && out.contains("TLSv1.2"), "{out}");
    let (ok, out) = s_client(t.https, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    assert!(!ok, "TLS 1.1 must be refused: {out}");
    let (ok, out) = s_client(
        t.https,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:AES128-SHA:DHE-RSA-AES128-SHA",
        ],
    );
    assert!(!ok, "a CBC-only client must be refused: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_the_certificate_h2_is_negotiated_and_sessions_resume() {
    let t = two_sites(table! { redirect_http_to_https = false }).await;
    let plain = connector(&[b"http/1.1"]);
    assert_eq!(
        served_names(&connect(&plain, t.https, "b.example").await),
        vec!["b.example"]
    );
    assert_eq!(
        served_names(&connect(&plain, t.https, "a.example").await),
        vec!["a.example"]
    );
    assert_eq!(
        served_names(&connect(&plain, t.https, "unknown.example").await),
        vec!["a.example"],
        "the first certificate is the default"
    );

    let h2 = connector(&[b"h2", b"http/1.1"]);
    let stream = connect(&h2, t.https, "a.example").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // A real HTTP/2 request over it.
    let mut sender = h2_client(stream).await;
    let response = h2_get(&mut sender, "/h2-check").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("strict-transport-security"));

    // The same connector keeps its session: the second handshake resumes.
    let resuming = connector(&[b"http/1.1"]);
    let first = connect(&resuming, t.https, "a.example").await;
    let mut first = first;
    let _ = http1(&mut first, "/warm", "").await; // TLS 1.3 tickets arrive after the handshake
    let second = connect(&resuming, t.https, "a.example").await;
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn renewed_certificate_files_are_served_without_a_restart() {
    let t = two_sites(table! { redirect_http_to_https = false }).await;
    let tls = connector(&[b"http/1.1"]);
    let mut before = connect(&tls, t.https, "a.example").await;
    assert_eq!(http1(&mut before, "/", "").await.0, "http/1.1 200 ok");

    t.a.renew(&["a.example", "renewed.a.example"]);
    wait_until(
        Duration::from_secs(10),
        "the renewed certificate is not served",
        async || {
            let names = served_names(&connect(&tls, t.https, "a.example").await);
            names.contains(&"renewed.a.example".to_string())
        },
    )
    .await;
    assert_eq!(
        http1(&mut before, "/", "").await.0,
        "http/1.1 200 ok",
        "a connection opened before keeps working"
    );

    // A broken renewal keeps the certificate in use: the edge says it cannot load it.
    let refusals = || t.edge.log().matches("cannot be loaded").count();
    let before = refusals();
    std::fs::write(&t.a.cert, "garbage").expect("write");
    wait_until(
        Duration::from_secs(10),
        "the broken certificate file is not refused",
        async || refusals() > before,
    )
    .await;
    let names = served_names(&connect(&tls, t.https, "a.example").await);
    assert!(
        names.contains(&"renewed.a.example".to_string()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hsts_only_on_https_and_plain_http_redirects_with_308_except_health() {
    let t = two_sites(table! { redirect_http_to_https = true }).await;
    let mut s = connect(&connector(&[b"http/1.1"]), t.https, "a.example").await;
    let (status, head, _) = http1(&mut s, "/page", "").await;
    assert_eq!(status, "http/1.1 200 ok");
    assert!(
        head.contains("strict-transport-security: max-age=31536000; includesubdomains; preload")
    );
    let (status, head, _) = http1(&mut s, "/missing-route-is-routed-anyway", "").await;
    assert!(status.starts_with("http/1.1 200"));
    assert!(head.contains("strict-transport-security"));

    let response = raw_request(
        t.edge.http,
        b"GET /a/b?c=d HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    let lower = response.to_ascii_lowercase();
    // The https listener is not on 443: the redirect names its port, never the plain one.
    let location = format!("location: https://shop.example:{}/a/b?c=d", t.https.port());
    assert!(lower.contains(&location), "{response}");
    let response = raw_request(
        t.edge.http,
        b"GET /x HTTP/1.1\r\nHost: Shop.Example:8080\r\nConnection: close\r\n\r\n",
    );
    let location = format!("location: https://shop.example:{}/x", t.https.port());
    assert!(
        response.to_ascii_lowercase().contains(&location),
        "{response}"
    );
    assert!(!lower.contains("strict-transport-security"));
    let response = raw_request(
        t.edge.http,
        b"GET /health HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
    );
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "/health is not redirected: {response}"
    );
    assert!(!response
        .to_ascii_lowercase()
        .contains("strict-transport-security"));
}

#[tokio::test(flavor = "multi_thread")]
async fn large_json_is_gzipped_and_small_json_is_not() {
    let t = two_sites(table! { redirect_http_to_https = false }).await;
    let mut s = connect(&connector(&[b"http/1.1"]), t.https, "a.example").await;
    let (status, head, body) =
        http1(&mut s, "/data?bytes=32768", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(status, "http/1.1 200 ok");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut plain)
        .expect("gunzip");
    assert_eq!(plain.len(), 32768);
    let json: serde_json::Value = serde_json::from_slice(&plain).expect("the original JSON");
    assert_eq!(json["service"], "content-manager");
    assert!(body.len() < 32768 / 4, "compressed to {}", body.len());

    let (_, head, body) = http1(&mut s, "/data?bytes=500", "Accept-Encoding: gzip\r\n").await;
    assert!(!head.contains("content-encoding"), "{head}");
    assert_eq!(body.len(), 500);

    // HTML, which the config's types do not list: compressed, as nginx always compresses it.
    let (_, head, _) = http1(
        &mut s,
        "/data?bytes=4096&type=text/html",
        "Accept-Encoding: gzip\r\n",
    )
    .await;
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");

    // Without Accept-Encoding, the large body comes as is.
    let (_, head, body) = http1(&mut s, "/data?bytes=32768", "").await;
    assert!(!head.contains("content-encoding"), "{head}");
    assert_eq!(body.len(), 32768);
}

#[tokio::test(flavor = "multi_thread")]
async fn handshakes_are_counted_by_version_and_open_connections_by_listener() {
    let t = two_sites(table! { redirect_http_to_https = false }).await;
    let (_, before) = scrape(&t.edge).await;
    assert_eq!(
        value(&before, "edge_client_connections", &["listener=\"https\""]),
        0.0
    );

    // TLS 1.3 over HTTP/1.1: three requests on one connection are one handshake.
    let mut h1 = connect(&connector(&[b"http/1.1"]), t.https, "a.example").await;
    for _ in 0..3 {
        assert!(http1(&mut h1, "/one", "").await.0.contains("200"));
    }
    // TLS 1.3 over HTTP/2: three streams on one connection are one handshake.
    let mut sender = h2_client(connect(&connector(&[b"h2"]), t.https, "a.example").await).await;
    for _ in 0..3 {
        assert_eq!(h2_get(&mut sender, "/two").await.status(), 200);
    }
    // TLS 1.2, two requests.
    let mut old = connect(
        &connector_for(&[b"http/1.1"], &[&rustls::version::TLS12]),
        t.https,
        "a.example",
    )
    .await;
    for _ in 0..2 {
        assert!(http1(&mut old, "/three", "").await.0.contains("200"));
    }
    // And one plain connection.
    let mut plain = TcpStream::connect(t.edge.http).await.expect("tcp");
    assert!(http1(&mut plain, "/four", "").await.0.contains("200"));

    let (_, m) = scrape(&t.edge).await;
    assert_eq!(
        value(&m, "edge_tls_handshakes_total", &["version=\"TLSv1.3\""]),
        2.0
    );
    assert_eq!(
        value(&m, "edge_tls_handshakes_total", &["version=\"TLSv1.2\""]),
        1.0
    );
    assert_eq!(
        value(&m, "edge_client_connections", &["listener=\"https\""]),
        3.0
    );
    assert_eq!(
        value(&m, "edge_client_connections", &["listener=\"http\""]),
        1.0
    );

    drop((h1, sender, old, plain));
    wait_until(
        Duration::from_secs(10),
        "connections are still counted after the clients closed",
        async || metric(&t.edge, "edge_client_connections", &[]).await == 0.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_tls_handshake_is_cut_off_at_client_header_timeout() {
    use std::io::Write;
    let t = two_sites(table! { client_header_timeout = "1s" }).await;
    let started = std::time::Instant::now();
    // One connects and says nothing; one sends a record header for a ClientHello that never
    // comes.
    let silent = std::net::TcpStream::connect(t.https).expect("connect");
    let mut partial = std::net::TcpStream::connect(t.https).expect("connect");
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("write");

    // Meanwhile a normal client is served.
    let mut ok = connect(&connector(&[b"http/1.1"]), t.https, "a.example").await;
    assert!(http1(&mut ok, "/normal", "").await.0.contains("200"));

    for (name, mut stream) in [("silent", silent), ("partial", partial)] {
        stream
            .set_read_timeout(Some(Duration::from_secs(6)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the {name} handshake was not cut off: {other:?}"),
        }
        let cut = started.elapsed();
        assert!(
            cut >= Duration::from_millis(800) && cut < Duration::from_secs(4),
            "the {name} handshake was cut off after {cut:?}"
        );
    }
    metric_reaching(&t.edge, "edge_client_header_timeouts_total", &[], 2.0).await;
    // The served client's connection is unharmed.
    assert!(http1(&mut ok, "/again", "").await.0.contains("200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_over_the_connection_cap_carries_hsts_and_a_request_id() {
    let t = two_sites(table! { max_connections_per_client = 1 }).await;
    let tls = connector(&[b"http/1.1"]);
    let mut first = connect(&tls, t.https, "a.example").await;
    let (status, head, _) = http1(&mut first, "/one", "").await;
    assert!(status.contains("200"), "{status}");
    assert!(head.contains("strict-transport-security: "), "{head}");

    // The second connection is answered at once, before it sends anything.
    let mut second = connect(&tls, t.https, "a.example").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 429"), "{answer}");
    assert!(
        answer.contains("\r\nstrict-transport-security: max-age="),
        "{answer}"
    );
    assert!(answer.contains("\r\nx-request-id: "), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_streams_are_bounded_and_a_rapid_reset_client_is_cut_off() {
    let t = two_sites(table! { redirect_http_to_https = false }).await;
    let stream = connect(&connector(&[b"h2"]), t.https, "a.example").await;
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    let mut connection = Box::pin(connection);
    until_settings(&mut connection, Duration::from_secs(5)).await;
    assert_eq!(
        connection.max_concurrent_send_streams(),
        128,
        "the edge advertises a stream limit"
    );
    let closed = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");

    // Open and cancel streams as fast as possible (CVE-2023-44487).
    let mut opened = 0;
    let mut cut_off = false;
    for _ in 0..20_000 {
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => {
                cut_off = true;
                break;
            }
        };
        let request = http::Request::get("https://a.example/reset")
            .body(())
            .expect("request");
        match client.send_request(request, true) {
            Ok((_, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                opened += 1;
            }
            Err(_) => {
                cut_off = true;
                break;
            }
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), closed).await;
    assert!(
        cut_off || matches!(ended, Ok(Ok(Err(_)))),
        "the connection survived {opened} reset streams"
    );
    assert!(opened < 20_000, "all {opened} resets were accepted");

    // Others are still served.
    let mut fresh = connect(&connector(&[b"http/1.1"]), t.https, "a.example").await;
    assert!(http1(&mut fresh, "/after", "").await.0.contains("200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_http2_requests_are_refused_before_any_backend() {
    let t = two_sites(table! { redirect_http_to_https = false }).await;
    let valid = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/h2"),
        (":authority", "a.example"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut fields = valid.to_vec();
        fields.extend_from_slice(extra);
        fields
    };
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("connection header", with(&[("connection", "keep-alive")])),
        (
            "transfer-encoding",
            with(&[("transfer-encoding", "chunked")]),
        ),
        ("keep-alive header", with(&[("keep-alive", "timeout=5")])),
        ("upgrade header", with(&[("upgrade", "websocket")])),
        ("te other than trailers", with(&[("te", "gzip")])),
        ("uppercase name", with(&[("X-Upper", "1")])),
        ("unknown pseudo-header", with(&[(":foo", "bar")])),
        (
            "pseudo-header after a regular one",
            vec![
                (":method", "GET"),
                ("x-a", "1"),
                (":scheme", "https"),
                (":path", "/h2"),
                (":authority", "a.example"),
            ],
        ),
        (
            "no :path",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "a.example"),
            ],
        ),
        ("two :path", with(&[(":path", "/other")])),
        // What the h2 codec lets through and the edge's checks refuse.
        (
            "no :authority and no Host",
            vec![(":method", "GET"), (":scheme", "https"), (":path", "/h2")],
        ),
        ("a Host that differs", with(&[("host", "b.example")])),
        (
            "userinfo in :authority",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/h2"),
                (":authority", "user@a.example"),
            ],
        ),
        (
            "absolute-form :path",
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "https://b.example/h2"),
                (":authority", "a.example"),
            ],
        ),
        (
            "conflicting content-length",
            with(&[("content-length", "0"), ("content-length", "1")]),
        ),
        (
            "CONNECT",
            vec![(":method", "CONNECT"), (":authority", "b.example:443")],
        ),
        (
            "TRACE",
            vec![
                (":method", "TRACE"),
                (":scheme", "https"),
                (":path", "/h2"),
                (":authority", "a.example"),
            ],
        ),
    ];
    for (name, fields) in cases {
        let mut stream = connect(&connector(&[b"h2"]), t.https, "a.example").await;
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(h2_frame(4, 0, 0, &[])); // SETTINGS
        out.extend(h2_frame(1, 0x5, 1, &hpack_literal(&fields))); // HEADERS, END_STREAM|END_HEADERS
        stream.write_all(&out).await.expect("write");
        // Read frames until stream 1 is answered: a reset, a GOAWAY, a response or a close.
        let mut buf = Vec::new();
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                while buf.len() >= 9 {
                    let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                    if buf.len() < 9 + len {
                        break;
                    }
                    let (kind, id) = (
                        buf[3],
                        u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
                    );
                    let first = buf.get(9).copied();
                    buf.drain(..9 + len);
                    match (kind, id) {
                        (3, 1) => return "RST_STREAM".to_string(),
                        (7, _) => return "GOAWAY".to_string(),
                        // :status from the static table: 0x88 is 200.
                        (1, 1) => return format!("HEADERS {first:?}"),
                        _ => {}
                    }
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return "closed".to_string(),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: no answer in 5 s"));
        assert!(
            outcome != "HEADERS Some(136)",
            "{name}: answered 200 ({outcome})"
        );
    }
    assert_eq!(
        t.app.requests(),
        0,
        "a malformed h2 request reached the backend"
    );

    // A well-formed request on a fresh connection is still served.
    let mut sender = h2_client(connect(&connector(&[b"h2"]), t.https, "a.example").await).await;
    assert_eq!(h2_get(&mut sender, "/fine").await.status(), 200);
    assert_eq!(t.app.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_requests_reach_an_http11_server_with_one_host_and_one_cookie() {
    // A server that keeps every head it is sent and answers each with a small JSON.
    let heads = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = heads.clone();
    let upstream = each_connection(move |mut stream| {
        each_request_head(&mut stream, |stream, head| {
            seen.lock().expect("heads").push(head.to_string());
            use std::io::Write;
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
                .is_ok()
        });
    });
    let a = Certificate::self_signed(&["a.example"]);
    let (_edge, https) = https_edge("", one_route(upstream).certificate(&a));

    let stream = connect(&connector(&[b"h2"]), https, "a.example").await;
    let mut sender = h2_client(stream).await;
    // HTTP/2 lets a client split Cookie into one field per pair (RFC 9113 8.2.3).
    let request = http::Request::get("https://a.example/h2?x=1")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert!(response.headers().contains_key("strict-transport-security"));
    assert!(response.headers().contains_key("x-request-id"));
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"{\"ok\":true}");

    let heads = heads.lock().expect("heads").clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = heads[0].to_ascii_lowercase();
    assert!(head.starts_with("get /h2?x=1 http/1.1\r\n"), "{head}");
    let fields = |name: &str| -> Vec<String> {
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().to_string())
            .collect()
    };
    assert_eq!(fields("host"), vec!["a.example"], "{head}");
    assert_eq!(fields("cookie"), vec!["a=1; b=2"], "{head}");
    assert_eq!(fields("x-forwarded-proto"), vec!["https"], "{head}");
    assert_eq!(fields("x-real-ip"), vec!["127.0.0.1"], "{head}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_requests_share_the_upstream_pool_and_its_keepalive_requests() {
    let backend = KeepaliveBackend::start(0, Duration::from_secs(30));
    let a = Certificate::self_signed(&["a.example"]);
    let (_edge, https) = https_edge(
        table! { threads = 1 },
        TestConfig::new()
            .upstream("app", [backend.addr])
            .with("keepalive_requests", 5)
            .route("/", "app")
            .certificate(&a),
    );
    let stream = connect(&connector(&[b"h2"]), https, "a.example").await;
    let mut sender = h2_client(stream).await;
    for i in 0..30 {
        let response = h2_get(&mut sender, &format!("/n/{i}")).await;
        assert_eq!(response.status(), 200, "request {i}");
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body");
    }
    let counts = backend.per_connection();
    assert_eq!(counts.iter().sum::<u32>(), 30, "{counts:?}");
    assert!(
        counts.iter().all(|&n| n <= 5),
        "keepalive_requests: {counts:?}"
    );
    assert!(counts.len() <= 7, "connections are reused: {counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_stream_reset_while_its_server_works_is_logged_499_and_frees_the_server() {
    let app = backend("app").await;
    let (_dir, log, logging) = access_log_file();
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge(
        &logging,
        TestConfig::new()
            .upstream("app", [app.addr])
            .with_servers("max_fails", 1)
            .route("/", "app")
            .certificate(&a),
    );
    let mut client = h2_frames_client(https).await;
    let request = http::Request::get("https://a.example/slow?sleep_ms=3000")
        .body(())
        .expect("request");
    let (_response, mut stream) = client.send_request(request, true).expect("send");
    // The request is with the server when the client gives up on it.
    wait_until(Duration::from_secs(10), "never in flight", async || {
        server(&edge, "app", 0).await["in_flight"] == 1
    })
    .await;
    stream.send_reset(h2::Reason::CANCEL);

    // Freed at once, not after the server's 3 s, and counted against nothing.
    let server = left_and_freed(
        &edge,
        &log,
        "/slow",
        "app",
        Duration::from_secs(2),
        "the reset stream is still held",
    )
    .await;
    assert_eq!(server["fails"], 0, "{server}");
    assert!(
        server["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("up")),
        "{server}"
    );

    // The connection's other streams go on.
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get("https://a.example/after")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    assert_eq!(response.await.expect("response").status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_answer_cut_short_by_its_server_is_reset_and_a_client_leaving_a_slow_body_frees_it(
) {
    // A server that sends a head and part of a chunked body, then breaks the connection
    // ("/cut"), or then goes silent ("/stall").
    let cut = scripted_backend(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n".to_vec(),
        false,
    );
    let stall = stalling_backend();
    let (_dir, log, logging) = access_log_file();
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge(
        &logging,
        TestConfig::new()
            .upstream("cut", [cut])
            .upstream("stall", [stall])
            .with("read_timeout", "20s")
            .route("/cut", "cut")
            .route("/stall", "stall")
            .certificate(&a),
    );
    let mut client = h2_frames_client(https).await;

    // The body the client gets ends in a reset, never in a clean end of stream.
    let request = http::Request::get("https://a.example/cut")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    // The reset may overtake the head, or come after some of the body.
    let mut ended_cleanly = true;
    if let Ok(response) = response.await {
        let mut body = response.into_body();
        while let Some(piece) = body.data().await {
            if piece.is_err() {
                ended_cleanly = false;
                break;
            }
        }
    } else {
        ended_cleanly = false;
    }
    assert!(!ended_cleanly, "a truncated body must not end cleanly");

    // A client that resets its stream while the body is slow to come frees the server at
    // once (not after read_timeout) and is logged 499.
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get("https://a.example/stall")
        .body(())
        .expect("request");
    let (response, mut stream) = client.send_request(request, true).expect("send");
    let mut body = response.await.expect("head").into_body();
    let _ = body.data().await;
    stream.send_reset(h2::Reason::CANCEL);
    left_and_freed(
        &edge,
        &log,
        "/stall",
        "stall",
        Duration::from_secs(3),
        "the stalled stream is still held",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_is_closed_after_keepalive_timeout_and_a_busy_one_is_not() {
    let app = backend("app").await;
    let a = Certificate::self_signed(&["a.example"]);
    let (_edge, https) = https_edge(
        table! { keepalive_timeout = "1s" },
        one_route(app.addr).certificate(&a),
    );
    let stream = connect(&connector(&[b"h2"]), https, "a.example").await;
    let (client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");

    // A stream longer than the idle timeout keeps the connection.
    let request = http::Request::get("https://a.example/slow?sleep_ms=1800")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let response = response
        .await
        .expect("a connection with a stream in flight stays");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Some(piece) = body.data().await {
        piece.expect("body");
    }

    // Then, with nothing in flight, it is closed within about the timeout.
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(
        closed.is_ok(),
        "the idle connection is still open after 5 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "closed too soon: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_edge_answers_a_grpc_call_itself_on_https_carries_hsts() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let a = Certificate::self_signed(&["a.example"]);
    let (_edge, https) = https_edge("", one_route(dead).certificate(&a));
    let stream = connect(&connector(&[b"h2"]), https, "a.example").await;
    let mut sender = h2_client(stream).await;
    let request = http::Request::post("https://a.example/test.Echo/Unary")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 response");
    let headers = response.headers();
    assert_eq!(headers["grpc-status"], "14", "UNAVAILABLE: {headers:?}");
    // As on every https answer, errors included (the JSON 502 had it; this had not).
    assert!(
        headers.contains_key("strict-transport-security"),
        "{headers:?}"
    );
    assert!(headers.contains_key("x-request-id"), "{headers:?}");
}
