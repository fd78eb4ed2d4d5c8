//! TLS and HTTP/2 toward servers, against nginx: certificates verified by a CA the test
//! makes and by name, mutual TLS, files changed on disk, HTTP/2 by ALPN and with prior
//! knowledge, a server that caps its streams and one that says GOAWAY.

use crate::peers::{Nginx, TestCa};
use crate::support::*;
use std::time::Duration;

/// A server block's TLS directives for `issued`.
fn tls_directives(issued: &crate::peers::Issued) -> String {
    format!(
        "ssl_certificate {}; ssl_certificate_key {};",
        issued.cert.display(),
        issued.key.display()
    )
}

/// The edge's config: upstream `secure` (servers `addrs`) with `tls` and `protocol`, routed
/// for every path.
fn tls_upstream(addr: std::net::SocketAddr, tls: toml::Value, protocol: &str) -> TestConfig {
    TestConfig::new()
        .upstream("secure", [addr])
        .with("tls", tls)
        .with("protocol", protocol)
        .route("/", "secure")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_server_is_verified_by_the_configured_ca_and_name_in_each_protocol() {
    let ca = TestCa::new("internal CA");
    let cert = ca.server("billing", &["billing.internal"]);
    let nginx = Nginx::start("ssl http2", &tls_directives(&cert));
    let client = client();
    for (protocol, expected) in [
        ("http1", "HTTP/1.1"),
        ("h2", "HTTP/2.0"),
        ("auto", "HTTP/2.0"),
    ] {
        let tls = table! {
            server_name = "billing.internal",
            ca = ca.pem.display().to_string(),
        };
        let edge = Edge::start("", tls_upstream(nginx.addr, tls, protocol));
        for _ in 0..3 {
            let (status, body) = get_json(&client, &edge.url("/invoices"), &[]).await;
            assert_eq!(status, 200, "{protocol}: {body}\n{}", edge.log());
            assert_eq!(body["protocol"], expected, "{protocol}");
            assert_eq!(
                body["sni"], "billing.internal",
                "{protocol}: SNI is the name"
            );
        }
    }
}

/// An edge whose upstream (`tls`) is nginx serving `cert`: a request gets 502, the edge's log
/// names the cause (either of `causes`), and nginx served nothing.
async fn refused(cert: &crate::peers::Issued, tls: toml::Value, causes: [&str; 2]) {
    let nginx = Nginx::start("ssl", &tls_directives(cert));
    let edge = Edge::start("", tls_upstream(nginx.addr, tls, "http1"));
    let (status, _) = get_json(&client(), &edge.url("/invoices"), &[]).await;
    assert_eq!(status, 502);
    let log = edge.log();
    assert!(
        causes.iter().any(|cause| log.contains(cause)),
        "the log names the cause: {log}"
    );
    assert!(
        nginx.served().is_empty(),
        "no request reached a server it could not verify"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_of_another_ca_or_for_another_name_gets_no_request() {
    let ours = TestCa::new("internal CA");
    let theirs = TestCa::new("somebody else's CA");
    let foreign = theirs.server("billing", &["billing.internal"]);
    let tls = table! { server_name = "billing.internal", ca = ours.pem.display().to_string() };
    refused(&foreign, tls, ["UnknownIssuer", "invalid peer certificate"]).await;

    let ca = TestCa::new("internal CA");
    let other_name = ca.server("billing", &["billing.internal"]);
    let tls = table! { server_name = "payments.internal", ca = ca.pem.display().to_string() };
    refused(&other_name, tls, ["NotValidForName", "not valid for name"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_literal_address_is_verified_as_the_address() {
    let ca = TestCa::new("internal CA");
    let cert = ca.server("ip", &["127.0.0.1"]);
    let nginx = Nginx::start("ssl", &tls_directives(&cert));
    let tls = table! { ca = ca.pem.display().to_string() };
    let edge = Edge::start("", tls_upstream(nginx.addr, tls, "http1"));
    let (status, body) = get_json(&client(), &edge.url("/"), &[]).await;
    assert_eq!(status, 200, "{body}\n{}", edge.log());
    assert_eq!(body["sni"], "", "no SNI for an address");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_requires_a_client_certificate_gets_the_configured_one() {
    let ca = TestCa::new("internal CA");
    let cert = ca.server("billing", &["billing.internal"]);
    let client_cert = ca.client("edge-client", "edge.internal");
    let directives = format!(
        "{} ssl_client_certificate {}; ssl_verify_client on;",
        tls_directives(&cert),
        ca.pem.display()
    );
    let nginx = Nginx::start("ssl", &directives);
    let without = table! { server_name = "billing.internal", ca = ca.pem.display().to_string() };
    let edge = Edge::start("", tls_upstream(nginx.addr, without, "http1"));
    let (status, _) = get_json(&client(), &edge.url("/"), &[]).await;
    assert_eq!(
        status, 400,
        "nginx refuses a request without a client certificate"
    );
    drop(edge);

    let with = table! {
        server_name = "billing.internal",
        ca = ca.pem.display().to_string(),
        cert = client_cert.cert.display().to_string(),
        key = client_cert.key.display().to_string(),
    };
    let edge = Edge::start("", tls_upstream(nginx.addr, with, "http1"));
    let (status, body) = get_json(&client(), &edge.url("/"), &[]).await;
    assert_eq!(status, 200, "{body}\n{}", edge.log());
    assert_eq!(body["client"], "CN=edge.internal");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_file_changed_on_disk_is_used_for_the_next_connections() {
    let ca = TestCa::new("internal CA");
    let wrong = TestCa::new("an old CA");
    let cert = ca.server("billing", &["billing.internal"]);
    let nginx = Nginx::start("ssl", &tls_directives(&cert));
    let trusted = wrong.dir.path().join("trusted.pem");
    std::fs::copy(&wrong.pem, &trusted).expect("copy");
    let tls = table! { server_name = "billing.internal", ca = trusted.display().to_string() };
    let edge = Edge::start("", tls_upstream(nginx.addr, tls, "http1"));
    let client = client();
    assert_eq!(get_json(&client, &edge.url("/"), &[]).await.0, 502);
    write_atomically(&trusted, &std::fs::read_to_string(&ca.pem).expect("CA"));
    wait_until(
        Duration::from_secs(10),
        "the new CA file is used",
        async || get_json(&client, &edge.url("/"), &[]).await.0 == 200,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn edge_check_refuses_auto_without_tls_and_unreadable_files() {
    let config = TestConfig::new()
        .upstream("a", ["127.0.0.1:9"])
        .with("protocol", "auto")
        .upstream("b", ["127.0.0.1:9"])
        .with("tls", table! { ca = "/nonexistent/ca.pem" })
        .upstream("c", ["127.0.0.1:9"])
        .with("tls", table! { cert = "/nonexistent/c.pem" })
        .route("/", "a");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("upstreams.toml");
    std::fs::write(&path, config.text()).expect("write");
    let output = std::process::Command::new(edge_bin())
        .arg("check")
        .arg(&path)
        .output()
        .expect("edge check");
    let said = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("protocol \"auto\""), "{said}");
    assert!(said.contains("cannot read `/nonexistent/ca.pem`"), "{said}");
    assert!(said.contains("needs both `cert` and `key`"), "{said}");
}

/// 50 clients, 4 requests each, at once, through the edge to `nginx` over HTTP/2: none fails.
async fn fifty_clients(edge: &Edge) {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = edge.url(&format!("/c{i}"));
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut statuses = Vec::new();
            for _ in 0..4 {
                statuses.push(get_json(&client, &url, &[]).await.0);
            }
            statuses
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task
            .await
            .expect("task")
            .iter()
            .filter(|&&s| s != 200)
            .count();
    }
    assert_eq!(failed, 0, "{}", edge.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h2_server_capping_streams_at_2_loses_no_request_of_50_clients() {
    // Cleartext HTTP/2 with prior knowledge; nginx lets 2 streams run at once per connection.
    let nginx = Nginx::start("http2", "http2_max_concurrent_streams 2;");
    let config = TestConfig::new()
        .upstream("h2c", [nginx.addr])
        .with("protocol", "h2")
        .route("/", "h2c");
    let edge = Edge::start("", config);
    fifty_clients(&edge).await;
    let served = nginx.served();
    assert_eq!(served.len(), 200);
    assert!(
        served.iter().all(|l| l.starts_with("HTTP/2.0 GET")),
        "{served:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h2_server_that_says_goaway_after_5_streams_loses_no_request() {
    // nginx ends an HTTP/2 connection with GOAWAY after keepalive_requests streams.
    let ca = TestCa::new("internal CA");
    let cert = ca.server("billing", &["billing.internal"]);
    let directives = format!("{} keepalive_requests 5;", tls_directives(&cert));
    let nginx = Nginx::start("ssl http2", &directives);
    let tls = table! { server_name = "billing.internal", ca = ca.pem.display().to_string() };
    let edge = Edge::start("", tls_upstream(nginx.addr, tls, "h2"));
    fifty_clients(&edge).await;
    assert_eq!(nginx.served().len(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h2_upstream_streams_share_a_connection_and_the_log_names_the_protocol() {
    let nginx = Nginx::start("http2", "");
    let (_dir, log, line) = access_log_file();
    let config = TestConfig::new()
        .upstream("h2c", [nginx.addr])
        .with("protocol", "h2")
        .with("keepalive", 4)
        .route("/", "h2c");
    let edge = Edge::start(line, config);
    fifty_clients(&edge).await;
    let entry = logged_line(&log, "/c0", Duration::from_secs(5), "logged").await;
    assert_eq!(entry["upstream_protocol"], "HTTP/2", "{entry}");
    let status = admin_json(&edge, "/status").await;
    assert_eq!(status["upstreams"]["h2c"]["protocol"], "h2", "{status}");
    // Many streams at once, few connections: nginx counts the connections it accepted.
    let connections = std::fs::read_to_string(nginx.dir.path().join("error.log"))
        .unwrap_or_default()
        .matches("client 127.0.0.1 connected")
        .count();
    assert!(
        connections <= 8,
        "{connections} connections for 200 requests"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h2_server_that_never_opens_its_window_is_given_up_after_send_timeout() {
    // The h2 crate as a server that takes a stream but grants no window for its body.
    let addr = serve_each(|tcp| async move {
        let mut connection = h2::server::Builder::new()
            .initial_window_size(0)
            .initial_connection_window_size(65_535)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .expect("handshake");
        let mut held = Vec::new();
        while let Some(Ok(stream)) = connection.accept().await {
            held.push(stream); // never read, never answered
        }
    })
    .await;
    let config = TestConfig::new()
        .upstream("stingy", [addr])
        .with("protocol", "h2")
        .with("send_timeout", "1s")
        .route("/", "stingy");
    let edge = Edge::start("", config);
    let started = std::time::Instant::now();
    let response = client()
        .post(edge.url("/upload"))
        // More than the 64 KiB a stream may carry before the server's SETTINGS arrive.
        .body(vec![b'x'; 200_000])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", edge.log()));
    assert_eq!(response.status(), 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_takes_the_servers_choice_and_h2_refuses_a_server_without_it() {
    let ca = TestCa::new("internal CA");
    let cert = ca.server("billing", &["billing.internal"]);
    // No `http2` on the listen: this nginx selects only http/1.1 by ALPN.
    let nginx = Nginx::start("ssl", &tls_directives(&cert));
    let tls = || table! { server_name = "billing.internal", ca = ca.pem.display().to_string() };
    let auto = Edge::start("", tls_upstream(nginx.addr, tls(), "auto"));
    let (status, body) = get_json(&client(), &auto.url("/"), &[]).await;
    assert_eq!(status, 200, "{body}\n{}", auto.log());
    assert_eq!(body["protocol"], "HTTP/1.1");

    let h2 = Edge::start("", tls_upstream(nginx.addr, tls(), "h2"));
    let (status, _) = get_json(&client(), &h2.url("/"), &[]).await;
    assert_eq!(status, 502);
    // nginx refuses the handshake itself (a server that ignores ALPN would complete it, and
    // the edge would refuse it as not having selected h2).
    let log = h2.log();
    assert!(
        log.contains("NoApplicationProtocol") || log.contains("did not select h2"),
        "{log}"
    );
    assert_eq!(nginx.served().len(), 1, "only auto's request reached it");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h2_upstreams_surplus_connections_are_closed_after_a_burst() {
    // One stream per connection at once: a burst needs a connection per concurrent request.
    let nginx = Nginx::start(
        "http2",
        "http2_max_concurrent_streams 1; location = /nginx_status { stub_status; }",
    );
    let config = TestConfig::new()
        .upstream("h2c", [nginx.addr])
        .with("protocol", "h2")
        .with("keepalive", 1)
        .route("/", "h2c");
    let edge = Edge::start("", config);
    // A first request learns the server's limit; then a burst.
    assert_eq!(get_json(&client(), &edge.url("/first"), &[]).await.0, 200);
    fifty_clients(&edge).await;
    let connections = per_connection(&nginx).len();
    assert!(
        connections > 4,
        "the burst took more connections than keepalive: {connections}"
    );
    // A second later, one idle connection per worker (2) stays; nginx counts the status
    // request's own connection too.
    wait_until(Duration::from_secs(5), "the surplus closed", async || {
        nginx_active_connections(nginx.addr).await <= 3
    })
    .await;
}

/// `n` requests for `path{i}` at once, as streams of one HTTP/2 client connection (prior
/// knowledge) to the edge's plain listener: their statuses.
async fn streams_at_once(edge: &Edge, path: &str, n: usize) -> Vec<u16> {
    let tcp = tokio::net::TcpStream::connect(edge.http)
        .await
        .expect("tcp");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2c");
    tokio::spawn(connection);
    let mut answers = Vec::new();
    for i in 0..n {
        let mut client = client.clone().ready().await.expect("ready");
        let request = http::Request::get(format!("http://edge.test{path}{i}"))
            .body(())
            .expect("request");
        answers.push(client.send_request(request, true).expect("send").0);
    }
    let mut statuses = Vec::new();
    for answer in answers {
        statuses.push(answer.await.expect("answer").status().as_u16());
    }
    statuses
}

/// How many requests each connection nginx served carried.
fn per_connection(nginx: &Nginx) -> std::collections::HashMap<String, usize> {
    let mut carried = std::collections::HashMap::new();
    for line in nginx.served() {
        if let Some(connection) = line.split_whitespace().last() {
            *carried.entry(connection.to_string()).or_default() += 1;
        }
    }
    carried
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_burst_to_an_h2_upstream_opens_a_connection_per_thread_not_per_request() {
    let nginx = Nginx::start("http2", "");
    let config = TestConfig::new()
        .upstream("h2c", [nginx.addr])
        .with("protocol", "h2")
        .route("/", "h2c");
    let edge = Edge::start(table! { http2_cleartext = true, threads = 2 }, config);
    // 100 streams at once, before the edge holds any upstream connection.
    let statuses = streams_at_once(&edge, "/burst", 100).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let carried = per_connection(&nginx);
    assert_eq!(carried.values().sum::<usize>(), 100, "{carried:?}");
    // One connection per worker thread, not one per request.
    assert!(
        carried.len() <= 2,
        "{} connections for a burst of 100",
        carried.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_burst_over_tls_with_auto_shares_connections_once_the_server_chose_h2() {
    let ca = TestCa::new("internal CA");
    let cert = ca.server("billing", &["billing.internal"]);
    let nginx = Nginx::start("ssl http2", &tls_directives(&cert));
    let tls = table! { server_name = "billing.internal", ca = ca.pem.display().to_string() };
    let edge = Edge::start(
        table! { http2_cleartext = true, threads = 2 },
        tls_upstream(nginx.addr, tls, "auto"),
    );
    let statuses = streams_at_once(&edge, "/burst", 100).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let carried = per_connection(&nginx);
    assert!(
        nginx.served().iter().all(|l| l.starts_with("HTTP/2.0")),
        "{:?}",
        nginx.served()
    );
    // The first connect's ALPN says h2 for the requests that waited for it.
    assert!(
        carried.len() <= 2,
        "{} TLS connections for a burst of 100",
        carried.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_burst_larger_than_a_servers_stream_limit_opens_the_connections_it_needs() {
    // nginx runs 10 streams at once per connection, each answer taking 2 s (its upstream's):
    // the burst's streams all overlap however slowly the edge takes them in.
    let slow =
        KeepaliveBackend::answering_after(0, Duration::from_secs(30), Duration::from_secs(2));
    let directives = format!(
        "http2_max_concurrent_streams 10; location /slow/ {{ proxy_pass http://{}; }}",
        slow.addr
    );
    let nginx = Nginx::start("http2", &directives);
    let config = TestConfig::new()
        .upstream("h2c", [nginx.addr])
        .with("protocol", "h2")
        .route("/", "h2c");
    let edge = Edge::start(table! { http2_cleartext = true, threads = 1 }, config);
    let started = std::time::Instant::now();
    let statuses = streams_at_once(&edge, "/slow/", 100).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let took = started.elapsed();
    let carried = per_connection(&nginx);
    assert_eq!(carried.values().sum::<usize>(), 100, "{carried:?}");
    // The 100 run at once: ten connections of ten, opened together; none queues more than
    // its server takes (which would run them ten after ten), none is opened per request.
    assert!(
        carried.values().all(|&n| n <= 10),
        "a connection queued streams past the server's limit: {carried:?} (in {took:?})"
    );
    assert!(
        carried.len() <= 12,
        "{} connections for 100 streams of 10 per connection",
        carried.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_waiting_for_an_h2_connect_that_fails_fail_with_it_without_a_connect_each() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Servers that take each connection and say nothing: one closes it 300 ms later (the TLS
    // handshake fails), one holds it past the upstream's connect_timeout (1 s).
    let server = |hold: Duration| {
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let addr = each_connection(move |stream| {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(hold);
            drop(stream);
        });
        (addr, accepted)
    };
    let (closing, closing_accepted) = server(Duration::from_millis(300));
    let (silent, silent_accepted) = server(Duration::from_secs(5));
    let ca = TestCa::new("internal CA");
    let tls = table! { server_name = "billing.internal", ca = ca.pem.display().to_string() };
    let config = TestConfig::new()
        .upstream("closing", [closing])
        .with("tls", tls.clone())
        .with("protocol", "h2")
        .route("/closing/", "closing")
        .upstream("silent", [silent])
        .with("tls", tls)
        .with("protocol", "h2")
        .with("connect_timeout", "1s")
        .route("/silent/", "silent");
    let edge = Edge::start(table! { threads = 2 }, config);
    for (path, status, accepted) in [
        ("/closing/", 502, closing_accepted),
        ("/silent/", 504, silent_accepted),
    ] {
        let burst = (0..40).map(|i| {
            let url = edge.url(&format!("{path}{i}"));
            tokio::spawn(async move { get_json(&client(), &url, &[]).await.0 })
        });
        for answered in futures_util::future::join_all(burst).await {
            assert_eq!(answered.expect("task"), status, "{path}\n{}", edge.log());
        }
        // A connect per worker thread; the requests that waited for it failed with it.
        let connects = accepted.load(Ordering::SeqCst);
        assert!(
            connects <= 2,
            "{path}: {connects} connects for a burst of 40"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h2_upstream_connection_without_a_stream_for_keepalive_timeout_is_closed() {
    // nginx keeps an idle HTTP/2 connection for its keepalive_timeout (75 s): only the edge
    // closes this one.
    let nginx = Nginx::start("http2", "location = /nginx_status { stub_status; }");
    let config = TestConfig::new()
        .upstream("h2c", [nginx.addr])
        .with("protocol", "h2")
        .with("keepalive_timeout", "1s")
        .route("/", "h2c");
    let edge = Edge::start("", config);
    assert_eq!(get_json(&client(), &edge.url("/first"), &[]).await.0, 200);
    // The edge's connection and the status request's own.
    assert_eq!(nginx_active_connections(nginx.addr).await, 2);
    // No request comes to look at the pool: its timer closes the connection.
    wait_until(
        Duration::from_secs(5),
        "the idle connection closed",
        async || nginx_active_connections(nginx.addr).await <= 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_that_name_no_host_reach_strict_servers_and_an_empty_host_takes_no_server_out() {
    // nginx as the servers: it refuses an HTTP/1.1 request without Host, and its h2c listener
    // takes no stream without `:authority`.
    let h1 = Nginx::start("", "");
    let h2 = [Nginx::start("http2", ""), Nginx::start("http2", "")];
    let config = TestConfig::new()
        .upstream("plain", [h1.addr])
        .route("/plain/", "plain")
        .upstream("h2c", [h2[0].addr, h2[1].addr])
        .with("protocol", "h2")
        .route("/", "h2c");
    let edge = Edge::start("", config);
    let status = |response: &str| -> u16 {
        let code = response.split(' ').nth(1).and_then(|c| c.parse().ok());
        code.unwrap_or(0)
    };
    // HTTP/1.0 may name no host: the server gets its own name, as its clients send it
    // (nginx's `$host` drops the port; without a Host it answers HTTP/1.1 with 400).
    for path in ["/plain/x", "/x"] {
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        let response = raw_request(edge.http, request.as_bytes());
        assert_eq!(status(&response), 200, "{response}\n{}", edge.log());
        assert!(response.contains("\"host\":\"127.0.0.1\""), "{response}");
    }
    // An absolute-form target goes to an HTTP/2 server as its path and authority.
    let absolute =
        b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n";
    let response = raw_request(edge.http, absolute);
    assert_eq!(status(&response), 200, "{response}\n{}", edge.log());
    assert!(response.contains("\"host\":\"a.example\""), "{response}");
    // An empty Host names nothing: 400 from the edge (as nginx answers it), and no server is
    // counted failed for it (it took both out, and the next requests got 502).
    for _ in 0..5 {
        let empty = b"GET /x HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n";
        assert_eq!(status(&raw_request(edge.http, empty)), 400);
        assert_eq!(get_json(&client(), &edge.url("/x"), &[]).await.0, 200);
    }
    for index in 0..2 {
        assert_eq!(server(&edge, "h2c", index).await["failures"], 0);
    }
}

/// nginx's count of its open client connections (stub_status on an h2c listener), this
/// request's own included.
async fn nginx_active_connections(addr: std::net::SocketAddr) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2c");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get(format!("http://{addr}/nginx_status"))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let mut body = response.await.expect("response").into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        text.extend_from_slice(&chunk.expect("body"));
    }
    // "Active connections: N ..."
    String::from_utf8_lossy(&text)
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}
