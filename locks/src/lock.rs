//! [`Lock`]: a redis-py compatible lock on one name — its options, the acquire loop, and
//! the reads anyone may do (`locked`, `holder`). What a holder does is [`LockGuard`]'s.
//!
//! On the wire this is redis-py's `Lock`: key = the name as given, value = an opaque token
//! (32 hex digits, like redis-py's `uuid1().hex`; ours are random v4), acquire =
//! `SET name token NX [PX ms]`, release = compare-and-delete, extend = compare-then-
//! `PEXPIRE` (additive or replacing), reacquire = compare-then-reset-TTL. A Python
//! `r.lock(name)` and a celeriac lock on the same name therefore exclude each other.
//!
//! What redis-py does not do and this module adds, all in keys Python ignores
//! ([`crate::keys`]): a fencing number and holder identity written atomically with the
//! `SET NX`; a watchdog ([`crate::watchdog`]); waiting on a pub/sub wake-up when the holder
//! is celeriac (falling back to redis-py's polling when it is not); optional FIFO order.
//!
//! Deliberately not here: re-entrancy (redis-py locks are not re-entrant either; a holder
//! that acquires its own lock again waits, bounded by `blocking_timeout`).
//!
//! Floor 3 (locks). The acquire loop is built from the wire's attempt ([`crate::wire`]),
//! the waiting of [`crate::wait`] and the guard of [`crate::guard`]; [`Client::lock`] is
//! defined here so the client and connection below know no lock type.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use crate::client::Client;
use crate::connection::Connection;
use crate::error::LockError;
use crate::guard::{self, LockGuard};
use crate::holder::{Holder, holder_fields};
use crate::keys;
use crate::wait::{FAIR_WAITER_LEASE, FairQueueExit, Waiter, wait_interval};
use crate::wire::{self, Attempt};

/// redis-py's default polling interval (`Lock(sleep=0.1)`), used while a non-celeriac
/// holder has the lock (nothing will wake us when it releases).
pub const DEFAULT_SLEEP: Duration = Duration::from_millis(100);

/// Options of a lock, named as redis-py names them where it has them.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// TTL of the key (`None` = no expiry, redis-py's default).
    pub timeout: Option<Duration>,
    /// Wait for the lock when it is busy (redis-py default `true`).
    pub blocking: bool,
    /// Give up waiting after this long (`None` = wait for ever, as redis-py does).
    pub blocking_timeout: Option<Duration>,
    /// Polling interval while a non-celeriac holder has the lock (redis-py `sleep`).
    pub sleep: Duration,
    /// Renew the TTL every TTL/3 while held (no effect without `timeout`).
    pub watchdog: bool,
    /// FIFO order among celeriac waiters.
    pub fair: bool,
    /// Free text recorded in the holder hash.
    pub purpose: Option<String>,
    /// Task id recorded in the holder hash.
    pub task_id: Option<String>,
    /// Use this token instead of a random one (redis-py `acquire(token=...)`).
    pub token: Option<Vec<u8>>,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            timeout: None,
            blocking: true,
            blocking_timeout: None,
            sleep: DEFAULT_SLEEP,
            watchdog: true,
            fair: false,
            purpose: None,
            task_id: None,
            token: None,
        }
    }
}

/// A lock on one name; build it with [`Client::lock`] and the option methods, then
/// [`acquire`](Lock::acquire) it. Holds no state of its own: every acquisition returns a
/// [`LockGuard`] carrying its token.
#[derive(Debug, Clone)]
pub struct Lock {
    pub(crate) client: Client,
    pub(crate) name: String,
    pub(crate) opts: LockOptions,
}

impl Client {
    /// A lock on `name` (the key, used as given, as redis-py does), with redis-py's
    /// defaults: no timeout, blocking, no blocking timeout, 0.1 s polling sleep.
    pub fn lock(&self, name: impl Into<String>) -> Lock {
        Lock {
            client: self.clone(),
            name: name.into(),
            opts: LockOptions::default(),
        }
    }
}

impl Lock {
    /// Key TTL (redis-py `timeout`); `PX` in milliseconds on the wire.
    pub fn timeout(mut self, ttl: Duration) -> Self {
        self.opts.timeout = Some(ttl).filter(|t| !t.is_zero());
        self
    }

    /// Whether [`acquire`](Lock::acquire) waits when the lock is busy.
    pub fn blocking(mut self, blocking: bool) -> Self {
        self.opts.blocking = blocking;
        self
    }

    /// Longest [`acquire`](Lock::acquire) waits (redis-py `blocking_timeout`).
    pub fn blocking_timeout(mut self, wait: Duration) -> Self {
        self.opts.blocking_timeout = Some(wait);
        self
    }

    /// Polling interval while a non-celeriac process holds the lock (redis-py `sleep`).
    pub fn sleep(mut self, interval: Duration) -> Self {
        self.opts.sleep = interval;
        self
    }

    /// Turn the watchdog off (redis-py behaviour: the TTL runs out even while held).
    pub fn watchdog(mut self, on: bool) -> Self {
        self.opts.watchdog = on;
        self
    }

    /// Serve celeriac waiters in arrival order.
    pub fn fair(mut self, on: bool) -> Self {
        self.opts.fair = on;
        self
    }

    /// Record what the lock is for (shown by `celeriac locks`).
    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.opts.purpose = Some(purpose.into());
        self
    }

    /// Record the task holding the lock.
    pub fn task_id(mut self, task_id: impl Into<String>) -> Self {
        self.opts.task_id = Some(task_id.into());
        self
    }

    /// Acquire with this token instead of a random one.
    pub fn token(mut self, token: impl Into<Vec<u8>>) -> Self {
        self.opts.token = Some(token.into());
        self
    }

    /// Replace every option at once, e.g. with a [`LockOptions`] kept in a configuration
    /// struct (the other option methods each set one field of it).
    pub fn options(mut self, opts: LockOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The lock name (= the Redis key).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Take the lock, waiting as the options say (redis-py `acquire()`); fails with
    /// [`LockError::NotAcquired`] when non-blocking and busy, or when `blocking_timeout`
    /// passes.
    pub async fn acquire(&self) -> Result<LockGuard, LockError> {
        let token = self.new_token();
        let started = Instant::now();
        let deadline = self
            .opts
            .blocking_timeout
            .filter(|_| self.opts.blocking)
            .map(|t| started + t);
        let conn = self.client.connection();
        let mut queued = FairQueueExit::new(conn, &self.name, &token, self.opts.fair);
        let mut waiter = Waiter::new(conn, std::slice::from_ref(&self.name));
        loop {
            match self.attempt(&token).await? {
                Attempt::Acquired(fence) => {
                    queued.disarm();
                    return Ok(self.guard(token, fence));
                }
                Attempt::Busy(busy) => {
                    let now = Instant::now();
                    let out_of_time = deadline.is_some_and(|d| now >= d);
                    if !self.opts.blocking || out_of_time {
                        return Err(self.not_acquired(started.elapsed()).await);
                    }
                    if !waiter.subscribed() {
                        // Subscribe before the next attempt so a release between the two
                        // cannot be missed.
                        waiter.subscribe().await;
                        continue;
                    }
                    let mut wait = wait_interval(&busy, self.opts.sleep, self.opts.fair);
                    if let Some(d) = deadline {
                        wait = wait.min(d - now);
                    }
                    waiter.wait(wait).await;
                }
            }
        }
    }

    /// One non-blocking attempt, whatever the options say.
    pub async fn try_acquire(&self) -> Result<LockGuard, LockError> {
        let token = self.new_token();
        match self.attempt(&token).await? {
            Attempt::Acquired(fence) => Ok(self.guard(token, fence)),
            Attempt::Busy(_) => Err(self.not_acquired(Duration::ZERO).await),
        }
    }

    /// Whether anyone holds the lock (redis-py `locked()`: any value counts).
    pub async fn locked(&self) -> Result<bool, LockError> {
        let mut conn = self.client.connection().shared().await?;
        redis::cmd("EXISTS")
            .arg(keys::lock_key(&self.name))
            .query_async(&mut conn)
            .await
            .map_err(|e| LockError::redis(&self.name, e))
    }

    /// Who holds the lock now, if anyone.
    pub async fn holder(&self) -> Result<Option<Holder>, LockError> {
        read_holder(self.client.connection(), &self.name).await
    }

    /// Release the lock if it holds `token` (redis-py `do_release(expected_token)`); a
    /// holder's [`LockGuard::release`] is the usual way. Never deletes a lock holding
    /// another token.
    pub async fn release_token(&self, token: &[u8]) -> Result<(), LockError> {
        guard::release_token(&self.client, &self.name, token).await
    }

    /// The token for one acquisition: the one set with [`Lock::token`], else a random one
    /// (32 hex digits, like redis-py's `uuid1().hex`).
    pub(crate) fn new_token(&self) -> Vec<u8> {
        self.opts
            .token
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string().into_bytes())
    }

    /// The acquire script call for one attempt (fair or not), with this process's holder
    /// fields.
    pub(crate) fn acquire_invocation(&self, token: &[u8]) -> redis::ScriptInvocation<'static> {
        let fields = holder_fields(self.opts.purpose.as_deref(), self.opts.task_id.as_deref());
        let ttl_ms = wire::ttl_ms(self.opts.timeout);
        if self.opts.fair {
            let lease_ms = FAIR_WAITER_LEASE.as_millis() as u64;
            wire::acquire_fair(&self.name, token, ttl_ms, lease_ms, &fields)
        } else {
            wire::acquire(&self.name, token, ttl_ms, &fields)
        }
    }

    /// One attempt over the shared connection.
    async fn attempt(&self, token: &[u8]) -> Result<Attempt, LockError> {
        let mut conn = self.client.connection().shared().await?;
        let reply: Value = self
            .acquire_invocation(token)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| LockError::redis(&self.name, e))?;
        wire::parse_attempt(&reply).ok_or_else(|| wire::bad_reply(&self.name, &reply))
    }

    /// The guard of this lock, just acquired with `token` and `fence`.
    pub(crate) fn guard(&self, token: Vec<u8>, fence: u64) -> LockGuard {
        LockGuard::new(
            self.client.clone(),
            self.name.clone(),
            token,
            fence,
            self.opts.timeout,
            self.opts.watchdog,
        )
    }

    async fn not_acquired(&self, waited: Duration) -> LockError {
        match read_holder(self.client.connection(), &self.name).await {
            Ok(holder) => LockError::NotAcquired {
                name: self.name.clone(),
                holder,
                waited,
            },
            Err(e) => e,
        }
    }
}

/// Read the current holder of `name`: its token and TTL, and its holder hash when that
/// hash describes the same token.
pub(crate) async fn read_holder(
    conn: &Connection,
    name: &str,
) -> Result<Option<Holder>, LockError> {
    let mut shared = conn.shared().await?;
    let (value, pttl, hash): (Option<Vec<u8>>, i64, HashMap<String, String>) =
        wire::read_holder(name)
            .query_async(&mut shared)
            .await
            .map_err(|e| LockError::redis(name, e))?;
    Ok(value.map(|token| wire::holder_from_parts(token, pttl, &hash)))
}
