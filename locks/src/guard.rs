//! [`LockGuard`]: a held lock — its identity (name, token, fence), its loss signal, and
//! the operations only a holder may do: `owned`, `extend`, `reacquire`, `release`, and the
//! release on drop that makes a panic or a cancelled future free the lock.
//!
//! Floor 3 (locks). Built on [`Client`] (the connection and the watchdog it registers with)
//! and the wire commands; it knows nothing of how the lock was acquired, so [`crate::Lock`],
//! [`crate::MultiLock`] and the blocking API all hand out the same guard.

use std::time::Duration;

use tokio::sync::watch;

use crate::client::Client;
use crate::error::{LockError, LostReason};
use crate::keys;
use crate::watchdog::LostSignal;
use crate::wire;

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
    /// The guard of `name` just acquired with `token` and `fence`; registers it with the
    /// client's watchdog when it has a `ttl` and `watchdog_on`.
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
                Some(client.watchdog().register(
                    client.connection(),
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

    /// The name of the lock held (= its Redis key).
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
        let mut conn = self.client.connection().shared().await?;
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
        let mut conn = self.client.connection().shared().await?;
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
        let mut conn = self.client.connection().shared().await?;
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
        let result = release_token(&self.client, &self.name, &self.token).await;
        if !matches!(result, Err(LockError::Redis { .. })) {
            self.released = true;
        }
        result
    }

    /// Stop renewing (before a release, so no renewal races it).
    pub(crate) fn stop_watchdog(&mut self) {
        if let Some(id) = self.watchdog.take() {
            self.client.watchdog().unregister(id);
        }
    }

    /// The client the lock was taken through.
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
        self.client.connection().release_in_background(
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.token),
        );
    }
}

/// Compare-and-delete `name` if it holds `token`, waiting for the answer.
pub(crate) async fn release_token(
    client: &Client,
    name: &str,
    token: &[u8],
) -> Result<(), LockError> {
    let mut conn = client.connection().shared().await?;
    let code: i64 = wire::release(name, token)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| LockError::redis(name, e))?;
    wire::owned_result(name, code)
}
