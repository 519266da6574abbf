//! [`Connection`]: the lock server as the rest of the crate talks to it — one multiplexed,
//! reconnecting async connection shared by every lock a process takes, the blocking API's
//! direct synchronous connection ([`crate::direct`]), and where background work (releases
//! from `Drop`, the watchdog) runs.
//!
//! Floor 2 (connection). It knows Redis and the wire commands it must send by itself (a
//! release whose reply nobody waits for, [`Connection::release_in_background`]), and nothing
//! of locks, guards or the watchdog: those are built on it one floor up. The public handle,
//! [`crate::Client`], is this connection plus the watchdog that renews what it holds.
//!
//! Passwords never leave this module in text: the URL is shown only through [`redact`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::runtime::Handle;
use tokio::sync::OnceCell;

use crate::direct::{DirectConn, Unread};
use crate::error::LockError;
use crate::wire;

/// A handle to the lock server's connections. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub(crate) struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    redis: redis::Client,
    db: i64,
    url: String,
    shared: OnceCell<ConnectionManager>,
    /// A plain synchronous connection for the blocking API's fast path (created on first
    /// use): one socket write and read per operation, no hop to a runtime thread.
    direct: Mutex<Option<DirectConn>>,
    /// When true, the shared connection's driver and all background work live on the
    /// library's private runtime (blocking API, default client); otherwise on the caller's
    /// runtime.
    private: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &redact(&self.inner.url))
            .field("private_runtime", &self.inner.private)
            .finish()
    }
}

pub(crate) use naming::redact_url as redact;

impl Connection {
    /// Connections to the Redis at `url`, opened lazily (see [`crate::Client::open`] and
    /// [`crate::Client::open_detached`] for what `private` changes).
    pub(crate) fn open(url: &str, private: bool) -> Result<Connection, LockError> {
        let redis = redis::Client::open(url).map_err(|source| LockError::Url {
            url: redact(url),
            source,
        })?;
        let db = redis.get_connection_info().redis_settings().db();
        Ok(Connection {
            inner: Arc::new(Inner {
                redis,
                db,
                url: url.to_string(),
                shared: OnceCell::new(),
                direct: Mutex::new(None),
                private,
            }),
        })
    }

    /// The URL as given (it may hold a password: show it through [`redact`]).
    pub(crate) fn url(&self) -> &str {
        &self.inner.url
    }

    /// The database number of the URL.
    pub(crate) fn db(&self) -> i64 {
        self.inner.db
    }

    /// Whether background work runs on the library's private runtime.
    pub(crate) fn is_private(&self) -> bool {
        self.inner.private
    }

    /// The shared async connection, connecting on first use.
    pub(crate) async fn shared(&self) -> Result<ConnectionManager, LockError> {
        let inner = &self.inner;
        inner
            .shared
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

    /// A dedicated pub/sub connection (waiters subscribe to release notifications).
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub, redis::RedisError> {
        self.inner.redis.get_async_pubsub().await
    }

    /// Where background work for these connections runs.
    pub(crate) fn spawn_handle(&self) -> Handle {
        if self.inner.private {
            crate::runtime::handle()
        } else {
            Handle::try_current().unwrap_or_else(|_| crate::runtime::handle())
        }
    }

    /// Run `f` on the direct synchronous connection, connecting first if needed; a
    /// connection that failed is dropped so the next call reconnects, and the releases it
    /// had not confirmed are sent again from the runtime. `name` labels errors.
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
            self.release_in_background(name, token);
        }
        result
    }

    /// Send the release of `name` held with `token` on the direct connection without
    /// waiting for its reply (see [`crate::direct`]).
    pub(crate) fn send_release(&self, name: &str, token: &[u8]) -> Result<(), LockError> {
        self.with_direct(name, |c| c.send_release(name, token))
    }

    /// Release `name` held with `token` on the shared connection without waiting for the
    /// answer (a dropped guard has nobody to return it to; a failure is logged).
    ///
    /// The release is queued on the shared connection before this returns, by polling it
    /// once here, and only its reply is awaited in the background. Redis runs one
    /// connection's commands in order, so whatever this client sends next — acquiring the
    /// same lock again, say — comes after the release; spawned without that first poll, the
    /// task could run after the caller's next command and make it find its own lock still
    /// held.
    pub(crate) fn release_in_background(&self, name: String, token: Vec<u8>) {
        use std::future::Future;
        use std::task::{Context, Waker};
        let handle = self.spawn_handle();
        let conn = self.clone();
        let mut release = Box::pin(async move {
            let result = async {
                let mut shared = conn.shared().await?;
                let code: i64 = wire::release_eval(&name, &token)
                    .query_async(&mut shared)
                    .await
                    .map_err(|e| LockError::redis(&name, e))?;
                wire::owned_result(&name, code)
            };
            if let Err(e) = result.await {
                tracing::warn!(lock = %name, error = %e, "release on drop failed");
            }
        });
        // The response timeout inside needs a runtime context, whichever thread drops.
        let _entered = handle.enter();
        let first = release
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()));
        if first.is_pending() {
            handle.spawn(release);
        }
    }
}
