//! The cipher policy: TLS 1.2 and 1.3 only, and for 1.2 only ECDHE with AEAD, which is all
//! rustls offers. Part of the config, because validation and `edge import-nginx` report
//! what a `ciphers` list keeps and drops before any listener exists.

/// OpenSSL names of the TLS 1.2 suites rustls implements (all ECDHE with AEAD).
const OPENSSL_NAMES: &[(&str, &str)] = &[
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

/// Maps the configured `ciphers` (OpenSSL names) to what rustls can honour: the suites to
/// offer and a note for each name that is not honoured (CBC, DHE, RSA key exchange, ...).
/// An empty list offers every rustls suite: ECDHE with AES-GCM or ChaCha20-Poly1305.
pub fn cipher_policy(ciphers: &[String]) -> (Option<Vec<&'static str>>, Vec<String>) {
    if ciphers.is_empty() {
        return (None, Vec::new());
    }
    let mut chosen = Vec::new();
    let mut notes = Vec::new();
    for name in ciphers
        .iter()
        .flat_map(|c| c.split(':'))
        .filter(|n| !n.is_empty())
    {
        if name.starts_with("TLS_AES_") || name.starts_with("TLS_CHACHA20_") {
            continue; // TLS 1.3 suites are always offered
        }
        match OPENSSL_NAMES.iter().find(|(openssl, _)| *openssl == name) {
            Some((_, iana)) => chosen.push(*iana),
            None => {
                let why = if name.starts_with("DHE-") || name.starts_with("EDH-") {
                    "finite-field DHE is not offered"
                } else if !name.contains("GCM") && !name.contains("CHACHA20") {
                    "CBC and other non-AEAD suites are not offered"
                } else {
                    "not an ECDHE suite rustls implements"
                };
                notes.push(format!("cipher `{name}` is not honoured: {why}"));
            }
        }
    }
    (Some(chosen), notes)
}
