//! Limits on what one client may take: head sizes (414/431), body size for chunked bodies,
//! the time to send a request head (slowloris), and connections per client.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn oversized_targets_and_heads_get_414_and_431_and_never_reach_the_backend() {
    let app = backend("app").await;
    let edge = Edge::start("", one_route(app.addr));
    let get = |target: &str, headers: &str| {
        raw_request(
            edge.http,
            format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{headers}\r\n")
                .as_bytes(),
        )
    };
    let long_target = format!("/{}", "a".repeat(9000));
    let response = get(&long_target, "");
    assert_eq!(status_of(&response), 414, "{response}");
    assert_eq!(raw_body_json(&response)["error"], "uri_too_long");
    let big_header = format!("X-Big: {}\r\n", "b".repeat(40_000));
    assert_eq!(status_of(&get("/", &big_header)), 431);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(status_of(&get("/", &many)), 431);
    let too_many_for_the_parser: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    let status = status_of(&get("/", &too_many_for_the_parser));
    assert!(status == 0 || (400..500).contains(&status), "{status}");
    assert_eq!(
        app.requests(),
        0,
        "an oversized request reached the backend"
    );

    // Just under the defaults passes.
    let fits = format!("/{}", "a".repeat(8000));
    let headers: String = (0..90).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(status_of(&get(&fits, &headers)), 200);
    assert_eq!(app.requests(), 1);

    // The limits are settings.
    let strict = Edge::start(
        table! { max_uri_size = "1k", max_header_size = "2k", max_headers = 10 },
        one_route(app.addr),
    );
    let get_strict = |target: &str, headers: &str| {
        status_of(&raw_request(
            strict.http,
            format!("GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{headers}\r\n")
                .as_bytes(),
        ))
    };
    assert_eq!(get_strict(&format!("/{}", "a".repeat(2000)), ""), 414);
    assert_eq!(
        get_strict("/", &format!("X-Big: {}\r\n", "b".repeat(3000))),
        431
    );
    let eleven: String = (0..11).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(get_strict("/", &eleven), 431);
    assert_eq!(get_strict("/ok", ""), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_growing_past_client_max_body_size_gets_413() {
    let app = backend("app").await;
    let edge = Edge::start(table! { client_max_body_size = "1k" }, one_route(app.addr));
    let chunk = format!("400\r\n{}\r\n", "x".repeat(1024));
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    let response = raw_request(edge.http, request.as_bytes());
    assert_eq!(status_of(&response), 413, "{response}");
    // One chunk fits.
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n200\r\n{}\r\n0\r\n\r\n",
        "y".repeat(512)
    );
    assert_eq!(status_of(&raw_request(edge.http, request.as_bytes())), 200);
}

/// A client that sends a request head one byte at a time, `gap` apart, from a thread.
fn trickle(
    addr: std::net::SocketAddr,
    head: &'static [u8],
    gap: Duration,
) -> std::thread::JoinHandle<Option<Duration>> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).ok()?;
        for byte in head {
            if stream.write_all(&[*byte]).is_err() {
                return Some(started.elapsed());
            }
            // A time wait: the client's pace.
            std::thread::sleep(gap);
        }
        // Sent it all without being cut off.
        None
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_are_cut_off_at_client_header_timeout_without_delaying_others() {
    let app = backend("app").await;
    let edge = Edge::start(
        table! { client_header_timeout = "1s", max_connections_per_client = 0 },
        one_route(app.addr),
    );
    const HEAD: &[u8] = b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    // 100 slowloris clients: a byte every 100 ms would take 7 s to finish a head.
    let slow: Vec<_> = (0..100)
        .map(|_| trickle(edge.http, HEAD, Duration::from_millis(100)))
        .collect();
    // And 20 that connect and send nothing.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(edge.http).expect("connect"))
        .collect();

    // A normal client is served meanwhile, promptly.
    let c = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let (status, _) = get_json(&c, &edge.url("/normal"), &[]).await;
        assert_eq!(status, 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_millis(900),
        "a normal request took {slowest:?}"
    );

    // Every trickler was cut off near the timeout, long before its head was done.
    for handle in slow {
        let cut = blocking(|| handle.join())
            .expect("thread")
            .expect("the edge never cut a slow client off");
        assert!(
            cut >= Duration::from_millis(800) && cut < Duration::from_secs(4),
            "cut off after {cut:?}"
        );
    }
    // The idle connections were closed too.
    for mut stream in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let n = blocking(|| stream.read(&mut buf)).unwrap_or(0);
        assert_eq!(n, 0, "an idle connection got {:?}", &buf[..n]);
    }
    assert_eq!(
        app.requests(),
        20,
        "only the normal client's requests reached the backend"
    );
    metric_reaching(&edge, "edge_client_header_timeouts_total", &[], 120.0).await;

    // On a kept-alive connection the clock starts at the next head's first byte.
    let mut kept = TcpStream::connect(edge.http).expect("connect");
    kept.write_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = blocking(|| kept.read(&mut buf)).expect("first response");
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
    // A time wait: idle longer than the header timeout, which is fine between requests.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let mut cut = None;
    for byte in b"GET /second HTTP/1.1\r\nHost: a\r\nX-Slow: 1234567890\r\n\r\n" {
        if kept.write_all(&[*byte]).is_err() {
            cut = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut = cut.expect("the second, trickled head was not cut off");
    assert!(cut < Duration::from_secs(4), "{cut:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_over_its_connection_cap_gets_429_and_a_trusted_proxy_is_exempt() {
    let app = backend("app").await;
    let edge = Edge::start(
        table! { max_connections_per_client = 5 },
        one_route(app.addr),
    );
    let open_one = |addr| {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("write");
        let mut buf = vec![0u8; 4096];
        let n = blocking(|| s.read(&mut buf)).unwrap_or(0);
        (s, String::from_utf8_lossy(&buf[..n]).to_string())
    };
    let mut held = Vec::new();
    for _ in 0..5 {
        let (s, response) = open_one(edge.http);
        assert_eq!(status_of(&response), 200, "{response}");
        held.push(s);
    }
    let (_, response) = open_one(edge.http);
    assert_eq!(status_of(&response), 429, "{response}");
    let body = raw_body_json(&response);
    assert_eq!(body["error"], "too_many_connections");
    let head = response.to_ascii_lowercase();
    let id = body["request_id"]
        .as_str()
        .expect("a request id in the body");
    assert!(
        head.contains(&format!("\r\nx-request-id: {id}\r\n")),
        "the same id in the head and the body: {response}"
    );
    assert!(!head.contains("strict-transport-security"), "{response}");
    let refused = metric_reaching(&edge, "edge_client_connections_refused_total", &[], 1.0);
    assert_eq!(refused.await, 1.0);
    wait_until(
        Duration::from_secs(10),
        "the refused connection is still counted",
        async || metric(&edge, "edge_client_connections", &["listener=\"http\""]).await == 5.0,
    )
    .await;

    // One closes: there is room again.
    drop(held.pop());
    wait_until(
        Duration::from_secs(10),
        "the closed connection is counted",
        async || metric(&edge, "edge_client_connections", &["listener=\"http\""]).await == 4.0,
    )
    .await;
    let (s, response) = open_one(edge.http);
    assert_eq!(status_of(&response), 200, "{response}");
    held.push(s);

    // A trusted proxy carries many clients: no cap for it.
    let behind_proxy = Edge::start(
        table! { max_connections_per_client = 2, trusted_proxies = vec!["127.0.0.1"] },
        one_route(app.addr),
    );
    let many: Vec<_> = (0..6).map(|_| open_one(behind_proxy.http)).collect();
    for (_, response) in &many {
        assert_eq!(status_of(response), 200, "{response}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kept_alive_connections_end_at_keepalive_timeout_and_keepalive_requests() {
    let app = backend("app").await;
    let edge = Edge::start(
        table! { keepalive_timeout = "1s", keepalive_requests = 3 },
        one_route(app.addr),
    );
    let request = |s: &mut TcpStream| -> String {
        s.write_all(b"GET /k HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("write");
        let mut buf = vec![0u8; 8192];
        let n = blocking(|| s.read(&mut buf)).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    // Idle past keepalive_timeout: the edge closes it.
    let mut idle = TcpStream::connect(edge.http).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(status_of(&request(&mut idle)), 200);
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(
        blocking(|| idle.read(&mut buf)).unwrap_or(0),
        0,
        "closed, with nothing sent"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );

    // Within the timeout a connection is reused, up to keepalive_requests.
    let mut kept = TcpStream::connect(edge.http).expect("connect");
    kept.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    for i in 1..=3 {
        // A time wait: idle a while, within keepalive_timeout.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let response = request(&mut kept);
        assert_eq!(status_of(&response), 200, "request {i}: {response}");
        let closing = response.to_ascii_lowercase().contains("connection: close");
        assert_eq!(closing, i == 3, "request {i}: {response}");
    }
    assert_eq!(
        blocking(|| kept.read(&mut buf)).unwrap_or(0),
        0,
        "closed after the third"
    );
    assert_eq!(app.requests(), 4);
}

/// A strict server refuses a large upload as soon as it has the head (413, and it stops
/// reading: closes, or keeps the connection without a word more). The client gets the
/// server's answer, as from nginx, not a 502 or 504, and the server is not counted as failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_an_upload_before_reading_it_is_relayed_not_a_502() {
    for hang in [false, true] {
        let app = scripted_backend(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large".to_vec(),
            hang,
        );
        let edge = Edge::start(
            "",
            TestConfig::new()
                .upstream("app", [app])
                .with("send_timeout", "1s")
                .route("/", "app"),
        );
        // 4 MiB: far over the 16 KiB read whole, so it streams, and over what the sockets
        // between the edge and the server hold.
        let body = vec![b'x'; 4 << 20];
        let response = client()
            .post(edge.url("/upload"))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("hang={hang}: no answer: {e:?}\n{}", edge.log()));
        assert_eq!(response.status(), 413, "hang={hang}");
        assert_eq!(response.text().await.expect("body"), "too large");
        let server = server(&edge, "app", 0).await;
        assert_eq!(server["failures"], 0, "hang={hang}: {server}");
    }
}
