//! Certificates by ACME, against Debian's pebble (a real RFC 8555 CA) with real validation on
//! loopback: TLS-ALPN-01 and HTTP-01 each obtain a certificate the edge then serves and
//! proxies under; a restart serves the stored one without a new order; a stored certificate
//! near its end is renewed; a CA that refuses leaves the old certificate served and a failure
//! counted; two edges on one Redis place one order, and the replica that did not order
//! answers the CA.

use crate::peers::{free_port, Pebble, TestCa};
use crate::support::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// An edge on fixed ports (the CA must know them before the edge orders), whose `[tls]`
/// has no certificate file, only `[tls.acme]` with `acme_lines`, routing every path to
/// `backend`; `sections`: more sections (`[redis]`). `storage`: the ACME store's directory.
fn acme_edge(
    (http, https): (u16, u16),
    pebble: &Pebble,
    storage: &Path,
    acme_lines: &str,
    sections: &str,
    backend: SocketAddr,
) -> Edge {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("upstreams.toml");
    let config = acme_config(
        (http, https),
        pebble,
        storage,
        acme_lines,
        sections,
        backend,
    );
    std::fs::write(&path, config).expect("write config");
    // ACME's log lines (one per order step) are part of what is tested.
    let edge = Edge::start_with_config_path_env(&path, &[("RUST_LOG", "warn,edge::acme=info")]);
    std::mem::forget(dir);
    edge
}

/// The config of [`acme_edge`].
fn acme_config(
    (http, https): (u16, u16),
    pebble: &Pebble,
    storage: &Path,
    acme_lines: &str,
    sections: &str,
    backend: SocketAddr,
) -> String {
    format!(
        "[edge]\nhttp_listen = [\"127.0.0.1:{http}\"]\nhttps_listen = [\"127.0.0.1:{https}\"]\n\
         admin_listen = \"127.0.0.1:0\"\nthreads = 2\naccess_log = \"off\"\n\
         redirect_http_to_https = true\nhttp3 = false\n\n\
         [tls]\n\n[tls.acme]\ndirectory = \"{}\"\nca = \"{}\"\nstorage = \"{}\"\n\
         email = \"ops@a.test\"\ndomains = [\"a.test\"]\n{acme_lines}\n\n{sections}\n\n{}",
        pebble.directory,
        pebble.ca.pem.display(),
        storage.display(),
        one_route(backend)
    )
}

fn local(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().expect("addr")
}

/// The certificate the edge serves for a.test: its issuer's common name and its serial.
async fn served(https: SocketAddr) -> Option<(String, String)> {
    served_for(https, "a.test").await
}

/// The certificate the edge serves for `host`: its issuer's common name and its serial.
async fn served_for(https: SocketAddr, host: &str) -> Option<(String, String)> {
    let tcp = tokio::net::TcpStream::connect(https).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
    let tls = connector(&[b"http/1.1"]).connect(name, tcp).await.ok()?;
    let cert = tls.get_ref().1.peer_certificates()?.first()?.clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let issuer = parsed
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    Some((issuer, parsed.raw_serial_as_string()))
}

/// Waits until the edge serves a certificate from pebble's intermediate for a.test; its
/// serial.
async fn pebble_issued(https: SocketAddr, edge: &Edge, pebble: &Pebble) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((issuer, serial)) = served(https).await {
            if issuer.contains("Pebble Intermediate") {
                return serial;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edge serves no certificate issued by pebble\nedge:\n{}\npebble:\n{}",
            edge.log(),
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A request over TLS to a.test through the edge: the status line.
async fn proxied(https: SocketAddr) -> String {
    let mut tls = connect(&connector(&[b"http/1.1"]), https, "a.test").await;
    http1(&mut tls, "/api/content/x", "").await.0
}

/// The edge's `/status` and `/health`.
async fn admin(edge: &Edge, path: &str) -> serde_json::Value {
    get_json(&client(), &format!("http://{}{path}", edge.admin), &[])
        .await
        .1
}

/// A certificate for a.test from a CA of the test's own in `storage`, as the edge stores
/// ACME's, two thirds of its 12 days gone and 2 days left: due for renewal, still valid.
fn stored_near_its_end(storage: &Path) -> TestCa {
    let ca = TestCa::new("an earlier CA");
    let now = SystemTime::now();
    let issued = ca.server_valid(
        "old",
        &["a.test"],
        now - Duration::from_secs(10 * 86400),
        now + Duration::from_secs(2 * 86400),
    );
    let chain = std::fs::read_to_string(&issued.cert).expect("cert");
    std::fs::write(storage.join("a.test.crt"), chain).expect("write chain");
    std::fs::copy(&issued.key, storage.join("a.test.key")).expect("write key");
    ca
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn_01_obtains_a_certificate_that_is_served_and_a_restart_orders_none() {
    let app = backend("app").await;
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(ports.0, ports.1);
    let storage = tempfile::tempdir().expect("storage");
    let lines = "challenge = \"tls-alpn-01\"";
    let edge = acme_edge(ports, &pebble, storage.path(), lines, "", app.addr);
    let https = local(ports.1);
    let serial = pebble_issued(https, &edge, &pebble).await;
    assert_eq!(proxied(https).await, "http/1.1 200 ok");
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    assert_eq!(
        metric(&edge, "edge_acme_orders_total", &["valid"]).await,
        1.0
    );
    // A log line for each step of the order.
    let log = edge.log();
    for step in [
        "ACME: account created",
        "ACME: ordering a certificate",
        "ACME: challenge answered; asking the CA to validate",
        "ACME: certificate issued",
        "ACME: certificate served",
    ] {
        assert!(log.contains(step), "no `{step}` in the log:\n{log}");
    }
    assert_eq!(
        metric(&edge, "edge_acme_failures_total", &["challenge"]).await,
        0.0
    );
    let expiry = metric(
        &edge,
        "edge_acme_certificate_expiry_timestamp_seconds",
        &["a.test"],
    )
    .await;
    let in_a_year = SystemTime::now() + Duration::from_secs(365 * 86400);
    assert!(
        expiry
            > in_a_year
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("now")
                .as_secs_f64(),
        "pebble's certificates last five years; the metric says {expiry}"
    );
    let status = admin(&edge, "/status").await;
    assert_eq!(
        status["acme"]["names"]["a.test"]["served_from"], "acme",
        "{status}"
    );
    assert_eq!(
        status["acme"]["names"]["a.test"]["health"], "healthy",
        "{status}"
    );
    assert_eq!(
        admin(&edge, "/health").await["checks"]["certificate:a.test"],
        "healthy"
    );
    // The store holds the key readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(storage.path().join("a.test.key"))
            .expect("key")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // A client that offers only acme-tls/1 outside an order gets no certificate.
    let tcp = tokio::net::TcpStream::connect(https)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("a.test").expect("name");
    let probe = connector(&[b"acme-tls/1"]).connect(name, tcp).await;
    assert!(
        probe.is_err(),
        "a TLS-ALPN-01 handshake with no order pending was answered"
    );
    drop(edge);

    // A restart serves the stored certificate at once, with no new order.
    let edge = acme_edge(ports, &pebble, storage.path(), lines, "", app.addr);
    assert_eq!(pebble_issued(https, &edge, &pebble).await, serial);
    assert_eq!(proxied(https).await, "http/1.1 200 ok");
    assert_eq!(
        metric(&edge, "edge_acme_orders_total", &["valid"]).await,
        0.0
    );
    assert_eq!(pebble.orders(), 1, "no new order:\n{}", pebble.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn http_01_is_answered_on_the_plain_listener_before_the_https_redirect() {
    let app = backend("app").await;
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(ports.0, ports.1);
    let storage = tempfile::tempdir().expect("storage");
    let lines = "challenge = \"http-01\"";
    let edge = acme_edge(ports, &pebble, storage.path(), lines, "", app.addr);
    let https = local(ports.1);
    pebble_issued(https, &edge, &pebble).await;
    assert_eq!(proxied(https).await, "http/1.1 200 ok");
    assert!(
        pebble.log().contains("Attempting to validate w/ HTTP"),
        "{}",
        pebble.log()
    );
    // Other plain requests are still redirected; an unknown token is not answered.
    let response = raw_request(
        local(ports.0),
        b"GET /.well-known/acme-challenge/unknown HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&response), 308, "{response}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_certificate_near_its_end_is_renewed() {
    let app = backend("app").await;
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(ports.0, ports.1);
    let storage = tempfile::tempdir().expect("storage");
    let _old = stored_near_its_end(storage.path());
    let lines = "challenge = \"tls-alpn-01\"";
    let edge = acme_edge(ports, &pebble, storage.path(), lines, "", app.addr);
    let https = local(ports.1);
    pebble_issued(https, &edge, &pebble).await;
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    let stored = std::fs::read_to_string(storage.path().join("a.test.crt")).expect("chain");
    let first = rustls_pemfile::certs(&mut stored.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM");
    let (_, parsed) = x509_parser::parse_x509_certificate(first.as_ref()).expect("x509");
    let issuer = parsed.issuer().to_string();
    assert!(
        issuer.contains("Pebble Intermediate"),
        "the store kept {issuer}"
    );
    assert_eq!(
        admin(&edge, "/health").await["checks"]["certificate:a.test"],
        "healthy"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_that_refuses_leaves_the_old_certificate_served_and_a_failure_counted() {
    let app = backend("app").await;
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(ports.0, ports.1);
    // The CA looks for a.test where nothing answers: its validation fails.
    pebble.resolve("a.test", "127.0.0.2");
    let storage = tempfile::tempdir().expect("storage");
    let _old = stored_near_its_end(storage.path());
    let lines = "challenge = \"tls-alpn-01\"";
    let edge = acme_edge(ports, &pebble, storage.path(), lines, "", app.addr);
    let https = local(ports.1);
    metric_reaching(&edge, "edge_acme_failures_total", &["challenge"], 1.0).await;
    assert_eq!(
        metric(&edge, "edge_acme_orders_total", &["failed"]).await,
        1.0
    );
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    let (issuer, _) = served(https).await.expect("a certificate is served");
    assert_eq!(
        issuer, "an earlier CA",
        "the old certificate is still served"
    );
    assert_eq!(proxied(https).await, "http/1.1 200 ok");
    let status = admin(&edge, "/status").await;
    let state = &status["acme"]["names"]["a.test"];
    assert!(
        state["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("challenge:")),
        "{status}"
    );
    assert_eq!(state["health"], "expiring", "{status}");
    assert!(
        state["next_renewal"].is_string(),
        "a next attempt is set: {status}"
    );
    let health = admin(&edge, "/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        health["checks"]["certificate:a.test"], "expiring",
        "{health}"
    );
}

/// Who holds the order lock for a.test in the Redis at `redis_port` (the edge's `host:pid`), if anyone.
fn lock_owner(redis_port: u16) -> Option<String> {
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis_port.to_string(),
            "-n",
            "5",
            "GET",
            "edge:acme:lock:a.test",
        ])
        .output()
        .expect("redis-cli");
    let owner = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!owner.is_empty()).then_some(owner)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_edges_on_one_redis_place_one_order_and_the_other_replica_answers_the_ca() {
    let app = backend("app").await;
    let redis = Redis::start();
    // The CA validates at `front`, a forwarder standing for the load balancer before the
    // replicas: it sends each validation to the replica that does NOT hold the order lock.
    let front = free_port();
    let pebble = Pebble::start(free_port(), front);
    let replicas = [(free_port(), free_port()), (free_port(), free_port())];
    let sections = format!("[redis]\nurl = \"{}\"", redis.url());
    let lines = "challenge = \"tls-alpn-01\"\nstore = \"redis\"";
    let storage = tempfile::tempdir().expect("storage");
    let edges = [
        acme_edge(
            replicas[0],
            &pebble,
            storage.path(),
            lines,
            &sections,
            app.addr,
        ),
        acme_edge(
            replicas[1],
            &pebble,
            storage.path(),
            lines,
            &sections,
            app.addr,
        ),
    ];
    let pids = [edges[0].pid(), edges[1].pid()];
    let forwarded = std::sync::Arc::new(std::sync::Mutex::new(Vec::<usize>::new()));
    let listener = tokio::net::TcpListener::bind(local(front))
        .await
        .expect("bind");
    let (redis_port, seen) = (redis.port, forwarded.clone());
    let forwarder = tokio::spawn(async move {
        loop {
            let Ok((mut from_ca, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let owner = tokio::task::spawn_blocking(move || lock_owner(redis_port))
                    .await
                    .expect("redis-cli");
                // No lock held: nobody is ordering, nothing to forward.
                let Some(owner) = owner else { return };
                let Some(other) = pids
                    .iter()
                    .position(|pid| !owner.ends_with(&format!(":{pid}")))
                else {
                    return;
                };
                seen.lock().expect("seen").push(other);
                let Ok(mut to_edge) =
                    tokio::net::TcpStream::connect(local(replicas[other].1)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut from_ca, &mut to_edge).await;
            });
        }
    });
    let serials = [
        pebble_issued(local(replicas[0].1), &edges[0], &pebble).await,
        pebble_issued(local(replicas[1].1), &edges[1], &pebble).await,
    ];
    forwarder.abort();
    assert_eq!(
        serials[0], serials[1],
        "both replicas serve the one certificate"
    );
    assert_eq!(
        pebble.orders(),
        1,
        "one order for both replicas:\n{}",
        pebble.log()
    );
    let placed: Vec<f64> = [
        metric(&edges[0], "edge_acme_orders_total", &["valid"]).await,
        metric(&edges[1], "edge_acme_orders_total", &["valid"]).await,
    ]
    .to_vec();
    assert_eq!(
        placed.iter().sum::<f64>(),
        1.0,
        "exactly one replica ordered: {placed:?}"
    );
    // Every validation went to the replica that did not order, and it answered.
    let orderer = placed.iter().position(|n| *n == 1.0).expect("an orderer");
    let seen = forwarded.lock().expect("seen").clone();
    assert!(
        !seen.is_empty(),
        "the CA's validation never reached a replica"
    );
    assert!(seen.iter().all(|r| *r != orderer), "{seen:?}");
    for (edge, ports) in edges.iter().zip(replicas) {
        assert_eq!(proxied(local(ports.1)).await, "http/1.1 200 ok");
        let status = admin(edge, "/status").await;
        assert_eq!(status["acme"]["store"], "redis", "{status}");
    }
    // Nothing lands in the local storage with store = "redis".
    assert!(!storage.path().join("a.test.key").exists());
}

/// pebble's directory plus renewal information (RFC 9773), which pebble 2.4 lacks, served
/// over TLS by the test: every other URL is pebble's own. The window it suggests for any
/// certificate is in 2100, or in 2020 while `past` is set; it says to ask again in 1 s. While
/// `failing` is set it answers renewal information with 503.
struct AriFront {
    directory: String,
    past: std::sync::Arc<std::sync::atomic::AtomicBool>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl AriFront {
    async fn start(pebble: &Pebble) -> AriFront {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let issued = pebble.ca.server("ari", &["127.0.0.1"]);
        let chain =
            rustls_pemfile::certs(&mut std::fs::read(&issued.cert).expect("cert").as_slice())
                .collect::<Result<Vec<_>, _>>()
                .expect("PEM");
        let key =
            rustls_pemfile::private_key(&mut std::fs::read(&issued.key).expect("key").as_slice())
                .expect("PEM")
                .expect("a key");
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let front = format!("https://{}", listener.local_addr().expect("addr"));
        let base = pebble.directory.trim_end_matches("/dir").to_string();
        let directory = serde_json::json!({
            "newNonce": format!("{base}/nonce-plz"),
            "newAccount": format!("{base}/sign-me-up"),
            "newOrder": format!("{base}/order-plz"),
            "revokeCert": format!("{base}/revoke-cert"),
            "keyChange": format!("{base}/rollover-account-key"),
            "renewalInfo": format!("{front}/ari"),
            "meta": { "termsOfService": "data:text/plain,terms" },
        })
        .to_string();
        let past = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (p, f, a) = (past.clone(), failing.clone(), asked.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, directory, past, failing, asked) = (
                    acceptor.clone(),
                    directory.clone(),
                    p.clone(),
                    f.clone(),
                    a.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let ari = path.starts_with("/ari/");
                    let (status, kind, body) = if ari && failing.load(Ordering::SeqCst) {
                        asked.fetch_add(1, Ordering::SeqCst);
                        let problem = r#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"down for the test"}"#;
                        (
                            "503 Service Unavailable",
                            "application/problem+json",
                            problem.to_string(),
                        )
                    } else if ari {
                        asked.fetch_add(1, Ordering::SeqCst);
                        let year = if past.load(Ordering::SeqCst) {
                            2020
                        } else {
                            2100
                        };
                        let window = format!(
                            "{{\"suggestedWindow\":{{\"start\":\"{year}-01-01T00:00:00Z\",\"end\":\"{year}-01-02T00:00:00Z\"}}}}"
                        );
                        ("200 OK", "application/json", window)
                    } else {
                        ("200 OK", "application/json", directory)
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nRetry-After: 1\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        AriFront {
            directory: format!("{front}/dir"),
            past,
            failing,
            asked,
            task,
        }
    }
}

impl Drop for AriFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `/status`'s `acme` section satisfies `holds`; on `within`, fails with what the
/// edge, its `/status` and pebble said.
async fn until_acme_status(
    edge: &Edge,
    pebble: &Pebble,
    within: Duration,
    what: &str,
    holds: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let acme = admin(edge, "/status").await["acme"].clone();
        if holds(&acme) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} (waited {within:?})\nstatus: {acme}\nedge:\n{}\npebble:\n{}",
            edge.log(),
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ca_with_renewal_information_decides_when_to_renew_and_a_failed_ask_is_retried() {
    use std::sync::atomic::Ordering;
    let app = backend("app").await;
    let ports = (free_port(), free_port());
    let mut pebble = Pebble::start(ports.0, ports.1);
    let front = AriFront::start(&pebble).await;
    pebble.directory = front.directory.clone();
    // The CA's renewal information fails at first.
    front.failing.store(true, Ordering::SeqCst);
    let storage = tempfile::tempdir().expect("storage");
    let lines = "challenge = \"tls-alpn-01\"";
    let edge = acme_edge(ports, &pebble, storage.path(), lines, "", app.addr);
    let https = local(ports.1);
    let first = pebble_issued(https, &edge, &pebble).await;
    wait_until(
        Duration::from_secs(30),
        "the edge never asked for the new certificate's renewal information",
        async || front.asked.load(Ordering::SeqCst) >= 1,
    )
    .await;
    // It comes back: the edge asks again soon (not in an hour), and the CA's window (2100)
    // decides, not two thirds of the five-year lifetime.
    front.failing.store(false, Ordering::SeqCst);
    let in_2100 = |acme: &serde_json::Value| {
        acme["names"]["a.test"]["next_renewal"]
            .as_str()
            .is_some_and(|t| t.starts_with("2100-01-0"))
    };
    let within = Duration::from_secs(60);
    let what = "the edge never took the CA's window";
    until_acme_status(&edge, &pebble, within, what, in_2100).await;
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    // The CA moves the window into the past: the edge renews at once.
    front.past.store(true, Ordering::SeqCst);
    // (Long enough for one failed order and its retry 60 s later.)
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let serial = pebble_issued(https, &edge, &pebble).await;
        if serial != first {
            break;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "no renewal (the CA's window asked {} times)\n{}\n{}\n{}",
                front.asked.load(Ordering::SeqCst),
                admin(&edge, "/status").await["acme"],
                edge.log(),
                pebble.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    front.past.store(false, Ordering::SeqCst);
    assert!(pebble.orders() >= 2, "{}", pebble.log());
    let valid = metric(&edge, "edge_acme_orders_total", &["valid"]).await;
    assert!(valid >= 2.0, "{valid} valid orders\n{}", edge.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_a_reload_adds_is_ordered_without_a_restart() {
    let app = backend("app").await;
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(ports.0, ports.1);
    let storage = tempfile::tempdir().expect("storage");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("upstreams.toml");
    let lines = "challenge = \"tls-alpn-01\"";
    let config = acme_config(ports, &pebble, storage.path(), lines, "", app.addr);
    std::fs::write(&path, &config).expect("write config");
    let edge = Edge::start_with_config_path(&path);
    let https = local(ports.1);
    let a_serial = pebble_issued(https, &edge, &pebble).await;
    // Before: b.test gets the default, a.test's certificate.
    let before = served_for(https, "b.test").await.expect("a certificate");
    assert_eq!(before.1, a_serial);

    let added = config.replace(
        "domains = [\"a.test\"]",
        "domains = [\"a.test\", \"b.test\"]",
    );
    std::fs::write(&path, added).expect("write config");
    let (status, body) = reqwest::Client::new()
        .post(format!("http://{}/reload", edge.admin))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .expect("reload");
    let body = body.text().await.expect("body");
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("tls.acme"),
        "a new name needs no upgrade: {body}"
    );
    wait_until(
        Duration::from_secs(30),
        "b.test never got pebble's certificate",
        async || {
            served_for(https, "b.test")
                .await
                .is_some_and(|(issuer, serial)| {
                    issuer.contains("Pebble Intermediate") && serial != a_serial
                })
        },
    )
    .await;
    assert_eq!(pebble.orders(), 2, "{}", pebble.log());
    let status = admin(&edge, "/status").await;
    assert_eq!(
        status["acme"]["names"]["b.test"]["served_from"], "acme",
        "{status}"
    );
}
