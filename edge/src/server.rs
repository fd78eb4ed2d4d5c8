//! Starting the edge: the Pingora server, its proxy and admin services, from a config.

use crate::admin::{AdminApp, AdminListener};
use crate::config::Validated;
use crate::gate::ConnectionGate;
use crate::health::HealthService;
use crate::listen::{Bound, ClientListeners, Endpoint};
use crate::proxy::EdgeProxy;
use crate::reload::{reload_on_sighup, Reloader};
use crate::scrape::Exposition;
use crate::snapshot::Snapshot;
use crate::tls::{Certificates, SniResolver};
use arc_swap::ArcSwap;
use pingora::listeners::tls::Acceptor;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How to run: the config and where the process keeps its runtime files.
pub struct RunOptions {
    /// What the config came from, for logs and /status.
    pub source: String,
    /// The config file, watched for reloads; `None` for the embedded default.
    pub path: Option<PathBuf>,
    /// The text the config was loaded from.
    pub text: String,
    pub config: Validated,
    /// Directory for the pid file, the upgrade socket and `listening.json`.
    pub runtime_dir: PathBuf,
    /// Take the listening sockets over from a running edge (graceful binary upgrade).
    pub upgrade: bool,
}

/// Builds the Pingora server from the config and runs it until a signal stops it.
pub fn run(options: RunOptions) -> anyhow::Result<()> {
    // Over 100 lines: the process's wiring in start order (config, reload, listeners, TLS,
    // admin, health), a few lines a step.
    let config = options.config.config;
    let edge = config.edge.clone();
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::compile(
        &options.source,
        config,
        None,
    )));

    std::fs::create_dir_all(&options.runtime_dir)?;
    crate::observe::access_log::start(&edge.access_log)?;
    let conf = ServerConf {
        threads: edge.threads,
        // One single-threaded runtime per worker thread, as nginx has one event loop per
        // worker: a connection's task, its timers and its sockets stay on one thread, so a
        // wake-up never crosses threads.
        work_stealing: false,
        pid_file: options
            .runtime_dir
            .join(crate::listen::PID_FILE)
            .display()
            .to_string(),
        upgrade_sock: options
            .runtime_dir
            .join("edge-upgrade.sock")
            .display()
            .to_string(),
        // Requests in flight at a shutdown or upgrade get up to this long; the client
        // listeners end the process as soon as they are done.
        grace_period_seconds: Some(crate::listen::DRAIN_LIMIT.as_secs()),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };

    let opt = pingora::server::configuration::Opt {
        upgrade: options.upgrade,
        ..Default::default()
    };
    // The process handing its sockets over, read before this one's pid replaces it.
    let predecessor = match options.upgrade {
        true => std::fs::read_to_string(&conf.pid_file)
            .ok()
            .and_then(|pid| pid.trim().parse::<i32>().ok()),
        false => None,
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    let draining = draining(&server);

    // The pid file names the process to signal (removed at a graceful end, `Bound`).
    std::fs::write(
        &server.configuration.pid_file,
        format!("{}\n", std::process::id()),
    )?;

    let reloader = Arc::new(Reloader::new(
        options.path.clone(),
        snapshot.clone(),
        &options.text,
    ));
    if let Err(e) = reloader.watch() {
        tracing::error!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /reload");
    }
    reload_on_sighup(reloader.clone())?;
    let dns_reloader = Arc::downgrade(&reloader);
    crate::discovery::global().on_change(move |what| {
        if let Some(reloader) = dns_reloader.upgrade() {
            reloader.recompile(what);
        }
    });

    let gate = Arc::new(ConnectionGate {
        edge: Arc::new(EdgeProxy::new(snapshot.clone())),
        snapshot: snapshot.clone(),
        draining,
        closing: Default::default(),
    });
    let mut endpoints: Vec<Endpoint> = edge
        .http_listen
        .iter()
        .map(|addr| Endpoint {
            addr: addr.to_string(),
            tls: None,
            quic: None,
        })
        .collect();
    let mut served_certificates = None;
    if let Some(tls) = &snapshot.load().config.tls {
        // Installed before the acceptor is built, which then uses this provider.
        let provider = crate::tls::crypto_provider(tls)?;
        if provider.install_default().is_err() {
            tracing::warn!("a TLS crypto provider was already installed; keeping it");
        }
        let certificates = Certificates::load(&tls.certificates)?;
        served_certificates = Some(certificates.clone());
        certificates.watch()?;
        certificates.staple(tls.ocsp_refresh)?;
        let acceptor = Arc::new(Acceptor::from_server_config(Arc::new(tls_config(
            tls,
            provider_for_listeners(tls)?,
            certificates.clone(),
        )?)));
        // HTTP/3 beside every https listener, on the same certificates.
        let quic = match edge.http3 {
            true => Some(crate::quic::server_config(certificates.clone(), &edge)?),
            false => None,
        };
        endpoints.extend(edge.https_listen.iter().map(|addr| Endpoint {
            addr: addr.to_string(),
            tls: Some(acceptor.clone()),
            quic: quic.clone(),
        }));
    }
    // Certificates by ACME, into the same resolver.
    let mut acme = None;
    if let (Some(tls), Some(certificates)) = (&snapshot.load().config.tls, &served_certificates) {
        if let Some(settings) = &tls.acme {
            let live = snapshot.clone();
            let domains = move || {
                let config = &live.load().config;
                let acme = config.tls.as_ref().and_then(|t| t.acme.as_ref());
                acme.map_or_else(Vec::new, |a| a.domains.clone())
            };
            acme = Some(crate::acme::AcmeService(crate::acme::Acme::new(
                settings.clone(),
                snapshot.load().config.redis.clone(),
                certificates.clone(),
                Box::new(domains),
            )));
        }
    }
    let bound = Bound::new(&options.runtime_dir);
    server.add_service(ClientListeners {
        gate,
        endpoints,
        threads: edge.threads,
        bound: bound.clone(),
        predecessor,
    });

    server.add_service(AdminListener {
        addr: edge.admin_listen.to_string(),
        app: Arc::new(AdminApp {
            exposition: Exposition::new(snapshot.clone(), reloader.clone()),
            snapshot: snapshot.clone(),
            started: Instant::now(),
            reloader,
            certificates: served_certificates,
        }),
        bound,
    });
    server.add_service(background_service("health", HealthService { snapshot }));
    if let Some(acme) = acme {
        server.add_service(background_service("acme", acme));
    }

    tracing::info!(
        config = %options.source,
        http = ?edge.http_listen,
        https = ?edge.https_listen,
        admin = %edge.admin_listen,
        threads = edge.threads,
        "edge starting"
    );
    server.run_forever();
}

/// A watch set when the process starts on its way out: SIGQUIT (the listeners are being
/// handed to a successor, or offered to none: Pingora then keeps serving for its hand-over
/// retries and close timeout, about 10 s, before the shutdown proper), SIGTERM, or the
/// shutdown itself.
fn draining(server: &Server) -> pingora::server::ShutdownWatch {
    use pingora::server::ExecutionPhase;
    let mut phases = server.watch_execution_phase();
    let (set, watch) = tokio::sync::watch::channel(false);
    let keep = set.clone();
    let watcher = std::thread::Builder::new()
        .name("drain-watch".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(
                    ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::GracefulTerminate
                    | ExecutionPhase::ShutdownStarted,
                ) => {
                    let _ = set.send(true);
                    return;
                }
                Ok(ExecutionPhase::Terminated) => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        });
    if let Err(e) = watcher {
        tracing::warn!(error = %e, "cannot watch for a drain; HTTP/2 drains at the shutdown");
    }
    // A watch whose every sender is gone reads as a drain: one lives as long as the process.
    std::mem::forget(keep);
    watch
}

/// The crypto provider of the TLS listeners: the ring suites `[tls]` allows.
fn provider_for_listeners(
    tls: &crate::config::TlsSettings,
) -> anyhow::Result<Arc<rustls::crypto::CryptoProvider>> {
    Ok(Arc::new(crate::tls::crypto_provider(tls)?))
}

/// The TLS listeners' rustls config: `[tls] protocols`, certificates by SNI (files, then
/// ACME's), ALPN `h2` then `http/1.1`, and `acme-tls/1` when ACME validates by TLS-ALPN-01.
fn tls_config(
    tls: &crate::config::TlsSettings,
    provider: Arc<rustls::crypto::CryptoProvider>,
    certificates: Arc<Certificates>,
) -> anyhow::Result<rustls::ServerConfig> {
    use crate::config::{AcmeChallenge, TlsVersion};
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = tls
        .protocols
        .iter()
        .map(|v| match v {
            TlsVersion::Tls12 => &rustls::version::TLS12,
            TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(certificates)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if tls
        .acme
        .as_ref()
        .is_some_and(|a| a.challenge == AcmeChallenge::TlsAlpn01)
    {
        config
            .alpn_protocols
            .push(crate::tls::ACME_TLS_ALPN.to_vec());
    }
    Ok(config)
}
