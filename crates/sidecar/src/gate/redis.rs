//! Shared rate-limit budgets in Redis, for `scope: Shared` limits: one
//! budget for every sidecar of a policy, so "30 clones per minute" means 30
//! for a Deployment with three replicas, not 90.
//!
//! The algorithm is the in-memory one — an exact sliding log, all or
//! nothing across every limit of a call — run as one Lua script, so it is
//! atomic in Redis: each bucket is a sorted set of admission times (Redis's
//! own clock, so sidecars' clocks do not matter), trimmed to the window,
//! expiring with it so nothing outlives its window. Keys carry the
//! `{tollgate}` hash tag: every key lives in one slot, as a multi-key
//! script on a Redis Cluster requires.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::Script;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};

use tollgate_policy::budget::ratelimit::Acquire;
use tollgate_policy::budget::{Admission, Shared, SharedOutcome, StoreDown};

use crate::config::SharedStoreConfig;
use crate::metrics::Metrics;

/// Admits every acquisition or none. KEYS: one bucket per acquisition.
/// ARGV: a key prefix for the sequence, then per acquisition window (ms),
/// requests, cost, and kind (0: a count, one sorted-set member per unit;
/// 1: a size budget, a list of `first:last:amount` entries — the weighted
/// log of `tollgate_policy::budget::weighted`, same rules). Returns `{0,
/// last_seq, now}` on admission, or `{i, retry_after_ms, left}` for the
/// first full bucket (1-based; `left` is -1 for counts).
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local total = 0
for i = 1, #KEYS do
  local window = tonumber(ARGV[2 + (i - 1) * 4])
  local limit = tonumber(ARGV[3 + (i - 1) * 4])
  local cost = tonumber(ARGV[4 + (i - 1) * 4])
  local kind = tonumber(ARGV[5 + (i - 1) * 4])
  if kind == 1 then
    while true do
      local head = redis.call('LINDEX', KEYS[i], 0)
      if not head then break end
      local _, l = string.match(head, '^(%d+):(%d+):(%d+)$')
      if now - tonumber(l) >= window then redis.call('LPOP', KEYS[i]) else break end
    end
    local entries = redis.call('LRANGE', KEYS[i], 0, -1)
    local used = 0
    for _, e in ipairs(entries) do
      local _, _, a = string.match(e, '^(%d+):(%d+):(%d+)$')
      used = used + tonumber(a)
    end
    if used + cost > limit then
      local left = math.max(limit - used, 0)
      if cost > limit then
        return {i, window, left}
      end
      local rest = used
      for _, e in ipairs(entries) do
        local _, l, a = string.match(e, '^(%d+):(%d+):(%d+)$')
        rest = rest - tonumber(a)
        if rest + cost <= limit then
          return {i, tonumber(l) + window - now, left}
        end
      end
      return {i, window, left}
    end
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
    local count = redis.call('ZCARD', KEYS[i])
    if count + cost > limit then
      if cost > limit then
        return {i, window, -1}
      end
      local oldest = redis.call('ZRANGE', KEYS[i], count + cost - limit - 1, count + cost - limit - 1, 'WITHSCORES')
      return {i, tonumber(oldest[2]) + window - now, -1}
    end
    total = total + cost
  end
end
local last = redis.call('INCRBY', ARGV[1], total)
local seq = last - total
for i = 1, #KEYS do
  local window = tonumber(ARGV[2 + (i - 1) * 4])
  local cost = tonumber(ARGV[4 + (i - 1) * 4])
  local kind = tonumber(ARGV[5 + (i - 1) * 4])
  if kind == 1 then
    local span = math.floor(window / 64)
    local tail = redis.call('LINDEX', KEYS[i], -1)
    local f, l, a
    if tail then f, l, a = string.match(tail, '^(%d+):(%d+):(%d+)$') end
    if tail and now - tonumber(f) < span then
      redis.call('LSET', KEYS[i], -1, string.format('%d:%d:%d', tonumber(f), math.max(tonumber(l), now), tonumber(a) + cost))
    else
      redis.call('RPUSH', KEYS[i], string.format('%d:%d:%d', now, now, cost))
    end
  else
    for c = 1, cost do
      seq = seq + 1
      redis.call('ZADD', KEYS[i], now, seq)
    end
  end
  redis.call('PEXPIRE', KEYS[i], window)
end
return {0, last, now}
";

/// Takes back an admission: KEYS as for acquire; ARGV the admission time,
/// then per key its kind and cost, and for counts the members.
const RELEASE: &str = r"
local at = tonumber(ARGV[1])
local m = 2
for i = 1, #KEYS do
  local kind = tonumber(ARGV[m])
  local cost = tonumber(ARGV[m + 1])
  if kind == 1 then
    local entries = redis.call('LRANGE', KEYS[i], 0, -1)
    for j = #entries, 1, -1 do
      local f, l, a = string.match(entries[j], '^(%d+):(%d+):(%d+)$')
      if tonumber(f) <= at and at <= tonumber(l) then
        redis.call('LSET', KEYS[i], j - 1, string.format('%d:%d:%d', tonumber(f), tonumber(l), math.max(tonumber(a) - cost, 0)))
        break
      end
    end
    m = m + 2
  else
    for c = 1, cost do
      redis.call('ZREM', KEYS[i], ARGV[m + 1 + c])
    end
    m = m + cost + 2
  end
end
return 0
";

/// After a failure, calls do not wait on Redis for this long: shared limits
/// follow their `onStoreError` at once, then the next call tries again. A
/// dead Redis costs one timeout per interval, not one per call.
const BACKOFF: Duration = Duration::from_millis(500);

/// Redis settings that cannot work, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StoreConfigError {
    /// TLS files given for a plain `redis://` URL.
    #[error(
        "--redis-ca-file, --redis-ca-pem, --redis-client-cert and --redis-client-key need a TLS URL: write rediss://... instead of {url}"
    )]
    TlsFilesWithoutTls {
        /// The URL, password redacted.
        url: String,
    },
    /// The URL does not parse.
    #[error("bad --redis-url {url}: {source}")]
    BadUrl {
        /// The URL, password redacted.
        url: String,
        /// Why.
        source: redis::RedisError,
    },
    /// A certificate or key file cannot be read.
    #[error("cannot read {flag} {}: {source}", path.display())]
    Read {
        /// The flag naming it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA holds no certificate.
    #[error("{0} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate(String),
    /// Only one half of the client certificate pair.
    #[error("--redis-client-cert and --redis-client-key go together: give both or neither")]
    HalfClientPair,
    /// The TLS settings were refused.
    #[error("bad Redis TLS settings for {url}: {source}")]
    Tls {
        /// The URL, password redacted.
        url: String,
        /// Why.
        source: redis::RedisError,
    },
    /// The connection manager could not be set up.
    #[error("cannot set up Redis at {url}: {source}")]
    Setup {
        /// The URL, password redacted.
        url: String,
        /// Why.
        source: redis::RedisError,
    },
}

/// The Redis client for `config`: plain for `redis://`, TLS for `rediss://`
/// (with the CA and client certificate files read now, so a wrong path fails
/// at start-up, not on the first call).
fn client(config: &SharedStoreConfig) -> Result<redis::Client, StoreConfigError> {
    let url = redacted(&config.url);
    let tls = &config.tls;
    let wants_tls = config.url.starts_with("rediss://");
    if !wants_tls {
        if tls.ca_file.is_some()
            || tls.ca_pem.is_some()
            || tls.client_cert_file.is_some()
            || tls.client_key_file.is_some()
        {
            return Err(StoreConfigError::TlsFilesWithoutTls { url });
        }
        return redis::Client::open(config.url.as_str())
            .map_err(|source| StoreConfigError::BadUrl { url, source });
    }
    let read = |flag: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| StoreConfigError::Read {
            flag,
            path: path.clone(),
            source,
        })
    };
    let root_cert = match (&tls.ca_file, &tls.ca_pem) {
        (Some(path), _) => Some((
            read("--redis-ca-file", path)?,
            format!("--redis-ca-file {}", path.display()),
        )),
        (None, Some(pem)) => Some((pem.clone().into_bytes(), "--redis-ca-pem".to_owned())),
        (None, None) => None,
    };
    if let Some((pem, source)) = &root_cert
        && !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(StoreConfigError::NoCertificate(source.clone()));
    }
    let root_cert = root_cert.map(|(pem, _)| pem);
    let client_tls = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("--redis-client-cert", cert)?,
            client_key: read("--redis-client-key", key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(StoreConfigError::HalfClientPair);
        }
    };
    redis::Client::build_with_tls(
        config.url.as_str(),
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|source| StoreConfigError::Tls { url, source })
}

/// `url` without its password, for messages and logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The Redis-backed store.
pub struct SharedStore {
    connection: ConnectionManager,
    acquire: Script,
    release: Script,
    timeout: Duration,
    up: AtomicBool,
    /// Milliseconds after `epoch` before which Redis is not tried.
    quiet_until: AtomicU64,
    epoch: Instant,
    metrics: Metrics,
}

impl SharedStore {
    /// Connects to `url` (`redis://host:port/db`). The connection manager
    /// reconnects by itself after failures.
    pub fn connect(
        config: &SharedStoreConfig,
        metrics: Metrics,
    ) -> Result<SharedStore, StoreConfigError> {
        let url = redacted(&config.url);
        let timeout = config.timeout;
        let client = client(config)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        // The first connection may fail (Redis starting): the manager keeps
        // trying, and limits fail as configured meanwhile.
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|source| StoreConfigError::Setup { url, source })?;
        metrics.register_store();
        metrics.store_reachable(true);
        Ok(SharedStore {
            connection,
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            timeout,
            up: AtomicBool::new(true),
            quiet_until: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        })
    }

    /// The Redis key of a bucket: bounded length whatever the limit's name.
    fn key(a: &Acquire) -> String {
        let id: String = Sha256::digest(a.limit.id.0.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{{tollgate}}:rl:{id}:{}", a.bucket.hex())
    }
}

/// Why Redis did not answer a call's admission (logged once when the store
/// goes down; the limits then follow their `onStoreError`).
#[derive(Debug, thiserror::Error)]
enum Unreachable {
    /// It failed within the last [`BACKOFF`]: not asked again yet, so an
    /// outage does not cost every call a timeout.
    #[error("it failed moments ago; trying again shortly")]
    Resting,
    /// It did not answer within `--redis-timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// It answered with an error, or the connection failed.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

impl Shared for SharedStore {
    /// Admits one unit per cost in every acquisition, or none.
    async fn try_acquire(
        &self,
        acquisitions: &[&Acquire],
        _now: Instant,
    ) -> Result<SharedOutcome, StoreDown> {
        if self.millis() < self.quiet_until.load(Ordering::Acquire) {
            return Err(StoreDown::new(Unreachable::Resting));
        }
        let mut invocation = self.acquire.prepare_invoke();
        invocation.arg("{tollgate}:seq");
        for a in acquisitions {
            invocation
                .key(Self::key(a))
                .arg(a.limit.window.as_millis() as u64)
                .arg(a.limit.requests)
                .arg(a.cost)
                .arg(u8::from(a.limit.size.is_some()));
        }
        let mut conn = self.connection.clone();
        let result: Result<(i64, i64, i64), Unreachable> =
            match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await {
                Ok(r) => r.map_err(Unreachable::Redis),
                Err(_) => Err(Unreachable::Timeout(self.timeout)),
            };
        match result {
            Ok((0, last, at)) => {
                self.mark(true, None);
                Ok(SharedOutcome::Admitted { last, at })
            }
            Ok((index, retry_ms, left)) => {
                self.mark(true, None);
                Ok(SharedOutcome::Full {
                    index: (index - 1).max(0) as usize,
                    retry_after: Duration::from_millis(retry_ms.max(0) as u64),
                    left: u64::try_from(left).ok(),
                })
            }
            Err(e) => {
                self.mark(false, Some(&e));
                Err(StoreDown::new(e))
            }
        }
    }

    /// Takes back what [`try_acquire`](Self::try_acquire) admitted.
    async fn release(&self, acquisitions: &[&Acquire], admitted: Admission) {
        // Only counts took sequence numbers (see ACQUIRE).
        let total: i64 = acquisitions
            .iter()
            .filter(|a| a.limit.size.is_none())
            .map(|a| i64::from(a.cost))
            .sum();
        let mut member = admitted.last - total;
        let mut invocation = self.release.prepare_invoke();
        invocation.arg(admitted.at);
        for a in acquisitions {
            let sized = a.limit.size.is_some();
            invocation
                .key(Self::key(a))
                .arg(u8::from(sized))
                .arg(a.cost);
            if sized {
                continue;
            }
            for _ in 0..a.cost {
                member += 1;
                invocation.arg(member);
            }
        }
        let mut conn = self.connection.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot take back a shared admission; the budget stays drawn until its window passes")
            }
            Err(_) => tracing::warn!(
                "cannot take back a shared admission in time; the budget stays drawn until its window passes"
            ),
        }
    }
}

impl SharedStore {
    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Records reachability; logs only when it changes.
    fn mark(&self, up: bool, error: Option<&Unreachable>) {
        if !up {
            self.metrics.store_failed();
            self.quiet_until.store(
                self.millis() + BACKOFF.as_millis() as u64,
                Ordering::Release,
            );
        }
        if self.up.swap(up, Ordering::AcqRel) != up {
            self.metrics.store_reachable(up);
            match error {
                Some(e) => {
                    tracing::error!(error = %e, "the shared rate-limit store is unreachable; shared limits now follow their onStoreError")
                }
                None => tracing::info!("the shared rate-limit store is reachable again"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redacted("rediss://app:s3cret@redis.example:6380/2"),
            "rediss://app:***@redis.example:6380/2"
        );
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.7:6379/0"),
            "redis://:***@10.0.0.7:6379/0"
        );
        // An '@' in the password: everything up to the last '@' is userinfo.
        assert_eq!(
            redacted("redis://:p@ss@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redacted("redis://host:6379/0"), "redis://host:6379/0");
    }
}
