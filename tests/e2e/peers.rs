//! Independent peers for the upstream-protocol tests: a test certificate authority (rcgen),
//! nginx as a TLS and HTTP/2 backend, and grpcio (Python) as a gRPC server and client. The
//! edge's own code is on neither side of these.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A certificate authority made for one test: its certificate in `ca.pem` of a temp dir, and
/// the certificates it issues beside it.
pub struct TestCa {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pub pem: PathBuf,
    pub dir: tempfile::TempDir,
}

/// A certificate and key issued by a [`TestCa`] (paths of PEM files).
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA");
        let dir = tempfile::tempdir().expect("dir");
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, ca.pem()).expect("write CA");
        TestCa { ca, pem, dir }
    }

    /// A server certificate for `names` (host names or addresses), as `file`.pem and
    /// `file`.key.
    pub fn server(&self, file: &str, names: &[&str]) -> Issued {
        self.issue(file, names, rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose subject is `name`.
    pub fn client(&self, file: &str, name: &str) -> Issued {
        self.issue(file, &[name], rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A server certificate for `names` valid from `not_before` to `not_after`.
    pub fn server_valid(
        &self,
        file: &str,
        names: &[&str],
        not_before: std::time::SystemTime,
        not_after: std::time::SystemTime,
    ) -> Issued {
        let usage = rcgen::ExtendedKeyUsagePurpose::ServerAuth;
        self.issue_valid(file, names, usage, Some((not_before, not_after)))
    }

    fn issue(&self, file: &str, names: &[&str], usage: rcgen::ExtendedKeyUsagePurpose) -> Issued {
        self.issue_valid(file, names, usage, None)
    }

    fn issue_valid(
        &self,
        file: &str,
        names: &[&str],
        usage: rcgen::ExtendedKeyUsagePurpose,
        validity: Option<(std::time::SystemTime, std::time::SystemTime)>,
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names.clone()).expect("params");
        if let Some((from, until)) = validity {
            let epoch = rcgen::date_time_ymd(1970, 1, 1);
            let since = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH).expect("after 1970")
            };
            params.not_before = epoch + since(from);
            params.not_after = epoch + since(until);
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0].as_str());
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("issue");
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write cert");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }
}

/// A free port on loopback (bound and let go: the peer binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Waits until something accepts on `addr`.
fn wait_for_listener(addr: SocketAddr, child: &mut Child, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} is not listening on {addr}");
}

/// nginx as a backend: one `server` block (its `listen` on [`Nginx::addr`]), answering with
/// a JSON line that tells what it saw (protocol, SNI, client certificate), and logging each
/// request it served.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Nginx {
    /// nginx with `listen` (e.g. "ssl http2", "http2", "") and more `server` directives.
    pub fn start(listen: &str, directives: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("dir");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let d = dir.path().display();
        // As root, nginx's workers would drop to `nobody`, who cannot read the temp dir.
        let root = std::fs::metadata(dir.path())
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false);
        let user = if root { "user root;" } else { "" };
        let config = format!(
            r#"{user}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format seen '$server_protocol $request_method $request_uri $status $connection';
    access_log {d}/access.log seen;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} {listen};
        {directives}
        location / {{
            default_type application/json;
            return 200 '{{"protocol":"$server_protocol","sni":"$ssl_server_name","client":"$ssl_client_s_dn","host":"$host"}}';
        }}
    }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), config).expect("write nginx.conf");
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.log")).expect("log"),
            ))
            .spawn()
            .expect("start nginx (Debian's nginx package)");
        wait_for_listener(addr, &mut child, "nginx");
        Nginx { child, addr, dir }
    }

    /// The requests it served: "PROTOCOL METHOD URI STATUS CONNECTION" each (the connection's
    /// serial number).
    pub fn served(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's Python, where python3-grpcio is installed (not whatever `python3` is first on
/// the PATH).
const PYTHON: &str = "/usr/bin/python3";

fn grpc_peer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/peers/grpc_peer.py")
}

/// A grpcio server of `test.Echo` (Unary, ServerStream, Bidi, Fail, Slow) and the standard
/// health service, cleartext HTTP/2 on loopback.
pub struct GrpcServer {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl GrpcServer {
    pub fn start() -> GrpcServer {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("dir");
        let mut child = Command::new(PYTHON)
            .arg(grpc_peer())
            .arg("serve")
            .arg(dir.path())
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gRPC server (Debian's python3-grpcio)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("its port");
        let port: u16 = line.trim().parse().expect("a port");
        GrpcServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        }
    }

    /// From now on its health check says NOT_SERVING (or SERVING again).
    pub fn set_serving(&self, serving: bool) {
        let flag = self.dir.path().join("not_serving");
        if serving {
            let _ = std::fs::remove_file(flag);
        } else {
            std::fs::write(flag, b"").expect("flag");
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a gRPC call reaches the edge: cleartext HTTP/2, or TLS trusting `ca` for `name`.
pub enum Via<'a> {
    Cleartext(SocketAddr),
    Tls(SocketAddr, &'a Path, &'a str),
}

/// Runs a grpcio client scenario ("unary", "server_stream", "bidi", "many", or "method" with
/// `method`) through the edge: its outcome (`code`, and what the scenario saw).
pub fn grpc_call(via: Via<'_>, scenario: &str, method: &str, timeout: f64) -> serde_json::Value {
    let mut command = Command::new(PYTHON);
    command
        .arg(grpc_peer())
        .arg("call")
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    match via {
        Via::Cleartext(addr) => command.arg(addr.to_string()),
        Via::Tls(addr, ca, name) => command
            .arg(addr.to_string())
            .arg("--ca")
            .arg(ca)
            .arg("--name")
            .arg(name),
    };
    let output = command
        .arg(scenario)
        .arg("--method")
        .arg(method)
        .arg("--timeout")
        .arg(timeout.to_string())
        .output()
        .expect("run the gRPC client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "the gRPC client said {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Debian's pebble (an ACME test CA, RFC 8555) with `pebble-challtestsrv` as its DNS, which
/// answers every name with 127.0.0.1: validation is real, on loopback, against the ports
/// given (`http_port` for HTTP-01, `tls_port` for TLS-ALPN-01). Its own HTTPS is a
/// certificate of a [`TestCa`], whose root the edge is given as `ca`.
pub struct Pebble {
    pebble: Child,
    dns: Child,
    /// The directory URL.
    pub directory: String,
    /// The root pebble's HTTPS listener is issued by.
    pub ca: TestCa,
    /// pebble-challtestsrv's management API (what its DNS answers).
    dns_management: SocketAddr,
}

impl Pebble {
    pub fn start(http_port: u16, tls_port: u16) -> Pebble {
        Pebble::start_with_env(http_port, tls_port, &[])
    }

    /// With extra environment variables for pebble (its knobs: `PEBBLE_*`).
    pub fn start_with_env(http_port: u16, tls_port: u16, env: &[(&str, &str)]) -> Pebble {
        let ca = TestCa::new("pebble front CA");
        let front = ca.server("pebble", &["127.0.0.1", "localhost"]);
        let (listen, management, dns) = (free_port(), free_port(), free_port());
        let dns_management: SocketAddr =
            format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": front.cert,
                "privateKey": front.key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_file = ca.dir.path().join("pebble.json");
        std::fs::write(&config_file, config.to_string()).expect("write pebble config");
        let mut dns_child = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &dns_management.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (apt install pebble)");
        let log = std::fs::File::create(ca.dir.path().join("pebble.log")).expect("log");
        let mut pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order is validated (no authorization reused from an earlier one).
            .env("PEBBLE_AUTHZREUSE", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("pebble (apt install pebble)");
        let addr: SocketAddr = format!("127.0.0.1:{listen}").parse().expect("addr");
        wait_for_listener(addr, &mut pebble, "pebble");
        wait_for_listener(dns_management, &mut dns_child, "pebble-challtestsrv");
        Pebble {
            pebble,
            dns: dns_child,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            ca,
            dns_management,
        }
    }

    /// What pebble logged (each order, each validation).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.ca.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Orders pebble was asked for so far (its log's lines for new orders).
    pub fn orders(&self) -> usize {
        self.log().matches("POST /order-plz").count()
    }

    /// Makes the CA's DNS answer `host` with `ip` (instead of 127.0.0.1).
    pub fn resolve(&self, host: &str, ip: &str) {
        let body = serde_json::json!({ "host": host, "addresses": [ip] }).to_string();
        let request = format!(
            "POST /add-a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let answer = crate::support::raw_request(self.dns_management, request.as_bytes());
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "challtestsrv said {answer}"
        );
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.pebble.wait();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}
