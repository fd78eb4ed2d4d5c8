use super::*;
use crate::config;

fn snapshot(text: &str) -> Arc<Snapshot> {
    let validated = config::validate("test.toml", text).expect("valid");
    Arc::new(Snapshot::compile("test.toml", validated.config, None))
}

const CONFIG: &str = r#"
[edge]
http_listen = ["127.0.0.1:1"]
admin_listen = "127.0.0.1:2"
[zones.api]
rate = "1r/m"
[upstreams.api]
servers = [ { addr = "127.0.0.1:10" } ]
[upstreams.sticky]
balance = "ip_hash"
servers = [ { addr = "127.0.0.1:11" }, { addr = "127.0.0.1:12" }, { addr = "127.0.0.1:13" } ]
[upstreams.admin]
servers = [ { addr = "127.0.0.1:14" } ]
[[routes]]
path = "/"
upstream = "api"
[[routes]]
path = "/api/"
upstream = "api"
limit = [ { zone = "api", burst = 1, nodelay = true } ]
[[routes]]
path = "/api/"
host = "tenant.example"
upstream = "sticky"
[[routes]]
path = "/admin/"
upstream = "admin"
allow = ["10.0.0.0/8"]
"#;

#[tokio::test]
async fn the_longest_prefix_wins_and_the_routes_it_beat_are_named() {
    let s = snapshot(CONFIG);
    let e = explain(
        &s,
        &Question::new("GET", "http://edge.test/api/items"),
        false,
        None,
    )
    .await
    .expect("explains");
    let route = e.route.as_ref().expect("route");
    assert_eq!(
        (route.path.as_str(), route.upstream.as_str()),
        ("/api/", "api")
    );
    assert_eq!(e.beaten.len(), 1, "{:?}", e.beaten);
    assert_eq!(e.beaten[0].path, "/");
    assert!(
        e.beaten[0].why.contains("shorter prefix"),
        "{}",
        e.beaten[0].why
    );
    assert_eq!(e.verdict.action, "proxy");
    assert_eq!(e.zones[0].zone, "api");
    assert!(
        e.zones[0].standing.is_none(),
        "no live state from a config file"
    );
    // A host's own routes come before routes for any host.
    let e = explain(
        &s,
        &Question::new("GET", "http://tenant.example/api/x"),
        false,
        None,
    )
    .await
    .expect("explains");
    assert_eq!(
        e.route.as_ref().map(|r| r.upstream.as_str()),
        Some("sticky")
    );
    let other = e
        .beaten
        .iter()
        .find(|b| b.path == "/api/")
        .expect("the any-host /api/");
    assert!(other.why.contains("tried before"), "{}", other.why);
    let text = render(&e);
    assert!(
        text.contains("route tenant.example/api/ -> upstream sticky"),
        "{text}"
    );
    assert!(text.contains("beat /api/:"), "{text}");
}

#[tokio::test]
async fn an_allow_list_refusal_names_the_client_and_the_list() {
    let s = snapshot(CONFIG);
    let mut q = Question::new("GET", "http://edge.test/admin/x");
    q.peer = "192.168.1.5".parse().expect("ip");
    let e = explain(&s, &q, false, None).await.expect("explains");
    assert_eq!(
        (e.verdict.action.as_str(), e.verdict.status),
        ("refuse", Some(403))
    );
    let allow = e.allow.as_ref().expect("allow");
    assert!(!allow.admitted && allow.allow == ["10.0.0.0/8"]);
    q.peer = "10.9.9.9".parse().expect("ip");
    let e = explain(&s, &q, false, None).await.expect("explains");
    assert_eq!(
        e.allow.as_ref().and_then(|a| a.matched.as_deref()),
        Some("10.0.0.0/8")
    );
    assert_eq!(e.verdict.action, "proxy");
}

#[tokio::test]
async fn a_live_zone_shows_the_standing_and_would_reject_without_counting() {
    let s = snapshot(CONFIG);
    let route = s.router.find("edge.test", "/api/").cloned().expect("route");
    let client: IpAddr = "127.0.0.1".parse().expect("ip");
    let q = Question::new("GET", "http://edge.test/api/x");
    let first = explain(&s, &q, true, None).await.expect("explains");
    assert_eq!(
        first.zones[0].standing.as_ref().map(|z| z.next.as_str()),
        Some("pass")
    );
    // Two requests fill rate 1r/m with burst 1; explaining counts none of them.
    for _ in 0..2 {
        assert!(matches!(
            crate::ratelimit::admit(&route.limit, client).await,
            crate::ratelimit::Admission::Pass { .. }
        ));
    }
    for _ in 0..3 {
        let e = explain(&s, &q, true, None).await.expect("explains");
        let standing = e.zones[0].standing.as_ref().expect("standing");
        assert_eq!(standing.next, "reject");
        assert!(
            standing.excess > 0.9 && standing.retry_after_ms > 0,
            "{standing:?}"
        );
        assert_eq!(
            (e.verdict.action.as_str(), e.verdict.status),
            ("refuse", Some(429))
        );
    }
    // Another client is not affected.
    let mut other = q.clone();
    other.peer = "10.0.0.1".parse().expect("ip");
    assert_eq!(
        explain(&s, &other, true, None)
            .await
            .expect("explains")
            .verdict
            .action,
        "proxy"
    );
}

#[tokio::test]
async fn the_balancer_preview_is_the_pick_and_moves_nothing() {
    let s = snapshot(CONFIG);
    let sticky = s.upstreams["sticky"].clone();
    for ip in ["10.1.2.3", "172.16.5.4", "192.168.77.1"] {
        let mut q = Question::new("GET", "http://tenant.example/api/x");
        q.peer = ip.parse().expect("ip");
        let e = explain(&s, &q, true, None).await.expect("explains");
        let mut attempts = crate::upstream::Attempts::default();
        let real = sticky.select(q.peer, &mut attempts).expect("a server");
        let b = e.balance.as_ref().expect("balance");
        assert_eq!(
            b.pick.as_deref(),
            Some(sticky.servers[real].label.as_str()),
            "{ip}"
        );
        assert!(
            b.why
                .contains(&format!("{}.0/24", ip.rsplit_once('.').expect("dot").0)),
            "{}",
            b.why
        );
    }
    // Round robin: previews do not advance the rotation.
    let api = s.upstreams["api"].clone();
    let client: IpAddr = "127.0.0.1".parse().expect("ip");
    let seen = api.preview(client, false);
    for _ in 0..5 {
        assert_eq!(api.preview(client, false), seen);
    }
}

#[tokio::test]
async fn redirects_body_limits_forwarded_headers_and_compression() {
    let s = snapshot(&CONFIG.replace(
        "admin_listen = \"127.0.0.1:2\"",
        "admin_listen = \"127.0.0.1:2\"\nhttps_listen = [\"127.0.0.1:3\"]\n[tls]\ncertificates = [ { cert = \"a.crt\", key = \"a.key\" } ]\n[edge.x]",
    ).replace("[edge.x]\n", ""));
    let mut q = Question::new("GET", "http://edge.test/api/x?y=1");
    let e = explain(&s, &q, false, None).await.expect("explains");
    assert_eq!(
        (e.verdict.action.as_str(), e.verdict.status),
        ("redirect", Some(308))
    );
    assert_eq!(
        e.verdict.location.as_deref(),
        Some("https://edge.test:3/api/x?y=1")
    );
    q.url = "https://edge.test/api/x".into();
    q.headers = vec![
        ("Content-Length".into(), (11u64 << 20).to_string()),
        ("Accept-Encoding".into(), "br;q=0, gzip".into()),
        ("Connection".into(), "keep-alive".into()),
    ];
    let e = explain(&s, &q, false, None).await.expect("explains");
    assert_eq!(e.verdict.status, Some(413));
    assert_eq!(e.compression.accepted, ["gzip"]);
    let timeouts = e.timeouts.as_ref().expect("timeouts");
    assert_eq!(
        timeouts.client_body,
        Some(60.0),
        "the body's clock, as it has one"
    );
    assert_eq!(timeouts.client_send, 60.0);
    assert!(render(&e).contains("(send_timeout)"), "{}", render(&e));
    let names: Vec<&str> = e.upstream_headers.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "host",
        "x-forwarded-for",
        "x-real-ip",
        "x-forwarded-proto",
        "x-request-id",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(
        !names.contains(&"connection"),
        "hop-by-hop fields are not sent: {names:?}"
    );
    let proto = e
        .upstream_headers
        .iter()
        .find(|(n, _)| n == "x-forwarded-proto")
        .map(|(_, v)| v.as_str());
    assert_eq!(proto, Some("https"));
    let e = explain(
        &s,
        &Question::new("GET", "https://edge.test/nothing-here"),
        false,
        None,
    )
    .await
    .expect("explains");
    assert_eq!(e.route.as_ref().map(|r| r.path.as_str()), Some("/"));
    let e = explain(
        &s,
        &Question::new("CONNECT", "https://edge.test/"),
        false,
        None,
    )
    .await
    .expect("explains");
    assert_eq!(e.verdict.status, Some(405));
}

#[tokio::test]
async fn how_the_servers_are_reached_is_said() {
    let text = CONFIG.replace(
        "[upstreams.admin]\n",
        "[upstreams.admin]\nprotocol = \"h2\"\ntls = { server_name = \"admin.internal\", verify = false }\n",
    );
    let s = snapshot(&text);
    let plain = explain(&s, &Question::new("GET", "http://edge.test/x"), false, None)
        .await
        .expect("explains");
    assert_eq!(
        plain.balance.as_ref().expect("balance").reached,
        "HTTP/1.1 (cleartext)"
    );
    let mut question = Question::new("GET", "http://edge.test/admin/x");
    question.peer = "10.1.2.3".parse().expect("ip");
    let admin = explain(&s, &question, false, None).await.expect("explains");
    let reached = &admin.balance.as_ref().expect("balance").reached;
    assert!(
        reached.starts_with("HTTP/2 over TLS") && reached.contains("NOT verified"),
        "{reached}"
    );
    assert!(render::render(&admin).contains("reached: HTTP/2 over TLS"));
}

#[tokio::test]
async fn what_a_client_may_speak_is_said_with_http3_and_early_data() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    crate::tls::generate_self_signed(&["edge.test"], &cert, &key).expect("certificate");
    let with_tls = |edge: &str| {
        CONFIG.replace(
            "admin_listen = \"127.0.0.1:2\"\n",
            &format!(
                "admin_listen = \"127.0.0.1:2\"\nhttps_listen = [\"127.0.0.1:8443\"]\n{edge}\n\
                 [tls]\ncertificates = [ {{ cert = \"{}\", key = \"{}\" }} ]\n",
                cert.display(),
                key.display()
            ),
        )
    };
    let s = snapshot(&with_tls("http3_early_data = true"));
    let get = explain(
        &s,
        &Question::new("GET", "https://edge.test/x"),
        false,
        None,
    )
    .await
    .expect("explains");
    assert!(
        get.client_protocols.contains("HTTP/3 on UDP port 8443"),
        "{}",
        get.client_protocols
    );
    assert!(get.client_protocols.contains("early data it is served"));
    let post = explain(
        &s,
        &Question::new("POST", "https://edge.test/x"),
        false,
        None,
    )
    .await
    .expect("explains");
    assert!(
        post.client_protocols.contains("425"),
        "{}",
        post.client_protocols
    );
    assert!(render::render(&post).contains("over: HTTP/1.1 or HTTP/2"));

    let off = snapshot(&with_tls("http3 = false"));
    let get = explain(
        &off,
        &Question::new("GET", "https://edge.test/x"),
        false,
        None,
    )
    .await
    .expect("explains");
    assert!(
        get.client_protocols.contains("no HTTP/3"),
        "{}",
        get.client_protocols
    );
    let plain = explain(
        &off,
        &Question::new("GET", "http://edge.test/x"),
        false,
        None,
    )
    .await
    .expect("explains");
    assert_eq!(plain.client_protocols, "HTTP/1.1");
}

#[tokio::test]
async fn the_certificate_a_name_gets_is_said_with_where_it_comes_from() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    crate::tls::generate_self_signed(&["edge.test"], &cert, &key).expect("certificate");
    let config = CONFIG.replace(
        "admin_listen = \"127.0.0.1:2\"\n",
        &format!(
            "admin_listen = \"127.0.0.1:2\"\nhttps_listen = [\"127.0.0.1:8443\"]\n\
             [tls]\ncertificates = [ {{ cert = \"{}\", key = \"{}\" }} ]\n\
             [tls.acme]\ndomains = [\"edge.test\", \"shop.test\"]\nstorage = \"{}\"\n",
            cert.display(),
            key.display(),
            dir.path().display()
        ),
    );
    let s = snapshot(&config);
    let tls = s.config.tls.as_ref().expect("tls");
    let certificates = crate::tls::Certificates::load(&tls.certificates).expect("loads");
    let ask = async |url: &str| {
        explain(&s, &Question::new("GET", url), false, Some(&certificates))
            .await
            .expect("explains")
            .certificate
    };
    // A file names edge.test: it wins over ACME's.
    let file = ask("https://edge.test/x").await;
    assert!(file.contains(&cert.display().to_string()), "{file}");
    assert!(
        file.contains("wins over ACME from https://acme-v02"),
        "{file}"
    );
    // shop.test is ACME's; until its order is done the default file is served.
    let pending = ask("https://shop.test/x").await;
    assert!(
        pending.starts_with("ACME from https://acme-v02.api.letsencrypt.org/directory (tls-alpn-01, store local), once ordered; until then none names shop.test: the default"),
        "{pending}"
    );
    // Once obtained, it is ACME's.
    let issued = crate::tls::Certificates::load(&tls.certificates).expect("loads");
    certificates.set_acme(
        "shop.test",
        issued.served_for("edge.test").expect("a key").1,
    );
    assert!(ask("https://shop.test/x")
        .await
        .starts_with("obtained by ACME"));
    // Plain HTTP has no certificate to speak of.
    assert_eq!(ask("http://shop.test/x").await, "");
}
