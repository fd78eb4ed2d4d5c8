//! `[tls.acme]` from nginx's ACME module (`ngx_http_acme_module`): the issuer a server's
//! `acme_certificate` names, and the names it covers.

use super::super::emit::{string, Section, Value};
use super::super::parse::{Directive, Place};
use super::super::{Kind, Note};
use super::*;

/// A server's `acme_certificate ISSUER [NAME ...]`: the issuer and the names, where written.
pub(super) struct AcmeUse {
    pub issuer: String,
    pub names: Vec<String>,
    pub at: Place,
}

impl Translator<'_> {
    /// `acme_certificate` in a server: its names, or the server's exact names.
    pub(super) fn acme_certificate(&mut self, d: &Directive, server_names: &[(String, Place)]) {
        let Some(issuer) = d.args.first() else { return };
        let mut names: Vec<String> = d.args[1..]
            .iter()
            .filter(|a| !a.contains('='))
            .cloned()
            .collect();
        if names.is_empty() {
            names = server_names.iter().map(|(n, _)| n.clone()).collect();
        }
        let mut orderable = Vec::new();
        for name in names {
            let bare = name.trim_start_matches('.').to_ascii_lowercase();
            let dns = bare.contains('.')
                && !bare.contains(['*', '~', '$'])
                && bare.parse::<std::net::IpAddr>().is_err();
            if !dns {
                self.note(
                    d,
                    Kind::NoEquivalent,
                    true,
                    format!("`{name}` is not a name the edge orders for (wildcards need DNS-01, addresses and patterns are not DNS names)"),
                );
                continue;
            }
            if name.starts_with('.') {
                self.note(
                    d,
                    Kind::Differs,
                    true,
                    format!("`{name}` covers {bare} and its subdomains in nginx: the edge orders for {bare} only (list other names in domains)"),
                );
            }
            orderable.push(bare);
        }
        self.acme_uses.push(AcmeUse {
            issuer: issuer.clone(),
            names: orderable,
            at: d.at.clone(),
        });
    }

    /// `[tls.acme]` from the issuer the servers name (one per edge).
    pub(super) fn acme(&mut self) {
        let Some(first) = self.acme_uses.first() else {
            for (_, issuer) in self.acme_issuers.clone() {
                self.note(
                    &issuer,
                    Kind::ByDefault,
                    false,
                    "no server names this issuer (acme_certificate): nothing uses it",
                );
            }
            return;
        };
        let issuer_name = first.issuer.clone();
        let mut section = Section::new("[tls.acme]", Some(first.at.clone()));
        let mut domains: Vec<(String, Option<Place>)> = Vec::new();
        let uses = std::mem::take(&mut self.acme_uses);
        for u in &uses {
            if !u.issuer.eq_ignore_ascii_case(&issuer_name) {
                self.notes.insert(Note {
                    at: u.at.clone(),
                    directive: format!("acme_certificate {}", u.issuer),
                    kind: Kind::Differs,
                    decide: true,
                    why: format!("the edge has one ACME issuer: `{issuer_name}`'s is carried, and orders these names from it"),
                });
            }
            for name in &u.names {
                if !domains.iter().any(|(d, _)| d == &string(name)) {
                    domains.push((string(name), Some(u.at.clone())));
                }
            }
        }
        let issuer = self
            .acme_issuers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&issuer_name))
            .map(|(_, d)| d.clone());
        let Some(issuer) = issuer else {
            self.notes.insert(Note {
                at: uses[0].at.clone(),
                directive: format!("acme_certificate {issuer_name}"),
                kind: Kind::NoEquivalent,
                decide: true,
                why: "no acme_issuer block defines this issuer".into(),
            });
            return;
        };
        // nginx's module validates by HTTP-01 unless told otherwise; the edge's default is
        // TLS-ALPN-01, so the import says which.
        let mut challenge = ("http-01".to_string(), None);
        for c in issuer.children() {
            let first = c.args.first().cloned().unwrap_or_default();
            match c.name.as_str() {
                "uri" => section.set("directory", Value::Line(string(&first)), Some(c.at.clone())),
                "contact" => {
                    let email = first.trim_start_matches("mailto:");
                    section.set("email", Value::Line(string(email)), Some(c.at.clone()));
                }
                "state_path" if first == "off" => self.note(
                    c,
                    Kind::Differs,
                    true,
                    "the edge always keeps its account and certificates (storage, or Redis with store = \"redis\"): without them every start would order again",
                ),
                "state_path" => {
                    let dir = self.paths.resolve(&first).display().to_string();
                    section.set("storage", Value::Line(string(&dir)), Some(c.at.clone()));
                }
                "challenge" => challenge = (first.to_ascii_lowercase(), Some(c.at.clone())),
                "ssl_trusted_certificate" => {
                    let ca = self.file(&first);
                    section.set("ca", Value::Line(string(&ca)), Some(c.at.clone()));
                }
                "ssl_verify" if first == "off" => self.note(
                    c,
                    Kind::Differs,
                    true,
                    "the edge always verifies the CA's certificate (give its roots as ca)",
                ),
                "ssl_verify" | "accept_terms_of_service" => self.note(
                    c,
                    Kind::ByDefault,
                    false,
                    "the edge verifies the CA and agrees to its terms when it makes the account",
                ),
                "external_account_key" => self.note(
                    c,
                    Kind::Differs,
                    true,
                    "write the binding into the config: eab = { kid = \"...\", hmac_key = \"...\" } with the key itself, base64url (the import copies no secret)",
                ),
                "account_key" => self.note(
                    c,
                    Kind::Differs,
                    false,
                    "the edge makes its own ECDSA P-256 account key and keeps it in the store",
                ),
                "preferred_chain" | "profile" => self.note(
                    c,
                    Kind::NoEquivalent,
                    true,
                    "the edge takes the CA's default chain and profile",
                ),
                _ => self.known_or_not(c),
            }
        }
        let (kind, at) = challenge;
        section.set("challenge", Value::Line(string(&kind)), at);
        // None written: the edge orders for the routes' hosts, as nginx for the server's names.
        if !domains.is_empty() {
            section.set("domains", Value::Items(domains), None);
        }
        self.acme_section = Some(section);
    }
}
