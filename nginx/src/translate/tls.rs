//! `[tls]`: the certificates of the TLS servers and their one policy.

use super::super::emit::{line_of, string, strings, Value};
use super::super::parse::Place;
use super::super::{Kind, Note};
use super::*;

impl Translator<'_> {
    /// `[tls]` from the TLS servers, the default one first.
    pub(super) fn tls(&mut self) {
        let mut servers: Vec<(Place, bool, Scope)> = self
            .servers
            .iter()
            .filter(|s| s.tls)
            .map(|s| (s.at.clone(), s.default, s.scope.clone()))
            .collect();
        if servers.is_empty() {
            return;
        }
        servers.sort_by_key(|s| !s.1);
        self.certificates(&servers);
        // The policy of the first server that has a certificate: a default server that only
        // refuses handshakes (`ssl_reject_handshake on`) sets none.
        let policy_at = servers.iter().position(|s| s.2.cert.is_some()).unwrap_or(0);
        servers.swap(0, policy_at);
        let first = servers[0].2.clone();
        self.protocols(&first);
        self.ciphers(&first);
        match first.hsts.clone() {
            Some((value, at)) => self.tls.set("hsts", Value::Line(string(&value)), Some(at)),
            None => self.tls.set_commented(
                "hsts",
                Value::Line(string("")),
                None,
                Some("nginx sent no Strict-Transport-Security".into()),
            ),
        }
        for (at, _, other) in &servers[1..] {
            let same = other.protocols.as_ref().map(|p| &p.0)
                == first.protocols.as_ref().map(|p| &p.0)
                && other.ciphers.as_ref().map(|c| &c.0) == first.ciphers.as_ref().map(|c| &c.0)
                && other.hsts.as_ref().map(|h| &h.0) == first.hsts.as_ref().map(|h| &h.0);
            if !same {
                self.notes.insert(Note {
                    at: at.clone(),
                    directive: "server".into(),
                    kind: Kind::Differs,
                    decide: true,
                    why: format!(
                        "the edge has one TLS policy (protocols, ciphers, HSTS) for every certificate: the one of {} is carried",
                        line_of(&servers[0].0)
                    ),
                });
            }
        }
    }

    /// Each TLS server's certificate and key, as absolute paths, once each.
    fn certificates(&mut self, servers: &[(Place, bool, Scope)]) {
        let mut certs: Vec<(String, Option<Place>)> = Vec::new();
        let mut notes = Vec::new();
        for (server_at, _, scope) in servers {
            if scope.reject_handshake {
                continue;
            }
            let (Some((cert, cert_at)), Some((key, key_at))) = (&scope.cert, &scope.key) else {
                notes.push((
                    server_at.clone(),
                    "server".to_string(),
                    Kind::NoEquivalent,
                    "a TLS server without ssl_certificate and ssl_certificate_key".to_string(),
                ));
                continue;
            };
            // nginx's ACME module: carried as [tls.acme] (acme.rs).
            if cert == "$acme_certificate" {
                continue;
            }
            if cert.contains('$') {
                notes.push((
                    cert_at.clone(),
                    format!("ssl_certificate {cert}"),
                    Kind::NoEquivalent,
                    "the edge picks certificates by SNI from [tls] certificates, not by variables"
                        .into(),
                ));
                continue;
            }
            let (cert_path, key_path) = (self.file(cert), self.file(key));
            for (path, directive, at) in [
                (&cert_path, "ssl_certificate", cert_at),
                (&key_path, "ssl_certificate_key", key_at),
            ] {
                if !std::path::Path::new(path).exists() {
                    let written = if directive == "ssl_certificate" {
                        cert
                    } else {
                        key
                    };
                    notes.push((
                        at.clone(),
                        format!("{directive} {written}"),
                        Kind::Differs,
                        format!(
                            "{path} does not exist here: the edge will not start until it does"
                        ),
                    ));
                }
            }
            let ocsp = match (&scope.stapling_file, scope.stapling) {
                (Some(file), true) => format!(", ocsp = {}", string(&self.file(file))),
                (None, true) => String::new(), // "auto", the edge's default
                (_, false) => ", ocsp = \"off\"".to_string(),
            };
            let item = format!(
                "{{ cert = {}, key = {}{ocsp} }}",
                string(&cert_path),
                string(&key_path)
            );
            if !certs.iter().any(|(c, _)| *c == item) {
                certs.push((item, Some(cert_at.clone())));
            }
        }
        for (at, directive, kind, why) in notes {
            self.notes.insert(Note {
                at,
                directive,
                kind,
                decide: true,
                why,
            });
        }
        self.tls.set("certificates", Value::Items(certs), None);
    }

    /// `ssl_protocols`: TLS 1.2 and 1.3 only.
    fn protocols(&mut self, first: &Scope) {
        if let Some((protocols, at)) = first.protocols.clone() {
            let kept: Vec<&str> = protocols
                .iter()
                .map(String::as_str)
                .filter(|p| matches!(*p, "TLSv1.2" | "TLSv1.3"))
                .collect();
            if kept.len() < protocols.len() {
                self.notes.insert(Note {
                    at: at.clone(),
                    directive: format!("ssl_protocols {}", protocols.join(" ")),
                    kind: Kind::Differs,
                    decide: kept.is_empty(),
                    why: "the edge never offers TLS older than 1.2".into(),
                });
            }
            if !kept.is_empty() {
                self.tls
                    .set("protocols", Value::Line(strings(&kept)), Some(at));
            }
        }
    }

    /// `ssl_ciphers`: the suites rustls implements; the rest are reported.
    fn ciphers(&mut self, first: &Scope) {
        if let Some((ciphers, at)) = first.ciphers.clone() {
            let names: Vec<&str> = ciphers.split(':').filter(|n| !n.is_empty()).collect();
            let keywords = names.iter().any(|n| {
                n.starts_with(['!', '+', '-', '@']) || n.chars().all(|c| c.is_ascii_uppercase())
            });
            let directive = format!("ssl_ciphers {ciphers}");
            if keywords {
                self.notes.insert(Note { at, directive, kind: Kind::Differs, decide: false, why: "OpenSSL cipher-string keywords are not expanded: the edge offers its ECDHE+AEAD set".into() });
            } else {
                let (_, dropped) =
                    edge_syntax::ciphers::cipher_policy(std::slice::from_ref(&ciphers));
                let kept: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|n| !dropped.iter().any(|d| d.contains(&format!("`{n}`"))))
                    .collect();
                if !dropped.is_empty() {
                    let why = format!(
                        "{}; kept {}",
                        dropped.join("; "),
                        if kept.is_empty() {
                            "none: the edge offers its ECDHE+AEAD set".to_string()
                        } else {
                            kept.join(":")
                        }
                    );
                    self.notes.insert(Note {
                        at: at.clone(),
                        directive,
                        kind: Kind::Differs,
                        decide: false,
                        why,
                    });
                }
                self.tls
                    .set("ciphers", Value::Line(strings(&kept)), Some(at));
            }
        }
    }
}
