//! DNS discovery: a server `addr` that is a name ("content-manager:8000") becomes one server
//! per address the name has, and the name is resolved again when its answer expires (its
//! TTL, never sooner than `[edge] dns_min_ttl`). That is how the edge follows services scaled
//! out behind Docker's DNS or a Kubernetes headless Service.
//!
//! Lookups run on a thread of their own with a small runtime (hickory's resolver), so that
//! start-up, a reload on a blocking thread and the file watcher can all wait for an answer
//! without being inside the proxy's runtime. When a refreshed answer differs, the change
//! callback recompiles the running config like a reload: servers whose address stayed keep
//! their state. A failed lookup keeps the addresses last known; a name never resolved has no
//! address and its server takes no traffic until it resolves.

use crate::held;
use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a caller waits for a name it has never seen before resolving it.
const FIRST_LOOKUP_WAIT: Duration = Duration::from_secs(5);
/// The longest an answer is kept, whatever its TTL says.
const MAX_TTL: Duration = Duration::from_secs(3600);

/// Called with a description of what changed ("app.internal: 10.0.0.1, 10.0.0.2").
type OnChange = Arc<dyn Fn(&str) + Send + Sync>;

/// The process's resolver and what it knows.
pub struct Discovery {
    jobs: mpsc::Sender<Job>,
    cache: Arc<Mutex<HashMap<String, Answer>>>,
    on_change: Arc<Mutex<Changes>>,
    /// Names a prefetch asked for whose answers have not come: a caller does not wait for
    /// them again (their answers are reported as changes when they come).
    pending: Arc<Mutex<HashSet<String>>>,
}

#[derive(Clone, Debug)]
struct Answer {
    ips: Vec<IpAddr>,
    refresh_at: Instant,
    /// The last lookup failed (its warning was logged; the next failures are not).
    failing: bool,
}

enum Job {
    /// Use these DNS servers (empty: the system's) and this TTL floor.
    Configure {
        servers: Vec<SocketAddr>,
        min_ttl: Duration,
    },
    /// Resolve a name now and answer on `reply`.
    Lookup {
        host: String,
        reply: mpsc::Sender<Vec<IpAddr>>,
    },
    /// Resolve the names not known yet, all at once; `reply` when all have answered.
    Prefetch {
        hosts: Vec<String>,
        reply: mpsc::Sender<()>,
    },
    /// The names the running config uses; others are forgotten.
    Track(HashSet<String>),
}

/// The process-wide discovery thread, started on first use.
pub fn global() -> &'static Discovery {
    static DISCOVERY: OnceLock<Discovery> = OnceLock::new();
    DISCOVERY.get_or_init(Discovery::start)
}

/// A server address split into what to resolve: a literal socket address, or a name and port.
pub enum Target<'a> {
    Literal(SocketAddr),
    Name { host: &'a str, port: u16 },
    Invalid,
}

impl<'a> Target<'a> {
    pub fn parse(addr: &'a str) -> Target<'a> {
        if let Ok(a) = addr.parse::<SocketAddr>() {
            return Target::Literal(a);
        }
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.contains(':') => {
                match port.parse::<u16>() {
                    Ok(port) => Target::Name { host, port },
                    Err(_) => Target::Invalid,
                }
            }
            _ => Target::Invalid,
        }
    }
}

impl Discovery {
    fn start() -> Discovery {
        let (jobs, queue) = mpsc::channel();
        let cache = Arc::new(Mutex::new(HashMap::new()));
        let on_change: Arc<Mutex<Changes>> = Arc::default();
        let pending = Arc::new(Mutex::new(HashSet::new()));
        let worker = Worker {
            cache: cache.clone(),
            on_change: on_change.clone(),
            pending: pending.clone(),
            tracked: HashSet::new(),
            min_ttl: crate::config::DEFAULT_DNS_MIN_TTL,
            servers: Vec::new(),
            resolver: None,
        };
        if let Err(e) = std::thread::Builder::new()
            .name("edge-dns".into())
            .spawn(move || worker.run(queue))
        {
            tracing::error!(error = %e, "cannot start the DNS thread; server names will not resolve");
        }
        Discovery {
            jobs,
            cache,
            on_change,
            pending,
        }
    }

    /// Uses `servers` (empty: /etc/resolv.conf and /etc/hosts) and the TTL floor from now on.
    pub fn configure(&self, servers: &[SocketAddr], min_ttl: Duration) {
        let _ = self.jobs.send(Job::Configure {
            servers: servers.to_vec(),
            min_ttl,
        });
    }

    /// The addresses `host` has now: from the last answer, or resolved now (waiting up to
    /// a few seconds) for a name not seen before. Empty when it does not resolve.
    pub fn addresses(&self, host: &str) -> Vec<IpAddr> {
        if let Some(answer) = self.lock_cache().get(host) {
            return answer.ips.clone();
        }
        if held::lock(&self.pending).contains(host) {
            // A prefetch gave up waiting for it: its answer is applied when it comes.
            return Vec::new();
        }
        let (reply, answer) = mpsc::channel();
        if self
            .jobs
            .send(Job::Lookup {
                host: host.to_string(),
                reply,
            })
            .is_err()
        {
            return Vec::new();
        }
        answer.recv_timeout(FIRST_LOOKUP_WAIT).unwrap_or_default()
    }

    /// Resolves the names of `hosts` not known yet, all at once, waiting up to a few seconds
    /// for all of them (a config with many names waits for the slowest, not for their sum:
    /// one by one, a resolver that did not answer held the start 5 s per name). Those that
    /// answer later are reported as changes, as a refreshed answer that differs is.
    pub fn prefetch(&self, hosts: &HashSet<String>) {
        let unknown: Vec<String> = {
            let cache = self.lock_cache();
            hosts
                .iter()
                .filter(|h| !cache.contains_key(*h))
                .cloned()
                .collect()
        };
        if unknown.is_empty() {
            return;
        }
        held::lock(&self.pending).extend(unknown.iter().cloned());
        let (reply, done) = mpsc::channel();
        if self
            .jobs
            .send(Job::Prefetch {
                hosts: unknown,
                reply,
            })
            .is_ok()
        {
            let _ = done.recv_timeout(FIRST_LOOKUP_WAIT);
        }
    }

    /// The names the running config uses: they are kept fresh, others forgotten.
    pub fn track(&self, hosts: HashSet<String>) {
        let _ = self.jobs.send(Job::Track(hosts));
    }

    /// Sets what runs when a refreshed answer differs (recompiling the running config).
    pub fn on_change(&self, callback: impl Fn(&str) + Send + Sync + 'static) {
        let due = held::lock(&self.on_change).set(Arc::new(callback));
        if let Some((callback, what)) = due {
            apply(callback, what);
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Answer>> {
        held::lock(&self.cache)
    }
}

/// The DNS thread's state.
struct Worker {
    cache: Arc<Mutex<HashMap<String, Answer>>>,
    on_change: Arc<Mutex<Changes>>,
    pending: Arc<Mutex<HashSet<String>>>,
    tracked: HashSet<String>,
    min_ttl: Duration,
    servers: Vec<SocketAddr>,
    resolver: Option<TokioResolver>,
}

impl Worker {
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the DNS runtime; server names will not resolve");
                return;
            }
        };
        loop {
            let wait = self.next_refresh().map_or(Duration::from_secs(1), |at| {
                at.saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1))
            });
            match queue.recv_timeout(wait) {
                Ok(Job::Configure { servers, min_ttl }) => {
                    if self.resolver.is_none() || servers != self.servers {
                        self.servers = servers;
                        self.resolver = Some(build_resolver(&self.servers));
                        // Answers from other servers are not this config's answers.
                        let now = Instant::now();
                        for answer in self.lock_cache().values_mut() {
                            answer.refresh_at = now;
                        }
                    }
                    self.min_ttl = min_ttl;
                }
                Ok(Job::Lookup { host, reply }) => {
                    let ips = self.refresh(&runtime, &host).0;
                    if reply.send(ips.clone()).is_err() && !ips.is_empty() {
                        // Its caller stopped waiting and compiled the server as unresolved.
                        self.report(vec![described(&host, &ips)]);
                    }
                }
                Ok(Job::Prefetch { hosts, reply }) => self.prefetch(&runtime, hosts, reply),
                Ok(Job::Track(hosts)) => {
                    self.lock_cache().retain(|h, _| hosts.contains(h));
                    self.tracked = hosts;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            self.refresh_due(&runtime);
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Answer>> {
        held::lock(&self.cache)
    }

    fn next_refresh(&self) -> Option<Instant> {
        let cache = self.lock_cache();
        self.tracked
            .iter()
            .filter_map(|h| cache.get(h).map(|a| a.refresh_at))
            .min()
    }

    /// Resolves the tracked names whose answers expired; reports those that changed.
    fn refresh_due(&mut self, runtime: &tokio::runtime::Runtime) {
        let now = Instant::now();
        let due: Vec<String> = {
            let cache = self.lock_cache();
            self.tracked
                .iter()
                .filter(|h| cache.get(*h).is_none_or(|a| a.refresh_at <= now))
                .cloned()
                .collect()
        };
        let mut changes = Vec::new();
        for host in due {
            let (ips, changed) = self.refresh(runtime, &host);
            if changed {
                changes.push(described(&host, &ips));
            }
        }
        self.report(changes);
    }

    /// Resolves the names of `hosts` not known yet at once, then says so on `reply`; when
    /// its caller stopped waiting, the names that resolved are reported as changes (the
    /// caller compiled them as unresolved).
    fn prefetch(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        hosts: Vec<String>,
        reply: mpsc::Sender<()>,
    ) {
        let resolver = self
            .resolver
            .get_or_insert_with(|| build_resolver(&self.servers))
            .clone();
        let lookups = hosts.iter().map(|host| resolver.lookup_ip(host.as_str()));
        let results = runtime.block_on(futures_util::future::join_all(lookups));
        let answered: Vec<(String, Vec<IpAddr>)> = hosts
            .into_iter()
            .zip(results)
            .map(|(host, result)| {
                let ips = self.store(&host, result).0;
                (host, ips)
            })
            .collect();
        {
            let mut pending = held::lock(&self.pending);
            for (host, _) in &answered {
                pending.remove(host);
            }
        }
        if reply.send(()).is_err() {
            let late = answered
                .iter()
                .filter(|(_, ips)| !ips.is_empty())
                .map(|(host, ips)| described(host, ips))
                .collect();
            self.report(late);
        }
    }

    /// Runs the change callback (recompiling the running config) for `changes`, if any.
    fn report(&self, changes: Vec<String>) {
        let due = held::lock(&self.on_change).report(changes);
        if let Some((callback, what)) = due {
            apply(callback, what);
        }
    }

    /// Resolves `host` now and stores the answer: (its addresses, whether they changed).
    fn refresh(&mut self, runtime: &tokio::runtime::Runtime, host: &str) -> (Vec<IpAddr>, bool) {
        let resolver = self
            .resolver
            .get_or_insert_with(|| build_resolver(&self.servers));
        let result = runtime.block_on(resolver.lookup_ip(host));
        self.store(host, result)
    }

    /// Stores a lookup's answer for `host`: (its addresses, whether they changed). A failed
    /// lookup keeps the addresses last known.
    fn store(
        &self,
        host: &str,
        result: Result<hickory_resolver::lookup_ip::LookupIp, hickory_resolver::ResolveError>,
    ) -> (Vec<IpAddr>, bool) {
        let now = Instant::now();
        let mut cache = held::lock(&self.cache);
        let (previous, was_failing) = match cache.get(host) {
            Some(answer) => (Some(answer.ips.clone()), answer.failing),
            None => (None, false),
        };
        match result {
            Ok(lookup) => {
                let mut ips: Vec<IpAddr> = lookup.iter().collect();
                ips.sort();
                ips.dedup();
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(now)
                    .clamp(self.min_ttl, MAX_TTL.max(self.min_ttl));
                let changed = previous.as_ref().is_some_and(|p| *p != ips);
                if changed {
                    tracing::info!(host, addresses = ?ips, "upstream name has new addresses");
                } else if was_failing {
                    tracing::info!(host, addresses = ?ips, "upstream name resolves again");
                }
                cache.insert(
                    host.to_string(),
                    Answer {
                        ips: ips.clone(),
                        refresh_at: now + ttl,
                        failing: false,
                    },
                );
                (ips, changed)
            }
            Err(e) => {
                // Keep what was known; try again after the floor. Said once per outage (a
                // name that never resolves was a warning every dns_min_ttl, for ever); its
                // end is said too.
                let ips = previous.unwrap_or_default();
                let what = "upstream name does not resolve (asked for A and AAAA; the error is the last answer's); keeping the addresses last known, asking again every dns_min_ttl";
                if was_failing {
                    tracing::debug!(host, error = %e, kept = ?ips, "{what}");
                } else {
                    tracing::warn!(host, error = %e, kept = ?ips, "{what}");
                }
                cache.insert(
                    host.to_string(),
                    Answer {
                        ips: ips.clone(),
                        refresh_at: now + self.min_ttl,
                        failing: true,
                    },
                );
                (ips, false)
            }
        }
    }
}

/// The change callback, and the changes found before there was one: an answer that came
/// after its caller stopped waiting at start, before the running config was there to
/// recompile, is applied once it is (the refreshes after it find nothing changed).
#[derive(Default)]
struct Changes {
    callback: Option<OnChange>,
    unreported: Vec<String>,
}

impl Changes {
    /// What to run for `changes` now: the callback and their description, or nothing (none,
    /// or no callback yet: kept for it).
    fn report(&mut self, changes: Vec<String>) -> Option<(OnChange, String)> {
        if changes.is_empty() {
            return None;
        }
        match &self.callback {
            Some(callback) => Some((callback.clone(), changes.join("; "))),
            None => {
                self.unreported.extend(changes);
                None
            }
        }
    }

    /// Sets the callback; what to run now for the changes kept until it came.
    fn set(&mut self, callback: OnChange) -> Option<(OnChange, String)> {
        self.callback = Some(callback.clone());
        let kept = std::mem::take(&mut self.unreported);
        (!kept.is_empty()).then(|| (callback, kept.join("; ")))
    }
}

/// Runs the change callback off the DNS thread (recompiling asks that thread for any name it
/// has not seen).
fn apply(callback: OnChange, what: String) {
    let _ = std::thread::Builder::new()
        .name("edge-dns-apply".into())
        .spawn(move || callback(&what));
}

/// How a change is described to the callback and in its log ("app.internal: 10.0.0.1").
fn described(host: &str, ips: &[IpAddr]) -> String {
    let list: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    format!("{host}: {}", list.join(", "))
}

/// A resolver on `servers`, or on the system's configuration when there are none.
fn build_resolver(servers: &[SocketAddr]) -> TokioResolver {
    let provider = TokioConnectionProvider::default();
    let mut builder = if servers.is_empty() {
        match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the system's DNS settings; only /etc/hosts answers");
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), NameServerConfigGroup::new()),
                    provider,
                )
            }
        }
    } else {
        let group: Vec<NameServerConfig> = servers
            .iter()
            .flat_map(|a| {
                [
                    NameServerConfig::new(*a, Protocol::Udp),
                    NameServerConfig::new(*a, Protocol::Tcp),
                ]
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), group),
            provider,
        )
    };
    let options = builder.options_mut();
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::{Target, Worker};
    use std::sync::{Arc, Mutex};

    /// What a test's subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            crate::held::lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A change found before the callback exists (a late first answer at start) is run when
    /// it is set, once; later ones at once.
    #[test]
    fn changes_found_before_the_callback_are_applied_when_it_comes() {
        let mut changes = super::Changes::default();
        assert!(changes.report(vec!["a.test: 10.0.0.1".into()]).is_none());
        assert!(changes.report(Vec::new()).is_none());
        let callback: super::OnChange = Arc::new(|_: &str| {});
        let due = changes.set(callback.clone()).map(|(_, what)| what);
        assert_eq!(due.as_deref(), Some("a.test: 10.0.0.1"));
        assert!(changes.set(callback).is_none(), "once");
        let now = changes.report(vec!["b.test: 10.0.0.2".into()]);
        assert_eq!(
            now.map(|(_, what)| what).as_deref(),
            Some("b.test: 10.0.0.2")
        );
    }

    /// A name that stops resolving is warned about once per outage: every dns_min_ttl, for
    /// ever, it was a warning for each failed lookup (720 an hour at the default floor).
    #[test]
    fn a_name_that_does_not_resolve_is_warned_about_once_per_outage() {
        let captured = Captured::default();
        let writer = {
            let captured = captured.clone();
            move || captured.clone()
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        let worker = Worker {
            cache: Default::default(),
            on_change: Default::default(),
            pending: Default::default(),
            tracked: Default::default(),
            min_ttl: std::time::Duration::from_secs(5),
            servers: Vec::new(),
            resolver: None,
        };
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                let (kept, changed) = worker.store("gone.test", Err("no answer".into()));
                assert!(kept.is_empty() && !changed);
            }
        });
        let text = String::from_utf8(crate::held::lock(&captured.0).clone()).expect("text");
        assert_eq!(text.matches("does not resolve").count(), 1, "{text}");
        assert!(text.contains("WARN"), "{text}");
    }

    #[test]
    fn addresses_split_into_literals_and_names() {
        assert!(matches!(Target::parse("10.0.0.1:80"), Target::Literal(_)));
        assert!(matches!(Target::parse("[::1]:80"), Target::Literal(_)));
        assert!(matches!(
            Target::parse("content-manager:8000"),
            Target::Name {
                host: "content-manager",
                port: 8000
            }
        ));
        assert!(matches!(Target::parse("no-port"), Target::Invalid));
        assert!(matches!(Target::parse("host:99999"), Target::Invalid));
        assert!(matches!(Target::parse("::1"), Target::Invalid));
    }
}
