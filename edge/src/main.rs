//! The `edge` command: run the gateway, or check a config like `nginx -t`.

use clap::{Parser, Subcommand};
use edge::config::{self, ConfigErrors, Validated};
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "edge", version, about = "The AquaScene edge gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge. Without --config, runs the embedded local default (the bundled services
    /// on loopback, HTTP on 127.0.0.1:8080, admin on 127.0.0.1:9180).
    Run {
        /// The config file (upstreams.toml).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Where the pid file and upgrade socket go.
        #[arg(long, default_value = "/tmp/edge")]
        runtime_dir: PathBuf,
    },
    /// Validate a config file and print every error with file:line:col; exit 1 if any.
    Check {
        /// The config file to check.
        #[arg(default_value = "upstreams.toml")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Check { file } => check(&file),
        Command::Run {
            config,
            runtime_dir,
        } => {
            let (source, loaded) = match &config {
                Some(path) => (path.display().to_string(), config::load_file(path)),
                None => (
                    config::LOCAL_DEFAULT_NAME.to_string(),
                    config::validate(config::LOCAL_DEFAULT_NAME, config::LOCAL_DEFAULT),
                ),
            };
            let validated = match loaded {
                Ok(v) => v,
                Err(errors) => return report_errors(&errors),
            };
            print_warnings(&validated);
            match edge::server::run(edge::server::RunOptions {
                source,
                config: validated,
                runtime_dir,
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("edge: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    match config::load_file(file) {
        Ok(validated) => {
            print_warnings(&validated);
            println!("{}: configuration is valid", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => report_errors(&errors),
    }
}

fn print_warnings(validated: &Validated) {
    for w in &validated.warnings {
        eprintln!("warning: {w}");
    }
}

fn report_errors(errors: &ConfigErrors) -> ExitCode {
    for e in &errors.errors {
        eprintln!("error: {e}");
    }
    eprintln!(
        "{} error{} found; nothing was started",
        errors.errors.len(),
        if errors.errors.len() == 1 { "" } else { "s" }
    );
    ExitCode::FAILURE
}
