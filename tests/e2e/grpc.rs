//! gRPC through the edge, grpcio on both sides: over TLS (ALPN h2) and over cleartext HTTP/2
//! on the plain listener (`http2_cleartext`), to an `h2` upstream. Unary calls with trailing
//! metadata, a 500-message server stream, a bidirectional stream that needs both directions
//! at once, errors and deadlines, and what the edge answers itself.

use crate::peers::{grpc_call, GrpcServer, TestCa, Via};
use crate::support::*;
use std::time::Duration;

/// An edge with `http2_cleartext`, an https listener whose certificate `ca` issued for
/// "grpc.test", and the route `/test.Echo/` to upstream `grpc` (the server, `protocol = "h2"`).
fn grpc_edge(
    ca: &TestCa,
    server: std::net::SocketAddr,
    extra: TestConfig,
) -> (Edge, std::net::SocketAddr) {
    let cert = ca.server("edge", &["grpc.test"]);
    let mut config = extra
        .upstream("grpc", [server])
        .with("protocol", "h2")
        .route("/test.Echo/", "grpc");
    config = config.certificate(&Certificate::at(cert.cert, cert.key));
    https_edge("http2_cleartext = true", config)
}

fn both<'a>(edge: &Edge, https: std::net::SocketAddr, ca: &'a TestCa) -> [Via<'a>; 2] {
    [
        Via::Cleartext(edge.http),
        Via::Tls(https, &ca.pem, "grpc.test"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn unary_server_stream_and_bidi_calls_pass_over_tls_and_cleartext() {
    let server = GrpcServer::start();
    let ca = TestCa::new("edge CA");
    let (edge, https) = grpc_edge(&ca, server.addr, TestConfig::new());
    for via in both(&edge, https, &ca) {
        let unary = blocking(|| grpc_call(via_copy(&via), "unary", "", 20.0));
        assert_eq!(unary["code"], "OK", "{unary}\n{}", edge.log());
        assert_eq!(unary["body"], "echo:hello");
        assert_eq!(unary["trailing"]["x-trailer"], "kept", "{unary}");
        assert_eq!(
            unary["trailing"]["x-bin-bin"], "0001",
            "binary metadata: {unary}"
        );

        let stream = blocking(|| grpc_call(via_copy(&via), "server_stream", "", 20.0));
        assert_eq!(stream["code"], "OK", "{stream}");
        assert_eq!(stream["count"], 500);
        assert_eq!(stream["last"], "00499");

        let bidi = blocking(|| grpc_call(via_copy(&via), "bidi", "", 20.0));
        assert_eq!(bidi["code"], "OK", "{bidi}\n{}", edge.log());
        assert_eq!(bidi["got"][19], "re:m19", "{bidi}");

        let many = blocking(|| grpc_call(via_copy(&via), "many", "", 30.0));
        assert_eq!(many["count"], 200, "{many}");
        assert_eq!(many["wrong"], 0, "{many}");
    }
}

/// `Via` is not `Copy` (it borrows a path): the same way again.
fn via_copy<'a>(via: &Via<'a>) -> Via<'a> {
    match via {
        Via::Cleartext(addr) => Via::Cleartext(*addr),
        Via::Tls(addr, ca, name) => Via::Tls(*addr, ca, name),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_servers_error_status_and_a_clients_deadline_reach_the_client() {
    let server = GrpcServer::start();
    let ca = TestCa::new("edge CA");
    let (_dir, log, line) = access_log_file();
    let cert = ca.server("edge", &["grpc.test"]);
    let config = TestConfig::new()
        .upstream("grpc", [server.addr])
        .with("protocol", "h2")
        .route("/test.Echo/", "grpc")
        .certificate(&Certificate::at(cert.cert, cert.key));
    let (edge, https) = https_edge(format!("http2_cleartext = true\n{line}"), config);
    for via in both(&edge, https, &ca) {
        let failed = blocking(|| grpc_call(via_copy(&via), "method", "/test.Echo/Fail", 20.0));
        assert_eq!(failed["code"], "NOT_FOUND", "{failed}");
        assert_eq!(failed["details"], "no such article: 42 (café)", "{failed}");

        let started = std::time::Instant::now();
        let slow = blocking(|| grpc_call(via_copy(&via), "method", "/test.Echo/Slow", 0.5));
        assert_eq!(slow["code"], "DEADLINE_EXCEEDED", "{slow}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the deadline, not the server"
        );
    }
    let entry = logged_line(&log, "/test.Echo/Fail", Duration::from_secs(5), "logged").await;
    assert_eq!(entry["grpc_status"], 5, "{entry}");
    assert_eq!(entry["status"], 200, "{entry}");
    assert_eq!(entry["upstream_protocol"], "HTTP/2", "{entry}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_edge_answers_a_call_itself_is_a_grpc_status() {
    let server = GrpcServer::start();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let config = TestConfig::new()
        .zone("calls", "1r/m")
        .upstream("grpc", [server.addr])
        .with("protocol", "h2")
        .route("/test.Echo/", "grpc")
        .route("/limited.Svc/", "grpc")
        .limit(table! { zone = "calls" })
        .route("/private.Svc/", "grpc")
        .with("allow", vec!["10.0.0.0/8"])
        .upstream("gone", [dead])
        .with("protocol", "h2")
        .route("/gone.Svc/", "gone")
        .upstream("old", [server.addr])
        .route("/old.Svc/", "old");
    let edge = Edge::start("http2_cleartext = true", config);
    let via = || Via::Cleartext(edge.http);
    let call = |method: &str| {
        let method = method.to_string();
        let via = via();
        blocking(move || grpc_call(via, "method", &method, 10.0))
    };
    let unrouted = call("/nowhere.Svc/Do");
    assert_eq!(unrouted["code"], "UNIMPLEMENTED", "{unrouted}");
    let refused = call("/private.Svc/Do");
    assert_eq!(refused["code"], "PERMISSION_DENIED", "{refused}");
    let first = call("/limited.Svc/Do");
    assert_eq!(
        first["code"], "UNIMPLEMENTED",
        "the server's own answer: {first}"
    );
    let limited = call("/limited.Svc/Do");
    assert_eq!(limited["code"], "RESOURCE_EXHAUSTED", "{limited}");
    let gone = call("/gone.Svc/Do");
    assert_eq!(gone["code"], "UNAVAILABLE", "{gone}");
    let old = call("/old.Svc/Do");
    assert_eq!(old["code"], "UNAVAILABLE", "{old}");
    assert!(
        old["details"].as_str().unwrap_or("").contains("\"http1\""),
        "the message names the upstream's protocol: {old}"
    );
    let said = edge.log();
    assert_eq!(
        said.matches("gRPC calls reach this upstream").count(),
        1,
        "said once: {said}"
    );
    let _ = call("/old.Svc/Do");
    assert_eq!(
        edge.log().matches("gRPC calls reach this upstream").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_read_timeout_is_deadline_exceeded() {
    let server = GrpcServer::start();
    let config = TestConfig::new()
        .upstream("grpc", [server.addr])
        .with("protocol", "h2")
        .with("read_timeout", "500ms")
        .route("/test.Echo/", "grpc");
    let edge = Edge::start("http2_cleartext = true", config);
    let via = Via::Cleartext(edge.http);
    let slow = blocking(move || grpc_call(via, "method", "/test.Echo/Slow", 10.0));
    assert_eq!(slow["code"], "DEADLINE_EXCEEDED", "{slow}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_probes_take_a_not_serving_server_out_and_back() {
    let server = GrpcServer::start();
    let config = TestConfig::new()
        .upstream("grpc", [server.addr])
        .with("protocol", "h2")
        .with(
            "health",
            table! {
                grpc_service = "",
                interval = "100ms",
                timeout = "1s",
                rise = 1,
                fall = 1,
                start_period = "0s",
            },
        )
        .route("/test.Echo/", "grpc");
    let edge = Edge::start("http2_cleartext = true", config);
    let state_becomes = async |state: &str, why: &str| {
        wait_until(Duration::from_secs(10), why, async || {
            crate::support::server(&edge, "grpc", 0).await["state"] == state
        })
        .await
    };
    state_becomes("up", "probed up").await;
    server.set_serving(false);
    state_becomes("down (active probe)", "taken out").await;
    server.set_serving(true);
    state_becomes("up", "back").await;
}
