//! Support code called by the `#[only_one]` expansion. Not a public API: names and
//! signatures here may change in any release.
//!
//! Floor 4 (front-ends), the top: turns the attribute's arguments into a [`crate::Lock`]
//! (async bodies) or a [`blocking::Lock`] (plain `fn`s) and their errors into [`NotRun`].
//! The generated code names only `::locks::__private::*` and `::locks::NotRun`, so the
//! modules below can move without touching the macro.

use std::borrow::Borrow;
use std::future::Future;
use std::time::Duration;

use crate::blocking;
use crate::client::Client;
use crate::error::{LockError, NotRun};
use crate::guard::LockGuard;

/// What to do when the lock is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Do not run the body; return [`NotRun::Skipped`].
    Skip,
    /// Wait (up to `wait_ms`, or for ever).
    Wait,
    /// Do not run the body; return [`NotRun::Busy`].
    Error,
}

/// The attribute's arguments, as constants.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Key TTL in ms, 0 = no expiry.
    pub timeout_ms: u64,
    /// What to do when the lock is busy (`policy = ...`).
    pub policy: Policy,
    /// Deadline for `Policy::Wait`, ms.
    pub wait_ms: Option<u64>,
    /// Recorded in the holder hash (the function's name by default).
    pub purpose: &'static str,
    /// Renew the TTL while the body runs.
    pub watchdog: bool,
    /// FIFO among celeriac waiters.
    pub fair: bool,
}

/// Environment variable a worker sets in a task's process so locks record the task id.
pub const TASK_ID_ENV: &str = "CELERIAC_TASK_ID";

/// The client used when the attribute names none.
pub fn default_client() -> Result<Client, NotRun> {
    Client::global().map_err(NotRun::Lock)
}

/// Borrow whatever the `client = ...` expression gave as a `&Client`.
pub fn client_ref<C: Borrow<Client>>(c: &C) -> &Client {
    c.borrow()
}

fn lock_for(client: &Client, key: String, spec: &Spec) -> crate::Lock {
    let mut lock = client
        .lock(key)
        .blocking(spec.policy == Policy::Wait)
        .watchdog(spec.watchdog)
        .fair(spec.fair)
        .purpose(spec.purpose);
    if spec.timeout_ms > 0 {
        lock = lock.timeout(Duration::from_millis(spec.timeout_ms));
    }
    if let Some(w) = spec.wait_ms {
        lock = lock.blocking_timeout(Duration::from_millis(w));
    }
    if let Ok(t) = std::env::var(TASK_ID_ENV)
        && !t.is_empty()
    {
        lock = lock.task_id(t);
    }
    lock
}

fn not_run(e: LockError, spec: &Spec) -> NotRun {
    match e {
        LockError::NotAcquired {
            name,
            holder,
            waited,
        } => match spec.policy {
            Policy::Skip => {
                tracing::warn!(lock = %name, holder = ?holder.as_ref().map(|h| h.to_string()),
                    "lock is held elsewhere; skipping this run");
                NotRun::Skipped { key: name, holder }
            }
            Policy::Error => NotRun::Busy { key: name, holder },
            Policy::Wait => NotRun::TimedOut {
                key: name,
                holder,
                waited,
            },
        },
        other => NotRun::Lock(other),
    }
}

/// Acquire for an `async fn`.
pub async fn acquire(client: &Client, key: String, spec: &Spec) -> Result<LockGuard, NotRun> {
    lock_for(client, key, spec)
        .acquire()
        .await
        .map_err(|e| not_run(e, spec))
}

/// Acquire for a plain `fn` (no runtime needed).
pub fn acquire_blocking(
    client: &Client,
    key: String,
    spec: &Spec,
) -> Result<blocking::LockGuard, NotRun> {
    let lock = lock_for(client, key, spec);
    blocking::Client::from_async(client)
        .lock(lock.name())
        .options(lock.opts.clone())
        .acquire()
        .map_err(|e| not_run(e, spec))
}

/// Fix the output type of the body's future, so `?` inside it knows its target.
pub fn typed<T, F: Future<Output = T>>(f: F) -> F {
    f
}

/// Run an async body while the lock is held; if the watchdog finds the lock lost, the
/// body is dropped (cancelled) at its next await point.
pub async fn run_async<F: Future>(guard: &LockGuard, body: F) -> Result<F::Output, NotRun> {
    tokio::select! {
        biased;
        out = body => Ok(out),
        reason = guard.lost() => Err(NotRun::Lost { key: guard.name().to_string(), reason }),
    }
}

/// Release after an async body; a failure is logged, never allowed to mask the body's
/// result (JWQL's `only_one` let `LockNotOwnedError` from `release()` do exactly that).
pub async fn finish(guard: LockGuard) {
    let name = guard.name().to_string();
    if let Err(e) = guard.release().await {
        tracing::warn!(lock = %name, error = %e, "releasing the lock after the body failed");
    }
}

/// Release after a blocking body (see [`finish`]); a body that ran while the watchdog
/// reported the lock lost is logged as an error, since a plain `fn` cannot be cancelled.
pub fn finish_blocking(guard: blocking::LockGuard) {
    let name = guard.name().to_string();
    if let Some(reason) = guard.is_lost() {
        tracing::error!(lock = %name, %reason, "the lock was lost while the body ran");
    }
    if let Err(e) = guard.release() {
        tracing::warn!(lock = %name, error = %e, "releasing the lock after the body failed");
    }
}
