//! The watchdog: keeps a held lock with a TTL alive by resetting its TTL every TTL/3
//! (redis-py's `reacquire()` semantics) while the guard lives, and tells the holder —
//! never silently — when a renewal finds the lock gone or Redis unreachable for a whole TTL.
//!
//! python-redis-lock's renewal thread dies on a failed extend without telling anyone (its
//! issues #85/#91); here loss is a state the holder can await ([`LostSignal::lost`]) or
//! poll ([`LostSignal::is_lost`]). The watchdog never runs on TTL-less locks (there is
//! nothing to renew, and JWQL's Python locks are all TTL-less).

use std::fmt;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::Client;
use crate::keys;
use crate::scripts;

/// Why a held lock was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The key was gone at renewal (expired while renewal could not run, or deleted).
    Expired,
    /// The key held another token at renewal.
    Stolen,
    /// Renewals failed for a whole TTL (Redis unreachable), so the lock must be assumed
    /// expired.
    Unreachable,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::Expired => "the key expired or was deleted",
            LostReason::Stolen => "another holder took the key",
            LostReason::Unreachable => "Redis was unreachable for a whole TTL",
        })
    }
}

/// A cloneable view of whether a held lock has been lost; pass it to the code doing the
/// protected work so it can stop (or check before committing) once the lock is gone.
#[derive(Debug, Clone)]
pub struct LostSignal {
    rx: watch::Receiver<Option<LostReason>>,
}

impl LostSignal {
    pub(crate) fn new() -> (watch::Sender<Option<LostReason>>, LostSignal) {
        let (tx, rx) = watch::channel(None);
        (tx, LostSignal { rx })
    }

    /// The reason, once the lock has been found lost.
    pub fn is_lost(&self) -> Option<LostReason> {
        *self.rx.borrow()
    }

    /// Resolves when the lock is found lost. Never resolves while the lock stays held; if
    /// the guard is released first it stays pending for ever (use it in a `select!`).
    pub async fn lost(&self) -> LostReason {
        let mut rx = self.rx.clone();
        loop {
            if let Some(r) = *rx.borrow_and_update() {
                return r;
            }
            if rx.changed().await.is_err() {
                // Watchdog finished without loss (released): never resolve.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Start renewing `name` (held with `token`) every `ttl / 3` on the client's runtime.
pub(crate) fn spawn(
    client: Client,
    name: String,
    token: Vec<u8>,
    ttl: Duration,
    tx: watch::Sender<Option<LostReason>>,
) -> tokio::task::JoinHandle<()> {
    let handle = client.spawn_handle();
    handle.spawn(async move {
        let period = (ttl / 3).max(Duration::from_millis(10));
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let holder_key = keys::holder_key(&name);
        let mut last_ok = Instant::now();
        let mut next = Instant::now() + period;
        loop {
            tokio::time::sleep_until(next).await;
            let result = async {
                let mut conn = client.conn().await.map_err(|e| e.to_string())?;
                scripts::REACQUIRE
                    .key(keys::lock_key(&name))
                    .key(&holder_key)
                    .arg(&token)
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            let lost = match result {
                Ok(1) => {
                    last_ok = Instant::now();
                    next = last_ok + period;
                    continue;
                }
                Ok(0) => LostReason::Expired,
                Ok(_) => LostReason::Stolen,
                Err(e) if last_ok.elapsed() < ttl => {
                    tracing::warn!(lock = %name, error = %e, "lock renewal failed; retrying");
                    next = Instant::now() + period / 4;
                    continue;
                }
                Err(_) => LostReason::Unreachable,
            };
            tracing::error!(lock = %name, reason = %lost, "lock lost while held");
            let _ = tx.send(Some(lost));
            return;
        }
    })
}
