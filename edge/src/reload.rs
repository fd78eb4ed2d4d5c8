//! Live reload: load ▸ validate ▸ compile (off the request path) ▸ diff ▸ one atomic swap.
//!
//! Triggered by the file changing (the watcher follows the directory, so editors that write a
//! new file and rename it and Kubernetes' `..data` symlink swaps are seen), by SIGHUP, and by
//! `POST /reload` on the admin listener. A reload whose file is byte-for-byte what is running
//! changes nothing; an invalid file changes nothing and its errors are logged and counted.
//! Requests in flight keep the snapshot they started with.

use crate::config::{self, Config, ConfigErrors};
use crate::held;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Reload counters for /status and /metrics.
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub applied: AtomicU64,
    pub refused: AtomicU64,
    /// Unix seconds of the last applied reload (or of the start).
    pub last_applied_unix: AtomicU64,
    /// Hash of the running config file's text.
    pub config_hash: AtomicU64,
    /// Incremented by every swap.
    pub generation: AtomicU64,
    /// The last [`HISTORY`] reloads that applied a change or were refused, newest last.
    history: Mutex<VecDeque<ReloadEvent>>,
}

/// How many reloads `/status` remembers.
pub const HISTORY: usize = 20;

/// One reload as `/status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadEvent {
    /// Unix seconds.
    pub at: u64,
    /// What triggered it: "file changed", "SIGHUP", "POST /reload".
    pub trigger: String,
    /// "applied" or "refused".
    pub result: &'static str,
    /// The changes (applied) or the errors with file:line:col (refused), one per line.
    pub details: Vec<String>,
}

impl ReloadStats {
    fn record(&self, event: ReloadEvent) {
        let mut history = held::lock(&self.history);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event);
    }

    /// The remembered reloads, oldest first.
    pub fn history(&self) -> Vec<ReloadEvent> {
        let history = held::lock(&self.history);
        history.iter().cloned().collect()
    }
}

/// Reloads one config file into the live snapshot.
pub struct Reloader {
    path: Option<PathBuf>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    pub stats: ReloadStats,
    /// Serialises reloads from the watcher, SIGHUP and /reload.
    lock: Mutex<()>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file is what is already running.
    Unchanged,
    /// The new config is live; the diff says what changed.
    Applied(Box<Diff>),
}

impl Reloader {
    /// `path` is `None` for the embedded default, which cannot change.
    pub fn new(path: Option<PathBuf>, snapshot: Arc<ArcSwap<Snapshot>>, text: &str) -> Self {
        let stats = ReloadStats::default();
        stats.config_hash.store(hash_text(text), Ordering::Relaxed);
        stats.last_applied_unix.store(unix_now(), Ordering::Relaxed);
        Reloader {
            path,
            snapshot,
            stats,
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reloads from the file; `why` names the trigger in the log.
    pub fn reload(&self, why: &str) -> Result<Outcome, ConfigErrors> {
        let _serial = held::lock(&self.lock);
        let Some(path) = &self.path else {
            return Ok(Outcome::Unchanged);
        };
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                let errors = ConfigErrors {
                    errors: vec![config::Diagnostic {
                        file: name,
                        line: 0,
                        column: 0,
                        message: format!("cannot read the file: {e}"),
                    }],
                };
                self.refused(why, &errors);
                return Err(errors);
            }
        };
        let hash = hash_text(&text);
        if hash == self.stats.config_hash.load(Ordering::Relaxed) {
            tracing::info!(trigger = why, "config unchanged; nothing to reload");
            return Ok(Outcome::Unchanged);
        }
        let validated = match config::validate(&name, &text) {
            Ok(v) => v,
            Err(errors) => {
                self.refused(why, &errors);
                return Err(errors);
            }
        };
        for w in &validated.warnings {
            tracing::warn!(warning = %w, "config warning");
        }
        let current = self.snapshot.load_full();
        let diff = Diff::between(&current.config, &validated.config);
        let next = Snapshot::compile(&name, validated.config, Some(&current));
        self.snapshot.store(Arc::new(next));
        self.stats.config_hash.store(hash, Ordering::Relaxed);
        self.stats.applied.fetch_add(1, Ordering::Relaxed);
        self.stats.generation.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_applied_unix
            .store(unix_now(), Ordering::Relaxed);
        tracing::info!(trigger = why, changes = %diff, "config reloaded");
        self.stats.record(ReloadEvent {
            at: unix_now(),
            trigger: why.to_string(),
            result: "applied",
            details: diff.to_string().split("; ").map(str::to_string).collect(),
        });
        for note in &diff.needs_upgrade {
            tracing::warn!(
                change = %note,
                "this change is not applied by a reload; do a graceful binary upgrade (see README)"
            );
        }
        Ok(Outcome::Applied(Box::new(diff)))
    }

    /// Compiles the running config again, for changes that come from outside the file (a
    /// name's DNS answer): servers whose address stayed keep their state.
    pub fn recompile(&self, why: &str) {
        let _serial = held::lock(&self.lock);
        let current = self.snapshot.load_full();
        let next = Snapshot::compile(&current.source, current.config.clone(), Some(&current));
        let servers = |s: &Snapshot| -> BTreeSet<String> {
            s.upstreams
                .iter()
                .flat_map(|(name, u)| u.servers.iter().map(move |s| format!("{name}/{}", s.label)))
                .collect()
        };
        let (before, after) = (servers(&current), servers(&next));
        let added: Vec<String> = after.difference(&before).cloned().collect();
        let removed: Vec<String> = before.difference(&after).cloned().collect();
        self.snapshot.store(Arc::new(next));
        self.stats.generation.fetch_add(1, Ordering::Relaxed);
        let mut details = vec![why.to_string()];
        if !added.is_empty() {
            details.push(format!("servers added: {}", added.join(", ")));
        }
        if !removed.is_empty() {
            details.push(format!("servers removed: {}", removed.join(", ")));
        }
        tracing::info!(trigger = "DNS", changes = %details.join("; "), "upstream servers updated");
        self.stats.record(ReloadEvent {
            at: unix_now(),
            trigger: "DNS".to_string(),
            result: "applied",
            details,
        });
    }

    fn refused(&self, why: &str, errors: &ConfigErrors) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.stats.record(ReloadEvent {
            at: unix_now(),
            trigger: why.to_string(),
            result: "refused",
            details: errors.errors.iter().map(|e| e.to_string()).collect(),
        });
        for e in &errors.errors {
            tracing::error!(trigger = why, error = %e, "config reload refused; the running config is kept");
        }
    }

    /// Watches the config file's directory and reloads on changes until the process ends.
    /// A change is reloaded once the file has been quiet for [`QUIET`]: an editor's write,
    /// rename and chmod make one reload, and a slow copy is read whole. Reads of the file
    /// are not changes: the edge's own read of it (each reload's, whatever its trigger) would
    /// otherwise be seen as one, and the file read again ten times a second for ever.
    pub fn watch(self: &Arc<Self>) -> notify::Result<()> {
        use notify::{RecursiveMode, Watcher};
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx)?;
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        // Only the config file itself matters, and the `..data` / `..2024_...` entries of a
        // Kubernetes ConfigMap volume that it links through; logs or other files written
        // beside it must not cause reloads.
        let name = path.file_name().map(|n| n.to_os_string());
        let changes = move |event: &notify::Event| {
            !matches!(event.kind, notify::EventKind::Access(_))
                && event.paths.iter().any(|changed| {
                    changed.file_name().is_some_and(|f| {
                        Some(f) == name.as_deref() || f.to_string_lossy().starts_with("..")
                    })
                })
        };
        let reloader = self.clone();
        std::thread::Builder::new()
            .name("config-watch".into())
            .spawn(move || {
                let _watcher = watcher; // kept alive by this thread
                loop {
                    match rx.recv() {
                        Ok(Ok(event)) if changes(&event) => {}
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "config watcher error");
                            continue;
                        }
                        Err(_) => return,
                    }
                    // Until the directory is quiet (a write in several steps is not whole
                    // before its last).
                    loop {
                        match rx.recv_timeout(QUIET) {
                            Ok(_) => {}
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    let _ = reloader.reload("file changed");
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(())
    }
}

/// How long the config file's directory must be quiet after a change before it is read.
const QUIET: Duration = Duration::from_millis(100);

/// Reloads on SIGHUP (Pingora leaves SIGHUP at its default, which would end the process).
pub fn reload_on_sighup(reloader: Arc<Reloader>) -> std::io::Result<()> {
    crate::signals::on_signal(tokio::signal::unix::SignalKind::hangup(), move || {
        let _ = reloader.reload("SIGHUP");
    })
}

fn hash_text(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What changed between two configs, in the config's own words.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    pub routes_changed: Vec<String>,
    pub upstreams_added: Vec<String>,
    pub upstreams_removed: Vec<String>,
    pub upstreams_changed: Vec<String>,
    /// "upstream/addr" entries: the configured `addr` (the status page's rows add the
    /// resolved address for a name).
    pub servers_added: Vec<String>,
    pub servers_removed: Vec<String>,
    pub zones_added: Vec<String>,
    pub zones_removed: Vec<String>,
    pub zones_changed: Vec<String>,
    /// Changes a reload cannot apply (listeners, TLS, threads).
    pub needs_upgrade: Vec<String>,
    /// Other [edge]/[gzip]/[redis] settings that changed.
    pub settings_changed: Vec<String>,
}

impl Diff {
    pub fn between(old: &Config, new: &Config) -> Diff {
        // Over 100 lines: one short block per config section, in the file's order, which is
        // the report's order.
        let mut d = Diff::default();
        let route_key = |r: &config::RouteSettings| match &r.host {
            Some(h) => format!("{h}{}", r.path),
            None => r.path.clone(),
        };
        let old_routes: BTreeMap<String, &config::RouteSettings> =
            old.routes.iter().map(|r| (route_key(r), r)).collect();
        let new_routes: BTreeMap<String, &config::RouteSettings> =
            new.routes.iter().map(|r| (route_key(r), r)).collect();
        compare(
            &old_routes,
            &new_routes,
            &mut d.routes_added,
            &mut d.routes_removed,
            &mut d.routes_changed,
        );
        compare(
            &old.upstreams,
            &new.upstreams,
            &mut d.upstreams_added,
            &mut d.upstreams_removed,
            &mut d.upstreams_changed,
        );
        for (name, new_up) in &new.upstreams {
            let old_addrs: BTreeSet<&str> = old
                .upstreams
                .get(name)
                .map(|u| u.servers.iter().map(|s| s.addr.as_str()).collect())
                .unwrap_or_default();
            let new_addrs: BTreeSet<&str> =
                new_up.servers.iter().map(|s| s.addr.as_str()).collect();
            for a in new_addrs.difference(&old_addrs) {
                d.servers_added.push(format!("{name}/{a}"));
            }
            if old.upstreams.contains_key(name) {
                for a in old_addrs.difference(&new_addrs) {
                    d.servers_removed.push(format!("{name}/{a}"));
                }
            }
        }
        compare(
            &old.zones,
            &new.zones,
            &mut d.zones_added,
            &mut d.zones_removed,
            &mut d.zones_changed,
        );
        let (oe, ne) = (&old.edge, &new.edge);
        if oe.http_listen != ne.http_listen {
            d.needs_upgrade.push("edge.http_listen".into());
        }
        if oe.https_listen != ne.https_listen {
            d.needs_upgrade.push("edge.https_listen".into());
        }
        if oe.admin_listen != ne.admin_listen {
            d.needs_upgrade.push("edge.admin_listen".into());
        }
        if oe.threads != ne.threads {
            d.needs_upgrade.push("edge.threads".into());
        }
        if oe.keepalive_requests != ne.keepalive_requests {
            d.needs_upgrade.push("edge.keepalive_requests".into());
        }
        if oe.access_log != ne.access_log {
            d.needs_upgrade.push("edge.access_log".into());
        }
        // The QUIC endpoints and their TLS config (0-RTT among it) are made at start.
        if oe.http3 != ne.http3 {
            d.needs_upgrade.push("edge.http3".into());
        }
        if oe.http3_early_data != ne.http3_early_data {
            d.needs_upgrade.push("edge.http3_early_data".into());
        }
        // ACME's names follow a reload (a route's new host gets a certificate); its other
        // keys, like the rest of [tls], take an upgrade.
        let without_domains = |tls: &Option<crate::config::TlsSettings>| {
            tls.clone().map(|mut t| {
                if let Some(a) = t.acme.as_mut() {
                    a.domains.clear();
                }
                t
            })
        };
        let (old_tls, new_tls) = (without_domains(&old.tls), without_domains(&new.tls));
        let acme_of = |t: &Option<crate::config::TlsSettings>| t.as_ref().map(|t| t.acme.clone());
        if acme_of(&old_tls) != acme_of(&new_tls) {
            d.needs_upgrade.push("tls.acme".into());
        }
        let without_acme = |tls: Option<crate::config::TlsSettings>| {
            tls.map(|mut t| {
                t.acme = None;
                t
            })
        };
        if without_acme(old_tls) != without_acme(new_tls) {
            d.needs_upgrade.push("[tls]".into());
        }
        for (changed, name) in [
            (
                oe.trusted_proxies != ne.trusted_proxies,
                "edge.trusted_proxies",
            ),
            (
                oe.redirect_http_to_https != ne.redirect_http_to_https,
                "edge.redirect_http_to_https",
            ),
            (
                oe.keepalive_timeout != ne.keepalive_timeout,
                "edge.keepalive_timeout",
            ),
            (
                oe.client_header_timeout != ne.client_header_timeout,
                "edge.client_header_timeout",
            ),
            (
                oe.client_body_timeout != ne.client_body_timeout,
                "edge.client_body_timeout",
            ),
            (oe.send_timeout != ne.send_timeout, "edge.send_timeout"),
            (
                oe.http2_max_concurrent_streams != ne.http2_max_concurrent_streams,
                "edge.http2_max_concurrent_streams",
            ),
            (
                oe.client_max_body_size != ne.client_max_body_size,
                "edge.client_max_body_size",
            ),
            (
                oe.client_body_buffer_size != ne.client_body_buffer_size,
                "edge.client_body_buffer_size",
            ),
            (oe.resolver != ne.resolver, "edge.resolver"),
            (oe.max_uri_size != ne.max_uri_size, "edge.max_uri_size"),
            (
                oe.max_header_size != ne.max_header_size,
                "edge.max_header_size",
            ),
            (oe.max_headers != ne.max_headers, "edge.max_headers"),
            (
                oe.max_connections_per_client != ne.max_connections_per_client,
                "edge.max_connections_per_client",
            ),
            (oe.dns_min_ttl != ne.dns_min_ttl, "edge.dns_min_ttl"),
            (old.gzip != new.gzip, "[gzip]"),
            (old.redis != new.redis, "[redis]"),
        ] {
            if changed {
                d.settings_changed.push(name.into());
            }
        }
        d
    }

    pub fn is_empty(&self) -> bool {
        self.to_string() == "no changes"
    }
}

fn compare<K: Ord + Clone + ToString, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    added: &mut Vec<String>,
    removed: &mut Vec<String>,
    changed: &mut Vec<String>,
) {
    for (k, v) in new {
        match old.get(k) {
            None => added.push(k.to_string()),
            Some(o) if o != v => changed.push(k.to_string()),
            _ => {}
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            removed.push(k.to_string());
        }
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        for (label, items) in [
            ("routes added", &self.routes_added),
            ("routes removed", &self.routes_removed),
            ("routes changed", &self.routes_changed),
            ("upstreams added", &self.upstreams_added),
            ("upstreams removed", &self.upstreams_removed),
            ("upstreams changed", &self.upstreams_changed),
            ("servers added", &self.servers_added),
            ("servers removed", &self.servers_removed),
            ("zones added", &self.zones_added),
            ("zones removed", &self.zones_removed),
            ("zones changed", &self.zones_changed),
            ("settings changed", &self.settings_changed),
            ("needs a binary upgrade", &self.needs_upgrade),
        ] {
            if !items.is_empty() {
                if !out.is_empty() {
                    out.push_str("; ");
                }
                let _ = write!(out, "{label}: {}", items.join(", "));
            }
        }
        if out.is_empty() {
            out.push_str("no changes");
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        config::validate("t.toml", text).expect("valid").config
    }

    #[test]
    fn diff_names_what_changed() {
        let old = cfg(
            "[upstreams.a]\nservers = [{ addr = \"10.0.0.1:80\" }]\n[upstreams.b]\nservers = [{ addr = \"10.0.0.2:80\" }]\n[zones.api]\nrate = \"1r/s\"\n[[routes]]\npath = \"/x/\"\nupstream = \"a\"\n[[routes]]\npath = \"/y/\"\nupstream = \"b\"\n",
        );
        let new = cfg(
            "[edge]\nhttp_listen = [\"127.0.0.1:81\"]\n[upstreams.a]\nservers = [{ addr = \"10.0.0.1:80\" }, { addr = \"10.0.0.3:80\" }]\n[zones.api]\nrate = \"2r/s\"\n[[routes]]\npath = \"/x/\"\nupstream = \"a\"\n[[routes]]\npath = \"/z/\"\nupstream = \"a\"\n",
        );
        let d = Diff::between(&old, &new);
        assert_eq!(d.routes_added, vec!["/z/"]);
        assert_eq!(d.routes_removed, vec!["/y/"]);
        assert_eq!(d.upstreams_removed, vec!["b"]);
        assert_eq!(d.upstreams_changed, vec!["a"]);
        assert_eq!(d.servers_added, vec!["a/10.0.0.3:80"]);
        assert_eq!(d.zones_changed, vec!["api"]);
        assert_eq!(d.needs_upgrade, vec!["edge.http_listen"]);
        assert!(Diff::between(&old, &old).is_empty());
        assert!(d.to_string().contains("routes added: /z/"));
    }

    /// HTTP/3's keys are bound at start (its endpoints and their TLS config): a change says
    /// it needs an upgrade, not "no changes".
    #[test]
    fn http3_changes_need_an_upgrade() {
        let base = "[tls]\ncertificates = [{ cert = \"a.crt\", key = \"a.key\" }]\n[upstreams.a]\nservers = [{ addr = \"10.0.0.1:80\" }]\n[[routes]]\npath = \"/\"\nupstream = \"a\"\n";
        let old = cfg(base);
        for (key, value) in [("http3", "false"), ("http3_early_data", "true")] {
            let new = cfg(&format!("[edge]\n{key} = {value}\n{base}"));
            let d = Diff::between(&old, &new);
            assert_eq!(d.needs_upgrade, vec![format!("edge.{key}")], "{key}");
            assert!(d.to_string().contains("needs a binary upgrade"), "{d}");
        }
    }
}
