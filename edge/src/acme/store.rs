//! Where ACME's state lives: the account, each name's certificate and key (PEM, as a file
//! store holds them), the answers to pending challenges, and the lock that lets one replica
//! order while the others wait. Files under `storage` (0600, in a 0700 directory) for one
//! edge; Redis (`[redis]`) for replicas that share them.

use crate::config::{AcmeSettings, AcmeStore, RedisSettings};
use redis::AsyncCommands;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// Redis keys: `edge:acme:account`, `edge:acme:cert:NAME`, `edge:acme:key:NAME`,
/// `edge:acme:lock:NAME` and the hash `edge:acme:challenges`.
const PREFIX: &str = "edge:acme:";

/// How long an order may hold a name's lock before another replica may take it over.
pub const LOCK_TTL: Duration = Duration::from_secs(300);

/// A certificate chain and its key, both PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub chain: String,
    pub key: String,
}

pub enum Store {
    Local {
        dir: PathBuf,
    },
    Redis {
        connection: redis::aio::ConnectionManager,
    },
}

type Result<T> = std::result::Result<T, String>;

impl Store {
    /// The store `settings` name.
    pub async fn open(settings: &AcmeSettings, redis: &RedisSettings) -> Result<Store> {
        match settings.store {
            AcmeStore::Local => {
                let dir = settings.storage.clone();
                create_private_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                Ok(Store::Local { dir })
            }
            AcmeStore::Redis => {
                let info = crate::ratelimit::redis_store::connection_info(&redis.url)
                    .map_err(|e| e.to_string())?;
                let client = redis::Client::open(info).map_err(|e| e.to_string())?;
                let connection = redis::aio::ConnectionManager::new(client)
                    .await
                    .map_err(|e| format!("Redis: {e}"))?;
                Ok(Store::Redis { connection })
            }
        }
    }

    /// Whether replicas share this store (and so its challenges and locks).
    pub fn shared(&self) -> bool {
        matches!(self, Store::Redis { .. })
    }

    pub async fn account(&self) -> Result<Option<String>> {
        self.get("account", "account.json").await
    }

    pub async fn set_account(&self, json: &str) -> Result<()> {
        self.put("account", "account.json", json).await
    }

    /// `name`'s certificate and key, if stored.
    pub async fn certificate(&self, name: &str) -> Result<Option<Stored>> {
        let chain = self
            .get(&format!("cert:{name}"), &format!("{name}.crt"))
            .await?;
        let key = self
            .get(&format!("key:{name}"), &format!("{name}.key"))
            .await?;
        Ok(chain.zip(key).map(|(chain, key)| Stored { chain, key }))
    }

    pub async fn set_certificate(&self, name: &str, stored: &Stored) -> Result<()> {
        // The key first: a reader that finds the new chain finds its key.
        self.put(&format!("key:{name}"), &format!("{name}.key"), &stored.key)
            .await?;
        self.put(
            &format!("cert:{name}"),
            &format!("{name}.crt"),
            &stored.chain,
        )
        .await
    }

    /// Takes `name`'s order lock for `owner`; `false` when another replica holds it.
    pub async fn lock(&self, name: &str, owner: &str) -> Result<bool> {
        match self {
            Store::Local { .. } => Ok(true),
            Store::Redis { connection } => {
                let mut c = connection.clone();
                let options = redis::SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(redis::SetExpiry::PX(LOCK_TTL.as_millis() as u64));
                let taken: Option<String> = c
                    .set_options(format!("{PREFIX}lock:{name}"), owner, options)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(taken.is_some())
            }
        }
    }

    /// Gives `name`'s lock back, if `owner` still holds it.
    pub async fn unlock(&self, name: &str, owner: &str) -> Result<()> {
        if let Store::Redis { connection } = self {
            let script = redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
            );
            let mut c = connection.clone();
            let _: i64 = script
                .key(format!("{PREFIX}lock:{name}"))
                .arg(owner)
                .invoke_async(&mut c)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Publishes a challenge answer (`field`: `http:TOKEN` or `alpn:NAME`) for every replica.
    pub async fn publish(&self, field: &str, value: &str) -> Result<()> {
        if let Store::Redis { connection } = self {
            let mut c = connection.clone();
            let key = format!("{PREFIX}challenges");
            let _: () = redis::pipe()
                .hset(&key, field, value)
                .expire(&key, LOCK_TTL.as_secs() as i64)
                .query_async(&mut c)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Withdraws a challenge answer.
    pub async fn withdraw(&self, field: &str) -> Result<()> {
        if let Store::Redis { connection } = self {
            let mut c = connection.clone();
            let _: i64 = c
                .hdel(format!("{PREFIX}challenges"), field)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Every published challenge answer (none for a local store: its answers never leave
    /// the process).
    pub async fn challenges(&self) -> Result<HashMap<String, String>> {
        match self {
            Store::Local { .. } => Ok(HashMap::new()),
            Store::Redis { connection } => {
                let mut c = connection.clone();
                c.hgetall(format!("{PREFIX}challenges"))
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    async fn get(&self, key: &str, file: &str) -> Result<Option<String>> {
        match self {
            Store::Local { dir } => match std::fs::read_to_string(dir.join(file)) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("{}: {e}", dir.join(file).display())),
            },
            Store::Redis { connection } => {
                let mut c = connection.clone();
                c.get(format!("{PREFIX}{key}"))
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    async fn put(&self, key: &str, file: &str, value: &str) -> Result<()> {
        match self {
            Store::Local { dir } => write_private(&dir.join(file), value)
                .map_err(|e| format!("{}: {e}", dir.join(file).display())),
            Store::Redis { connection } => {
                let mut c = connection.clone();
                c.set(format!("{PREFIX}{key}"), value)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `text` to `path` readable by its owner only, replacing the file whole (a reader
/// never sees half of it).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
