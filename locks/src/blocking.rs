//! The blocking API, for code that is not async (a synchronous task body, a script).
//!
//! No tokio runtime is needed by the caller. The common operations — an acquire that
//! succeeds at once, release, `owned`, `locked`, `holder` — go straight over a plain
//! synchronous connection (one write and one read, as redis-py does). Waiting for a busy
//! lock, extend and reacquire run the async API on the library's private runtime, which
//! is also where the watchdog keeps renewing while the caller's thread is busy. Dropping a
//! [`LockGuard`], including during a panic, sends the release before `drop` returns; its
//! reply is read with the next command's (one round trip for both), while
//! [`LockGuard::release`] waits for it and returns redis-py's not-owned error.
//!
//! Floor 4 (front-ends): wraps the async [`crate::Lock`] and [`crate::LockGuard`] of floor 3,
//! and goes under them, straight to the connection's direct path and the wire commands, for
//! the operations that need no waiting. Nothing below imports it.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use crate::connection::Connection;
use crate::error::{LockError, LostReason};
use crate::holder::Holder;
use crate::keys;
use crate::runtime::block_on;
use crate::watchdog::LostSignal;
use crate::wire::{self, Attempt};

/// Blocking counterpart of [`crate::Client`].
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client,
}

impl Client {
    /// A client for the Redis at `url`.
    pub fn open(url: &str) -> Result<Client, LockError> {
        Ok(Client {
            inner: crate::Client::open_detached(url)?,
        })
    }

    /// A client for `CELERIAC_LOCK_URL`, else `CELERY_BROKER_URL`, else the local default.
    pub fn from_env() -> Result<Client, LockError> {
        Ok(Client {
            inner: crate::Client::from_env()?,
        })
    }

    /// The blocking API over an existing client (sharing its connections).
    pub fn from_async(client: &crate::Client) -> Client {
        Client {
            inner: client.clone(),
        }
    }

    /// A lock on `name` with redis-py's defaults (see [`crate::Client::lock`]).
    pub fn lock(&self, name: impl Into<String>) -> Lock {
        Lock {
            inner: self.inner.lock(name),
        }
    }

    /// The async client underneath (same connections, same watchdog), for code that mixes
    /// both APIs.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }
}

/// Blocking counterpart of [`crate::Lock`]; the option methods are the same.
#[derive(Debug, Clone)]
pub struct Lock {
    inner: crate::Lock,
}

macro_rules! forward_options {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(
            #[doc = concat!("See [`crate::Lock::", stringify!($name), "`].")]
            pub fn $name(self, v: $ty) -> Self {
                Lock { inner: self.inner.$name(v) }
            }
        )*
    };
}

/// Who holds `name`, read over the direct connection (see [`crate::Lock::holder`]).
fn read_holder_direct(conn: &Connection, name: &str) -> Result<Option<Holder>, LockError> {
    let (value, pttl, hash): (Option<Vec<u8>>, i64, HashMap<String, String>) =
        conn.with_direct(name, |c| wire::read_holder(name).query(c))?;
    Ok(value.map(|token| wire::holder_from_parts(token, pttl, &hash)))
}

impl Lock {
    forward_options!(
        timeout(Duration),
        blocking(bool),
        blocking_timeout(Duration),
        sleep(Duration),
        watchdog(bool),
        fair(bool),
        purpose(impl Into<String>),
        task_id(impl Into<String>),
        token(impl Into<Vec<u8>>),
        options(crate::LockOptions),
    );

    /// Take the lock, waiting as the options say.
    pub fn acquire(&self) -> Result<LockGuard, LockError> {
        if self.inner.opts.fair {
            // A fair waiter must keep one token (its place in the queue) from its first
            // attempt on: go straight to the async wait loop.
            let lock = self.inner.clone();
            return block_on(async move { lock.acquire().await }).map(LockGuard::new);
        }
        match self.attempt_direct()? {
            Some(g) => Ok(g),
            None if self.inner.opts.blocking => {
                let lock = self.inner.clone();
                block_on(async move { lock.acquire().await }).map(LockGuard::new)
            }
            None => Err(self.not_acquired()),
        }
    }

    /// One attempt that never waits, whatever the options say (see
    /// [`crate::Lock::try_acquire`]).
    pub fn try_acquire(&self) -> Result<LockGuard, LockError> {
        if self.inner.opts.fair {
            let lock = self.inner.clone();
            return block_on(async move { lock.try_acquire().await }).map(LockGuard::new);
        }
        self.attempt_direct()?.ok_or_else(|| self.not_acquired())
    }

    /// One `SET NX` attempt over the direct connection: `None` when the lock is busy.
    fn attempt_direct(&self) -> Result<Option<LockGuard>, LockError> {
        let lock = &self.inner;
        let token = lock.new_token();
        let inv = lock.acquire_invocation(&token);
        let reply: Value = lock
            .client
            .connection()
            .with_direct(&lock.name, |c| inv.invoke(c))?;
        match wire::parse_attempt(&reply).ok_or_else(|| wire::bad_reply(&lock.name, &reply))? {
            Attempt::Acquired(fence) => Ok(Some(LockGuard::new(lock.guard(token, fence)))),
            Attempt::Busy(_) => Ok(None),
        }
    }

    fn not_acquired(&self) -> LockError {
        match read_holder_direct(self.inner.client.connection(), &self.inner.name) {
            Ok(holder) => LockError::NotAcquired {
                name: self.inner.name.clone(),
                holder,
                waited: Duration::ZERO,
            },
            Err(e) => e,
        }
    }

    /// Whether anyone holds the lock.
    pub fn locked(&self) -> Result<bool, LockError> {
        let name = &self.inner.name;
        self.inner.client.connection().with_direct(name, |c| {
            redis::cmd("EXISTS").arg(keys::lock_key(name)).query(c)
        })
    }

    /// Who holds the lock now.
    pub fn holder(&self) -> Result<Option<Holder>, LockError> {
        read_holder_direct(self.inner.client.connection(), &self.inner.name)
    }

    /// Release the lock if it holds `token`.
    pub fn release_token(&self, token: &[u8]) -> Result<(), LockError> {
        release_direct(self.inner.client.connection(), &self.inner.name, token)
    }
}

/// Compare-and-delete over the direct connection, waiting for the answer.
fn release_direct(conn: &Connection, name: &str, token: &[u8]) -> Result<(), LockError> {
    let inv = wire::release(name, token);
    let code: i64 = conn.with_direct(name, |c| inv.invoke(c))?;
    wire::owned_result(name, code)
}

/// A held lock (blocking API). Dropping it sends the release before `drop` returns
/// without waiting for the reply; [`release`](LockGuard::release) waits and reports.
#[derive(Debug)]
pub struct LockGuard {
    inner: Option<crate::LockGuard>,
}

impl LockGuard {
    fn new(g: crate::LockGuard) -> LockGuard {
        LockGuard { inner: Some(g) }
    }

    fn g(&self) -> &crate::LockGuard {
        self.inner.as_ref().expect("guard present until release")
    }

    /// The name of the lock held (= its Redis key).
    pub fn name(&self) -> &str {
        self.g().name()
    }

    /// The token in the key.
    pub fn token(&self) -> &[u8] {
        self.g().token()
    }

    /// The fencing number of this acquisition.
    pub fn fence(&self) -> u64 {
        self.g().fence()
    }

    /// Whether the watchdog found the lock lost.
    pub fn is_lost(&self) -> Option<LostReason> {
        self.g().is_lost()
    }

    /// A cloneable loss signal to hand to the code doing the protected work (see
    /// [`crate::LockGuard::lost_signal`]).
    pub fn lost_signal(&self) -> LostSignal {
        self.g().lost_signal()
    }

    /// Whether the key still holds our token (redis-py `owned()`).
    pub fn owned(&self) -> Result<bool, LockError> {
        let g = self.g();
        let v: Option<Vec<u8>> = g.client().connection().with_direct(g.name(), |c| {
            redis::cmd("GET").arg(keys::lock_key(g.name())).query(c)
        })?;
        Ok(v.as_deref() == Some(g.token()))
    }

    /// See [`crate::LockGuard::extend`].
    pub fn extend(&self, by: Duration, replace_ttl: bool) -> Result<(), LockError> {
        let g = self.g().shadow();
        block_on(async move { g.extend(by, replace_ttl).await })
    }

    /// See [`crate::LockGuard::reacquire`].
    pub fn reacquire(&self) -> Result<(), LockError> {
        let g = self.g().shadow();
        block_on(async move { g.reacquire().await })
    }

    /// Release the lock; see [`crate::LockGuard::release`].
    pub fn release(mut self) -> Result<(), LockError> {
        let g = self.inner.take().expect("guard present until release");
        finish(g)
    }
}

/// Stop renewing, then compare-and-delete over the direct connection.
fn finish(mut g: crate::LockGuard) -> Result<(), LockError> {
    g.stop_watchdog();
    let result = release_direct(g.client().connection(), g.name(), g.token());
    if !matches!(result, Err(LockError::Redis { .. })) {
        g.released = true;
    }
    // On a Redis error `g`'s own drop retries the release on the runtime.
    result
}

impl Drop for LockGuard {
    /// Sends the release without waiting for its reply: the reply is read together with
    /// the next command's on the same connection (see `crate::direct`), so the next
    /// acquire by this client finds the lock free, and other processes do as soon as
    /// Redis has read it. If it cannot even be written, the inner guard's drop sends it
    /// from the library's runtime.
    fn drop(&mut self) {
        if let Some(mut g) = self.inner.take() {
            g.stop_watchdog();
            match g.client().connection().send_release(g.name(), g.token()) {
                Ok(()) => g.released = true,
                Err(e) => {
                    tracing::warn!(lock = %g.name(), error = %e, "release on drop: not sent; retrying from the runtime")
                }
            }
        }
    }
}
