//! `services`: runs one backend service of the content engine, or all of them, until SIGTERM or Ctrl-C.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use clap::Parser;
use services::{find_service, serve, ServiceSpec, CATALOG};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// Realistic backend services for the edge proxy: health, metrics, JSON echo and WebSocket echo.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A catalogue service name (content-manager, ai-processor, web-scraper, distributor,
    /// subscriber-manager, admin-dashboard), or `all` for the six at once.
    name: String,

    /// Address to listen on; default 0.0.0.0:<catalogue port>. Single service only.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Host the services bind with `all`, each on its catalogue port.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    host: String,

    /// Instance id reported in responses; default <name>-<pid>. With `all`, it becomes
    /// <name>-<ID> for each service.
    #[arg(long, value_name = "ID")]
    instance: Option<String>,

    /// A dependency checked by /health (TCP connect), e.g. database=127.0.0.1:5432. Repeatable;
    /// overrides DB_HOST/DB_PORT ("database") and REDIS_HOST/REDIS_PORT ("redis").
    #[arg(long = "dep", value_name = "NAME=HOST:PORT", value_parser = parse_dep)]
    deps: Vec<(String, String)>,
}

fn parse_dep(s: &str) -> Result<(String, String), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=HOST:PORT, got {s:?}"))?;
    let port_ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if name.is_empty() || !port_ok {
        return Err(format!("expected NAME=HOST:PORT, got {s:?}"));
    }
    Ok((name.to_owned(), addr.to_owned()))
}

/// Dependencies from the environment (only those whose host is set), then `--dep`, which wins.
fn dependencies(cli_deps: &[(String, String)]) -> Vec<(String, String)> {
    let mut deps: Vec<(String, String)> = Vec::new();
    for (check, host_var, port_var, default_port) in [
        ("database", "DB_HOST", "DB_PORT", "5432"),
        ("redis", "REDIS_HOST", "REDIS_PORT", "6379"),
    ] {
        if let Ok(host) = std::env::var(host_var) {
            let port = std::env::var(port_var).unwrap_or_else(|_| default_port.to_owned());
            deps.push((check.to_owned(), format!("{host}:{port}")));
        }
    }
    for (name, addr) in cli_deps {
        deps.retain(|(n, _)| n != name);
        deps.push((name.clone(), addr.clone()));
    }
    deps
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let deps = dependencies(&cli.deps);
    let pid = std::process::id().to_string();
    let mut services = Vec::new();
    if cli.name == "all" {
        if cli.listen.is_some() {
            bail!("--listen applies to a single service; use --host with `all`");
        }
        let id = cli.instance.as_deref().unwrap_or(&pid);
        for info in CATALOG {
            let addr = format!("{}:{}", cli.host, info.port);
            services.push((spec(info.name, &format!("{}-{id}", info.name), &deps), addr));
        }
    } else {
        let addr = match (cli.listen, find_service(&cli.name)) {
            (Some(addr), _) => addr.to_string(),
            (None, Some(info)) => format!("0.0.0.0:{}", info.port),
            (None, None) => {
                let names: Vec<_> = CATALOG.iter().map(|s| s.name).collect();
                bail!(
                    "unknown service {:?}: expected `all`, one of {}, or --listen",
                    cli.name,
                    names.join(", ")
                );
            }
        };
        let instance = cli
            .instance
            .clone()
            .unwrap_or_else(|| format!("{}-{pid}", cli.name));
        services.push((spec(&cli.name, &instance, &deps), addr));
    }

    // Bind everything first so a taken port fails fast, before anything serves.
    let mut listeners = Vec::new();
    for (spec, addr) in services {
        let listener = services::listen(&addr)
            .await
            .with_context(|| format!("binding {} on {addr}", spec.name))?;
        listeners.push((spec, listener));
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (spec, listener) in listeners {
        let mut stop = stop_rx.clone();
        tasks.spawn(serve(spec, listener, async move {
            let _ = stop.wait_for(|&s| s).await;
        }));
    }

    tokio::select! {
        signal = shutdown_signal() => {
            signal?;
            tracing::info!("shutdown signal received");
            let _ = stop_tx.send(true);
        }
        // A service ending by itself (an error) stops the rest too.
        Some(ended) = tasks.join_next() => {
            let _ = stop_tx.send(true);
            ended.context("service task panicked")?.context("service failed")?;
        }
    }
    while let Some(ended) = tasks.join_next().await {
        ended
            .context("service task panicked")?
            .context("service failed")?;
    }
    Ok(())
}

fn spec(name: &str, instance: &str, deps: &[(String, String)]) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, instance);
    spec.dependencies = deps.to_vec();
    spec
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("listening for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dependencies() {
        assert_eq!(
            parse_dep("database=127.0.0.1:5432"),
            Ok(("database".to_owned(), "127.0.0.1:5432".to_owned()))
        );
        assert_eq!(
            parse_dep("redis=[::1]:6379").map(|d| d.1),
            Ok("[::1]:6379".to_owned())
        );
        assert!(parse_dep("database").is_err());
        assert!(parse_dep("=h:1").is_err());
        assert!(parse_dep("db=host").is_err());
        assert!(parse_dep("db=host:99999").is_err());
    }

    #[test]
    fn cli_dependencies_override_by_name() {
        let cli = vec![
            ("external_services".to_owned(), "127.0.0.1:9".to_owned()),
            ("external_services".to_owned(), "127.0.0.1:10".to_owned()),
        ];
        let deps = dependencies(&cli);
        let ext: Vec<_> = deps
            .iter()
            .filter(|(n, _)| n == "external_services")
            .collect();
        assert_eq!(ext.len(), 1);
        assert_eq!(ext[0].1, "127.0.0.1:10");
    }

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
