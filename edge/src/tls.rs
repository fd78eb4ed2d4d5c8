//! TLS: certificates chosen by SNI and reloaded when their files change, and the crypto
//! provider offering the suites the config's cipher policy ([`cipher_policy`]) allows.
//!
//! The first certificate is the default for clients that send no (or an unknown) server
//! name. A certificate renewal on disk is picked up within [`WATCH_INTERVAL`] without a
//! restart; connections already open keep theirs, and a broken new file keeps the old
//! certificate and logs why. Each certificate's OCSP response is stapled as [`crate::ocsp`]
//! keeps it.

use crate::config::{cipher_policy, CertificatePaths, OcspSource, TlsSettings, TlsVersion};
use crate::held;
use crate::ocsp::stapler::{CertView, Staple};
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SupportedCipherSuite;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often certificate files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Why certificates or the TLS settings cannot be used; the text names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("[tls] leaves no cipher suite to offer")]
    NoCipherSuite,
    /// (The error is in the message, not a `source`: a report of the chain said it twice.)
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: no certificate in the file")]
    NoCertificate { path: String },
    #[error("{path}: no private key in the file")]
    NoKey { path: String },
    /// PEM, key or X.509 contents the parsers refuse.
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{cert} and {key} do not belong together: {reason}")]
    Mismatch {
        cert: String,
        key: String,
        reason: String,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |error| TlsError::Io {
        path: path.display().to_string(),
        error,
    }
}

fn unreadable<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> TlsError + '_ {
    move |e| TlsError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The crypto provider for the listeners: ring's, with the suites `tls` allows.
pub fn crypto_provider(tls: &TlsSettings) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    let (allowed, _) = cipher_policy(&tls.ciphers);
    let tls12 = tls.protocols.contains(&TlsVersion::Tls12);
    let tls13 = tls.protocols.contains(&TlsVersion::Tls13);
    provider.cipher_suites.retain(|suite| match suite {
        SupportedCipherSuite::Tls13(_) => tls13,
        SupportedCipherSuite::Tls12(_) => {
            let name = format!("{:?}", suite.suite());
            tls12 && allowed.as_ref().is_none_or(|a| a.contains(&name.as_str()))
        }
    });
    if provider.cipher_suites.is_empty() {
        return Err(TlsError::NoCipherSuite);
    }
    Ok(provider)
}

/// One loaded certificate and the names it serves.
#[derive(Clone)]
struct Loaded {
    names: Vec<String>,
    /// What handshakes get: the chain, the key, and the stapled OCSP response if any.
    key: Arc<CertifiedKey>,
}

/// The certificates in use, swapped whole when a file changes or a staple does.
pub struct Certificates {
    paths: Vec<CertificatePaths>,
    current: ArcSwap<Vec<Loaded>>,
    /// Certificates obtained by ACME, by name; the files win for their names.
    acme: ArcSwap<std::collections::HashMap<String, Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 answers (RFC 8737), by name, while an order waits for validation.
    alpn_challenges: ArcSwap<std::collections::HashMap<String, Arc<CertifiedKey>>>,
    /// Per certificate: the leaf a stapled OCSP response is for, and the response.
    staples: Mutex<Vec<Option<Staple>>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("paths", &self.paths)
            .finish()
    }
}

impl Certificates {
    /// Loads every configured certificate; any error is fatal here (at start).
    pub fn load(paths: &[CertificatePaths]) -> Result<Arc<Certificates>, TlsError> {
        let loaded = load_all(paths)?;
        Ok(Arc::new(Certificates {
            paths: paths.to_vec(),
            current: ArcSwap::from_pointee(loaded),
            acme: ArcSwap::default(),
            alpn_challenges: ArcSwap::default(),
            staples: Mutex::new(vec![None; paths.len()]),
        }))
    }

    /// Serves `key` (obtained by ACME) for `name` from the next handshake on.
    pub fn set_acme(&self, name: &str, key: Arc<CertifiedKey>) {
        self.acme.rcu(|all| {
            let mut all = std::collections::HashMap::clone(all);
            all.insert(name.to_ascii_lowercase(), key.clone());
            all
        });
    }

    /// The certificate a handshake for `name` gets, and where it comes from: "file" (a
    /// configured file names it, exactly or by wildcard), "acme", or "default" (the first
    /// file, else any ACME certificate: no certificate names it).
    pub fn served_for(&self, name: &str) -> Option<(&'static str, Arc<CertifiedKey>)> {
        self.choose(Some(name))
    }

    /// The certificate ACME obtained for `name`, served or not.
    pub fn acme_for(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.acme.load().get(&name.to_ascii_lowercase()).cloned()
    }

    /// Where a name's certificate comes from, worded for `edge explain`.
    pub fn describe(&self, name: &str) -> String {
        let names = |key: &Arc<CertifiedKey>| {
            key.cert
                .first()
                .and_then(|c| names_of(c.as_ref()).ok())
                .unwrap_or_default()
                .join(", ")
        };
        let file_of = |key: &Arc<CertifiedKey>| {
            let all = self.current.load();
            all.iter()
                .position(|l| Arc::ptr_eq(&l.key, key) || l.key.cert == key.cert)
                .and_then(|i| self.paths.get(i))
                .map_or_else(String::new, |p| p.cert.display().to_string())
        };
        match self.choose(Some(name)) {
            Some(("file", key)) => format!("{} (for {})", file_of(&key), names(&key)),
            Some(("acme", _)) => "obtained by ACME".into(),
            Some((_, key)) if !file_of(&key).is_empty() => format!(
                "none names {name}: the default, {} (for {})",
                file_of(&key),
                names(&key)
            ),
            Some(_) => format!("none names {name}: the default, one obtained by ACME"),
            None => "none: no certificate is loaded".into(),
        }
    }

    /// Sets the TLS-ALPN-01 answers: a challenge certificate per name (none: no challenge
    /// pending).
    pub fn set_alpn_challenges(
        &self,
        answers: std::collections::HashMap<String, Arc<CertifiedKey>>,
    ) {
        self.alpn_challenges.store(Arc::new(answers));
    }

    /// The names served by each certificate, in order (the first is the default).
    pub fn names(&self) -> Vec<Vec<String>> {
        self.current
            .load()
            .iter()
            .map(|l| l.names.clone())
            .collect()
    }

    /// Re-reads the files; a broken file keeps the certificates in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load_all(&self.paths)?;
        let staples = held::lock(&self.staples);
        self.current.store(Arc::new(with_staples(loaded, &staples)));
        Ok(())
    }

    /// Staples `staple` (the leaf it is for, and the DER response) to certificate `index`
    /// from the next handshake on; `None` stops stapling it.
    pub fn set_staple(&self, index: usize, staple: Option<Staple>) {
        let mut staples = held::lock(&self.staples);
        if let Some(slot) = staples.get_mut(index) {
            *slot = staple;
        }
        let loaded = self.current.load().as_ref().clone();
        self.current.store(Arc::new(with_staples(loaded, &staples)));
    }

    /// Keeps each certificate's OCSP response stapled (ocsp.rs), on a thread (and runtime)
    /// of its own so that no handshake ever waits for a responder.
    pub fn staple(self: &Arc<Self>, refresh: Duration) -> std::io::Result<()> {
        if self.paths.iter().all(|p| p.ocsp == OcspSource::Off) {
            return Ok(());
        }
        let certs = self.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("ocsp".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut stapler = crate::ocsp::stapler::Stapler::new(refresh);
                    let names: Vec<String> = certs
                        .paths
                        .iter()
                        .map(|p| p.cert.display().to_string())
                        .collect();
                    loop {
                        let loaded = certs.current.load_full();
                        let views: Vec<CertView<'_>> = loaded
                            .iter()
                            .zip(&certs.paths)
                            .zip(&names)
                            .map(|((l, p), name)| CertView {
                                name,
                                source: &p.ocsp,
                                leaf: l.key.cert.first().map_or(&[][..], |c| c.as_ref()),
                                issuer: l.key.cert.get(1).map(|c| c.as_ref()),
                            })
                            .collect();
                        for change in stapler.tick(&views, crate::ocsp::unix_now()).await {
                            certs.set_staple(change.index, change.staple);
                        }
                        tokio::time::sleep(WATCH_INTERVAL).await;
                    }
                })
            })?;
        Ok(())
    }

    /// Checks the files' modification times every [`WATCH_INTERVAL`] and reloads on change.
    pub fn watch(self: &Arc<Self>) -> std::io::Result<()> {
        let certs = self.clone();
        std::thread::Builder::new()
            .name("cert-watch".into())
            .spawn(move || {
                let mut stamps = certs.stamps();
                loop {
                    std::thread::sleep(WATCH_INTERVAL);
                    let now = certs.stamps();
                    if now == stamps {
                        continue;
                    }
                    // Let a writer finish the pair (cert and key are often written apart).
                    std::thread::sleep(Duration::from_millis(200));
                    stamps = certs.stamps();
                    match certs.reload() {
                        Ok(()) => tracing::info!(names = ?certs.names(), "TLS certificates reloaded"),
                        Err(e) => tracing::error!(
                            error = %e,
                            "TLS certificate files changed but cannot be loaded; keeping the old ones"
                        ),
                    }
                }
            })?;
        Ok(())
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        self.paths
            .iter()
            .flat_map(|p| [modified(&p.cert), modified(&p.key)])
            .collect()
    }

    fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.choose(server_name).map(|(_, key)| key)
    }

    /// Files first (exact name, then wildcard), then ACME's, then the default.
    fn choose(&self, server_name: Option<&str>) -> Option<(&'static str, Arc<CertifiedKey>)> {
        let all = self.current.load();
        let acme = self.acme.load();
        if let Some(name) = server_name.map(|n| n.to_ascii_lowercase()) {
            let exact = all.iter().find(|l| l.names.contains(&name));
            let wildcard = || {
                all.iter().find(|l| {
                    l.names.iter().any(|n| {
                        n.strip_prefix('*').is_some_and(|suffix| {
                            name.ends_with(suffix)
                                && !name[..name.len() - suffix.len()].contains('.')
                        })
                    })
                })
            };
            if let Some(found) = exact.or_else(wildcard) {
                return Some(("file", found.key.clone()));
            }
            if let Some(key) = acme.get(&name) {
                return Some(("acme", key.clone()));
            }
        }
        all.first()
            .map(|l| l.key.clone())
            .or_else(|| acme.values().next().cloned())
            .map(|key| ("default", key))
    }
}

/// rustls' hook: the certificate for a client hello.
#[derive(Debug)]
pub struct SniResolver(pub Arc<Certificates>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A CA validating a name by TLS-ALPN-01 offers only `acme-tls/1`: it gets the
        // challenge certificate, and the connection ends after the handshake.
        let acme_only = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.all(|p| p == ACME_TLS_ALPN));
        if acme_only {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.0.alpn_challenges.load().get(&name).cloned();
        }
        self.0.pick(hello.server_name())
    }
}

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The loaded certificates with each one's stapled response, where it is for that leaf.
fn with_staples(mut loaded: Vec<Loaded>, staples: &[Option<Staple>]) -> Vec<Loaded> {
    for (l, staple) in loaded.iter_mut().zip(staples) {
        let leaf = l.key.cert.first().map(|c| c.as_ref());
        let ocsp = staple
            .as_ref()
            .filter(|(for_leaf, _)| Some(for_leaf.as_slice()) == leaf)
            .map(|(_, der)| der.clone());
        if l.key.ocsp != ocsp {
            let mut key = CertifiedKey::new(l.key.cert.clone(), l.key.key.clone());
            key.ocsp = ocsp;
            l.key = Arc::new(key);
        }
    }
    loaded
}

fn load_all(paths: &[CertificatePaths]) -> Result<Vec<Loaded>, TlsError> {
    paths.iter().map(load_one).collect()
}

fn load_one(paths: &CertificatePaths) -> Result<Loaded, TlsError> {
    let (cert_file, key_file) = (paths.cert.as_path(), paths.key.as_path());
    let chain_pem = std::fs::read(cert_file).map_err(io_error(cert_file))?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut chain_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(unreadable(cert_file))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert_file.display().to_string(),
        });
    };
    let key_pem = std::fs::read(key_file).map_err(io_error(key_file))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(unreadable(key_file))?
        .ok_or_else(|| TlsError::NoKey {
            path: key_file.display().to_string(),
        })?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(unreadable(key_file))?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|e| TlsError::Mismatch {
        cert: cert_file.display().to_string(),
        key: key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    let names = names_of(leaf.as_ref()).map_err(unreadable(cert_file))?;
    Ok(Loaded {
        names,
        key: Arc::new(certified),
    })
}

/// The DNS names a certificate serves: its subjectAltName entries, else its common name.
fn names_of(
    der: &[u8],
) -> Result<Vec<String>, x509_parser::nom::Err<x509_parser::error::X509Error>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)?;
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        Some(d.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|cn| cn.to_ascii_lowercase()),
        );
    }
    Ok(names)
}

/// Writes a self-signed certificate for `names` (for local development and tests).
pub fn generate_self_signed(names: &[&str], cert: &Path, key: &Path) -> Result<(), TlsError> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names)?;
    if let Some(dir) = cert.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    std::fs::write(cert, generated.cert.pem()).map_err(io_error(cert))?;
    write_private(key, &generated.signing_key.serialize_pem())
}

fn write_private(path: &Path, pem: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(pem.as_bytes()).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_nginx_cipher_list_keeps_its_ecdhe_gcm_suites_and_names_the_rest() {
        let nginx = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA256:DHE-RSA-AES256-SHA256:DHE-RSA-AES128-SHA:DHE-RSA-AES256-SHA";
        let (chosen, notes) = cipher_policy(&[nginx.to_string()]);
        assert_eq!(
            chosen,
            Some(vec![
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
            ])
        );
        assert_eq!(notes.len(), 8);
        assert!(notes
            .iter()
            .any(|n| n.contains("DHE-RSA-AES128-SHA") && n.contains("DHE")));
        assert!(notes
            .iter()
            .any(|n| n.contains("ECDHE-RSA-AES128-SHA`") && n.contains("CBC")));
    }

    #[test]
    fn the_provider_offers_only_what_is_allowed() {
        let tls = TlsSettings {
            certificates: Vec::new(),
            protocols: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            ciphers: vec!["ECDHE-RSA-AES128-GCM-SHA256".into()],
            hsts: None,
            ocsp_refresh: Duration::from_secs(3600),
            acme: None,
        };
        let provider = crypto_provider(&tls).expect("provider");
        let tls12: Vec<String> = provider
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(tls12, vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]);
        let only13 = TlsSettings {
            protocols: vec![TlsVersion::Tls13],
            ciphers: Vec::new(),
            ..tls
        };
        let provider = crypto_provider(&only13).expect("provider");
        assert!(provider
            .cipher_suites
            .iter()
            .all(|s| matches!(s, SupportedCipherSuite::Tls13(_))));
    }

    #[test]
    fn certificates_are_picked_by_name_with_the_first_as_default() {
        let dir = tempfile::tempdir().expect("dir");
        let mk = |n: &str, names: &[&str]| {
            let paths = CertificatePaths {
                cert: dir.path().join(format!("{n}.crt")),
                key: dir.path().join(format!("{n}.key")),
                ocsp: OcspSource::Auto,
            };
            generate_self_signed(names, &paths.cert, &paths.key).expect("generate");
            paths
        };
        let a = mk("a", &["a.example"]);
        let b = mk("b", &["b.example", "*.wild.example"]);
        let certs = Certificates::load(&[a, b]).expect("load");
        let pick = |name: Option<&str>| {
            let key = certs.pick(name).expect("a certificate");
            names_of(key.end_entity_cert().expect("leaf").as_ref()).expect("names")[0].clone()
        };
        assert_eq!(pick(Some("a.example")), "a.example");
        assert_eq!(pick(Some("B.EXAMPLE")), "b.example");
        assert_eq!(pick(Some("x.wild.example")), "b.example");
        assert_eq!(pick(Some("x.y.wild.example")), "a.example");
        assert_eq!(pick(None), "a.example");
    }

    #[test]
    fn a_broken_file_keeps_the_certificates_in_use() {
        let dir = tempfile::tempdir().expect("dir");
        let paths = CertificatePaths {
            cert: dir.path().join("c.crt"),
            key: dir.path().join("c.key"),
            ocsp: OcspSource::Auto,
        };
        generate_self_signed(&["one.example"], &paths.cert, &paths.key).expect("generate");
        let certs = Certificates::load(std::slice::from_ref(&paths)).expect("load");
        std::fs::write(&paths.cert, "not a certificate").expect("write");
        assert!(certs.reload().is_err());
        assert_eq!(certs.names(), vec![vec!["one.example".to_string()]]);
    }
}
