//! TLS toward servers, under the one upstream client: an upstream with `tls` reaches every
//! one of its servers over TLS (rustls, the edge's one TLS stack), with the name it verifies
//! and sends as SNI (`server_name`, else the server's host name; a literal address is
//! verified as an address and no SNI is sent), the roots it trusts (`ca`, else the system's),
//! a client certificate for servers that require mutual TLS (`cert` + `key`), and ALPN by the
//! upstream's `protocol` (`h2`: only h2, and a server that does not select it is refused;
//! `auto`: h2 and http/1.1, the server's choice used; `http1`: http/1.1).
//!
//! The connection is a [`Stream`] like a plain one ([`crate::tcp::Tcp`] over the TLS
//! session): the exchange and the pool do not know the difference, but for the protocol it
//! negotiated.

use crate::config::{UpstreamProtocol, UpstreamTlsSettings};
use crate::held;
use arc_swap::ArcSwap;
use pingora::protocols::{Stream, ALPN};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpStream;

/// Why an upstream's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("{0}: cannot be read: {1}")]
    Read(String, io::Error),
    #[error("{0}: no certificate in it")]
    NoCertificate(String),
    #[error("{0}: no private key in it")]
    NoKey(String),
    #[error("the system's trusted roots cannot be read: {0}")]
    SystemRoots(String),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// An upstream's TLS: the client configs built from its files (roots, client certificate),
/// rebuilt when the files change, and the name its servers are verified by when it is not
/// their own host.
#[derive(Debug)]
pub struct UpstreamTls {
    settings: UpstreamTlsSettings,
    protocol: UpstreamProtocol,
    current: ArcSwap<Configs>,
    /// When the files were last looked at, and their modification times then.
    checked: Mutex<(Instant, Vec<Option<SystemTime>>)>,
}

/// The client configs of one version of the files.
#[derive(Debug)]
struct Configs {
    /// ALPN by the upstream's protocol.
    requests: Arc<ClientConfig>,
    /// ALPN http/1.1 only: a websocket upgrade's connection.
    upgrades: Arc<ClientConfig>,
}

/// How often the files are looked at for changes (on a connect, never on a kept-alive
/// request).
const CHECK_EVERY: Duration = Duration::from_secs(1);

impl UpstreamTls {
    /// Reads the files `settings` names and builds the client configs.
    pub fn load(
        settings: &UpstreamTlsSettings,
        protocol: UpstreamProtocol,
    ) -> Result<UpstreamTls, UpstreamTlsError> {
        let configs = Configs::build(settings, protocol)?;
        Ok(UpstreamTls {
            settings: settings.clone(),
            protocol,
            current: ArcSwap::from_pointee(configs),
            checked: Mutex::new((Instant::now(), stamps(settings))),
        })
    }

    /// The configs of the files as they are now: rebuilt when a file changed since it was
    /// last looked at (at most every [`CHECK_EVERY`]); a change that cannot be loaded keeps
    /// the old configs and says why.
    fn configs(&self) -> Arc<Configs> {
        let mut checked = held::lock(&self.checked);
        if checked.0.elapsed() >= CHECK_EVERY {
            let now = stamps(&self.settings);
            checked.0 = Instant::now();
            if now != checked.1 {
                checked.1 = now;
                match Configs::build(&self.settings, self.protocol) {
                    Ok(configs) => {
                        tracing::info!(files = ?self.settings.files().collect::<Vec<_>>(), "upstream TLS files reloaded");
                        self.current.store(Arc::new(configs));
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "upstream TLS files changed but cannot be loaded; keeping the old ones"
                    ),
                }
            }
        }
        drop(checked);
        self.current.load_full()
    }

    /// Whether requests need HTTP/2 of every server (`protocol = "h2"`).
    pub fn h2_only(&self) -> bool {
        self.protocol == UpstreamProtocol::H2
    }
}

/// The modification times of the files `settings` names.
fn stamps(settings: &UpstreamTlsSettings) -> Vec<Option<SystemTime>> {
    settings
        .files()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl Configs {
    fn build(
        settings: &UpstreamTlsSettings,
        protocol: UpstreamProtocol,
    ) -> Result<Configs, UpstreamTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if settings.verify {
            let mut roots = RootCertStore::empty();
            match &settings.ca {
                Some(ca) => {
                    for cert in certificates(ca)? {
                        roots.add(cert)?;
                    }
                }
                None => {
                    let system =
                        system_roots().map_err(|e| UpstreamTlsError::SystemRoots(e.clone()))?;
                    roots.add_parsable_certificates(system.iter().cloned());
                }
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        };
        let mut config = match (&settings.cert, &settings.key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let key = private_key(key)?;
                builder.with_client_auth_cert(chain, key)?
            }
            _ => builder.with_no_client_auth(),
        };
        let mut upgrades = config.clone();
        upgrades.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.alpn_protocols = match protocol {
            UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
            UpstreamProtocol::H2 => vec![b"h2".to_vec()],
            UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        Ok(Configs {
            requests: Arc::new(config),
            upgrades: Arc::new(upgrades),
        })
    }
}

impl UpstreamTls {
    /// The TLS handshake on `tcp`, a server of `host` at `addr`: its certificate verified for
    /// the configured name, or `host`, or (for a literal address) the address; `upgrade`: a
    /// websocket's connection, which offers http/1.1 only.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        addr: SocketAddr,
        upgrade: bool,
    ) -> io::Result<Stream> {
        let name = self.settings.server_name.as_deref().unwrap_or(host);
        let name = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(name.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        };
        let configs = self.configs();
        let config = if upgrade {
            &configs.upgrades
        } else {
            &configs.requests
        };
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let tls = connector.connect(name, tcp).await?;
        let alpn = match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => Some(ALPN::H2),
            Some(b"http/1.1") => Some(ALPN::H1),
            _ => None,
        };
        if self.h2_only() && !upgrade && alpn != Some(ALPN::H2) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server did not select h2 by ALPN (protocol = \"h2\")",
            ));
        }
        Ok(Box::new(crate::tcp::Tcp::with_alpn(tls, addr, alpn)))
    }
}

/// The system's trusted roots, read once per process: a config is compiled at every reload
/// and DNS change, and the system's bundle (about 150 certificates) does not change with it.
fn system_roots() -> Result<&'static [CertificateDer<'static>], &'static String> {
    static ROOTS: std::sync::OnceLock<Result<Vec<CertificateDer<'static>>, String>> =
        std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| rustls_native_certs::load_native_certs().map_err(|e| e.to_string()))
        .as_deref()
}

/// Every certificate in a PEM file.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, UpstreamTlsError> {
    let name = path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| UpstreamTlsError::Read(name.clone(), e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| UpstreamTlsError::Read(name.clone(), e))?;
    if certs.is_empty() {
        return Err(UpstreamTlsError::NoCertificate(name));
    }
    Ok(certs)
}

/// The private key in a PEM file.
fn private_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, UpstreamTlsError> {
    let name = path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| UpstreamTlsError::Read(name.clone(), e))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| UpstreamTlsError::Read(name.clone(), e))?
        .ok_or(UpstreamTlsError::NoKey(name))
}

/// `verify = false`: any certificate is taken (the signatures of the handshake are still
/// checked, so the connection is encrypted to whoever holds the key it presented). The
/// end-to-end tests' TLS clients take the edge's certificates with it too.
#[derive(Debug)]
pub struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl AnyCertificate {
    /// Checking the handshake's signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<rustls::crypto::CryptoProvider>) -> AnyCertificate {
        AnyCertificate(provider)
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
