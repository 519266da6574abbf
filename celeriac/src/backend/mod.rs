//! The Redis result backend (`celery/backends/redis.py`): storing result metas under
//! `celery-task-meta-<id>` with an expiry and publishing the same bytes on the channel of
//! the same name, and waiting for a ready state the way `AsyncResult.get()` does
//! (SUBSCRIBE first, then GET, then wait — so no update can slip between the two); and, for
//! operators, finding the failures it holds ([`Backend::failures`]).

pub mod chord;

use crate::conn::{Conn, ConnOptions};
use crate::protocol::{ResultMeta, State};
use crate::transport::keys;
use crate::url::RedisUrl;
use futures_util::StreamExt;
use redis::{AsyncCommands, Script};
use std::sync::LazyLock;
use std::time::Duration;

/// Backend errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The URL was refused.
    #[error(transparent)]
    Url(#[from] crate::url::UrlError),
    /// A stored meta could not be decoded.
    #[error("stored result for {task_id} is not a valid meta: {detail}")]
    BadMeta {
        /// Task id.
        task_id: String,
        /// What is wrong with it (the decoder's message).
        detail: String,
    },
    /// A large meta could not be stored because the stored one kept changing under the
    /// transaction (another store for the same task id each time); trying later may succeed.
    #[error("the stored result for {task_id} kept changing while a new one was being stored")]
    Contended {
        /// Task id.
        task_id: String,
    },
    /// No ready state within the timeout (Python raises `celery.exceptions.TimeoutError`).
    #[error("no result for {task_id} within {timeout:?}")]
    Timeout {
        /// Task id.
        task_id: String,
        /// The timeout.
        timeout: Duration,
    },
}

impl BackendError {
    /// Whether waiting and trying again may succeed (see [`crate::conn::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, BackendError::Contended { .. })
            || matches!(self, BackendError::Redis(e) if crate::conn::is_transient(e))
    }
}

/// Lua: store a meta unless the stored one is already SUCCESS (Celery skips that write since
/// 5.3, so a redelivered duplicate never replaces a result a client may have read), and
/// publish the same bytes, atomically and in one round trip (Celery does GET, then
/// MULTI SETEX+PUBLISH EXEC; the effect on Redis and subscribers is the same).
/// `store(key, meta, expiry seconds (0 = none))` returns 1 if stored.
///
/// The stored meta is never decoded whole inside Redis (a script blocks every client, and
/// cjson takes tens of ms on a result of a few MB): Celery and celeriac both write
/// `{"status": ...` first, so the status is read from the first bytes; only a small meta
/// of another shape is decoded. A large one of another shape is not taken as SUCCESS.
/// Metas larger than [`SCRIPT_META_MAX`] are not passed through this script at all (see
/// [`Backend::store`]).
const STORE_FN: &str = r#"
local function stored_status(cur)
  local st = string.match(string.sub(cur, 1, 64), '^%s*{%s*"status"%s*:%s*"([%w_]*)"')
  if st then return st end
  if #cur > 65536 then return nil end
  local ok, m = pcall(cjson.decode, cur)
  if ok and type(m) == 'table' then return m['status'] end
  return nil
end
local function store(key, meta, ttl)
  local cur = redis.call('GET', key)
  if cur and stored_status(cur) == 'SUCCESS' then return 0 end
  if tonumber(ttl) > 0 then
    redis.call('SETEX', key, ttl, meta)
  else
    redis.call('SET', key, meta)
  end
  redis.call('PUBLISH', key, meta)
  return 1
end
"#;

/// Metas up to this size are stored by a script in one round trip; a larger one by a
/// `WATCH`ed transaction (three round trips), so its bytes never pass through Lua, where
/// every copy in and out costs several times what a plain command argument does.
pub const SCRIPT_META_MAX: usize = 16 * 1024;

/// How often a large store is tried when the key keeps changing between `WATCH` and `EXEC`
/// (only another store for the same task id does that).
const WATCH_ATTEMPTS: usize = 20;

/// Whether a stored meta says SUCCESS (read outside Redis; only `status` is built).
fn is_success(stored: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Status<'a> {
        #[serde(borrow)]
        status: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Status>(stored)
        .ok()
        .and_then(|s| s.status)
        .is_some_and(|s| s == "SUCCESS")
}

/// KEYS: meta key. ARGV: meta JSON, expiry seconds. Returns 1 if stored.
static STORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{STORE_FN}\nreturn store(KEYS[1], ARGV[1], ARGV[2])"
    ))
});

/// Store the result and ack the message in one atomic step, for a late-ack worker whose
/// broker and backend are the same database (JWQL's setup): a crash can no longer fall
/// between the two, and the task costs one round trip less.
/// KEYS: meta key, `unacked`, `unacked_index`, `celeriac.holders`. ARGV: meta, expiry, tag.
static STORE_AND_ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{STORE_FN}\nlocal r = store(KEYS[1], ARGV[1], ARGV[2])\n\
         redis.call('ZREM', KEYS[3], ARGV[3])\nredis.call('HDEL', KEYS[2], ARGV[3])\nredis.call('HDEL', KEYS[4], ARGV[3])\nreturn r"
    ))
});

/// Default `result_expires`: one day.
pub const DEFAULT_RESULT_EXPIRES: Duration = Duration::from_secs(86_400);

/// The Redis result backend.
#[derive(Clone)]
pub struct Backend {
    url: RedisUrl,
    conn: Conn,
    expires: Duration,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("url", &self.url.redacted())
            .finish()
    }
}

impl Backend {
    /// Connect to `url`.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        let url = RedisUrl::parse(url)?;
        let conn = Conn::connect(url.clone(), ConnOptions::default()).await?;
        Ok(Backend {
            url,
            conn,
            expires: DEFAULT_RESULT_EXPIRES,
        })
    }

    /// Set `result_expires` (zero = never expire).
    pub fn with_expires(mut self, expires: Duration) -> Self {
        self.expires = expires;
        self
    }

    /// The parsed URL.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// Store and publish a meta; returns false when a SUCCESS was already stored.
    pub async fn store(&self, meta: &ResultMeta) -> Result<bool, BackendError> {
        let bytes = meta.encode();
        if bytes.len() > SCRIPT_META_MAX {
            return self.store_watched(&meta.task_id, &bytes, None).await;
        }
        let stored: i64 = STORE
            .key(keys::task_meta(&meta.task_id))
            .arg(bytes)
            .arg(self.expires.as_secs())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(stored == 1)
    }

    /// Store a meta and ack the message `tag` atomically. Only valid when the broker is this
    /// same database (the `unacked` keys live here).
    pub async fn store_and_ack(&self, meta: &ResultMeta, tag: &str) -> Result<bool, BackendError> {
        let bytes = meta.encode();
        if bytes.len() > SCRIPT_META_MAX {
            return self.store_watched(&meta.task_id, &bytes, Some(tag)).await;
        }
        let stored: i64 = STORE_AND_ACK
            .key(keys::task_meta(&meta.task_id))
            .key(keys::UNACKED)
            .key(keys::UNACKED_INDEX)
            .key(keys::HOLDERS)
            .arg(bytes)
            .arg(self.expires.as_secs())
            .arg(tag)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(stored == 1)
    }

    /// [`Backend::store`] (and, with `ack_tag`, [`Backend::store_and_ack`]) for a large meta,
    /// with the same outcome as the script but no byte of the meta copied through Lua: `WATCH`
    /// the key, read the stored status, then `MULTI` SET(EX) + PUBLISH (+ the ack) `EXEC`; when
    /// the key changed in between, `EXEC` does nothing and the whole step is tried again.
    /// `WATCH` belongs to a connection, so this takes one of its own (the command connection
    /// carries every task's commands at once).
    async fn store_watched(
        &self,
        task_id: &str,
        meta: &[u8],
        ack_tag: Option<&str>,
    ) -> Result<bool, BackendError> {
        let key = keys::task_meta(task_id);
        let ttl = self.expires.as_secs();
        let cfg = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(ConnOptions::default().response_timeout))
            .set_connection_timeout(Some(ConnOptions::default().connect_timeout));
        let mut conn = self
            .url
            .client()
            .await?
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        let ack = |p: &mut redis::Pipeline| {
            if let Some(tag) = ack_tag {
                p.zrem(keys::UNACKED_INDEX, tag)
                    .ignore()
                    .hdel(keys::UNACKED, tag)
                    .ignore()
                    .hdel(keys::HOLDERS, tag)
                    .ignore();
            }
        };
        for _ in 0..WATCH_ATTEMPTS {
            redis::cmd("WATCH")
                .arg(&key)
                .query_async::<()>(&mut conn)
                .await?;
            let cur: Option<Vec<u8>> = conn.get(&key).await?;
            if cur.as_deref().is_some_and(is_success) {
                redis::cmd("UNWATCH").query_async::<()>(&mut conn).await?;
                let mut p = redis::pipe();
                p.atomic();
                ack(&mut p);
                if ack_tag.is_some() {
                    p.query_async::<()>(&mut conn).await?;
                }
                return Ok(false);
            }
            let mut p = redis::pipe();
            p.atomic();
            if ttl > 0 {
                p.set_ex(&key, meta, ttl).ignore();
            } else {
                p.set(&key, meta).ignore();
            }
            p.publish(&key, meta).ignore();
            ack(&mut p);
            // `None`: EXEC was refused because the key changed after WATCH.
            let done: Option<Vec<redis::Value>> = p.query_async(&mut conn).await?;
            if done.is_some() {
                return Ok(true);
            }
        }
        Err(BackendError::Contended {
            task_id: task_id.into(),
        })
    }

    /// The stored meta, if any (none = PENDING).
    pub async fn get(&self, task_id: &str) -> Result<Option<ResultMeta>, BackendError> {
        let raw: Option<Vec<u8>> = self.conn.clone().get(keys::task_meta(task_id)).await?;
        raw.map(|r| decode(task_id, &r)).transpose()
    }

    /// The current state (PENDING when nothing is stored).
    pub async fn state(&self, task_id: &str) -> Result<State, BackendError> {
        Ok(self
            .get(task_id)
            .await?
            .map_or(State::Pending, |m| m.status))
    }

    /// Up to `limit` stored FAILURE metas, found with `SCAN MATCH celery-task-meta-*` (never
    /// `KEYS`), in SCAN's order, which is no order at all. Each meta is read with its own
    /// GET, so a page of large results is never in memory at once. Metas that do not decode
    /// are passed over: this is an operator's view, not a check.
    pub async fn failures(&self, limit: usize) -> Result<Vec<ResultMeta>, BackendError> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        while out.len() < limit {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", keys::TASK_META_PREFIX))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            for key in page {
                if out.len() >= limit {
                    break;
                }
                let raw: Option<Vec<u8>> = conn.get(&key).await?;
                if let Some(m) = raw.and_then(|r| ResultMeta::decode(&r).ok())
                    && m.status == State::Failure
                {
                    out.push(m);
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(out)
    }

    /// Wait for a ready state: SUBSCRIBE to the meta channel, then GET, then wait for a
    /// published ready meta, up to `timeout`.
    pub async fn wait(&self, task_id: &str, timeout: Duration) -> Result<ResultMeta, BackendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let key = keys::task_meta(task_id);
        let mut pubsub = self.url.client().await?.get_async_pubsub().await?;
        pubsub.subscribe(&key).await?;
        if let Some(m) = self.get(task_id).await?
            && m.status.is_ready()
        {
            return Ok(m);
        }
        let mut stream = pubsub.on_message();
        loop {
            let msg = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    return Err(BackendError::Timeout {
                        task_id: task_id.into(),
                        timeout,
                    });
                }
                Ok(None) => {
                    // The subscription connection dropped: fall back to reading the key.
                    if let Some(m) = self.get(task_id).await?
                        && m.status.is_ready()
                    {
                        return Ok(m);
                    }
                    return Box::pin(self.wait(
                        task_id,
                        deadline.saturating_duration_since(tokio::time::Instant::now()),
                    ))
                    .await;
                }
                Ok(Some(msg)) => msg,
            };
            let m = decode(task_id, msg.get_payload_bytes())?;
            if m.status.is_ready() {
                return Ok(m);
            }
        }
    }

    /// Command connection (for callers composing their own pipelines).
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The expiry applied to stored results.
    pub fn expires(&self) -> Duration {
        self.expires
    }
}

fn decode(task_id: &str, raw: &[u8]) -> Result<ResultMeta, BackendError> {
    ResultMeta::decode(raw).map_err(|e| BackendError::BadMeta {
        task_id: task_id.into(),
        detail: e.to_string(),
    })
}
