//! Clients that stop reading (`send_timeout`) or stop sending their body
//! (`client_body_timeout`) cost the edge their connection and the upstream connection behind
//! it within the timeout, count against no server, and slow nobody else down.

use crate::observe::{scrape, value};
use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connection to `addr` with a 4 KiB receive buffer that sends `request` and then reads
/// nothing: a client that stopped reading.
pub fn slow_reader(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream.write_all(request).expect("write");
    stream
}

/// Reads what the edge had sent before it closed `stream`; panics if the connection is still
/// open (and sending nothing) after `within`. The bytes read.
pub fn read_to_close(stream: &mut TcpStream, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return total,
            Err(_) => assert!(
                Instant::now() < deadline,
                "the edge kept the connection open ({total} bytes read)"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_frees_its_connection_and_the_upstream_one_within_send_timeout()
{
    const BODY: u64 = 32 << 20;
    let bulk = BulkBackend::start(BODY);
    let app = backend("app").await;
    let (_dir, log, log_line) = access_log_file();
    let config = TestConfig::new()
        .upstream("bulk", [bulk.addr])
        .route("/big/", "bulk")
        .upstream("app", [app.addr])
        .route("/", "app")
        .text();
    let edge = Edge::start(&format!("send_timeout = \"2s\"\n{log_line}"), &config);

    // A GET without a body and a POST with one: every HTTP/1.1 request shape.
    let mut readers = blocking(|| {
        [
            slow_reader(edge.http, b"GET /big/get HTTP/1.1\r\nHost: a\r\n\r\n"),
            slow_reader(
                edge.http,
                b"POST /big/post HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
            ),
        ]
    });

    // Other clients are served at their usual pace all the while.
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let asked = Instant::now();
        let (status, _) = get_json(&client, &edge.url("/api/content/x"), &[]).await;
        assert_eq!(status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The edge closed both upstream connections mid-response, send_timeout after they stopped
    // moving.
    let connections = bulk.connections();
    assert_eq!(connections.len(), 2, "{connections:?}");
    for c in &connections {
        let closed = c.closed_mid_response.expect("the edge never closed it");
        let stalled = closed.duration_since(c.last_progress);
        assert!(
            stalled >= Duration::from_millis(1500) && stalled <= Duration::from_secs(3),
            "closed {stalled:?} after the last bytes moved: {c:?}"
        );
        assert!(c.sent < BODY, "{c:?}");
    }
    // And the clients' connections: what was in flight, then the close.
    for reader in &mut readers {
        let read = blocking(|| read_to_close(reader, Duration::from_secs(5)));
        assert!(read < BODY, "{read}");
    }

    // Logged and counted as client timeouts; the server is not blamed.
    for path in ["/big/get", "/big/post"] {
        let line = logged_line(&log, path, Duration::from_secs(5), "a timed-out request").await;
        assert_eq!(line["status"], 408, "{line}");
        assert_eq!(line["upstream"], "bulk", "{line}");
    }
    let (_, m) = scrape(&edge).await;
    assert_eq!(
        value(&m, "edge_client_timeouts_total", &["phase=\"send\""]),
        2.0
    );
    let status = admin_json(&edge, "/status").await;
    let server = &status["upstreams"]["bulk"]["servers"][0];
    assert_eq!(server["failures"], 0, "{server}");
    assert_eq!(server["in_flight"], 0, "{server}");
    assert_eq!(server["state"], "up", "{server}");
}
