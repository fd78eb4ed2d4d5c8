//! Clients that stop reading (`send_timeout`) or stop sending their body
//! (`client_body_timeout`) cost the edge their connection and the upstream connection behind
//! it within the timeout, count against no server, and slow nobody else down.

use crate::support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
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
    let (_dir, log, _) = access_log_file();
    let config = TestConfig::new()
        .upstream("bulk", [bulk.addr])
        .route("/big/", "bulk")
        .upstream("app", [app.addr])
        .route("/", "app");
    let edge = Edge::start(
        table! { send_timeout = "2s", access_log = log.display().to_string() },
        config,
    );

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

    // The edge closes both upstream connections mid-response; other clients are served at
    // their usual pace all the while.
    let client = client();
    wait_until(
        Duration::from_secs(10),
        "an upstream connection is still open",
        async || {
            let asked = Instant::now();
            let (status, _) = get_json(&client, &edge.url("/api/content/x"), &[]).await;
            assert_eq!(status, 200);
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{:?}",
                asked.elapsed()
            );
            // The other client's pace.
            tokio::time::sleep(Duration::from_millis(100)).await;
            bulk.closed_mid_response(2)
        },
    )
    .await;

    // Each send_timeout after its bytes stopped moving.
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
    let send = ["phase=\"send\""];
    let timeouts = metric_reaching(&edge, "edge_client_timeouts_total", &send, 2.0);
    assert_eq!(timeouts.await, 2.0);
    let server = server(&edge, "bulk", 0).await;
    assert_eq!(server["failures"], 0, "{server}");
    assert_eq!(server["in_flight"], 0, "{server}");
    assert_eq!(server["state"], "up", "{server}");
}

/// An edge on https (a.example) with `bulk` under `/big/` and a content service for everything
/// else, `send_timeout = "2s"`; its certificate (kept while it runs), the edge and its https
/// address.
pub(crate) fn bulk_edge(bulk: &BulkBackend, app: SocketAddr) -> (Certificate, Edge, SocketAddr) {
    let a = Certificate::self_signed(&["a.example"]);
    let config = TestConfig::new()
        .upstream("bulk", [bulk.addr])
        .route("/big/", "bulk")
        .upstream("app", [app])
        .route("/", "app")
        .certificate(&a);
    let (edge, https) = https_edge(table! { send_timeout = "2s" }, config);
    (a, edge, https)
}

/// Each of the `n` upstream connections of `bulk` was closed by the edge mid-response
/// `send_timeout` (2 s, with a second's slack either way) after the client stopped taking
/// bytes (`stopped`), and at most that long after the backend's own bytes stopped moving.
/// Not at least that long after the backend's last bytes: the edge may go on taking them
/// into what it has queued for the client (an HTTP/2 window the client opened) while the
/// client's socket is already full, on a loaded machine until shortly before the client's
/// clock runs out (a run measured 253 ms); `send_timeout` is the client's clock.
pub(crate) fn closed_after_send_timeout(bulk: &BulkBackend, n: usize, stopped: Instant) {
    let connections = bulk.connections();
    assert_eq!(connections.len(), n, "{connections:?}");
    for c in &connections {
        let closed = c.closed_mid_response.expect("the edge never closed it");
        let since_stopped = closed.duration_since(stopped);
        let stalled = closed.duration_since(c.last_progress.max(stopped));
        assert!(
            since_stopped >= Duration::from_millis(1000) && stalled <= Duration::from_secs(3),
            "closed {since_stopped:?} after the client stopped, {stalled:?} after the last \
             bytes moved: {c:?}"
        );
    }
}

/// Small HTTP/2 requests to `https`, each answered 200 within a second, until the edge has
/// closed `n` upstream connections of `bulk` mid-response.
async fn others_are_served_until_closed(https: SocketAddr, bulk: &BulkBackend, n: usize) {
    let client = h2_frames_client(https).await;
    wait_until(
        Duration::from_secs(10),
        "an upstream connection is still open",
        async || {
            let asked = Instant::now();
            let mut client = client.clone().ready().await.expect("ready");
            let request = http::Request::get("https://a.example/api/content/x")
                .body(())
                .expect("request");
            let (response, _) = client.send_request(request, true).expect("send");
            let response = response.await.expect("response");
            assert_eq!(response.status(), 200);
            let mut body = response.into_body();
            while let Some(chunk) = body.data().await {
                chunk.expect("body");
            }
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{:?}",
                asked.elapsed()
            );
            // The other client's pace.
            tokio::time::sleep(Duration::from_millis(100)).await;
            bulk.closed_mid_response(n)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_streams_whose_window_never_opens_are_reset_within_send_timeout() {
    let bulk = BulkBackend::start(32 << 20);
    let app = backend("app").await;
    let (_a, edge, https) = bulk_edge(&bulk, app.addr);

    // 5 connections of 10 streams each, with a stream window of 0 that is never opened.
    let stopped = Instant::now();
    let mut bodies = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..5 {
        let stream = connect(&connector(&[b"h2"]), https, "a.example").await;
        clients.push(streams_never_read(stream, "https://a.example", 10, &mut bodies).await);
    }
    others_are_served_until_closed(https, &bulk, 50).await;
    closed_after_send_timeout(&bulk, 50, stopped);
    // Each stream was reset: its body ends in an error, having carried nothing.
    streams_reset_and_counted(&edge, bodies, 50.0).await;
    let server = server(&edge, "bulk", 0).await;
    assert_eq!(server["failures"], 0, "{server}");
    assert_eq!(server["in_flight"], 0, "{server}");
}

/// An HTTP/2 client on `io` whose streams' window is 0 and never opened: `n` GETs of
/// `{origin}/big/{i}`, each answered 200 (a head is not flow-controlled), their bodies added
/// to `bodies` unread. The client, kept for as long as the connection should stay open.
pub(crate) async fn streams_never_read<T>(
    io: T,
    origin: &str,
    n: usize,
    bodies: &mut Vec<h2::RecvStream>,
) -> h2::client::SendRequest<bytes::Bytes>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(io)
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    for i in 0..n {
        let mut client = client.clone().ready().await.expect("ready");
        let request = http::Request::get(format!("{origin}/big/{i}"))
            .body(())
            .expect("request");
        let (response, _) = client.send_request(request, true).expect("send");
        let response = response.await.expect("the head is not flow-controlled");
        assert_eq!(response.status(), 200);
        bodies.push(response.into_body());
    }
    client
}

/// Each of `bodies` was reset (it ends in an error, having carried nothing), and the edge
/// counted `n` send timeouts.
pub(crate) async fn streams_reset_and_counted(edge: &Edge, bodies: Vec<h2::RecvStream>, n: f64) {
    for mut body in bodies {
        let end = tokio::time::timeout(Duration::from_secs(2), body.data())
            .await
            .expect("the stream is over");
        assert!(matches!(end, Some(Err(_))), "{end:?}");
    }
    let send = ["phase=\"send\""];
    let timeouts = metric_reaching(edge, "edge_client_timeouts_total", &send, n);
    assert_eq!(timeouts.await, n);
}

/// A stream whose reads can be stopped (and started again): the client that stops reading
/// its socket.
struct Pausable<S> {
    inner: S,
    paused: Arc<Pause>,
}

#[derive(Default)]
struct Pause {
    on: std::sync::atomic::AtomicBool,
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

impl Pause {
    fn set(&self, on: bool) {
        self.on.store(on, std::sync::atomic::Ordering::Relaxed);
        if let Some(waker) = self.waker.lock().expect("waker").take() {
            waker.wake();
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Pausable<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.paused.on.load(std::sync::atomic::Ordering::Relaxed) {
            *self.paused.waker.lock().expect("waker") = Some(cx.waker().clone());
            return std::task::Poll::Pending;
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Pausable<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_client_that_stops_reading_its_socket_loses_the_connection_within_send_timeout() {
    let bulk = BulkBackend::start(32 << 20);
    let app = backend("app").await;
    let (_a, edge, https) = bulk_edge(&bulk, app.addr);

    // Wide open windows, then no more reads from the socket once the answers have begun.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&https.into()).expect("connect");
    socket.set_nonblocking(true).expect("nonblocking");
    let tcp = tokio::net::TcpStream::from_std(socket.into()).expect("tokio");
    let tls = connector(&[b"h2"])
        .connect(
            rustls::pki_types::ServerName::try_from("a.example").expect("name"),
            tcp,
        )
        .await
        .expect("TLS");
    let paused = Arc::new(Pause::default());
    let stream = Pausable {
        inner: tls,
        paused: paused.clone(),
    };
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(16 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, bytes::Bytes>(stream)
        .await
        .expect("h2 handshake");
    let connection = tokio::spawn(connection);
    let mut bodies = Vec::new();
    for n in 0..10 {
        let mut client = client.clone().ready().await.expect("ready");
        let request = http::Request::get(format!("https://a.example/big/{n}"))
            .body(())
            .expect("request");
        let (response, _) = client.send_request(request, true).expect("send");
        let response = response.await.expect("head");
        assert_eq!(response.status(), 200);
        bodies.push(response.into_body());
    }
    // The client takes the answers (its windows keep opening) for a while, then stops
    // reading its socket.
    let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers: Vec<_> = bodies
        .into_iter()
        .map(|mut body| {
            let taken = taken.clone();
            tokio::spawn(async move {
                while let Some(Ok(chunk)) = body.data().await {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    taken.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_until(Duration::from_secs(10), "no answer is taken", async || {
        taken.load(std::sync::atomic::Ordering::Relaxed) > 0
    })
    .await;
    paused.set(true);
    let stopped = Instant::now();

    others_are_served_until_closed(https, &bulk, 10).await;
    closed_after_send_timeout(&bulk, 10, stopped);
    // The edge let the connection go: read again, the client finds it closed after what
    // was in flight (otherwise the ten answers would go on coming).
    paused.set(false);
    let ended = tokio::time::timeout(Duration::from_secs(3), connection).await;
    assert!(ended.is_ok(), "the edge kept the connection open");
    for reader in readers {
        let _ = reader.await;
    }
    let server = server(&edge, "bulk", 0).await;
    assert_eq!(server["failures"], 0, "{server}");
    assert_eq!(server["in_flight"], 0, "{server}");
}

/// A backend that reads each request's body to its Content-Length and answers `{}`; it
/// records how each connection ended: `Some(read)` when the edge closed it before the body
/// was whole (with the bytes it had read), `None` when the body came whole.
struct UploadBackend {
    addr: SocketAddr,
    cut: Arc<std::sync::Mutex<Vec<Option<usize>>>>,
}

impl UploadBackend {
    fn start() -> UploadBackend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = cut.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 65536];
                    let (head_end, length) = loop {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (end + 4, length);
                        }
                    };
                    let mut read = seen.len() - head_end;
                    while read < length {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                record.lock().expect("record").push(Some(read));
                                return;
                            }
                            Ok(n) => read += n,
                        }
                    }
                    record.lock().expect("record").push(None);
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}",
                    );
                });
            }
        });
        UploadBackend { addr, cut }
    }

    fn connections(&self) -> Vec<Option<usize>> {
        self.cut.lock().expect("record").clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_body_that_stops_is_408_before_upstream_and_frees_the_upstream_after() {
    let upload = UploadBackend::start();
    let (_dir, log, _) = access_log_file();
    let edge = Edge::start(
        table! { client_body_timeout = "1s", access_log = log.display().to_string() },
        TestConfig::new()
            .upstream("up", [upload.addr])
            .route("/", "up"),
    );

    // Half of a small body (read whole before any server is chosen): 408, nothing upstream.
    let mut small = TcpStream::connect(edge.http).expect("connect");
    small
        .write_all(b"POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
        .expect("head");
    small.write_all(&[b'x'; 500]).expect("half");
    let started = Instant::now();
    let answer = blocking(|| {
        small
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut out = Vec::new();
        let _ = small.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    assert_eq!(status_of(&answer), 408, "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        upload.connections().is_empty(),
        "{:?}",
        upload.connections()
    );

    // Half of a large body (it streams): the upstream connection is closed under it, the
    // client gets 408, and the server is not blamed.
    let mut large = TcpStream::connect(edge.http).expect("connect");
    large
        .write_all(b"POST /large HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
        .expect("head");
    large.write_all(&[b'x'; 40000]).expect("part");
    let answer = blocking(|| {
        large
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut out = Vec::new();
        let _ = large.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    assert_eq!(status_of(&answer), 408, "{answer}");
    wait_until(
        Duration::from_secs(10),
        "the upstream never saw the close",
        async || !upload.connections().is_empty(),
    )
    .await;
    let cut = upload.connections();
    assert!(
        matches!(cut[..], [Some(read)] if read > 0 && read < 100000),
        "{cut:?}"
    );

    for path in ["/small", "/large"] {
        let line = logged_line(&log, path, Duration::from_secs(5), "a body timeout").await;
        assert_eq!(line["status"], 408, "{line}");
    }
    let body = ["phase=\"body\""];
    let timeouts = metric_reaching(&edge, "edge_client_timeouts_total", &body, 2.0);
    assert_eq!(timeouts.await, 2.0);
    let server = server(&edge, "up", 0).await;
    assert_eq!(server["failures"], 0, "{server}");
    assert_eq!(server["up"], true, "{server}");

    // A whole body still goes through.
    let response = raw_request(
        edge.http,
        b"POST /whole HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(status_of(&response), 200, "{response}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_request_body_that_stops_is_408_before_upstream_and_frees_the_upstream_after() {
    let upload = UploadBackend::start();
    let a = Certificate::self_signed(&["a.example"]);
    let (edge, https) = https_edge(
        table! { client_body_timeout = "1s" },
        TestConfig::new()
            .upstream("up", [upload.addr])
            .route("/", "up")
            .certificate(&a),
    );
    let client = h2_frames_client(https).await;

    for (path, length, sent) in [("/small", 1000, 500), ("/large", 100_000, 40_000)] {
        let mut client = client.clone().ready().await.expect("ready");
        let request = http::Request::post(format!("https://a.example{path}"))
            .header("content-length", length)
            .body(())
            .expect("request");
        let (response, mut body) = client.send_request(request, false).expect("send");
        body.reserve_capacity(sent);
        body.send_data(bytes::Bytes::from(vec![b'x'; sent]), false)
            .expect("part of the body");
        let started = Instant::now();
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("an answer")
            .expect("a response");
        assert_eq!(response.status(), 408, "{path}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900), "{path}: {took:?}");
    }
    wait_until(
        Duration::from_secs(10),
        "the upstream never saw the close",
        async || !upload.connections().is_empty(),
    )
    .await;
    let cut = upload.connections();
    assert!(
        matches!(cut[..], [Some(read)] if read > 0 && read < 100000),
        "{cut:?}"
    );
    let body = ["phase=\"body\""];
    let timeouts = metric_reaching(&edge, "edge_client_timeouts_total", &body, 2.0);
    assert_eq!(timeouts.await, 2.0);
    assert_eq!(server(&edge, "up", 0).await["failures"], 0);
}

/// An HTTP/2 client that takes a stream's window's worth of a large body and resets the
/// stream: logged 499 with the bytes that went, all of them (a chunk cut short by the reset
/// was left out), and nothing counted against the server.
#[tokio::test(flavor = "multi_thread")]
async fn an_http2_stream_reset_mid_body_logs_every_byte_that_went() {
    const WINDOW: u32 = 100_000;
    let bulk = BulkBackend::start(32 << 20);
    let a = Certificate::self_signed(&["a.example"]);
    let (_dir, log, line) = access_log_file();
    let config = TestConfig::new()
        .upstream("bulk", [bulk.addr])
        .route("/big/", "bulk")
        .certificate(&a);
    let (edge, https) = https_edge(line, config);
    let io = connect(&connector(&[b"h2"]), https, "a.example").await;
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(4 << 20)
        .handshake::<_, bytes::Bytes>(io)
        .await
        .expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::get("https://a.example/big/reset")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let mut body = response.await.expect("head").into_body();
    // The window's worth, never released: the edge can send no more.
    let mut got = 0;
    while got < WINDOW as usize {
        let data = tokio::time::timeout(Duration::from_secs(5), body.data())
            .await
            .expect("data within 5 s")
            .expect("more data")
            .expect("data");
        got += data.len();
    }
    assert_eq!(got, WINDOW as usize);
    drop(body); // RST_STREAM(CANCEL)
    let entry = logged_line(
        &log,
        "/big/reset",
        Duration::from_secs(5),
        "the reset stream",
    )
    .await;
    assert_eq!(entry["status"], 499, "{entry}");
    assert_eq!(entry["bytes_sent"], WINDOW, "{entry}");
    let server = server(&edge, "bulk", 0).await;
    assert_eq!(server["failures"], 0, "{server}");
}
