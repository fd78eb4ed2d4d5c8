//! The `edge` command: run the gateway, or check a config like `nginx -t`.

use clap::{Parser, Subcommand};
use edge::config::{self, ConfigErrors, Validated};
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(feature = "mimalloc")]
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
        /// Graceful binary upgrade: take the listening sockets over from the edge running with
        /// the same --runtime-dir; then send that one SIGQUIT and it drains and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Print what would change between two config files (the diff a reload logs).
    Diff { old: PathBuf, new: PathBuf },
    /// Ask a running edge's admin `/health` (for container health checks; no curl needed).
    /// Exits 0 when it answers 200, 1 otherwise.
    Healthcheck {
        /// The admin address to ask.
        #[arg(long, default_value = "127.0.0.1:9180")]
        admin: String,
    },
    /// Translate an nginx configuration (and what it includes) into an upstreams.toml, and
    /// report every directive not carried as written, with file:line:col and why. Exits 0 when
    /// nothing needs a person's decision, 1 when something does, 2 when nginx's files cannot
    /// be read or parsed (or the output cannot be written).
    ImportNginx {
        /// The main nginx file (nginx.conf).
        nginx_conf: PathBuf,
        /// Where to write upstreams.toml; standard output without it.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// nginx's own directory: when NGINX_CONF is not in it, an absolute path (or link
        /// target) under it is read from beside NGINX_CONF where the copy has it, so a copy of a
        /// server's /etc/nginx imports anywhere.
        #[arg(long, default_value = edge_nginx::DEFAULT_NGINX_ROOT)]
        nginx_root: PathBuf,
    },
    /// Say what the edge would do with a request and why: the route (and the routes it beat),
    /// the allow list, the zones (with the client's standing on a running edge), the server
    /// the balancer would pick, the head sent upstream, redirect, refusal and compression.
    Explain {
        /// `[METHOD] URL`, e.g. `POST https://edge.test/api/content/items` (GET if left out).
        #[arg(required = true, num_args = 1..=2, value_name = "[METHOD] URL")]
        request: Vec<String>,
        /// Explain against this config file (default upstreams.toml; no live state).
        #[arg(long, conflicts_with = "admin")]
        config: Option<PathBuf>,
        /// Ask the running edge whose admin listener is here (GET /explain).
        #[arg(long)]
        admin: Option<String>,
        /// The address the request comes from.
        #[arg(long, default_value = "127.0.0.1")]
        client_ip: std::net::IpAddr,
        /// A request header, as `Name: value` (repeat it for more).
        #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The answer as JSON (as /explain gives it).
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file and print every error with file:line:col; exit 1 if any.
    Check {
        /// The config file to check.
        #[arg(default_value = "upstreams.toml")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The tools beside `run` say what they have to say themselves; their logs are errors only.
    let level = match cli.command {
        Command::Run { .. } => "info",
        _ => "error",
    };
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { file } => check(&file),
        Command::Healthcheck { admin } => healthcheck(&admin),
        Command::Diff { old, new } => diff(&old, &new),
        Command::Explain {
            request,
            config,
            admin,
            client_ip,
            headers,
            json,
        } => explain(
            &request,
            config,
            admin.as_deref(),
            client_ip,
            &headers,
            json,
        ),
        Command::ImportNginx {
            nginx_conf,
            output,
            nginx_root,
        } => import_nginx(&nginx_conf, output.as_deref(), &nginx_root),
        Command::Run {
            config,
            runtime_dir,
            upgrade,
        } => {
            let (source, text) = match &config {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(text) => (path.display().to_string(), text),
                    Err(e) => {
                        eprintln!("error: {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                },
                None => (
                    config::LOCAL_DEFAULT_NAME.to_string(),
                    config::LOCAL_DEFAULT.to_string(),
                ),
            };
            // The embedded default's certificate is made below when it is missing.
            let start_files = match config {
                Some(_) => config::StartFiles::Require,
                None => config::StartFiles::Skip,
            };
            let loaded = config::validate_with(&source, &text, start_files);
            let validated = match loaded {
                Ok(v) => v,
                Err(errors) => return report_errors(&errors, "; nothing was started"),
            };
            if config.is_none() {
                if let Err(e) = ensure_dev_certificates(&validated) {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            print_warnings(&validated);
            match edge::server::run(edge::server::RunOptions {
                source,
                path: config,
                text,
                config: validated,
                runtime_dir,
                upgrade,
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
    match config::load_file_with(file, config::StartFiles::Warn) {
        Ok(validated) => {
            print_warnings(&validated);
            out(&format!("{}: configuration is valid\n", file.display()));
            ExitCode::SUCCESS
        }
        Err(errors) => report_errors(&errors, ""),
    }
}

fn explain(
    request: &[String],
    config: Option<PathBuf>,
    admin: Option<&str>,
    client_ip: std::net::IpAddr,
    headers: &[String],
    json: bool,
) -> ExitCode {
    let (method, url) = match request {
        [url] => ("GET", url.as_str()),
        [method, url] => (method.as_str(), url.as_str()),
        _ => unreachable!("clap takes one or two"),
    };
    if !method.bytes().all(|b| b.is_ascii_alphabetic()) || method.is_empty() {
        eprintln!("error: `{method}` is not a method (was a URL with a space in it split in two?)");
        return ExitCode::FAILURE;
    }
    let mut question = edge::explain::Question::new(method, url);
    question.peer = client_ip;
    for header in headers {
        match edge::explain::query::parse_header(header) {
            Ok(h) => question.headers.push(h),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let explained = match admin {
        Some(addr) => explain_by_admin(addr, &question),
        None => {
            let file = config.unwrap_or_else(|| PathBuf::from("upstreams.toml"));
            match config::load_file(&file) {
                Ok(validated) => {
                    let snapshot = std::sync::Arc::new(edge::snapshot::Snapshot::compile(
                        &file.display().to_string(),
                        validated.config,
                        None,
                    ));
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => {
                            let certificates = snapshot.config.tls.as_ref().and_then(|tls| {
                                edge::tls::Certificates::load(&tls.certificates).ok()
                            });
                            runtime.block_on(edge::explain::explain(
                                &snapshot,
                                &question,
                                false,
                                certificates.as_deref(),
                            ))
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(errors) => return report_errors(&errors, ""),
            }
        }
    };
    match explained {
        Ok(e) if json => {
            out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&e).unwrap_or_default()
            ));
            ExitCode::SUCCESS
        }
        Ok(e) => {
            out(&edge::explain::render(&e));
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `GET target` on a running edge's admin listener, with the edge's upstream client: the
/// answer's status and body.
fn ask_admin(admin: &str, target: &str) -> Result<(u16, bytes::Bytes), String> {
    use std::time::Duration;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(admin)
        .map_err(|e| format!("{admin}: {e}"))?
        .next()
        .ok_or_else(|| format!("{admin}: no address"))?;
    let ask = edge::upstream::client::Ask {
        method: "GET",
        target,
        host: "edge",
        fields: &[("connection", "close")],
        body: b"",
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let asked = edge::upstream::client::ask_once(addr, &ask, 16 << 20, Duration::from_secs(10));
    let answer = runtime
        .block_on(asked)
        .map_err(|e| format!("{admin}: {e}"))?;
    Ok((answer.status, answer.body))
}

/// `GET /explain?...` on a running edge's admin listener.
fn explain_by_admin(
    admin: &str,
    question: &edge::explain::Question,
) -> Result<edge::explain::Explanation, String> {
    let (status, body) = ask_admin(admin, &format!("/explain?{}", question.to_query()))?;
    let body: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("{admin}: not a JSON answer: {e}"))?;
    if status != 200 {
        let why = format!("HTTP {status}");
        return Err(body["message"].as_str().unwrap_or(&why).to_string());
    }
    serde_json::from_value(body).map_err(|e| format!("{admin}: unexpected answer: {e}"))
}

fn import_nginx(
    nginx_conf: &std::path::Path,
    output: Option<&std::path::Path>,
    nginx_root: &std::path::Path,
) -> ExitCode {
    let imported = match edge_nginx::import(nginx_conf, nginx_root) {
        Ok(imported) => imported,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let name = output.map_or("<imported upstreams.toml>".to_string(), |p| {
        p.display().to_string()
    });
    let valid = config::validate(&name, &imported.toml);
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &imported.toml) {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
        None => out(&imported.toml),
    }
    let decide = imported.notes.iter().filter(|n| n.decide).count();
    eprintln!(
        "{} directive{} not carried as written; {decide} need{} a decision (marked !):",
        imported.notes.len(),
        if imported.notes.len() == 1 { "" } else { "s" },
        if decide == 1 { "s" } else { "" }
    );
    for note in &imported.notes {
        eprintln!("{note}");
    }
    if let Err(errors) = &valid {
        for e in &errors.errors {
            eprintln!("error: {e}");
        }
        eprintln!("the imported file does not pass `edge check`: fix the errors above");
        return ExitCode::FAILURE;
    }
    if imported.needs_decision() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_warnings(validated: &Validated) {
    for w in &validated.warnings {
        eprintln!("warning: {w}");
    }
}

/// Prints a config's errors; `after` ends the count line (what was not done because of them).
fn report_errors(errors: &ConfigErrors, after: &str) -> ExitCode {
    for e in &errors.errors {
        eprintln!("error: {e}");
    }
    eprintln!(
        "{} error{} found{after}",
        errors.errors.len(),
        if errors.errors.len() == 1 { "" } else { "s" }
    );
    ExitCode::FAILURE
}

fn healthcheck(admin: &str) -> ExitCode {
    match ask_admin(admin, "/health") {
        Ok((200, body)) => {
            out(&format!("{}\n", String::from_utf8_lossy(&body)));
            ExitCode::SUCCESS
        }
        Ok((status, _)) => {
            eprintln!("edge healthcheck: HTTP {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("edge healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

fn diff(old: &std::path::Path, new: &std::path::Path) -> ExitCode {
    let (old, new) = match (config::load_file(old), config::load_file(new)) {
        (Ok(o), Ok(n)) => (o.config, n.config),
        (Err(e), _) | (_, Err(e)) => return report_errors(&e, ""),
    };
    out(&format!("{}\n", edge::reload::Diff::between(&old, &new)));
    ExitCode::SUCCESS
}

/// The embedded default serves HTTPS with a self-signed development certificate, generated on
/// first run when the configured files are missing.
fn ensure_dev_certificates(validated: &Validated) -> Result<(), edge::tls::TlsError> {
    for pair in validated.config.tls.iter().flat_map(|t| &t.certificates) {
        if pair.cert.exists() && pair.key.exists() {
            continue;
        }
        edge::tls::generate_self_signed(&["localhost", "127.0.0.1"], &pair.cert, &pair.key)?;
        tracing::warn!(
            cert = %pair.cert.display(),
            key = %pair.key.display(),
            "generated a self-signed development certificate; replace it with a real one (see README)"
        );
    }
    Ok(())
}

/// Writes a command's output to stdout. A reader that has gone (`edge explain ... | head`)
/// ends the command quietly, as it ends any Unix tool; another failure to write is an error.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: writing the output: {e}");
            std::process::exit(1);
        }
    }
}
