//! [`Client`]: one Redis connection (multiplexed, reconnecting) shared by every lock a
//! process takes, plus where its background work (watchdogs, releases from `Drop`) runs.
//!
//! Configuration follows celeriac's convention of one Redis unless told otherwise:
//! [`Client::from_env`] reads `CELERIAC_LOCK_URL`, then `CELERY_BROKER_URL`, then uses
//! `redis://127.0.0.1:6379/0` — JWQL keeps broker, results and locks in db 0 of one server.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::runtime::Handle;
use tokio::sync::OnceCell;

use crate::direct::{DirectConn, Unread};
use crate::error::LockError;
use crate::lock::Lock;
use crate::multi::MultiLock;

/// Default Redis URL when no environment variable names one.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";

/// Environment variables read by [`Client::from_env`], in order of precedence.
pub const URL_ENV_VARS: [&str; 2] = ["CELERIAC_LOCK_URL", "CELERY_BROKER_URL"];

/// A handle to the Redis server that holds the locks. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) redis: redis::Client,
    pub(crate) db: i64,
    url: String,
    conn: OnceCell<ConnectionManager>,
    /// A plain synchronous connection for the blocking API's fast path (created on first
    /// use): one socket write and read per operation, no hop to a runtime thread.
    pub(crate) direct: std::sync::Mutex<Option<DirectConn>>,
    /// Renews the TTL of every lock this client holds.
    pub(crate) watchdog: crate::watchdog::Watchdog,
    /// When true, the connection's driver and all background work live on the library's
    /// private runtime (blocking API, default client); otherwise on the caller's runtime.
    private: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &redact(&self.inner.url))
            .field("private_runtime", &self.inner.private)
            .finish()
    }
}

/// `url` with every password hidden, for errors and logs: the user-info part
/// (`redis://:pw@host`, `redis://user:pw@host`) and any query parameter whose name says
/// it is one (`?password=pw`, redis-rs's `redis+unix:///s?pass=pw`, `sentinel_password=`).
fn redact(url: &str) -> String {
    // Query first, so that the user-info step below sees no '@' from a query value.
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("pass") => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{base}?{}", pairs.join("&"))
        }
        None => url.to_string(),
    };
    // The user info ends at the last '@': a password with a '?' or '/' that was not
    // percent-encoded is still hidden whole (hiding too much beats showing a secret).
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url,
    }
}

impl Client {
    /// A client for the Redis at `url` (`redis://host:port/db`). Connects lazily, on first
    /// use, from the tokio runtime that first uses it; background work (watchdog renewals)
    /// runs on that runtime.
    pub fn open(url: &str) -> Result<Client, LockError> {
        Self::build(url, false)
    }

    /// Like [`Client::open`], but the connection and every background task live on the
    /// library's private runtime, so the client works from any thread and any runtime and
    /// its watchdogs outlive the caller's runtime. Used by the blocking API.
    pub fn open_detached(url: &str) -> Result<Client, LockError> {
        Self::build(url, true)
    }

    fn build(url: &str, private: bool) -> Result<Client, LockError> {
        let redis = redis::Client::open(url).map_err(|source| LockError::Url {
            url: redact(url),
            source,
        })?;
        let db = redis.get_connection_info().redis_settings().db();
        Ok(Client {
            inner: Arc::new(Inner {
                redis,
                db,
                url: url.to_string(),
                conn: OnceCell::new(),
                direct: std::sync::Mutex::new(None),
                watchdog: Default::default(),
                private,
            }),
        })
    }

    /// The URL from `CELERIAC_LOCK_URL`, else `CELERY_BROKER_URL`, else [`DEFAULT_URL`].
    pub fn url_from_env() -> String {
        URL_ENV_VARS
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| DEFAULT_URL.to_string())
    }

    /// A detached client (see [`Client::open_detached`]) for [`Client::url_from_env`].
    pub fn from_env() -> Result<Client, LockError> {
        Self::open_detached(&Self::url_from_env())
    }

    /// The process-wide client from the environment that `#[only_one]` uses when no
    /// `client = ...` is given. Built once; later changes to the environment are ignored.
    pub fn global() -> Result<Client, LockError> {
        static GLOBAL: OnceLock<Client> = OnceLock::new();
        if let Some(c) = GLOBAL.get() {
            return Ok(c.clone());
        }
        let c = Self::from_env()?;
        Ok(GLOBAL.get_or_init(|| c).clone())
    }

    /// The URL this client was opened with.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The database number locks live in.
    pub fn db(&self) -> i64 {
        self.inner.db
    }

    /// A lock on `name` (the key, used as given, as redis-py does), with redis-py's
    /// defaults: no timeout, blocking, no blocking timeout, 0.1 s polling sleep.
    pub fn lock(&self, name: impl Into<String>) -> Lock {
        Lock::new(self.clone(), name.into())
    }

    /// Several locks to be taken together, all or nothing (see [`MultiLock`]).
    pub fn multi_lock<I, S>(&self, names: I) -> MultiLock
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        MultiLock::new(self.clone(), names.into_iter().map(Into::into).collect())
    }

    /// The shared connection, connecting on first use.
    pub(crate) async fn conn(&self) -> Result<ConnectionManager, LockError> {
        let inner = &self.inner;
        inner
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(2);
                let client = inner.redis.clone();
                let connect = ConnectionManager::new_with_config(client, config);
                if inner.private {
                    crate::runtime::handle()
                        .spawn(connect)
                        .await
                        .expect("connect task panicked")
                } else {
                    connect.await
                }
            })
            .await
            .cloned()
            .map_err(|e| LockError::redis("", e))
    }

    /// Run `f` on the direct synchronous connection, connecting first if needed; a
    /// connection that failed is dropped so the next call reconnects, and the releases it
    /// had not confirmed are sent again from the runtime.
    pub(crate) fn with_direct<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut DirectConn) -> redis::RedisResult<T>,
    ) -> Result<T, LockError> {
        let mut slot = self
            .inner
            .direct
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            let conn = self
                .inner
                .redis
                .get_connection_with_timeout(Duration::from_secs(2))
                .map_err(|e| LockError::redis(name, e))?;
            let conn = DirectConn::new(conn);
            conn.set_timeouts(Duration::from_secs(5))
                .map_err(|e| LockError::redis(name, e))?;
            *slot = Some(conn);
        }
        let conn = slot.as_mut().expect("connected above");
        let result = f(conn);
        let mut resend = conn.take_resend();
        let result = result.map_err(|e| {
            if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                resend.extend(slot.take().expect("connected").into_unconfirmed());
            }
            LockError::redis(name, e)
        });
        drop(slot);
        for Unread { name, token } in resend {
            crate::lock::release_in_background(self.clone(), name, token);
        }
        result
    }

    /// Send the release of `name` held with `token` on the direct connection without
    /// waiting for its reply (see [`crate::direct`]).
    pub(crate) fn send_release(&self, name: &str, token: &[u8]) -> Result<(), LockError> {
        self.with_direct(name, |c| c.send_release(name, token))
    }

    /// Where background work for this client runs.
    pub(crate) fn spawn_handle(&self) -> Handle {
        if self.inner.private {
            crate::runtime::handle()
        } else {
            Handle::try_current().unwrap_or_else(|_| crate::runtime::handle())
        }
    }

    /// A dedicated pub/sub connection (waiters subscribe to release notifications).
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub, redis::RedisError> {
        self.inner.redis.get_async_pubsub().await
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redaction_hides_passwords_in_the_user_info_and_in_the_query() {
        assert_eq!(redact("redis://:s3cret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact("redis://bob:s3cret@h/1"), "redis://***@h/1");
        assert_eq!(
            redact("redis://h:6379/0?password=s3cret"),
            "redis://h:6379/0?password=***"
        );
        assert_eq!(
            redact("redis+unix:///run/redis.sock?db=2&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=2&pass=***"
        );
        assert_eq!(
            redact("redis://:a@h/0?protocol=resp3&Password=b"),
            "redis://***@h/0?protocol=resp3&Password=***"
        );
        // An '@' inside a query value is not the end of the user info, and a '?' inside a
        // password is not the start of the query.
        assert_eq!(
            redact("redis://h/0?password=p@ss"),
            "redis://h/0?password=***"
        );
        assert_eq!(redact("redis://:pa?ss@h/0"), "redis://***@h/0");
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        let all = redact("rediss://u:one@h/0?password=two&ssl_cert_reqs=required");
        assert!(!all.contains("one") && !all.contains("two"), "{all}");
    }
}
