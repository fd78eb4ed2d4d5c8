//! The import against the nginx edge being replaced, and directive by directive.

use super::*;
use edge::config::{self, Balance, Config};
use std::time::Duration;

const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/nginx/nginx.conf"
);

fn reference() -> Imported {
    import(Path::new(REFERENCE), Path::new(DEFAULT_NGINX_ROOT)).expect("the reference parses")
}

fn valid(imported: &Imported) -> Config {
    match config::validate("imported.toml", &imported.toml) {
        Ok(v) => v.config,
        Err(e) => panic!("{e:?}\n{}", imported.toml),
    }
}

fn imported(text: &str) -> Imported {
    import_str("test.conf", text, Path::new("/nonexistent")).expect("parses")
}

fn note_for<'a>(imported: &'a Imported, directive: &str) -> &'a Note {
    imported
        .notes
        .iter()
        .find(|n| n.directive.starts_with(directive))
        .unwrap_or_else(|| panic!("no note for `{directive}` in {:#?}", imported.notes))
}

#[test]
fn the_reference_nginx_edge_imports_as_the_hand_translation_routes_and_limits() {
    let imported = reference();
    let ours = valid(&imported);
    let hand = config::validate("upstreams.toml", include_str!("../../upstreams.toml"))
        .expect("the repository's upstreams.toml")
        .config;
    // Zones: same rates and sizes.
    assert_eq!(ours.zones, hand.zones);
    // Upstreams: same servers, balancing, keepalive and timeouts (the hand translation adds
    // active health probes, which nginx has not).
    assert_eq!(
        ours.upstreams.keys().collect::<Vec<_>>(),
        hand.upstreams.keys().collect::<Vec<_>>()
    );
    for (name, hand_up) in &hand.upstreams {
        let up = &ours.upstreams[name];
        assert_eq!(up.balance, hand_up.balance, "{name}");
        assert_eq!(up.servers, hand_up.servers, "{name}");
        assert_eq!(up.keepalive, hand_up.keepalive, "{name}");
        assert_eq!(up.keepalive_requests, hand_up.keepalive_requests, "{name}");
        assert_eq!(up.keepalive_timeout, hand_up.keepalive_timeout, "{name}");
        assert_eq!(up.read_timeout, hand_up.read_timeout, "{name}");
        assert_eq!(up.send_timeout, hand_up.send_timeout, "{name}");
        assert_eq!(up.connect_timeout, hand_up.connect_timeout, "{name}");
    }
    assert_eq!(ours.upstreams["ai_processor"].balance, Balance::IpHash);
    assert_eq!(
        ours.upstreams["ai_processor"].read_timeout,
        Duration::from_secs(300)
    );
    // Routes: the same paths to the same upstreams with the same zones, allow lists and
    // statuses of a refusal by a zone.
    let key = |c: &Config| {
        let mut routes: Vec<_> = c
            .routes
            .iter()
            .map(|r| {
                (
                    r.path.clone(),
                    r.upstream.clone(),
                    r.limit.clone(),
                    r.allow.clone(),
                    r.websocket,
                    r.limit_status,
                )
            })
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        routes
    };
    assert_eq!(key(&ours), key(&hand));
    // nginx answers limit_req with 503 where the file does not say otherwise.
    let grafana = ours
        .routes
        .iter()
        .find(|r| r.path == "/grafana/")
        .expect("grafana");
    assert_eq!(grafana.limit_status, 503);
    // The edge settings nginx set.
    assert_eq!(ours.edge.keepalive_timeout, Duration::from_secs(65));
    assert_eq!(ours.edge.keepalive_requests, 100);
    assert!(ours.edge.redirect_http_to_https);
    assert_eq!(ours.edge.http_listen, hand.edge.http_listen);
    assert_eq!(ours.edge.https_listen, hand.edge.https_listen);
    let tls = ours.tls.as_ref().expect("tls");
    assert_eq!(tls.hsts, hand.tls.as_ref().expect("tls").hsts);
    assert_eq!(
        tls.ciphers,
        ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"]
    );
    assert!(ours.gzip.enabled);
    assert_eq!((ours.gzip.min_length, ours.gzip.level), (1024, 6));
    assert_eq!(ours.gzip.types[0], "text/html");
    assert_eq!(&ours.gzip.types[1..], &hand.gzip.types[..]);
}

#[test]
fn the_reference_report_explains_every_directive_not_carried_with_its_place() {
    let imported = reference();
    let expect = [
        ("worker_rlimit_nofile", Kind::Differs),
        ("worker_connections", Kind::Differs),
        ("use epoll", Kind::ByDefault),
        ("multi_accept", Kind::ByDefault),
        ("worker_aio_requests", Kind::ByDefault),
        ("sendfile", Kind::ByDefault),
        ("tcp_nopush", Kind::ByDefault),
        ("tcp_nodelay", Kind::ByDefault),
        ("gzip_vary", Kind::ByDefault),
        ("map $http_upgrade", Kind::ByDefault),
        ("ssl_ciphers", Kind::Differs),
        ("ssl_prefer_server_ciphers", Kind::ByDefault),
        ("ssl_session_cache", Kind::Differs),
        ("ssl_session_timeout", Kind::Differs),
        ("ssl_stapling_verify", Kind::ByDefault),
        ("proxy_http_version", Kind::ByDefault),
        ("proxy_set_header Host $host", Kind::Differs),
        ("proxy_set_header X-Real-IP", Kind::ByDefault),
        ("proxy_set_header X-Forwarded-For", Kind::ByDefault),
        ("proxy_set_header X-Forwarded-Proto", Kind::ByDefault),
        ("proxy_set_header Connection \"\"", Kind::ByDefault),
        ("proxy_next_upstream error timeout", Kind::ByDefault),
        ("location = /health", Kind::Differs),
    ];
    // /health, from the plain-HTTP server, also answers over HTTPS in the edge.
    assert!(imported
        .notes
        .iter()
        .any(|n| n.directive == "location = /health" && n.why.contains("over HTTPS too")));
    for (directive, kind) in expect {
        let note = note_for(&imported, directive);
        assert_eq!(note.kind, kind, "{note}");
        assert!(note.at.line > 0 && note.at.column > 0, "{note}");
    }
    // Places are the file the directive is in, and its line.
    let verify = note_for(&imported, "ssl_stapling_verify");
    assert!(
        verify
            .at
            .file
            .ends_with("sites-enabled/content-engine.conf"),
        "{verify}"
    );
    assert_eq!((verify.at.line, verify.at.column), (24, 5));
    // `ssl_stapling on` is carried: the certificate staples (ocsp = "auto", the default).
    assert!(!imported
        .notes
        .iter()
        .any(|n| n.directive.starts_with("ssl_stapling on")));
    assert!(!imported.toml.contains("ocsp ="), "{}", imported.toml);
    let sendfile = note_for(&imported, "sendfile");
    assert!(sendfile.at.file.ends_with("nginx.conf"));
    assert_eq!(sendfile.at.line, 15);
    // The exact /health location and the certificate files (not in the fixture) need a person.
    assert!(imported.needs_decision());
    // Every section names where it came from.
    assert!(
        imported
            .toml
            .contains("[upstreams.content_manager]  # nginx "),
        "{}",
        imported.toml
    );
    assert!(imported.toml.contains("upstream.conf:1"));
    assert!(imported.toml.contains("[zones.api]  # nginx "));
}

#[test]
fn an_upstream_with_every_server_parameter() {
    let imported = imported(
        "http {\n upstream app {\n  least_conn;\n  server a.internal:8080 weight=3 max_fails=5 fail_timeout=20s;\n  server 10.0.0.2 down;\n  server b.internal:8080 backup;\n  server c.internal:8080 max_conns=10;\n  server d.internal resolve;\n  keepalive 12;\n  keepalive_requests 50;\n  keepalive_timeout 1m30s;\n  zone app 64k;\n }\n server { listen 8080; location / { proxy_pass http://app; } }\n}\n",
    );
    let config = valid(&imported);
    let app = &config.upstreams["app"];
    assert_eq!(app.balance, Balance::LeastConn);
    assert_eq!((app.keepalive, app.keepalive_requests), (12, 50));
    assert_eq!(app.keepalive_timeout, Duration::from_secs(90));
    let servers: Vec<(&str, u32, u32, Duration)> = app
        .servers
        .iter()
        .map(|s| (s.addr.as_str(), s.weight, s.max_fails, s.fail_timeout))
        .collect();
    assert_eq!(
        servers,
        [
            ("a.internal:8080", 3, 5, Duration::from_secs(20)),
            ("c.internal:8080", 1, 1, Duration::from_secs(10)),
            ("d.internal:80", 1, 1, Duration::from_secs(10)),
        ]
    );
    assert_eq!(
        note_for(&imported, "server 10.0.0.2 down").kind,
        Kind::ByDefault
    );
    let backup = note_for(&imported, "server b.internal:8080 backup");
    assert!(
        backup.decide && backup.kind == Kind::NoEquivalent,
        "{backup}"
    );
    let conns = note_for(&imported, "server c.internal:8080 max_conns=10");
    assert!(conns.decide && conns.why.contains("max_conns"), "{conns}");
    assert_eq!(note_for(&imported, "zone app").kind, Kind::ByDefault);
}

#[test]
fn a_regex_location_is_reported_not_dropped_silently() {
    let imported = imported(
        "http {\n upstream app { server a:1; }\n server {\n  listen 8080;\n  location ~ \\.php$ { proxy_pass http://app; }\n  location /api/ { proxy_pass http://app; }\n }\n}\n",
    );
    let config = valid(&imported);
    assert_eq!(config.routes.len(), 1);
    let note = note_for(&imported, "location ~");
    assert_eq!((note.at.line, note.at.column), (5, 3));
    assert!(note.decide && note.kind == Kind::NoEquivalent, "{note}");
    assert!(
        note.to_string()
            .starts_with("! test.conf:5:3: `location ~ \\.php$`: no equivalent:"),
        "{note}"
    );
    assert!(imported.needs_decision());
}

#[test]
fn nginx_inheritance_location_lists_replace_what_they_inherit() {
    let imported = imported(
        "http {\n limit_req_zone $binary_remote_addr zone=z:1m rate=600r/m;\n upstream app { server a:1; keepalive 4; }\n upstream slow { server b:1; keepalive 4; }\n proxy_read_timeout 20s;\n server { listen 8080; location / { proxy_pass http://app; } }\n server {\n  listen 8080;\n  server_name example.com .example.org;\n  limit_req zone=z burst=3;\n  allow 10.0.0.0/8; deny all;\n  location /open/ { allow all; proxy_pass http://app; }\n  location /closed/ { proxy_pass http://app; }\n  location /slow/ { proxy_read_timeout 2m; limit_req zone=z nodelay; limit_req_status 444; proxy_pass http://slow; }\n }\n}\n",
    );
    let config = valid(&imported);
    let route = |path: &str, host: &str| {
        config
            .routes
            .iter()
            .find(|r| r.path == path && r.host.as_deref() == Some(host))
            .unwrap_or_else(|| panic!("no route {host}{path}"))
    };
    // .example.org is the domain and its subdomains; each host gets the server's routes.
    for host in ["example.com", "example.org", "*.example.org"] {
        assert!(route("/open/", host).allow.is_empty());
        assert_eq!(route("/closed/", host).allow.len(), 1);
        assert_eq!(route("/closed/", host).limit[0].burst, 3);
        assert!(!route("/closed/", host).limit[0].nodelay);
        let slow = route("/slow/", host);
        assert_eq!((slow.limit[0].burst, slow.limit[0].nodelay), (0, true));
        assert_eq!(slow.limit_status, 444);
        assert_eq!(slow.allow.len(), 1);
    }
    assert_eq!(config.zones["z"].max_clients, 16_000);
    assert_eq!(
        config.upstreams["app"].read_timeout,
        Duration::from_secs(20)
    );
    assert_eq!(
        config.upstreams["slow"].read_timeout,
        Duration::from_secs(120)
    );
    assert!(!config.gzip.enabled, "nginx's gzip is off unless turned on");
    assert!(config.tls.is_none());
}

#[test]
fn two_locations_that_want_different_timeouts_from_one_upstream_are_reported() {
    let imported = imported(
        "http {\n upstream app { server a:1; }\n server {\n  listen 8080;\n  location /a/ { proxy_read_timeout 5s; proxy_pass http://app; }\n  location /b/ { proxy_read_timeout 50s; proxy_pass http://app; }\n }\n}\n",
    );
    let config = valid(&imported);
    assert_eq!(config.upstreams["app"].read_timeout, Duration::from_secs(5));
    let note = imported
        .notes
        .iter()
        .find(|n| n.directive.starts_with("location /b/") && n.why.contains("read_timeout"))
        .expect("the conflict is reported");
    assert!(note.decide, "{note}");
}

#[test]
fn deny_all_admits_nobody_and_a_deny_only_location_does_not_fall_through() {
    let imported = imported(
        "http {\n upstream app { server a:1; }\n server {\n  listen 8080;\n  location / { proxy_pass http://app; }\n  location /.git { deny all; }\n  location /closed/ { deny all; proxy_pass http://app; }\n }\n}\n",
    );
    let config = valid(&imported);
    let nobody: Vec<ipnet::IpNet> = vec![
        "0.0.0.0/32".parse().expect("net"),
        "::/128".parse().expect("net"),
    ];
    for path in ["/.git", "/closed/"] {
        let route = config
            .routes
            .iter()
            .find(|r| r.path == path)
            .unwrap_or_else(|| panic!("{path} is a route"));
        assert_eq!(route.allow, nobody, "{path}: nobody is admitted");
    }
}

#[test]
fn default_servers_keep_their_names_and_one_of_them_takes_unknown_hosts() {
    let imported = imported(
        "http {\n upstream pub { server p:1; }\n upstream adm { server a:1; }\n upstream int { server i:1; }\n server { listen 80; server_name www.example.com; location / { proxy_pass http://pub; } }\n server { listen 8080; server_name admin.example.com; location / { proxy_pass http://adm; } }\n server { listen 127.0.0.1:81; server_name internal.example.com; location / { proxy_pass http://int; } }\n}\n",
    );
    let config = valid(&imported);
    let routes: Vec<(Option<&str>, &str)> = config
        .routes
        .iter()
        .map(|r| (r.host.as_deref(), r.upstream.as_str()))
        .collect();
    assert!(
        routes.contains(&(Some("www.example.com"), "pub")),
        "{routes:?}"
    );
    assert!(
        routes.contains(&(Some("admin.example.com"), "adm")),
        "{routes:?}"
    );
    assert!(
        routes.contains(&(Some("internal.example.com"), "int")),
        "{routes:?}"
    );
    // Every server is a default of its address and has names: the first takes unknown hosts.
    assert!(routes.contains(&(None, "pub")), "{routes:?}");
    assert_eq!(
        routes.iter().filter(|(h, _)| h.is_none()).count(),
        1,
        "{routes:?}"
    );
}

#[test]
fn unix_sockets_odd_names_and_a_missing_semicolon_are_reported_and_the_output_still_checks() {
    let imported = imported(
        "http {\n upstream sock { server unix:/run/app.sock; }\n upstream named.backend { server n:1; }\n upstream Mixed { server m:1; }\n server {\n  listen 80\n  server_name a.example.com;\n  location /sock/ { proxy_pass http://sock; }\n  location /gunicorn/ { proxy_pass http://unix:/run/gunicorn.sock; }\n  location /named/ { proxy_pass http://named.backend; }\n  location /mixed/ { proxy_pass http://mixed; }\n  location /v6/ { proxy_pass http://[::1]:8600; }\n }\n}\n",
    );
    let config = valid(&imported);
    let upstream_of = |path: &str| {
        config
            .routes
            .iter()
            .find(|r| r.path == path)
            .map(|r| r.upstream.clone())
    };
    assert_eq!(upstream_of("/named/").as_deref(), Some("named_backend"));
    assert_eq!(
        upstream_of("/mixed/").as_deref(),
        Some("Mixed"),
        "nginx matches upstream names in any case"
    );
    assert_eq!(
        config.upstreams[&upstream_of("/v6/").expect("v6 route")].servers[0].addr,
        "[::1]:8600"
    );
    assert_eq!(upstream_of("/sock/"), None);
    assert_eq!(upstream_of("/gunicorn/"), None);
    assert!(!config.upstreams.contains_key("sock"));
    assert!(
        note_for(&imported, "listen 80 server_name").decide,
        "a missing `;` is not an edge default"
    );
    assert!(imported.needs_decision());
}

#[test]
fn http_level_tls_settings_without_a_tls_server_are_reported_not_dropped() {
    let imported = imported(
        "http {\n ssl_protocols TLSv1 TLSv1.1 TLSv1.2;\n ssl_prefer_server_ciphers on;\n upstream app { server a:1; }\n server { listen 80; location / { proxy_pass http://app; } }\n}\n",
    );
    assert_eq!(note_for(&imported, "ssl_protocols").kind, Kind::ByDefault);
    assert!(note_for(&imported, "ssl_protocols")
        .why
        .contains("no server listens with TLS"));
    assert!(valid(&imported).tls.is_none());
}

#[test]
fn the_tls_policy_comes_from_a_server_with_a_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("a.crt"), "x").expect("crt");
    std::fs::write(dir.path().join("a.key"), "x").expect("key");
    let text = "http {\n upstream app { server a:1; }\n server { listen 443 ssl default_server; ssl_reject_handshake on; }\n server {\n  listen 443 ssl;\n  server_name a.example.com;\n  ssl_certificate a.crt; ssl_certificate_key a.key;\n  add_header Strict-Transport-Security \"max-age=63072000\" always;\n  location / { proxy_pass http://app; }\n }\n}\n";
    let imported = import_str("test.conf", text, dir.path()).expect("parses");
    let config = valid(&imported);
    let tls = config.tls.expect("tls");
    assert_eq!(tls.hsts.as_deref(), Some("max-age=63072000"));
    assert_eq!(tls.certificates.len(), 1);
}

#[test]
fn tls_servers_redirects_and_bare_proxy_targets() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("a.crt"), "x").expect("crt");
    std::fs::write(dir.path().join("a.key"), "x").expect("key");
    let text = "http {\n server { listen 80; return 301 https://$host$request_uri; }\n server {\n  listen 443 ssl http2;\n  listen [::]:443 ssl;\n  ssl_certificate a.crt; ssl_certificate_key a.key;\n  ssl_protocols TLSv1 TLSv1.2;\n  ssl_ciphers HIGH:!aNULL;\n  add_header X-Frame-Options DENY;\n  location / { proxy_pass http://127.0.0.1:3000; proxy_set_header Upgrade $http_upgrade; }\n }\n}\n";
    let imported = import_str("test.conf", text, dir.path()).expect("parses");
    let config = valid(&imported);
    assert!(config.edge.redirect_http_to_https);
    assert_eq!(config.edge.https_listen.len(), 2);
    let tls = config.tls.expect("tls");
    assert!(tls.certificates[0].cert.ends_with("a.crt") && tls.certificates[0].cert.is_absolute());
    assert_eq!(tls.hsts, None, "nginx sent no HSTS, so the edge sends none");
    assert!(tls.ciphers.is_empty());
    let upstream = &config.upstreams["127_0_0_1_3000"];
    assert_eq!(upstream.servers[0].addr, "127.0.0.1:3000");
    assert!(config.routes[0].websocket);
    assert!(note_for(&imported, "add_header X-Frame-Options").decide);
    assert_eq!(note_for(&imported, "ssl_protocols").kind, Kind::Differs);
    let health = note_for(&imported, "return https://");
    assert!(health.why.contains("/health"), "{health}");
}

#[test]
fn nginx_times_are_read_as_nginx_reads_them() {
    use translate::nginx_duration;
    assert_eq!(nginx_duration("65"), Some(Duration::from_secs(65)));
    assert_eq!(nginx_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(nginx_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(nginx_duration("1h 30m"), Some(Duration::from_secs(5400)));
    assert_eq!(nginx_duration("2d"), Some(Duration::from_secs(172_800)));
    assert_eq!(nginx_duration("soon"), None);
    assert_eq!(nginx_duration(""), None);
    assert_eq!(nginx_duration("5x"), None);
}

#[test]
fn an_unknown_directive_needs_a_decision_and_a_known_one_does_not() {
    let imported = imported("http {\n sendfile on;\n brotli on;\n}\n");
    assert!(!note_for(&imported, "sendfile").decide);
    let brotli = note_for(&imported, "brotli");
    assert!(brotli.decide && brotli.kind == Kind::NoEquivalent);
    let quiet =
        super::import_str("t.conf", "http { sendfile on; }\n", Path::new("/")).expect("parses");
    assert!(!quiet.needs_decision());
}

#[test]
fn client_clocks_and_the_stream_cap_are_carried_and_a_server_level_one_is_reported() {
    let imported = imported(
        "http {\n send_timeout 3s;\n client_body_timeout 20;\n http2_max_concurrent_streams 64;\n \
         server { listen 80; send_timeout 9s; location / { proxy_pass http://127.0.0.1:8000; } }\n}\n",
    );
    let config = valid(&imported);
    assert_eq!(config.edge.send_timeout, Duration::from_secs(3));
    assert_eq!(config.edge.client_body_timeout, Duration::from_secs(20));
    assert_eq!(config.edge.http2_max_concurrent_streams, 64);
    assert!(
        note_for(&imported, "send_timeout").decide,
        "a per-server value the edge cannot narrow is for the user to decide"
    );
}

#[test]
fn tls_and_grpc_upstreams_and_cleartext_http2_are_carried_and_check() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    edge::tls::generate_self_signed(&["billing.internal"], &cert, &key).expect("certificate");
    let (cert, key) = (cert.display(), key.display());
    let text = format!(
        "http {{\n upstream billing {{ server 127.0.0.1:8443; }}\n \
         server {{ listen 80 http2;\n  \
          location /billing/ {{ proxy_pass https://billing; proxy_ssl_verify on;\n   \
           proxy_ssl_trusted_certificate {cert}; proxy_ssl_name billing.internal;\n   \
           proxy_ssl_server_name on; proxy_ssl_certificate {cert}; proxy_ssl_certificate_key {key}; }}\n  \
          location /legacy/ {{ proxy_pass https://127.0.0.1:9443; }}\n  \
          location /grpc.Billing/ {{ grpc_pass grpc://127.0.0.1:9000; }}\n  \
          location /grpc.Secure/ {{ grpc_pass grpcs://127.0.0.1:9001; grpc_ssl_verify on;\n   \
           grpc_ssl_trusted_certificate {cert}; }}\n }}\n}}\n"
    );
    let imported = imported(&text);
    let config = valid(&imported);
    assert!(config.edge.http2_cleartext, "listen 80 http2: h2c");
    let billing = &config.upstreams["billing"];
    let tls = billing.tls.as_ref().expect("tls");
    assert_eq!(tls.server_name.as_deref(), Some("billing.internal"));
    assert!(tls.verify);
    assert!(
        tls.ca.is_some() && tls.cert.is_some() && tls.key.is_some(),
        "{tls:?}"
    );
    assert_eq!(billing.protocol, config::UpstreamProtocol::Http1);

    let route = |path: &str| {
        let r = config.routes.iter().find(|r| r.path == path).expect(path);
        &config.upstreams[&r.upstream]
    };
    let legacy = route("/legacy/");
    assert!(
        !legacy.tls.as_ref().expect("tls").verify,
        "nginx verified nothing here"
    );
    assert!(note_for(&imported, "proxy_pass https://127.0.0.1:9443").decide);
    let grpc = route("/grpc.Billing/");
    assert_eq!(grpc.protocol, config::UpstreamProtocol::H2);
    assert!(grpc.tls.is_none());
    let secure = route("/grpc.Secure/");
    assert_eq!(secure.protocol, config::UpstreamProtocol::H2);
    assert!(secure.tls.as_ref().expect("tls").verify);
}

#[test]
fn http3_is_carried_from_quic_listeners_and_stays_off_without_them() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    edge::tls::generate_self_signed(&["a.example"], &cert, &key).expect("certificate");
    let (cert, key) = (cert.display(), key.display());
    let server = |listens: &str, extra: &str| {
        format!(
            "http {{\n server {{ {listens}\n  ssl_certificate {cert}; ssl_certificate_key {key};\n  \
             {extra}\n  location / {{ proxy_pass http://127.0.0.1:8000; }} }}\n}}\n"
        )
    };
    // nginx 1.25's HTTP/3: a QUIC listener beside the TLS one, early data, its Alt-Svc.
    let with_quic = imported(&server(
        "listen 127.0.0.1:8443 ssl; listen 127.0.0.1:8443 quic reuseport;",
        "ssl_early_data on; quic_retry on; add_header Alt-Svc 'h3=\":8443\"; ma=86400';",
    ));
    let config = valid(&with_quic);
    assert!(config.edge.http3);
    assert!(config.edge.http3_early_data);
    assert_eq!(
        config.edge.https_listen.len(),
        1,
        "one address, TCP and UDP"
    );
    assert_eq!(note_for(&with_quic, "quic_retry").kind, Kind::ByDefault);
    assert_eq!(note_for(&with_quic, "add_header").kind, Kind::ByDefault);
    assert_eq!(note_for(&with_quic, "ssl_early_data").kind, Kind::Differs);

    // No QUIC listener: nginx served no HTTP/3, and neither does the import's edge.
    let without = imported(&server("listen 127.0.0.1:8443 ssl;", ""));
    let config = valid(&without);
    assert!(!config.edge.http3, "{}", without.toml);
    assert!(without.toml.contains("http3 = false"), "{}", without.toml);
}

#[test]
fn nginx_acme_module_becomes_tls_acme() {
    let dir = tempfile::tempdir().expect("dir");
    let roots = dir.path().join("roots.pem");
    edge::tls::generate_self_signed(&["ca.example"], &roots, &dir.path().join("k.pem"))
        .expect("certificate");
    let text = format!(
        "http {{\n\
         acme_issuer le {{\n  uri https://acme.example/directory;\n  contact mailto:ops@a.example;\n  \
         state_path /var/cache/nginx/acme-le;\n  accept_terms_of_service;\n  \
         ssl_trusted_certificate {};\n  external_account_key kid1 /etc/nginx/eab.key;\n }}\n\
         acme_shared_zone zone=acme:1M;\n\
         server {{ listen 127.0.0.1:8443 ssl; server_name shop.example .blog.example *.x.example;\n  \
         acme_certificate le;\n  ssl_certificate $acme_certificate;\n  \
         ssl_certificate_key $acme_certificate_key;\n  ssl_certificate_cache max=2;\n  \
         location / {{ proxy_pass http://127.0.0.1:8000; }} }}\n\
         server {{ listen 127.0.0.1:8080; location / {{ return 404; }} }}\n}}\n",
        roots.display()
    );
    let imported = imported(&text);
    let config = valid(&imported);
    let tls = config.tls.expect("tls");
    assert!(tls.certificates.is_empty(), "{}", imported.toml);
    let acme = tls.acme.expect("[tls.acme]");
    assert_eq!(acme.directory, "https://acme.example/directory");
    assert_eq!(acme.email.as_deref(), Some("ops@a.example"));
    assert_eq!(acme.domains, vec!["shop.example", "blog.example"]);
    // nginx's module validates by HTTP-01 unless told otherwise: the import keeps that.
    assert_eq!(acme.challenge, config::AcmeChallenge::Http01);
    assert_eq!(acme.storage, Path::new("/var/cache/nginx/acme-le"));
    assert_eq!(acme.ca.as_deref(), Some(roots.as_path()));
    assert!(note_for(&imported, "external_account_key").decide);
    assert!(
        note_for(&imported, "acme_certificate le").decide,
        "the wildcard"
    );
    assert_eq!(
        note_for(&imported, "acme_shared_zone").kind,
        Kind::ByDefault
    );
    assert!(
        !imported
            .notes
            .iter()
            .any(|n| n.directive.starts_with("ssl_certificate $")),
        "$acme_certificate is carried: {:#?}",
        imported.notes
    );
}
