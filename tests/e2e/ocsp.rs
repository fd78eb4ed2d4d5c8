//! OCSP stapling against a real responder on loopback (`openssl ocsp`), with a test CA whose
//! leaf names that responder in its Authority Information Access.

use crate::support::*;
use edge::config::OcspSource;
use edge::ocsp::response::{OcspError, Query};
use edge::ocsp::stapler::{CertView, Stapler};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `openssl ARGS` in `dir`; the test fails if it does.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signs leaf.csr with the CA as `out`, with `serial` and the responder in leaf.ext.
fn issue_leaf(dir: &Path, serial: &str, out: &str) {
    let args = [
        "x509", "-req", "-in", "leaf.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
    ];
    openssl(
        dir,
        &[
            &args[..],
            &[
                "-set_serial",
                serial,
                "-days",
                "1",
                "-extfile",
                "leaf.ext",
                "-out",
                out,
            ],
        ]
        .concat(),
    );
}

/// A CA, and a leaf for ocsp.test whose responder is http://127.0.0.1:`port`.
struct Pki {
    dir: tempfile::TempDir,
    port: u16,
}

impl Pki {
    /// A CA and its leaf; with `responding`, an `openssl ocsp` responder on a port it picked
    /// itself (named in the leaf), else the leaf names the discard port, never asked.
    fn new(responding: bool) -> (Pki, Option<Child>) {
        Pki::build(if responding { None } else { Some(9) })
    }

    /// A CA and a leaf whose responder is at `port` (something the test runs itself).
    fn naming(port: u16) -> Pki {
        Pki::build(Some(port)).0
    }

    /// With `port` None, an `openssl ocsp` responder on a port it picks.
    fn build(port: Option<u16>) -> (Pki, Option<Child>) {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            d,
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-subj",
                    "/CN=Edge Test OCSP CA",
                    "-days",
                    "2",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                ],
            ]
            .concat(),
        );
        std::fs::write(d.join("index.txt"), GOOD).expect("index");
        let (responder, port) = match port {
            None => {
                let (child, port) = responder(d, 0);
                (Some(child), port)
            }
            Some(port) => (None, port),
        };
        openssl(
            d,
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "leaf.key",
                    "-out",
                    "leaf.csr",
                    "-subj",
                    "/CN=ocsp.test",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            d.join("leaf.ext"),
            format!("subjectAltName=DNS:ocsp.test\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:{port}\n"),
        )
        .expect("ext");
        issue_leaf(d, "0x1001", "leaf.crt");
        let chain = [
            std::fs::read(d.join("leaf.crt")).expect("leaf"),
            std::fs::read(d.join("ca.crt")).expect("ca"),
        ]
        .concat();
        std::fs::write(d.join("chain.pem"), chain).expect("chain");
        (Pki { dir, port }, responder)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The responder's database: the leaf good, or revoked.
    fn set_status(&self, revoked: bool) {
        let line = if revoked { REVOKED } else { GOOD };
        std::fs::write(self.path("index.txt"), line).expect("index");
    }

    /// A response made offline (as another tool would keep it in a file), valid for `validity`.
    fn response(&self, name: &str, validity: &[&str]) -> PathBuf {
        let d = self.dir.path();
        openssl(
            d,
            &[
                "ocsp",
                "-issuer",
                "ca.crt",
                "-cert",
                "leaf.crt",
                "-no_nonce",
                "-reqout",
                "req.der",
            ],
        );
        openssl(
            d,
            &[
                &["ocsp"][..],
                &SIGNING,
                &["-reqin", "req.der", "-respout", name],
                validity,
            ]
            .concat(),
        );
        self.path(name)
    }

    fn der(&self, name: &str) -> Vec<u8> {
        let pem = std::fs::read(self.path(name)).expect("pem");
        let mut slice = pem.as_slice();
        let mut certs = rustls_pemfile::certs(&mut slice);
        certs.next().expect("a cert").expect("pem").to_vec()
    }

    /// The responder again, on the port the leaf names.
    fn responder(&self) -> Child {
        responder(self.dir.path(), self.port).0
    }
}

/// How `openssl ocsp` answers: from index.txt, signed by the CA itself.
const SIGNING: [&str; 8] = [
    "-index",
    "index.txt",
    "-rsigner",
    "ca.crt",
    "-rkey",
    "ca.key",
    "-CA",
    "ca.crt",
];

/// The responder's database lines for the leaf (serial 1001).
const GOOD: &str = "V\t301231235959Z\t\t1001\tunknown\t/CN=ocsp.test\n";
const REVOKED: &str = "R\t301231235959Z\t261201000000Z\t1001\tunknown\t/CN=ocsp.test\n";

/// `openssl ocsp` on `port` (0: one it picks), answering from dir/index.txt with responses
/// valid a minute, and the port it listens on (its `ACCEPT [::]:PORT` line).
fn responder(dir: &Path, port: u16) -> (Child, u16) {
    let mut child = Command::new("openssl")
        .arg("ocsp")
        .args(SIGNING)
        .args(["-port", &port.to_string(), "-nmin", "1", "-ignore_err"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl ocsp");
    let stdout = child.stdout.take().expect("stdout");
    let (ready, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(port) = line
                .strip_prefix("ACCEPT ")
                .and_then(|a| a.split_whitespace().next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
            {
                let _ = ready.send(port);
            }
        }
    });
    let port = listening
        .recv_timeout(Duration::from_secs(10))
        .expect("the responder listens");
    (child, port)
}

/// Kills a responder.
fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// An edge serving the leaf of `pki` (its chain: leaf then CA) on https, refreshing its OCSP
/// staple every second, from `ocsp` (a file of a response) or from the responder its AIA
/// names; one route to a content service.
async fn ocsp_edge(pki: &Pki, ocsp: Option<&Path>) -> (Edge, SocketAddr, services::RunningService) {
    let app = backend("app").await;
    let leaf = Certificate::at(pki.path("chain.pem"), pki.path("leaf.key"));
    let mut config = one_route(app.addr).certificate(&leaf);
    if let Some(file) = ocsp {
        config = config.with("ocsp", file.display().to_string());
    }
    let config = config.section("tls").with("ocsp_refresh", "1s");
    let (edge, https) = https_edge(table! { redirect_http_to_https = false }, config);
    (edge, https, app)
}

/// What `openssl s_client -status` says about the stapled response.
fn stapled(https: SocketAddr) -> String {
    let (_, out) = s_client(https, &["-servername", "ocsp.test", "-status"]);
    if out.contains("OCSP response: no response sent") {
        return "none".into();
    }
    let good =
        out.contains("OCSP Response Status: successful") && out.contains("Cert Status: good");
    if good {
        "good".into()
    } else {
        out
    }
}

/// Waits until [`stapled`] says `what` (what it said before, with the edge's log, is in the
/// test's output).
async fn until_stapled(what: &str, edge: &Edge, https: SocketAddr, within: Duration) {
    let why = format!("stapling is not `{what}`");
    let mut last = String::new();
    wait_until(within, &why, async || {
        // openssl s_client blocks: off the runtime that serves the responder.
        let now = blocking(|| stapled(https));
        if now != last {
            eprintln!("stapled: {now}\n{}", edge.log());
            last = now.clone();
        }
        now == what
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_responders_answer_is_stapled_kept_while_it_is_down_and_dropped_when_revoked() {
    let (pki, responder) = Pki::new(true);
    let responder = responder.expect("a responder");
    let (edge, https, _app) = ocsp_edge(&pki, None).await;
    until_stapled("good", &edge, https, Duration::from_secs(15)).await;
    assert_eq!(metric(&edge, "edge_ocsp_stapled", &[]).await, 1.0);
    assert!(metric(&edge, "edge_ocsp_next_update_timestamp_seconds", &[]).await > 0.0);

    // The responder hangs (accepts, never answers): the refresh waits out its timeout on its
    // own thread while handshakes go on as fast as before, with the last good response.
    stop(responder);
    let hanging = std::net::TcpListener::bind(("127.0.0.1", pki.port)).expect("take the port");
    let (held, _) = tokio::task::spawn_blocking(move || hanging.accept())
        .await
        .expect("join")
        .expect("the edge's next refresh connects");
    let tls = connector(&[b"http/1.1"]);
    for _ in 0..10 {
        let started = Instant::now();
        drop(connect(&tls, https, "ocsp.test").await);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a handshake waited: {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(blocking(|| stapled(https)), "good");
    drop(held);
    // Refused outright: failures are counted and the last good response is still stapled.
    wait_until(Duration::from_secs(20), "no failure counted", async || {
        metric(&edge, "edge_ocsp_fetch_failures_total", &[]).await >= 1.0
    })
    .await;
    assert_eq!(blocking(|| stapled(https)), "good");

    // The CA revokes the leaf: at the next refresh the edge stops stapling and counts it.
    pki.set_status(true);
    let responder = pki.responder();
    until_stapled("none", &edge, https, Duration::from_secs(20)).await;
    assert!(metric(&edge, "edge_ocsp_revoked_total", &[]).await >= 1.0);
    assert_eq!(metric(&edge, "edge_ocsp_stapled", &[]).await, 0.0);
    stop(responder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_from_a_file_is_stapled_and_edge_check_validates_the_file() {
    let (pki, _) = Pki::new(false);
    let file = pki.response("leaf.ocsp", &["-ndays", "1"]);
    let (edge, https, _app) = ocsp_edge(&pki, Some(&file)).await;
    until_stapled("good", &edge, https, Duration::from_secs(10)).await;
    // `edge check` refuses a file that is not an OCSP response, at its place.
    let bad = pki.path("bad.toml");
    let text = TestConfig::new()
        .upstream("a", ["127.0.0.1:1"])
        .route("/", "a")
        .certificate(&Certificate::at("c", "k"))
        .with("ocsp", pki.path("leaf.crt").display().to_string())
        .text();
    std::fs::write(&bad, &text).expect("write");
    let out = Command::new(edge_bin())
        .arg("check")
        .arg(&bad)
        .output()
        .expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // On the line of the `ocsp` file.
    let place = place_of_value(&text, "ocsp");
    let line = place.split(':').next().expect("a line");
    assert!(
        stderr.contains(&format!("bad.toml:{line}:"))
            && stderr.contains("not a usable OCSP response"),
        "{stderr}\n{text}"
    );
}

#[test]
fn responses_are_verified_before_they_are_stapled() {
    let (pki, _) = Pki::new(false);
    let (leaf, ca) = (pki.der("leaf.crt"), pki.der("ca.crt"));
    let query = Query::new(&leaf, &ca).expect("query");
    assert_eq!(query.url.as_deref(), Some("http://127.0.0.1:9"));
    let good = std::fs::read(pki.response("good.der", &["-nmin", "1"])).expect("response");
    let now = edge::ocsp::unix_now();
    let checked = query.check(&good, now).expect("a good response");
    assert!(checked
        .next_update
        .is_some_and(|n| n > now && n <= now + 61));
    assert_eq!(query.check(&good, now + 120), Err(OcspError::Expired));
    // A changed digit in the signed data (producedAt's last second) is caught.
    let mut forged = good.clone();
    let produced = forged
        .windows(2)
        .position(|w| w == [0x18, 0x0f])
        .expect("producedAt");
    forged[produced + 15] ^= 1;
    assert_eq!(query.check(&forged, now), Err(OcspError::BadSignature));
    // A response signed by another CA does not verify with this issuer.
    let (other, _) = Pki::new(false);
    let foreign = std::fs::read(other.response("other.der", &["-nmin", "1"])).expect("response");
    assert!(query.check(&foreign, now).is_err());
    // Revoked.
    pki.set_status(true);
    let revoked = std::fs::read(pki.response("revoked.der", &["-nmin", "1"])).expect("response");
    assert_eq!(query.check(&revoked, now), Err(OcspError::Revoked));

    // The schedule: a file's response is stapled, kept while the file is unreadable, and
    // dropped once it expires.
    pki.set_status(false);
    let file = pki.response("file.der", &["-nmin", "1"]);
    let source = OcspSource::File(file.clone());
    let view = [CertView {
        name: "test",
        source: &source,
        leaf: &leaf,
        issuer: Some(&ca),
    }];
    let mut stapler = Stapler::new(Duration::from_secs(3600));
    let first = ticked(&mut stapler, &view, now);
    assert_eq!(first.len(), 1);
    assert!(first[0].staple.is_some());
    std::fs::remove_file(&file).expect("remove");
    assert!(
        ticked(&mut stapler, &view, now + 30).is_empty(),
        "a failed refresh keeps the last good"
    );
    let expired = ticked(&mut stapler, &view, now + 61);
    assert_eq!(expired.len(), 1);
    assert!(expired[0].staple.is_none(), "stapling stops at nextUpdate");
    // A renewed certificate (another leaf from the same CA): the old staple goes at once,
    // and the response, which is about the old leaf, is not stapled to the new one.
    std::fs::write(
        &file,
        std::fs::read(pki.response("file.der", &["-nmin", "1"])).expect("again"),
    )
    .expect("write");
    assert!(ticked(&mut stapler, &view, now + 20)
        .iter()
        .any(|c| c.staple.is_some()));
    issue_leaf(pki.dir.path(), "0x1002", "renewed.crt");
    let renewed = pki.der("renewed.crt");
    let view = [CertView {
        name: "test",
        source: &source,
        leaf: &renewed,
        issuer: Some(&ca),
    }];
    let changes = ticked(&mut stapler, &view, now + 21);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        changes[0].staple.is_none(),
        "a response for the old leaf is not stapled to the new"
    );
    // A certificate without an issuer in its file is not stapled (and never fetched).
    let alone = [CertView {
        name: "alone",
        source: &OcspSource::Auto,
        leaf: &leaf,
        issuer: None,
    }];
    assert!(ticked(&mut Stapler::new(Duration::from_secs(1)), &alone, now).is_empty());
}

/// One stapler round, on a runtime of the test's own (the stapler's fetches are async).
fn ticked(
    stapler: &mut Stapler,
    views: &[edge::ocsp::stapler::CertView<'_>],
    now: i64,
) -> Vec<edge::ocsp::stapler::Change> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(stapler.tick(views, now))
}

/// A responder that answers each request with what `answer` holds then and keeps the
/// connection open (`drip`: sends it a byte a second instead, never finishing).
fn odd_responder(drip: bool) -> (std::net::TcpListener, Arc<Mutex<Vec<u8>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let accepting = listener.try_clone().expect("clone");
    let answer = Arc::new(Mutex::new(b"HTTP/1.1 200 OK\r\n".to_vec()));
    let shared = answer.clone();
    std::thread::spawn(move || {
        for stream in accepting.incoming() {
            let Ok(mut stream) = stream else { return };
            let answer = shared.lock().expect("answer").clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                if drip {
                    for byte in answer.iter().cycle().take(60) {
                        if stream.write_all(&[*byte]).is_err() {
                            return;
                        }
                        // A time wait: a byte a second is the point.
                        std::thread::sleep(Duration::from_secs(1));
                    }
                } else {
                    let _ = stream.write_all(&answer);
                    // A time wait: the connection is held open, with nothing more said.
                    std::thread::sleep(Duration::from_secs(30));
                }
            });
        }
    });
    (listener, answer)
}

#[test]
fn a_slow_responder_delays_no_other_certificate_and_answers_are_read_to_their_length() {
    // Certificate 0's responder drips a byte a second; certificate 1's answers at once with
    // a Content-Length and keeps the connection open.
    let (dripping, _) = odd_responder(true);
    let slow = Pki::naming(dripping.local_addr().expect("addr").port());
    let (kept_open, answer) = odd_responder(false);
    let quick = Pki::naming(kept_open.local_addr().expect("addr").port());
    let der = std::fs::read(quick.response("quick.der", &["-ndays", "1"])).expect("response");
    let mut http = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: {}\r\n\r\n",
        der.len()
    )
    .into_bytes();
    http.extend_from_slice(&der);
    *answer.lock().expect("answer") = http;
    let (slow_leaf, slow_ca) = (slow.der("leaf.crt"), slow.der("ca.crt"));
    let (quick_leaf, quick_ca) = (quick.der("leaf.crt"), quick.der("ca.crt"));
    let views = [
        CertView {
            name: "slow",
            source: &OcspSource::Auto,
            leaf: &slow_leaf,
            issuer: Some(&slow_ca),
        },
        CertView {
            name: "quick",
            source: &OcspSource::Auto,
            leaf: &quick_leaf,
            issuer: Some(&quick_ca),
        },
    ];
    let started = Instant::now();
    let changes = ticked(
        &mut Stapler::new(Duration::from_secs(3600)),
        &views,
        edge::ocsp::unix_now(),
    );
    // The dripping fetch is cut at its deadline (10 s), not after 60 bytes at a byte a second.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].index, 1);
    assert!(
        changes[0].staple.is_some(),
        "the quick certificate is stapled"
    );
}

#[test]
fn a_chain_fixed_in_place_starts_stapling_and_metrics_follow_what_is_stapled() {
    let (pki, _) = Pki::new(false);
    let (leaf, ca) = (pki.der("leaf.crt"), pki.der("ca.crt"));
    let file = pki.response("chain-fix.der", &["-nmin", "1"]);
    let source = OcspSource::File(file);
    let name = format!("chain-fix-{}", pki.dir.path().display());
    let mut stapler = Stapler::new(Duration::from_secs(3600));
    let now = edge::ocsp::unix_now();
    // The file held the leaf alone: nothing to verify with, nothing stapled.
    let alone = [CertView {
        name: &name,
        source: &source,
        leaf: &leaf,
        issuer: None,
    }];
    assert!(ticked(&mut stapler, &alone, now).is_empty());
    let stats = |name: &str| edge::ocsp::STATS.lock().expect("stats")[name].clone();
    assert!(!stats(&name).stapled);
    // Rewritten with its chain (same leaf): stapled at the next round, without a restart.
    let fixed = [CertView {
        name: &name,
        source: &source,
        leaf: &leaf,
        issuer: Some(&ca),
    }];
    assert!(ticked(&mut stapler, &fixed, now + 1)
        .iter()
        .any(|c| c.staple.is_some()));
    assert!(stats(&name).stapled && stats(&name).next_update > now);
    // Expired: the metrics say nothing is stapled, and no nextUpdate.
    assert!(ticked(&mut stapler, &fixed, now + 120)
        .iter()
        .any(|c| c.staple.is_none()));
    assert_eq!((stats(&name).stapled, stats(&name).next_update), (false, 0));
}
