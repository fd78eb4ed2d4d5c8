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
        if f.certificates.is_empty() {
            self.error(t.span(), "[tls] needs at least one certificate");
        }
        let mut certificates = Vec::new();
        for c in &f.certificates {
            let (cert, key) = (&c.get_ref().cert, &c.get_ref().key);
            let ocsp = c
                .get_ref()
                .ocsp
                .as_ref()
                .map_or(OcspSource::Auto, |o| self.ocsp(o));
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
        }
    }
}
