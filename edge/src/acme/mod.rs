//! ACME (RFC 8555): the edge obtains and renews the certificates of `[tls.acme] domains`
//! itself, one certificate per name, through instant-acme.
//!
//! A name without a valid stored certificate is ordered at start; a stored one is served at
//! once and renewed when a third of its lifetime is left. Failures back off (1 minute,
//! doubling to 6 hours) and never stop the certificate still valid from being served. Issued
//! certificates go into the one certificate resolver ([`crate::tls::Certificates`]): file
//! certificates win for their names, then ACME's.
//!
//! Challenges: TLS-ALPN-01 answers a CA's `acme-tls/1` handshake with a certificate carrying
//! the key authorization's digest (the resolver, [`crate::tls::SniResolver`]); HTTP-01
//! answers `/.well-known/acme-challenge/TOKEN` on the plain listeners before routing and the
//! https redirect ([`http01_answer`]).
//!
//! Replicas (`store = "redis"`): the account, certificates, keys and pending answers are in
//! Redis; a lock per name lets one replica order while the others wait and load the result,
//! and every replica installs the published answers each second, so whichever replica the
//! CA reaches answers.

pub mod store;

use crate::config::{AcmeChallenge, AcmeSettings, RedisSettings};
use crate::held;
use crate::tls::Certificates;
use arc_swap::ArcSwap;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::{Store, Stored};

/// The shortest wait after a failed order, doubled at each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// How often a replica installs the answers others published, and how long an ordering
/// replica waits after publishing before it tells the CA to validate.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The longest between two looks at a name (its store, the CA's window).
const LOOK_EVERY: Duration = Duration::from_secs(3600);

/// How often the manager reads its names and looks at those that are due.
const TICK: Duration = Duration::from_secs(1);

/// The first wait after the CA's renewal information could not be had, doubled at each
/// failure in a row up to [`LOOK_EVERY`] (RFC 9773 4.3.3: retry with backoff).
const ARI_RETRY: Duration = Duration::from_secs(10);

/// HTTP-01 answers: token -> key authorization.
static HTTP01: LazyLock<ArcSwap<HashMap<String, String>>> = LazyLock::new(ArcSwap::default);

/// The answer to `/.well-known/acme-challenge/TOKEN`, while an order waits for it.
pub fn http01_answer(token: &str) -> Option<String> {
    HTTP01.load().get(token).cloned()
}

/// What `/status`, `/health` and the metrics say about ACME.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NameState {
    /// When the served certificate expires (Unix seconds; 0: none yet).
    pub expires: u64,
    /// When it is due for renewal, or the next attempt after a failure (Unix seconds).
    pub next_renewal: u64,
    /// The last failure, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Counters and per-name state, process-wide.
#[derive(Default)]
pub struct Stats {
    pub names: HashMap<String, NameState>,
    /// Orders by result ("valid", "failed").
    pub orders: HashMap<&'static str, u64>,
    /// Failures by reason ("account", "order", "challenge", "finalize", "store").
    pub failures: HashMap<&'static str, u64>,
}

/// The reasons a failure is counted under, one per step of an order.
pub const FAILURE_REASONS: [&str; 5] = ["account", "order", "challenge", "finalize", "store"];

pub static STATS: LazyLock<Mutex<Stats>> = LazyLock::new(Mutex::default);

fn stats() -> std::sync::MutexGuard<'static, Stats> {
    held::lock(&STATS)
}

/// A failure of one step of an order, with the reason it is counted under.
#[derive(Debug)]
struct Failed {
    reason: &'static str,
    message: String,
}

/// A failed step with the error and every cause under it: the CA's client says only
/// "client error (Connect)" where its causes say "Connection refused" or which name did not
/// resolve.
fn failed<E: std::error::Error>(reason: &'static str) -> impl FnOnce(E) -> Failed {
    move |e| {
        let mut message = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            let said = c.to_string();
            if !message.contains(&said) {
                message.push_str(": ");
                message.push_str(&said);
            }
            cause = c.source();
        }
        Failed { reason, message }
    }
}

/// The store's failures (its messages are whole sentences already).
fn store_failed(message: String) -> Failed {
    Failed {
        reason: "store",
        message,
    }
}

/// The manager as a Pingora background service.
pub struct AcmeService(pub Acme);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for AcmeService {
    async fn start(&self, shutdown: pingora::server::ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}

/// The manager: runs for the life of the process.
pub struct Acme {
    settings: AcmeSettings,
    redis: RedisSettings,
    certificates: Arc<Certificates>,
    /// This replica's name in locks.
    owner: String,
    /// The names to keep a certificate for: the live config's `domains`.
    domains: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    /// Per name: the CA's last renewal window (RFC 9773) and the time chosen in it.
    windows: Mutex<HashMap<String, Window>>,
    /// Per name: the wait before asking for the window again after a failed ask.
    window_retries: Mutex<HashMap<String, Duration>>,
}

/// What the CA says of a certificate's renewal (RFC 9773).
enum Renewal {
    /// Renew at `picked` (chosen in the CA's window); ask again at `ask_again`; the
    /// certificate's identifier for the order that replaces it.
    Window {
        picked: SystemTime,
        ask_again: SystemTime,
        id: CertificateIdentifier<'static>,
    },
    /// The CA's directory offers no renewal information.
    NotOffered,
    /// It offers it, and asking failed (logged): ask again at this time.
    Unavailable(SystemTime),
}

/// A renewal window the CA suggested, and the moment picked at random inside it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Window {
    start: SystemTime,
    end: SystemTime,
    picked: SystemTime,
}

impl Acme {
    /// `domains`: the names to keep, read again each second (a reload may change them).
    pub fn new(
        settings: AcmeSettings,
        redis: RedisSettings,
        certificates: Arc<Certificates>,
        domains: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    ) -> Acme {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        Acme {
            settings,
            redis,
            certificates,
            owner: format!("{}:{}", host.trim(), std::process::id()),
            windows: Mutex::default(),
            window_retries: Mutex::default(),
            domains,
        }
    }

    /// Keeps every name's certificate valid until `shutdown`. The names are read from
    /// `domains` (the live config's) each [`TICK`]: a name a reload adds is ordered for then,
    /// one it removes is no longer renewed.
    pub async fn run(&self, mut shutdown: pingora::server::ShutdownWatch) {
        for name in (self.domains)() {
            stats().names.entry(name).or_default();
        }
        let store = loop {
            match Store::open(&self.settings, &self.redis).await {
                Ok(store) => break Arc::new(store),
                Err(e) => {
                    tracing::error!(error = %e, "ACME: cannot open the store; trying again in 10 s");
                    count_failure("store");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(10)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        };
        if store.shared() {
            tokio::spawn(sync_answers(store.clone(), self.certificates.clone()));
        }
        let mut backoff: HashMap<String, Duration> = HashMap::new();
        // Per name: when to look at it next.
        let mut next: HashMap<String, SystemTime> = HashMap::new();
        loop {
            let names = (self.domains)();
            next.retain(|name, _| names.contains(name));
            stats().names.retain(|name, _| names.contains(name));
            for name in &names {
                stats().names.entry(name.clone()).or_default();
                if next.get(name).is_some_and(|at| *at > SystemTime::now()) {
                    continue;
                }
                let due = match self.keep(&store, name).await {
                    Ok(due) => {
                        backoff.remove(name);
                        due
                    }
                    Err(e) => {
                        let wait = back_off(&mut backoff, name, FIRST_BACKOFF, MAX_BACKOFF);
                        tracing::warn!(%name, reason = e.reason, error = %e.message, directory = %self.settings.directory, retry_in = ?wait, "ACME: no certificate obtained (one already stored stays in use)");
                        count_failure(e.reason);
                        let at = SystemTime::now() + wait;
                        let mut s = stats();
                        let state = s.names.entry(name.clone()).or_default();
                        state.last_error = Some(format!("{}: {}", e.reason, e.message));
                        state.next_renewal = unix(at);
                        at
                    }
                };
                next.insert(name.clone(), due.min(SystemTime::now() + LOOK_EVERY));
            }
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Serves a valid certificate for `name`, ordering one if there is none or the stored
    /// one is due; when it is next due.
    async fn keep(&self, store: &Store, name: &str) -> Result<SystemTime, Failed> {
        let stored = store.certificate(name).await.map_err(store_failed)?;
        let mut replaces = None;
        if let Some(stored) = &stored {
            if let Some(due) = self.install(name, stored) {
                let (due, look_again, id) = self.schedule(store, name, stored, due).await;
                if due > SystemTime::now() {
                    return Ok(look_again);
                }
                replaces = id;
                tracing::info!(%name, "ACME: certificate due for renewal");
            }
        }
        // An order is due. One replica places it; the others wait for what it stores: a
        // certificate other than the one found due.
        let other = |found: Option<Stored>| found.filter(|f| Some(f) != stored.as_ref());
        let deadline = SystemTime::now() + store::LOCK_TTL;
        while !store.lock(name, &self.owner).await.map_err(store_failed)? {
            tokio::time::sleep(SYNC_EVERY).await;
            let found = other(store.certificate(name).await.map_err(store_failed)?);
            if let Some(due) = found.as_ref().and_then(|s| self.install(name, s)) {
                if due > SystemTime::now() {
                    tracing::info!(%name, "ACME: certificate ordered by another replica loaded");
                    return Ok(due);
                }
            }
            if SystemTime::now() > deadline {
                return Err(Failed {
                    reason: "store",
                    message: "another replica holds the order lock and stored nothing".into(),
                });
            }
        }
        let result = async {
            // Another replica may have finished just before the lock was free.
            let found = other(store.certificate(name).await.map_err(store_failed)?);
            if let Some(due) = found.as_ref().and_then(|s| self.install(name, s)) {
                if due > SystemTime::now() {
                    return Ok(due);
                }
            }
            let fresh = self.order(store, name, replaces).await;
            count_order(if fresh.is_ok() { "valid" } else { "failed" });
            let fresh = fresh?;
            store
                .set_certificate(name, &fresh)
                .await
                .map_err(store_failed)?;
            let due = self.install(name, &fresh).ok_or_else(|| Failed {
                reason: "finalize",
                message: "the CA's certificate cannot be served".into(),
            })?;
            Ok(self.schedule(store, name, &fresh, due).await.1)
        }
        .await;
        let _ = store.unlock(name, &self.owner).await;
        result
    }

    /// Serves `stored` for `name` if it is valid now; when it is due for renewal.
    fn install(&self, name: &str, stored: &Stored) -> Option<SystemTime> {
        let key = certified_key(stored)?;
        let (not_before, not_after) = validity(key.cert.first()?.as_ref())?;
        let now = SystemTime::now();
        if now >= not_after {
            return None;
        }
        let lifetime = not_after.duration_since(not_before).unwrap_or_default();
        let due = not_after - lifetime / 3;
        let fresh = self
            .certificates
            .acme_for(name)
            .is_none_or(|served| served.cert != key.cert);
        if fresh {
            self.certificates.set_acme(name, Arc::new(key));
            tracing::info!(%name, expires = %humantime::format_rfc3339_seconds(not_after), "ACME: certificate served");
        }
        let mut s = stats();
        let state = s.names.entry(name.to_string()).or_default();
        state.expires = unix(not_after);
        state.next_renewal = unix(due);
        state.last_error = None;
        Some(due)
    }

    /// When `stored` (served, due at `due` by its lifetime) is renewed: the CA's window
    /// decides where its directory has one. The renewal time, when to look again, and the
    /// identifier a renewing order names.
    async fn schedule(
        &self,
        store: &Store,
        name: &str,
        stored: &Stored,
        due: SystemTime,
    ) -> (
        SystemTime,
        SystemTime,
        Option<CertificateIdentifier<'static>>,
    ) {
        match self.renewal_window(store, name, stored).await {
            Renewal::Window {
                picked,
                ask_again,
                id,
            } => {
                stats()
                    .names
                    .entry(name.to_string())
                    .or_default()
                    .next_renewal = unix(picked);
                (picked, ask_again.min(picked), Some(id))
            }
            Renewal::NotOffered => (due, due, None),
            Renewal::Unavailable(ask_again) => (due, ask_again.min(due), None),
        }
    }

    /// The CA's suggested renewal time for `stored` (RFC 9773 ACME Renewal Information), when
    /// its directory offers it: a moment picked at random inside the window (kept while the
    /// window stays the same), when to ask again, and the certificate's identifier for the
    /// order that replaces it. A failed ask is asked again after [`ARI_RETRY`], doubling.
    async fn renewal_window(&self, store: &Store, name: &str, stored: &Stored) -> Renewal {
        let Some(id) = rustls_pemfile::certs(&mut stored.chain.as_bytes())
            .next()
            .and_then(Result::ok)
            .and_then(|leaf| Some(CertificateIdentifier::try_from(&leaf).ok()?.into_owned()))
        else {
            return Renewal::NotOffered;
        };
        let asked = match self.account(store).await {
            Ok(account) => account.renewal_info(&id).await.map_err(|e| match e {
                instant_acme::Error::Unsupported(_) => None,
                e => Some(failed("account")(e).message),
            }),
            Err(e) => Err(Some(e.message)),
        };
        let (info, ask_again) = match asked {
            Ok(answer) => answer,
            Err(None) => return Renewal::NotOffered,
            Err(Some(error)) => {
                let mut retries = held::lock(&self.window_retries);
                let wait = back_off(&mut retries, name, ARI_RETRY, LOOK_EVERY);
                tracing::warn!(%name, %error, retry_in = ?wait, "ACME: the CA's renewal information is unavailable; renewing at two thirds of the lifetime unless it comes");
                return Renewal::Unavailable(SystemTime::now() + wait);
            }
        };
        held::lock(&self.window_retries).remove(name);
        let at = |unix: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
        let (start, end) = (
            at(info.suggested_window.start.unix_timestamp()),
            at(info.suggested_window.end.unix_timestamp()),
        );
        let mut windows = held::lock(&self.windows);
        let window = match windows.get(name) {
            Some(w) if (w.start, w.end) == (start, end) => *w,
            _ => {
                let span = end.duration_since(start).unwrap_or_default();
                let picked = start + span.mul_f64(random_fraction());
                let w = Window { start, end, picked };
                windows.insert(name.to_string(), w);
                tracing::info!(%name, renew_at = %humantime::format_rfc3339_seconds(picked), "ACME: renewal time chosen in the CA's window");
                w
            }
        };
        Renewal::Window {
            picked: window.picked,
            ask_again: SystemTime::now() + ask_again.clamp(Duration::from_secs(1), LOOK_EVERY),
            id,
        }
    }

    /// One order for `name`, its challenge answered: the chain and its new key. `replaces`:
    /// the certificate it renews, told to a CA with renewal information.
    async fn order(
        &self,
        store: &Store,
        name: &str,
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<Stored, Failed> {
        let account = self.account(store).await?;
        tracing::info!(%name, challenge = ?self.settings.challenge, "ACME: ordering a certificate");
        let identifiers = [Identifier::Dns(name.to_string())];
        let plain = NewOrder::new(&identifiers);
        let mut order = match replaces {
            // A CA may refuse to name the replaced certificate (one an earlier order already
            // replaces, or a CA that does not echo it): the renewal goes ahead without.
            Some(id) => match account
                .new_order(&NewOrder::new(&identifiers).replaces(id))
                .await
            {
                Ok(order) => order,
                Err(e) => {
                    tracing::warn!(%name, error = %e, "ACME: the order naming the certificate it replaces was refused; ordering without");
                    account.new_order(&plain).await.map_err(failed("order"))?
                }
            },
            None => account.new_order(&plain).await.map_err(failed("order"))?,
        };
        let kind = match self.settings.challenge {
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            AcmeChallenge::Http01 => ChallengeType::Http01,
        };
        let mut published = Vec::new();
        {
            let mut authorizations = order.authorizations();
            while let Some(authorization) = authorizations.next().await {
                let mut authorization = authorization.map_err(failed("order"))?;
                match authorization.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(Failed {
                            reason: "challenge",
                            message: format!("authorization is {other:?}"),
                        })
                    }
                }
                let mut challenge =
                    authorization
                        .challenge(kind.clone())
                        .ok_or_else(|| Failed {
                            reason: "challenge",
                            message: format!("the CA offers no {kind:?} challenge"),
                        })?;
                let key_authorization = challenge.key_authorization();
                let field = match self.settings.challenge {
                    AcmeChallenge::Http01 => {
                        let token = key_authorization
                            .as_str()
                            .split('.')
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        answer_http01(&token, Some(key_authorization.as_str()));
                        let field = format!("http:{token}");
                        store
                            .publish(&field, key_authorization.as_str())
                            .await
                            .map_err(store_failed)?;
                        field
                    }
                    AcmeChallenge::TlsAlpn01 => {
                        let digest = key_authorization.digest();
                        answer_tls_alpn01(&self.certificates, name, Some(digest.as_ref()));
                        let field = format!("alpn:{name}");
                        store
                            .publish(&field, &hex(digest.as_ref()))
                            .await
                            .map_err(store_failed)?;
                        field
                    }
                };
                published.push(field);
                if store.shared() {
                    // Every replica installs the answer before the CA looks.
                    tokio::time::sleep(SYNC_EVERY + SYNC_EVERY / 2).await;
                }
                tracing::info!(%name, "ACME: challenge answered; asking the CA to validate");
                challenge.set_ready().await.map_err(failed("challenge"))?;
            }
        }
        let status = order.poll_ready(&RetryPolicy::default()).await;
        for field in &published {
            let _ = store.withdraw(field).await;
            if let Some(token) = field.strip_prefix("http:") {
                answer_http01(token, None);
            }
        }
        answer_tls_alpn01(&self.certificates, name, None);
        let status = status.map_err(failed("challenge"))?;
        if status != OrderStatus::Ready {
            let detail = order
                .state()
                .error
                .as_ref()
                .map_or_else(|| format!("the order is {status:?}"), |e| e.to_string());
            return Err(Failed {
                reason: "challenge",
                message: detail,
            });
        }
        let key = order.finalize().await.map_err(failed("finalize"))?;
        let chain = order
            .poll_certificate(&RetryPolicy::default())
            .await
            .map_err(failed("finalize"))?;
        tracing::info!(%name, "ACME: certificate issued");
        Ok(Stored { chain, key })
    }

    /// The ACME account: the stored one, or a new one (stored for every later order).
    async fn account(&self, store: &Store) -> Result<Account, Failed> {
        let builder = || match &self.settings.ca {
            Some(ca) => Account::builder_with_root(ca).map_err(failed("account")),
            None => Account::builder().map_err(failed("account")),
        };
        if let Some(json) = store.account().await.map_err(store_failed)? {
            let credentials: AccountCredentials =
                serde_json::from_str(&json).map_err(failed("account"))?;
            return builder()?
                .from_credentials(credentials)
                .await
                .map_err(failed("account"));
        }
        let contact: Vec<String> = self
            .settings
            .email
            .iter()
            .map(|e| format!("mailto:{e}"))
            .collect();
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let eab = match &self.settings.eab {
            Some((kid, key)) => Some(ExternalAccountKey::new(
                kid.clone(),
                &base64url_decode(key).ok_or_else(|| Failed {
                    reason: "account",
                    message: "eab hmac_key is not base64url".into(),
                })?,
            )),
            None => None,
        };
        let (account, credentials) = builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(failed("account"))?;
        let json = serde_json::to_string(&credentials).map_err(failed("account"))?;
        store.set_account(&json).await.map_err(store_failed)?;
        tracing::info!(directory = %self.settings.directory, "ACME: account created");
        Ok(account)
    }
}

/// The wait after one more failure for `name` in a row: `first`, then doubled each time up to
/// `max` (kept in `waits` until the name succeeds and its entry is removed).
fn back_off(
    waits: &mut HashMap<String, Duration>,
    name: &str,
    first: Duration,
    max: Duration,
) -> Duration {
    let wait = waits.get(name).map_or(first, |w| (*w * 2).min(max));
    waits.insert(name.to_string(), wait);
    wait
}

fn count_order(result: &'static str) {
    *stats().orders.entry(result).or_default() += 1;
}

fn count_failure(reason: &'static str) {
    *stats().failures.entry(reason).or_default() += 1;
}

/// A number in [0, 1) from the process's random hasher keys.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Sets (or with `None` withdraws) the HTTP-01 answer for `token`.
fn answer_http01(token: &str, answer: Option<&str>) {
    HTTP01.rcu(|all| {
        let mut all = HashMap::clone(all);
        match answer {
            Some(a) => all.insert(token.to_string(), a.to_string()),
            None => all.remove(token),
        };
        all
    });
}

/// Sets (or with `None` withdraws) the TLS-ALPN-01 answer for `name`: a self-signed
/// certificate for it with the key authorization's SHA-256 `digest` in a critical
/// acmeIdentifier extension (RFC 8737 3).
fn answer_tls_alpn01(certificates: &Certificates, name: &str, digest: Option<&[u8]>) {
    let mut all = held::lock(&ALPN_ANSWERS);
    match digest.and_then(|d| challenge_certificate(name, d)) {
        Some(key) => {
            all.insert(name.to_string(), Arc::new(key));
        }
        None => {
            all.remove(name);
        }
    }
    certificates.set_alpn_challenges(all.clone());
}

/// The TLS-ALPN-01 answers of this process (the resolver holds a copy).
static ALPN_ANSWERS: LazyLock<Mutex<HashMap<String, Arc<CertifiedKey>>>> =
    LazyLock::new(Mutex::default);

fn challenge_certificate(name: &str, digest: &[u8]) -> Option<CertifiedKey> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).ok()?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().ok()?;
    let cert = params.self_signed(&key).ok()?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&der).ok()?;
    Some(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// Installs the answers other replicas published, each [`SYNC_EVERY`].
async fn sync_answers(store: Arc<Store>, certificates: Arc<Certificates>) {
    let mut installed: HashMap<String, String> = HashMap::new();
    loop {
        tokio::time::sleep(SYNC_EVERY).await;
        let Ok(published) = store.challenges().await else {
            continue;
        };
        if published == installed {
            continue;
        }
        for (field, value) in &published {
            if installed.get(field) == Some(value) {
                continue;
            }
            if let Some(token) = field.strip_prefix("http:") {
                answer_http01(token, Some(value));
            } else if let Some(name) = field.strip_prefix("alpn:") {
                if let Some(digest) = unhex(value) {
                    answer_tls_alpn01(&certificates, name, Some(&digest));
                }
            }
        }
        for field in installed.keys().filter(|f| !published.contains_key(*f)) {
            if let Some(token) = field.strip_prefix("http:") {
                answer_http01(token, None);
            } else if let Some(name) = field.strip_prefix("alpn:") {
                answer_tls_alpn01(&certificates, name, None);
            }
        }
        installed = published;
    }
}

/// The chain and key of `stored` as rustls serves them (`None`: unreadable, or a key that
/// does not match).
fn certified_key(stored: &Stored) -> Option<CertifiedKey> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut stored.chain.as_bytes())
        .collect::<Result<_, _>>()
        .ok()?;
    let key = rustls_pemfile::private_key(&mut stored.key.as_bytes()).ok()??;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().ok()?;
    Some(certified)
}

/// A certificate's notBefore and notAfter.
fn validity(der: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let at = |t: i64| Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(t).ok()?));
    let v = cert.validity();
    Some((at(v.not_before.timestamp())?, at(v.not_after.timestamp())?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CA's client says only "client error (Connect)"; the causes under it say why.
    #[test]
    fn a_failed_steps_message_carries_every_cause() {
        #[derive(Debug)]
        struct Client(std::io::Error);
        impl std::fmt::Display for Client {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Client {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let failure = failed("account")(Client(refused));
        assert_eq!(failure.reason, "account");
        assert_eq!(
            failure.message,
            "client error (Connect): connection refused"
        );
    }

    #[test]
    fn encodings_round_trip() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(unhex("zz"), None);
        assert_eq!(base64url_decode("aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(base64url_decode("_-8"), Some(vec![0xff, 0xef]));
    }

    #[test]
    fn a_challenge_certificate_names_its_host_and_carries_the_digest() {
        let digest = [7u8; 32];
        let key = challenge_certificate("a.example", &digest).expect("a certificate");
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).expect("x509");
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        assert!(ext.value.ends_with(&digest));
    }
}
