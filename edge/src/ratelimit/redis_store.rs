//! The Redis store of `store = "redis"` zones: the same leaky bucket as one Lua script, so
//! every edge replica shares a zone's clients. One round trip per check over a multiplexed,
//! auto-reconnecting connection; Redis's clock, so replicas agree on time.

use super::Verdict;
use crate::config::{RedisOnError, RedisSettings};
use crate::held;
use crate::units::Rate;
use redis::aio::ConnectionManager;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long one check may take before the zone falls back.
const CHECK_TIMEOUT: Duration = Duration::from_millis(250);
/// How long to wait between attempts to connect while Redis is down.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// KEYS[1] = the client's key; ARGV = rate (thousandths of requests per second), burst, and
/// 1 to only look (`edge explain`: nothing is written). Returns {0, delay_ms, excess_now} to
/// pass or {1, retry_after_ms, excess_now} to reject, as the local store; excess_now is the
/// client's excess drained to now, before this request.
const SCRIPT: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2]) * 1000
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HMGET', KEYS[1], 'excess', 'last')
local drained = 0
local excess = 0
if state[1] then
  local elapsed = now - tonumber(state[2])
  if elapsed < 0 then elapsed = 0 end
  local leaked = math.floor(rate * elapsed / 1000)
  drained = tonumber(state[1]) - leaked
  if drained < 0 then drained = 0 end
  excess = tonumber(state[1]) + 1000 - leaked
  if excess < 0 then excess = 0 end
end
if excess > burst then
  local over = excess - burst
  return {1, math.ceil(over * 1000 / rate), drained}
end
if ARGV[3] ~= '1' then
  redis.call('HSET', KEYS[1], 'excess', excess, 'last', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil((excess + 1000) * 1000 / rate) + 60000)
end
return {0, math.floor(excess * 1000 / rate), drained}
"#;

/// A lazily connected Redis client shared by the redis zones.
pub struct RedisStore {
    settings: RedisSettings,
    client: Option<redis::Client>,
    connection: OnceCell<ConnectionManager>,
    last_attempt: Mutex<Option<Instant>>,
    script: redis::Script,
}

/// Supplies Redis's password when `[redis] url` carries none, so the secret can stay out of
/// the config file (a ConfigMap, a file mounted into a container) and out of every log line.
pub const PASSWORD_ENV: &str = "EDGE_REDIS_PASSWORD";

/// The URL's connection settings, with the password from [`PASSWORD_ENV`] if the URL has none.
pub fn connection_info(url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
    let mut info: redis::ConnectionInfo = url.parse()?;
    if info.redis.password.is_none() {
        info.redis.password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
    }
    Ok(info)
}

/// `url` with its password (if any) replaced by `***`, for logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_string(),
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &redacted(&self.settings.url))
            .finish()
    }
}

impl RedisStore {
    pub fn new(settings: RedisSettings) -> Self {
        let client = match connection_info(&settings.url).and_then(redis::Client::open) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(url = %redacted(&settings.url), error = %e, "bad Redis URL");
                None
            }
        };
        RedisStore {
            settings,
            client,
            connection: OnceCell::new(),
            last_attempt: Mutex::new(None),
            script: redis::Script::new(SCRIPT),
        }
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    pub fn on_error(&self) -> RedisOnError {
        self.settings.on_error
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        {
            let mut last = held::lock(&self.last_attempt);
            if last.is_some_and(|t| t.elapsed() < RECONNECT_BACKOFF) {
                return Err("Redis is down (waiting to reconnect)".into());
            }
            *last = Some(Instant::now());
        }
        let client = self.client.clone().ok_or("bad Redis URL")?;
        let connect = async {
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(CHECK_TIMEOUT)
                .set_response_timeout(CHECK_TIMEOUT)
                .set_number_of_retries(1);
            ConnectionManager::new_with_config(client, config).await
        };
        let manager = tokio::time::timeout(CHECK_TIMEOUT * 4, connect)
            .await
            .map_err(|_| "connecting to Redis timed out".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(self
            .connection
            .get_or_init(|| async { manager })
            .await
            .clone())
    }

    /// One check of `client` in `zone`, in one round trip.
    pub async fn check(
        &self,
        zone: &str,
        client: IpAddr,
        rate: Rate,
        burst: u32,
    ) -> Result<Verdict, String> {
        self.run(zone, client, rate, burst, false)
            .await
            .map(|s| s.next)
    }

    /// Where `client` stands in `zone`, without counting a request.
    pub async fn peek(
        &self,
        zone: &str,
        client: IpAddr,
        rate: Rate,
        burst: u32,
    ) -> Result<super::Standing, String> {
        self.run(zone, client, rate, burst, true).await
    }

    /// The script, counting the request unless `peek`.
    async fn run(
        &self,
        zone: &str,
        client: IpAddr,
        rate: Rate,
        burst: u32,
        peek: bool,
    ) -> Result<super::Standing, String> {
        let mut connection = self.connection().await?;
        let key = format!("edge:limit:{zone}:{client}");
        let mut invocation = self.script.key(key);
        invocation
            .arg(super::rate_milli(rate))
            .arg(burst)
            .arg(u8::from(peek));
        let call = invocation.invoke_async::<(u8, u64, u64)>(&mut connection);
        let (rejected, ms, excess) = tokio::time::timeout(CHECK_TIMEOUT, call)
            .await
            .map_err(|_| "Redis check timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let duration = Duration::from_millis(ms);
        Ok(super::Standing {
            excess: excess as f64 / 1000.0,
            next: if rejected == 1 {
                Verdict::Reject {
                    retry_after: duration,
                }
            } else {
                Verdict::Pass { delay: duration }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redacted("redis://:s3cret@redis:6379/5"),
            "redis://:***@redis:6379/5"
        );
        assert_eq!(
            redacted("rediss://edge:s3cret@redis:6379/5"),
            "rediss://edge:***@redis:6379/5"
        );
        assert_eq!(redacted("redis://redis:6379/5"), "redis://redis:6379/5");
        assert_eq!(redacted("redis://edge@redis/5"), "redis://edge@redis/5");
    }
}
