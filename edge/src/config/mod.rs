//! Configuration: file (serde types) ▸ validate (every error, with file:line:col) ▸ model.
//!
//! The compiled runtime form lives in [`crate::snapshot`]; reloading in [`crate::reload`].

pub mod file;
pub mod model;
#[cfg(test)]
mod proptests;
pub mod validate;

pub use edge_syntax::ciphers::cipher_policy;
pub use model::*;
pub use validate::{validate, validate_with, ConfigErrors, Diagnostic, StartFiles, Validated};

use std::path::Path;

/// The embedded local default: the bundled services on loopback, HTTP on a non-root port.
pub const LOCAL_DEFAULT: &str = include_str!("../../../config/local.toml");
/// The name the embedded default is reported under.
pub const LOCAL_DEFAULT_NAME: &str = "<embedded local.toml>";

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Validated, ConfigErrors> {
    load_file_with(path, StartFiles::Skip)
}

/// Reads and validates a config file, with the files a starting edge reads treated as
/// `start_files` says.
pub fn load_file_with(path: &Path, start_files: StartFiles) -> Result<Validated, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => validate_with(&name, &text, start_files),
        Err(e) => Err(ConfigErrors {
            errors: vec![Diagnostic {
                file: name,
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO_CONFIG: &str = include_str!("../../../upstreams.toml");

    #[test]
    fn shipped_configs_are_valid() {
        let repo = validate("upstreams.toml", REPO_CONFIG).expect("upstreams.toml is valid");
        assert_eq!(repo.config.upstreams.len(), 8);
        assert_eq!(repo.config.routes.len(), 9);
        assert_eq!(repo.config.edge.https_listen.len(), 1);
        let cm = &repo.config.upstreams["content_manager"];
        assert_eq!(cm.balance, Balance::LeastConn);
        assert_eq!(cm.servers[0].max_fails, 3);
        let local = validate(LOCAL_DEFAULT_NAME, LOCAL_DEFAULT).expect("local default is valid");
        assert_eq!(
            local.config.edge.https_listen,
            vec!["127.0.0.1:8443".parse().expect("addr")]
        );
        assert!(!local.config.edge.redirect_http_to_https);
        assert!(local.config.edge.http_listen[0].ip().is_loopback());
        assert!(local
            .config
            .upstreams
            .values()
            .flat_map(|u| &u.servers)
            .all(|s| s.addr.starts_with("127.0.0.1:")));
    }

    #[test]
    fn every_mistake_is_reported_with_its_place() {
        let text = r#"[edge]
keepalive_timeout = "soon"
[upstreams.app]
servers = [ { addr = "app:80", weight = 0 } ]
shiny = true
[[routes]]
path = "/"
upstream = "nope"
[[routes]]
path = "/"
upstream = "app"
"#;
        let errors = validate("t.toml", text).expect_err("five mistakes").errors;
        let places: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(
            places,
            vec![(2, 21), (4, 41), (5, 1), (8, 12), (10, 8)],
            "{errors:#?}"
        );
        assert!(errors[0].message.contains("soon"));
        assert!(errors[1].message.contains("weight"));
        assert!(errors[2].message.contains("unknown key `shiny`"));
        assert!(errors[3].message.contains("unknown upstream `nope`"));
        assert!(errors[4].message.contains("duplicate route"));
        assert_eq!(
            errors[0].to_string(),
            format!("t.toml:2:21: {}", errors[0].message)
        );
    }

    #[test]
    fn a_value_outside_its_choices_is_named_with_the_choices_and_its_place() {
        let text = "[redis]\non_error = \"deny\"\n[zones.z]\nrate = \"1r/s\"\nstore = \"disk\"\n\
                    [upstreams.app]\nbalance = \"random\"\nservers = [ { addr = \"app:80\" } ]\n";
        let errors = validate("t.toml", text).expect_err("three choices").errors;
        let found: Vec<(usize, usize, &str)> = errors
            .iter()
            .map(|e| (e.line, e.column, e.message.as_str()))
            .collect();
        assert!(
            found.contains(&(2, 12, "on_error is \"local\" or \"allow\", not `deny`")),
            "{found:?}"
        );
        assert!(
            found.contains(&(5, 9, "store is \"local\" or \"redis\", not `disk`")),
            "{found:?}"
        );
        assert!(
            found.contains(&(
                7,
                11,
                "balance is \"round_robin\", \"least_conn\" or \"ip_hash\", not `random`"
            )),
            "{found:?}"
        );
    }

    #[test]
    fn type_errors_and_syntax_errors_have_places_too() {
        let errors = validate("t.toml", "[edge]\nthreads = \"many\"\n")
            .expect_err("a type error")
            .errors;
        assert_eq!((errors[0].line, errors[0].column), (2, 11));
        let errors = validate("t.toml", "[edge\n")
            .expect_err("a syntax error")
            .errors;
        assert_eq!(errors[0].line, 1);
    }

    #[test]
    fn public_admin_listener_needs_an_explicit_setting() {
        let text = "[edge]\nadmin_listen = \"0.0.0.0:9180\"\n";
        assert!(validate("t.toml", text).is_err());
        let text = "[edge]\nadmin_listen = \"0.0.0.0:9180\"\nadmin_allow_public = true\n";
        assert!(validate("t.toml", text).is_ok());
    }

    #[test]
    fn the_admin_listener_cannot_share_a_client_address() {
        let text =
            "[edge]\nhttp_listen = [\"127.0.0.1:8080\"]\nadmin_listen = \"127.0.0.1:8080\"\n";
        let errors = validate("t.toml", text).expect_err("shared").errors;
        assert!(
            errors[0].message.contains("also a client listener"),
            "{errors:?}"
        );
        assert_eq!(errors[0].line, 3);
    }

    #[test]
    fn tables_made_only_by_arrays_of_tables_are_read_and_errors_keep_their_place() {
        // Valid TOML that the toml crate gives no span for: `[upstreams.app]` and `[tls]`
        // exist only through their arrays of tables.
        let text = "[[routes]]\npath = \"/\"\nupstream = \"app\"\n\n\
                    [[upstreams.app.servers]]\naddr = \"127.0.0.1:1\"\n\
                    [[upstreams.app.servers]]\naddr = \"127.0.0.1:2\"\n\
                    [[tls.certificates]]\ncert = \"a.crt\"\nkey = \"a.key\"\n";
        let validated = validate("t.toml", text).expect("valid");
        assert_eq!(validated.config.upstreams["app"].servers.len(), 2);
        assert_eq!(validated.config.tls.expect("tls").certificates.len(), 1);
        // A mistake below the added header is reported where it is in the file.
        let text = "[[upstreams.app.servers]]\naddr = \"127.0.0.1:1\"\nbogus = 1\n\
                    [[routes]]\npath = \"/\"\nupstream = \"app\"\nmax_fails = 2\n";
        let errors = validate("t.toml", text).expect_err("unknown keys").errors;
        let places: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(places, [(3, 1), (7, 1)], "{errors:?}");
    }

    #[test]
    fn listeners_on_port_0_never_collide() {
        let text = "[edge]\nhttp_listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n\
                    admin_listen = \"127.0.0.1:0\"\n";
        assert!(validate("t.toml", text).is_ok());
        let text = "[edge]\nhttp_listen = [\"127.0.0.1:81\", \"127.0.0.1:81\"]\n";
        assert!(validate("t.toml", text).is_err(), "a fixed port twice");
    }

    #[test]
    fn https_needs_tls_and_old_protocols_are_refused() {
        let text = "[edge]\nhttps_listen = [\"0.0.0.0:443\"]\n";
        assert!(validate("t.toml", text).is_err());
        let text =
            "[tls]\ncertificates = [{ cert = \"a\", key = \"b\" }]\nprotocols = [\"TLSv1.1\"]\n";
        let errors = validate("t.toml", text).expect_err("TLSv1.1").errors;
        assert!(errors[0].message.contains("never offered"));
    }

    /// The `[tls]` settings of a valid config text.
    fn tls_of(text: &str) -> TlsSettings {
        validate("t.toml", text)
            .expect("valid")
            .config
            .tls
            .expect("tls")
    }

    /// `[tls] hsts` is written into answer heads as it is: anything that is not a header
    /// value (a line break above all, any control character) is refused at its place.
    #[test]
    fn hsts_must_be_a_header_value() {
        let tls = "[tls]\ncertificates = [{ cert = \"a\", key = \"b\" }]\n";
        let ok = format!("{tls}hsts = \"max-age=60; includeSubDomains\"\n");
        let hsts = tls_of(&ok).hsts;
        assert_eq!(hsts.as_deref(), Some("max-age=60; includeSubDomains"));
        for bad in [
            "max-age=60\\r\\nSet-Cookie: a=b",
            "max-age=60\\n",
            "max-age=60\\u0000",
            "max-age=60\\u007f",
        ] {
            let text = format!("{tls}hsts = \"{bad}\"\n");
            let errors = validate("t.toml", &text).expect_err(bad).errors;
            assert_eq!((errors[0].line, errors[0].column), (3, 8), "{bad}");
            assert!(errors[0].message.contains("header value"), "{bad}");
        }
    }

    #[test]
    fn acme_keys_are_checked_with_their_places_and_defaults_follow_the_listeners() {
        let routes = "[upstreams.app]\nservers = [ { addr = \"app:80\" } ]\n\
                      [[routes]]\nhost = \"shop.example\"\npath = \"/\"\nupstream = \"app\"\n\
                      [[routes]]\nhost = \"10.0.0.1\"\npath = \"/\"\nupstream = \"app\"\n";
        // Defaults: the routes' host names (not addresses), TLS-ALPN-01 with an https listener.
        let text = format!("[edge]\nhttps_listen = [\"0.0.0.0:443\"]\n[tls]\n[tls.acme]\n{routes}");
        let acme = tls_of(&text).acme;
        let acme = acme.expect("acme");
        assert_eq!(acme.domains, vec!["shop.example".to_string()]);
        assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(acme.directory, DEFAULT_ACME_DIRECTORY);
        // Without an https listener the default is HTTP-01.
        let text = format!("[edge]\nhttps_listen = []\n[tls]\n[tls.acme]\n{routes}");
        let acme = tls_of(&text).acme;
        assert_eq!(acme.expect("acme").challenge, AcmeChallenge::Http01);
        // Each mistake at its place.
        let text = "[edge]\nhttps_listen = [\"0.0.0.0:443\"]\n[tls]\n[tls.acme]\n\
                    directory = \"http://ca.example/dir\"\n\
                    domains = [\"*.shop.example\", \"ok.example\"]\n\
                    challenge = \"dns-01\"\nstore = \"redis\"\nca = \"/nonexistent/roots.pem\"\n\
                    eab = { kid = \"k\", hmac_key = \"not base64!\" }\n";
        let errors = validate("t.toml", text).expect_err("mistakes").errors;
        let found: Vec<(usize, usize, &str)> = errors
            .iter()
            .map(|e| (e.line, e.column, e.message.as_str()))
            .collect();
        let at = |line: usize, words: &str| {
            assert!(
                found
                    .iter()
                    .any(|(l, _, m)| *l == line && m.contains(words)),
                "no error at line {line} with `{words}`: {found:#?}"
            );
        };
        at(5, "https:// URL");
        at(6, "no wildcards");
        at(7, "unknown challenge `dns-01`");
        at(9, "/nonexistent/roots.pem");
        at(10, "base64url");
        assert!(found.len() == 5, "{found:#?}");

        // The contract's own lines: an empty binding is none; store = "redis" without a
        // [redis] section takes its default url, as a zone does, with a warning.
        let text = format!(
            "[edge]\nhttps_listen = [\"0.0.0.0:443\"]\n[tls]\n[tls.acme]\nstore = \"redis\"\n\
             eab = {{ kid = \"\", hmac_key = \"\" }}\n{routes}"
        );
        let validated = validate("t.toml", &text).expect("valid");
        let acme = validated.config.tls.expect("tls").acme.expect("acme");
        assert_eq!(acme.eab, None);
        assert_eq!(acme.store, AcmeStore::Redis);
        assert_eq!(validated.config.redis.url, DEFAULT_REDIS_URL);
        assert!(
            validated
                .warnings
                .iter()
                .any(|w| w.message.contains(DEFAULT_REDIS_URL)),
            "{:?}",
            validated.warnings
        );
    }

    /// A cheap deterministic fuzz: thousands of byte-level mutations of the shipped config
    /// must each give a result, never a panic.
    #[test]
    fn mutated_configs_never_panic() {
        let base = REPO_CONFIG.as_bytes();
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"[]{}=\",.:/_-0123456789abcdefghijklmnopqrstuvwxyz \n#*'\\";
        for _ in 0..1500 {
            let mut bytes = base.to_vec();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = validate("fuzz.toml", &text);
        }
    }
}
