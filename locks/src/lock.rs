//! [`Lock`] (a redis-py compatible lock on one name) and [`LockGuard`] (a held lock).
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

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::{LockError, LostReason};
use crate::holder::{Holder, holder_fields};
use crate::keys;
use crate::watchdog::{self, LostSignal};
use crate::wire::{self, Attempt, Busy};

/// redis-py's default polling interval (`Lock(sleep=0.1)`), used while a non-celeriac
/// holder has the lock (nothing will wake us when it releases).
pub const DEFAULT_SLEEP: Duration = Duration::from_millis(100);

/// Longest a waiter sleeps between attempts while a celeriac holder has the lock: its
/// release wakes us through pub/sub, so this only bounds the cost of a missed wake-up
/// (holder killed with a TTL-less lock, pub/sub connection dropped).
const CELERIAC_HOLDER_MAX_WAIT: Duration = Duration::from_secs(1);

/// How long a fair-mode waiter stays queued without refreshing (it refreshes at every
/// attempt, at least once per [`CELERIAC_HOLDER_MAX_WAIT`]).
const FAIR_WAITER_LEASE: Duration = Duration::from_secs(5);

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

impl Lock {
    pub(crate) fn new(client: Client, name: String) -> Lock {
        Lock {
            client,
            name,
            opts: LockOptions::default(),
        }
    }

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

    /// Replace all options.
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
        let mut queued = FairQueueExit::new(self, &token);
        let mut waiter = Waiter::new(&self.client, std::slice::from_ref(&self.name));
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
        let mut conn = self.client.conn().await?;
        redis::cmd("EXISTS")
            .arg(keys::lock_key(&self.name))
            .query_async(&mut conn)
            .await
            .map_err(|e| LockError::redis(&self.name, e))
    }

    /// Who holds the lock now, if anyone.
    pub async fn holder(&self) -> Result<Option<Holder>, LockError> {
        read_holder(&self.client, &self.name).await
    }

    /// Release the lock if it holds `token` (redis-py `do_release(expected_token)`); a
    /// holder's [`LockGuard::release`] is the usual way. Never deletes a lock holding
    /// another token.
    pub async fn release_token(&self, token: &[u8]) -> Result<(), LockError> {
        release_raw(&self.client, &self.name, token).await
    }

    fn new_token(&self) -> Vec<u8> {
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

    pub(crate) async fn attempt(&self, token: &[u8]) -> Result<Attempt, LockError> {
        let mut conn = self.client.conn().await?;
        let reply: Value = self
            .acquire_invocation(token)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| LockError::redis(&self.name, e))?;
        wire::parse_attempt(&reply).ok_or_else(|| wire::bad_reply(&self.name, &reply))
    }

    pub(crate) fn new_token_pub(&self) -> Vec<u8> {
        self.new_token()
    }

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
        match read_holder(&self.client, &self.name).await {
            Ok(holder) => LockError::NotAcquired {
                name: self.name.clone(),
                holder,
                waited,
            },
            Err(e) => e,
        }
    }
}

/// How long to wait before the next attempt, given what the last one saw.
pub(crate) fn wait_interval(busy: &Busy, sleep: Duration, fair: bool) -> Duration {
    if busy.pttl == -2 {
        // Released between our SET NX and the read: try again at once.
        return Duration::ZERO;
    }
    let base = if busy.celeriac || fair {
        CELERIAC_HOLDER_MAX_WAIT
    } else {
        sleep
    };
    if busy.pttl > 0 {
        // Never sleep past the key's expiry (+1 ms so it really is gone).
        base.min(Duration::from_millis(busy.pttl as u64 + 1))
    } else {
        base
    }
}

/// Read the current holder of `name`: its token and TTL, and its holder hash when that
/// hash describes the same token.
pub(crate) async fn read_holder(client: &Client, name: &str) -> Result<Option<Holder>, LockError> {
    let mut conn = client.conn().await?;
    let (value, pttl, hash): (Option<Vec<u8>>, i64, HashMap<String, String>) =
        wire::read_holder(name)
            .query_async(&mut conn)
            .await
            .map_err(|e| LockError::redis(name, e))?;
    Ok(value.map(|token| wire::holder_from_parts(token, pttl, &hash)))
}

/// Compare-and-delete `name` if it holds `token`.
pub(crate) async fn release_raw(
    client: &Client,
    name: &str,
    token: &[u8],
) -> Result<(), LockError> {
    let mut conn = client.conn().await?;
    let code: i64 = wire::release(name, token)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| LockError::redis(name, e))?;
    wire::owned_result(name, code)
}

/// Waits for a wake-up on the released channels (and keyspace notifications, when the
/// server sends them) of some lock names, or for a timeout.
pub(crate) struct Waiter<'a> {
    client: &'a Client,
    names: &'a [String],
    sub: Option<redis::aio::PubSub>,
    tried: bool,
}

impl<'a> Waiter<'a> {
    pub(crate) fn new(client: &'a Client, names: &'a [String]) -> Self {
        Waiter {
            client,
            names,
            sub: None,
            tried: false,
        }
    }

    /// Whether a subscription was attempted (if it failed, we poll).
    pub(crate) fn subscribed(&self) -> bool {
        self.tried
    }

    pub(crate) async fn subscribe(&mut self) {
        self.tried = true;
        let mut channels = Vec::new();
        for n in self.names {
            channels.push(keys::released_channel(n));
            channels.push(keys::keyspace_channel(self.client.db(), n));
        }
        let sub = async {
            let mut ps = self.client.pubsub().await?;
            ps.subscribe(&channels).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        match tokio::time::timeout(Duration::from_secs(2), sub).await {
            Ok(Ok(ps)) => self.sub = Some(ps),
            Ok(Err(e)) => tracing::debug!(error = %e, "no pub/sub wake-ups; polling"),
            Err(_) => tracing::debug!("pub/sub subscribe timed out; polling"),
        }
    }

    pub(crate) async fn wait(&mut self, max: Duration) {
        if max.is_zero() {
            return;
        }
        match &mut self.sub {
            Some(ps) => {
                let mut stream = ps.on_message();
                match tokio::time::timeout(max, stream.next()).await {
                    Ok(Some(_)) | Err(_) => {}
                    Ok(None) => {
                        // Connection gone: fall back to polling.
                        drop(stream);
                        self.sub = None;
                    }
                }
            }
            None => tokio::time::sleep(max).await,
        }
    }
}

/// Removes a fair-mode waiter from the queue if it stops waiting without the lock (gave
/// up, error, or the future was dropped); otherwise the queue would wait for its lease to
/// run out.
struct FairQueueExit {
    armed: Option<(Client, String, Vec<u8>)>,
}

impl FairQueueExit {
    fn new(lock: &Lock, token: &[u8]) -> Self {
        FairQueueExit {
            armed: lock
                .opts
                .fair
                .then(|| (lock.client.clone(), lock.name.clone(), token.to_vec())),
        }
    }

    fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for FairQueueExit {
    fn drop(&mut self) {
        if let Some((client, name, token)) = self.armed.take() {
            client.spawn_handle().spawn(async move {
                if let Ok(mut conn) = client.conn().await {
                    let _: Result<i64, _> = wire::leave_queue(&name, &token)
                        .invoke_async(&mut conn)
                        .await;
                }
            });
        }
    }
}

/// A held lock. Released by [`release`](LockGuard::release), which waits for the answer
/// and reports a lock that was no longer ours, or when dropped (so a panic or a cancelled
/// future still frees it). A drop queues the release on the client's connection before it
/// returns, so the client's next command (acquiring the lock again, say) comes after it;
/// the answer is awaited in the background and a failure logged. The connection is driven
/// by a task of the runtime the client first connected from: if that runtime shuts down
/// right after the drop, the release may not be sent and the lock lasts until its TTL, so
/// end a program with `release().await` (the blocking API's drop has no such gap).
pub struct LockGuard {
    client: Client,
    name: String,
    token: Vec<u8>,
    fence: u64,
    ttl: Option<Duration>,
    lost: LostSignal,
    _lost_tx: Option<watch::Sender<Option<LostReason>>>,
    /// Registration with the client's watchdog, while renewing.
    watchdog: Option<u64>,
    pub(crate) released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name)
            .field("token", &String::from_utf8_lossy(&self.token))
            .field("fence", &self.fence)
            .field("ttl", &self.ttl)
            .field("watchdog", &self.watchdog.is_some())
            .finish()
    }
}

impl LockGuard {
    pub(crate) fn new(
        client: Client,
        name: String,
        token: Vec<u8>,
        fence: u64,
        ttl: Option<Duration>,
        watchdog_on: bool,
    ) -> LockGuard {
        let (tx, lost) = LostSignal::new();
        let (watchdog, lost_tx) = match ttl {
            Some(ttl) if watchdog_on => (
                Some(watchdog::register(
                    &client,
                    name.clone(),
                    token.clone(),
                    ttl,
                    tx,
                )),
                None,
            ),
            _ => (None, Some(tx)),
        };
        LockGuard {
            client,
            name,
            token,
            fence,
            ttl,
            lost,
            _lost_tx: lost_tx,
            watchdog,
            released: false,
        }
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token stored in the key.
    pub fn token(&self) -> &[u8] {
        &self.token
    }

    /// The fencing number issued with this acquisition: strictly greater than any number
    /// issued to an earlier holder of the same name. Pass it to storage that should refuse
    /// writes from a holder that lost the lock (`WHERE fence < $1`).
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The TTL the lock was taken with (`None` = no expiry).
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Whether the watchdog has found the lock lost.
    pub fn is_lost(&self) -> Option<LostReason> {
        self.lost.is_lost()
    }

    /// Resolves when the watchdog finds the lock lost (see [`LostSignal::lost`]).
    pub async fn lost(&self) -> LostReason {
        self.lost.lost().await
    }

    /// A cloneable loss signal to hand to the code doing the protected work.
    pub fn lost_signal(&self) -> LostSignal {
        self.lost.clone()
    }

    /// Whether the key still holds this guard's token (redis-py `owned()`).
    pub async fn owned(&self) -> Result<bool, LockError> {
        let mut conn = self.client.conn().await?;
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(keys::lock_key(&self.name))
            .query_async(&mut conn)
            .await
            .map_err(|e| LockError::redis(&self.name, e))?;
        Ok(v.as_deref() == Some(self.token.as_slice()))
    }

    /// Add `by` to the remaining TTL, or set the TTL to `by` when `replace_ttl` (redis-py
    /// `extend(additional_time, replace_ttl)`). Fails with [`LockError::NoTimeout`] on a
    /// lock without TTL and [`LockError::NotOwned`] when the lock is no longer ours.
    pub async fn extend(&self, by: Duration, replace_ttl: bool) -> Result<(), LockError> {
        if self.ttl.is_none() {
            return Err(LockError::NoTimeout {
                name: self.name.clone(),
            });
        }
        let mut conn = self.client.conn().await?;
        let code: i64 = wire::extend(&self.name, &self.token, by.as_millis() as u64, replace_ttl)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| LockError::redis(&self.name, e))?;
        wire::owned_result(&self.name, code)
    }

    /// Reset the TTL to the one the lock was taken with (redis-py `reacquire()`).
    pub async fn reacquire(&self) -> Result<(), LockError> {
        let Some(ttl) = self.ttl else {
            return Err(LockError::NoTimeout {
                name: self.name.clone(),
            });
        };
        let mut conn = self.client.conn().await?;
        let code: i64 = wire::reacquire(&self.name, &self.token, ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| LockError::redis(&self.name, e))?;
        wire::owned_result(&self.name, code)
    }

    /// Release the lock (compare-and-delete). [`LockError::NotOwned`] says whether it had
    /// expired or someone else holds it now; either way nothing of theirs is deleted.
    pub async fn release(mut self) -> Result<(), LockError> {
        self.stop_watchdog();
        // Like redis-py's async Lock, the guard counts as released once the server has
        // answered, whether or not we still owned it.
        let result = release_raw(&self.client, &self.name, &self.token).await;
        if !matches!(result, Err(LockError::Redis { .. })) {
            self.released = true;
        }
        result
    }

    pub(crate) fn stop_watchdog(&mut self) {
        if let Some(id) = self.watchdog.take() {
            watchdog::unregister(&self.client, id);
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// A copy that shares the identity but owns nothing: no watchdog, nothing released
    /// on drop (the blocking API sends it to the runtime for one operation).
    pub(crate) fn shadow(&self) -> LockGuard {
        LockGuard {
            client: self.client.clone(),
            name: self.name.clone(),
            token: self.token.clone(),
            fence: self.fence,
            ttl: self.ttl,
            lost: self.lost.clone(),
            _lost_tx: None,
            watchdog: None,
            released: true,
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop_watchdog();
        if self.released {
            return;
        }
        release_in_background(
            self.client.clone(),
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.token),
        );
    }
}

/// Release `name` held with `token` without waiting for the answer (a dropped guard has
/// nobody to return it to; a failure is logged).
///
/// The release is queued on the shared connection before this returns, by polling it once
/// here, and only its reply is awaited in the background. Redis runs one connection's
/// commands in order, so whatever this client sends next — acquiring the same lock again,
/// say — comes after the release; spawned without that first poll, the task could run
/// after the caller's next command and make it find its own lock still held.
pub(crate) fn release_in_background(client: Client, name: String, token: Vec<u8>) {
    use std::future::Future;
    use std::task::{Context, Waker};
    let handle = client.spawn_handle();
    let mut release = Box::pin(async move {
        let result = async {
            let mut conn = client.conn().await?;
            let code: i64 = wire::release_eval(&name, &token)
                .query_async(&mut conn)
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
