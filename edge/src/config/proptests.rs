//! Property tests over the parser and validator: no input panics, every error points into
//! the file, and a config that validates compiles. Two generators: arbitrary text, and
//! documents built from the real keys with values of every shape (the one that reaches the
//! validator's deeper checks). Case counts are set below; `PROPTEST_CASES` raises them.

use super::validate;
use proptest::prelude::*;

/// Every diagnostic names a place inside `text` (or line 0 for whole-file problems).
fn check_diagnostics(text: &str) {
    let lines = text.split('\n').count();
    if let Err(errors) = validate("prop.toml", text) {
        assert!(!errors.errors.is_empty(), "an Err without errors");
        for e in &errors.errors {
            assert!(e.line <= lines + 1, "line {} of {lines}: {e}", e.line);
            assert!(!e.message.is_empty());
        }
    }
}

/// A TOML value of any shape, including ones the keys never take.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("\"\"".to_string()),
        "-?[0-9]{1,12}".prop_map(|s| s),
        "\"[0-9]{0,4}(ms|s|m|h|k|K|g|r/s|r/m|x)?\"",
        "\"[a-zA-Z0-9_./:*-]{0,24}\"",
        "\"(0\\.0\\.0\\.0|127\\.0\\.0\\.1|\\[::1\\]|10\\.[0-9]{1,3}\\.0\\.1):[0-9]{1,5}\"",
        "\"[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,2}\"",
        Just("true".to_string()),
        Just("false".to_string()),
        Just("1.5".to_string()),
        "\"(round_robin|least_conn|ip_hash|local|redis|allow|stdout|off|TLSv1\\.2|TLSv1\\.3|TLSv1)\"",
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|kv| {
                let fields: Vec<String> =
                    kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", fields.join(", "))
            }),
        ]
    })
}

/// Real keys of every section, plus a few that are not.
fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "http_listen",
        "https_listen",
        "admin_listen",
        "admin_allow_public",
        "threads",
        "trusted_proxies",
        "redirect_http_to_https",
        "access_log",
        "keepalive_timeout",
        "keepalive_requests",
        "client_header_timeout",
        "client_body_timeout",
        "http2_max_concurrent_streams",
        "client_max_body_size",
        "client_body_buffer_size",
        "max_connections_per_client",
        "max_uri_size",
        "max_header_size",
        "max_headers",
        "resolver",
        "dns_min_ttl",
        "certificates",
        "cert",
        "key",
        "protocols",
        "ciphers",
        "hsts",
        "enabled",
        "min_length",
        "level",
        "types",
        "url",
        "on_error",
        "rate",
        "store",
        "max_clients",
        "balance",
        "keepalive",
        "connect_timeout",
        "read_timeout",
        "send_timeout",
        "next_upstream_tries",
        "servers",
        "addr",
        "weight",
        "max_fails",
        "fail_timeout",
        "health",
        "path",
        "interval",
        "timeout",
        "rise",
        "fall",
        "start_period",
        "host",
        "upstream",
        "limit",
        "zone",
        "burst",
        "nodelay",
        "dry_run",
        "allow",
        "preserve_host",
        "websocket",
        "strip_prefix",
        "nonsense",
    ])
    .prop_map(str::to_string)
}

fn section() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[edge]".to_string()),
        Just("[tls]".to_string()),
        Just("[gzip]".to_string()),
        Just("[redis]".to_string()),
        "\\[zones\\.[a-z]{1,6}\\]",
        "\\[upstreams\\.[a-z]{1,6}\\]",
        Just("[[routes]]".to_string()),
        Just("[other]".to_string()),
    ]
}

/// A document: sections with key = value lines.
fn document() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (section(), prop::collection::vec((key(), value()), 0..6)),
        0..8,
    )
    .prop_map(|sections| {
        let mut text = String::new();
        for (header, lines) in sections {
            text.push_str(&header);
            text.push('\n');
            for (k, v) in lines {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
        check_diagnostics(&text);
    }

    #[test]
    fn documents_of_real_keys_never_panic_and_compile_when_valid(text in document()) {
        check_diagnostics(&text);
        if let Ok(valid) = validate("prop.toml", &text) {
            // Names would be looked up in DNS; only literal addresses are compiled here.
            let literal = valid.config.upstreams.values().flat_map(|u| &u.servers)
                .all(|s| s.addr.parse::<std::net::SocketAddr>().is_ok());
            let local = valid.config.zones.values().all(|z| z.store == super::ZoneStore::Local);
            if literal && local {
                let snapshot = crate::snapshot::Snapshot::compile("prop.toml", valid.config.clone(), None);
                let again = crate::snapshot::Snapshot::compile("prop.toml", valid.config, Some(&snapshot));
                prop_assert_eq!(snapshot.upstreams.len(), again.upstreams.len());
            }
        }
    }
}
