//! `[tls]`: certificates, OCSP stapling, protocols and ciphers.

use super::Validator;
use crate::config::file::*;
use crate::config::model::*;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

impl Validator<'_> {
    /// A certificate's `ocsp`: "auto", "off", or a file holding a DER OCSP response.
    fn ocsp(&mut self, t: &Spanned<String>) -> OcspSource {
        match t.get_ref().as_str() {
            "auto" => OcspSource::Auto,
            "off" => OcspSource::Off,
            path => {
                let problem = match std::fs::read(path) {
                    Err(e) => Some(format!("cannot read the OCSP response file `{path}`: {e}")),
                    Ok(bytes) => crate::der::is_successful_ocsp_response(&bytes)
                        .err()
                        .map(|e| format!("`{path}` is not a usable OCSP response: {e}")),
                };
                if let Some(problem) = problem {
                    self.error(
                        t.span(),
                        format!("{problem} (ocsp is \"auto\", \"off\" or a file)"),
                    );
                }
                OcspSource::File(PathBuf::from(path))
            }
        }
    }

    pub(super) fn tls(&mut self, t: &Spanned<TlsFile>) -> TlsSettings {
        let f = t.get_ref();
        if f.certificates.is_empty() && f.acme.is_none() {
            self.error(
                t.span(),
                "[tls] needs at least one certificate (or [tls.acme] to obtain them)",
            );
        }
        let mut certificates = Vec::new();
        for c in &f.certificates {
            let (cert, key) = (&c.get_ref().cert, &c.get_ref().key);
            let ocsp = c
                .get_ref()
                .ocsp
                .as_ref()
                .map_or(OcspSource::Auto, |o| self.ocsp(o));
            if let (Some(cert), Some(key)) = (cert, key) {
                self.start_file(cert, "certificate");
                self.start_file(key, "key");
            }
            match (cert, key) {
                (Some(cert), Some(key)) => certificates.push(CertificatePaths {
                    cert: PathBuf::from(cert.get_ref()),
                    key: PathBuf::from(key.get_ref()),
                    ocsp,
                }),
                _ => self.error(c.span(), "a certificate needs both `cert` and `key`"),
            }
        }
        let mut protocols = Vec::new();
        for p in f.protocols.iter().flatten() {
            match p.get_ref().as_str() {
                "TLSv1.2" => protocols.push(TlsVersion::Tls12),
                "TLSv1.3" => protocols.push(TlsVersion::Tls13),
                "TLSv1" | "TLSv1.0" | "TLSv1.1" | "SSLv3" | "SSLv2" => self.error(
                    p.span(),
                    format!(
                        "`{}` is insecure and never offered; use TLSv1.2 and TLSv1.3",
                        p.get_ref()
                    ),
                ),
                other => self.error(
                    p.span(),
                    format!("unknown protocol `{other}` (use \"TLSv1.2\", \"TLSv1.3\")"),
                ),
            }
        }
        if f.protocols.is_none() {
            protocols = vec![TlsVersion::Tls12, TlsVersion::Tls13];
        } else if protocols.is_empty() && f.protocols.as_ref().is_some_and(|p| p.is_empty()) {
            self.error(t.span(), "`protocols` must list TLSv1.2, TLSv1.3 or both");
        }
        let ciphers: Vec<String> = f
            .ciphers
            .iter()
            .flatten()
            .map(|c| c.get_ref().clone())
            .collect();
        for c in f.ciphers.iter().flatten() {
            for note in crate::config::cipher_policy(std::slice::from_ref(c.get_ref())).1 {
                self.warn(c.span(), note);
            }
        }
        if !ciphers.is_empty()
            && crate::config::cipher_policy(&ciphers)
                .0
                .is_some_and(|c| c.is_empty())
            && protocols.contains(&TlsVersion::Tls12)
        {
            let span = f
                .ciphers
                .as_ref()
                .and_then(|c| c.first())
                .map_or(0..0, |c| c.span());
            self.error(span, "none of `ciphers` can be offered for TLS 1.2 (rustls offers ECDHE with AES-GCM or ChaCha20-Poly1305)");
        }
        let hsts = match &f.hsts {
            None => Some(DEFAULT_HSTS.to_string()),
            Some(h) if h.get_ref().is_empty() => None,
            Some(h) => {
                if !h.get_ref().starts_with("max-age=") {
                    self.error(
                        h.span(),
                        "hsts must start with `max-age=` (or be \"\" to turn it off)",
                    );
                } else if http::HeaderValue::from_str(h.get_ref()).is_err() {
                    // It is written into answer heads as it is: a line break would start a
                    // field of its own.
                    self.error(
                        h.span(),
                        "hsts must be a header value: no line breaks or other control characters",
                    );
                }
                Some(h.get_ref().clone())
            }
        };
        TlsSettings {
            certificates,
            protocols,
            ciphers,
            hsts,
            ocsp_refresh: {
                let refresh = self.duration_or(&f.ocsp_refresh, DEFAULT_OCSP_REFRESH);
                if refresh < Duration::from_secs(1) {
                    if let Some(t) = &f.ocsp_refresh {
                        self.error(t.span(), "ocsp_refresh must be at least 1s");
                    }
                }
                refresh
            },
            acme: f.acme.as_ref().map(|a| self.acme(a)),
        }
    }

    /// `[tls.acme]`; the domains default to the routes' exact hosts (filled in by the caller
    /// once the routes are read).
    fn acme(&mut self, a: &Spanned<AcmeFile>) -> AcmeSettings {
        let f = a.get_ref();
        let directory = f
            .directory
            .as_ref()
            .map_or(DEFAULT_ACME_DIRECTORY.to_string(), |d| d.get_ref().clone());
        if let Some(d) = &f.directory {
            if !d.get_ref().starts_with("https://") {
                self.error(d.span(), "an ACME directory is an https:// URL");
            }
        }
        let mut domains = Vec::new();
        for d in f.domains.iter().flatten() {
            let name = d.get_ref().to_ascii_lowercase();
            let valid = !name.is_empty()
                && !name.starts_with('*')
                && name.split('.').count() >= 2
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                self.error(
                    d.span(),
                    format!("`{}` is not a DNS name a certificate can be ordered for (no wildcards: they need DNS-01)", d.get_ref()),
                );
            } else if !domains.contains(&name) {
                domains.push(name);
            }
        }
        let challenge = match f
            .challenge
            .as_ref()
            .map(|c| (c.get_ref().as_str(), c.span()))
        {
            None | Some(("tls-alpn-01", _)) => AcmeChallenge::TlsAlpn01,
            Some(("http-01", _)) => AcmeChallenge::Http01,
            Some((other, span)) => {
                self.error(
                    span,
                    format!("unknown challenge `{other}` (use \"tls-alpn-01\" or \"http-01\")"),
                );
                AcmeChallenge::TlsAlpn01
            }
        };
        let store = match f.store.as_ref().map(|c| (c.get_ref().as_str(), c.span())) {
            None | Some(("local", _)) => AcmeStore::Local,
            Some(("redis", _)) => AcmeStore::Redis,
            Some((other, span)) => {
                self.error(
                    span,
                    format!("unknown store `{other}` (use \"local\" or \"redis\")"),
                );
                AcmeStore::Local
            }
        };
        if let Some(ca) = &f.ca {
            let roots = std::fs::read(ca.get_ref()).map(|pem| {
                rustls_pemfile::certs(&mut pem.as_slice())
                    .filter(Result::is_ok)
                    .count()
            });
            match roots {
                Ok(0) => self.error(
                    ca.span(),
                    format!("`{}` holds no PEM certificate", ca.get_ref()),
                ),
                Err(e) => self.error(ca.span(), format!("`{}`: {e}", ca.get_ref())),
                Ok(_) => {}
            }
        }
        let eab = f
            .eab
            .as_ref()
            .and_then(|e| match (&e.get_ref().kid, &e.get_ref().hmac_key) {
                // Both empty (the contract's own placeholder): no binding.
                (Some(kid), Some(key)) if kid.get_ref().is_empty() && key.get_ref().is_empty() => {
                    None
                }
                (Some(kid), Some(key)) => {
                    let base64url = |t: &str| {
                        !t.is_empty()
                            && t.trim_end_matches('=').bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/')
                            })
                    };
                    if !base64url(key.get_ref()) {
                        self.error(key.span(), "hmac_key is the CA's key in base64url");
                    }
                    Some((kid.get_ref().clone(), key.get_ref().clone()))
                }
                _ => {
                    self.error(e.span(), "eab needs both `kid` and `hmac_key`");
                    None
                }
            });
        AcmeSettings {
            directory,
            email: f.email.as_ref().map(|e| e.get_ref().clone()),
            domains,
            challenge,
            storage: PathBuf::from(
                f.storage
                    .as_ref()
                    .map_or("certs/acme", |s| s.get_ref().as_str()),
            ),
            store,
            ca: f.ca.as_ref().map(|c| PathBuf::from(c.get_ref())),
            eab,
        }
    }
}
