//! The watchdog: keeps a held lock with a TTL alive by resetting its TTL every TTL/3
//! (redis-py's `reacquire()` semantics) while the guard lives, and tells the holder —
//! never silently — when a renewal finds the lock gone or Redis unreachable for a whole TTL.
//!
//! python-redis-lock's renewal thread dies on a failed extend without telling anyone (its
//! issues #85/#91); here loss is a state the holder can await ([`LostSignal::lost`]) or
//! poll ([`LostSignal::is_lost`]). The watchdog never runs on TTL-less locks (there is
//! nothing to renew, and JWQL's Python locks are all TTL-less).
//!
//! Floor 3 (locks): it renews over a [`Connection`](crate::connection::Connection) with
//! [`crate::wire::reacquire`] and knows neither [`crate::Client`] (which owns one
//! [`Watchdog`]) nor the guards that register with it. Why a lock was lost,
//! [`LostReason`], is an error type and lives in [`crate::error`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::connection::Connection;
use crate::error::LostReason;
use crate::wire;

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

/// One renewal loop per [`crate::Client`] for every lock it holds with a TTL. Registering a
/// lock is a map insert under a mutex (plus a wake-up only when it is due sooner than
/// anything else), so an acquire+release cycle does not pay for spawning and cancelling a
/// task; the loop sleeps until the earliest renewal is due and exits when nothing is held.
/// Cheap to clone: clones share the table and the loop.
#[derive(Clone, Default)]
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    entries: HashMap<u64, Entry>,
    next_id: u64,
    /// When the loop will next wake by itself (`None`: not sleeping on a deadline).
    armed_until: Option<Instant>,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Entry {
    name: String,
    token: Vec<u8>,
    ttl: Duration,
    due: Instant,
    last_ok: Instant,
    tx: watch::Sender<Option<LostReason>>,
}

fn period(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(10))
}

impl Watchdog {
    /// Start renewing `name` (held with `token`) over `conn` every `ttl / 3`; `tx` is told
    /// when a renewal finds the lock lost. Returns the registration id for
    /// [`unregister`](Watchdog::unregister).
    pub(crate) fn register(
        &self,
        conn: &Connection,
        name: String,
        token: Vec<u8>,
        ttl: Duration,
        tx: watch::Sender<Option<LostReason>>,
    ) -> u64 {
        let wd = &self.shared;
        let now = Instant::now();
        let due = now + period(ttl);
        let mut st = wd.state.lock().expect("watchdog state");
        let id = st.next_id;
        st.next_id += 1;
        st.entries.insert(
            id,
            Entry {
                name,
                token,
                ttl,
                due,
                last_ok: now,
                tx,
            },
        );
        let running = st.task.as_ref().is_some_and(|t| !t.is_finished());
        if !running {
            st.armed_until = None;
            st.task = Some(conn.spawn_handle().spawn(run(self.clone(), conn.clone())));
        } else if st.armed_until.is_none_or(|a| due < a) {
            wd.wake.notify_one();
        }
        id
    }

    /// Stop renewing a registration (the lock was released or its guard dropped).
    pub(crate) fn unregister(&self, id: u64) {
        let mut st = self.shared.state.lock().expect("watchdog state");
        st.entries.remove(&id);
    }
}

/// The renewal loop; runs while anything is registered. It owns clones of the table and of
/// the connection, so it keeps both alive as long as a lock needs renewing.
async fn run(watchdog: Watchdog, conn: Connection) {
    let wd = &watchdog.shared;
    loop {
        // Pick what is due, and when to wake next, under the lock; renew outside it.
        let (due, next) = {
            let mut st = wd.state.lock().expect("watchdog state");
            if st.entries.is_empty() {
                st.task = None;
                st.armed_until = None;
                return;
            }
            let now = Instant::now();
            let due: Vec<(u64, String, Vec<u8>, Duration)> = st
                .entries
                .iter()
                .filter(|(_, e)| e.due <= now)
                .map(|(id, e)| (*id, e.name.clone(), e.token.clone(), e.ttl))
                .collect();
            let next = st
                .entries
                .values()
                .filter(|e| e.due > now)
                .map(|e| e.due)
                .min();
            st.armed_until = if due.is_empty() { next } else { None };
            (due, next)
        };
        if due.is_empty() {
            let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = wd.wake.notified() => {}
            }
            continue;
        }
        for (id, name, token, ttl) in due {
            let result = renew(&conn, &name, &token, ttl).await;
            let mut st = wd.state.lock().expect("watchdog state");
            let Some(e) = st.entries.get_mut(&id) else {
                continue; // released meanwhile: whatever the script said is moot
            };
            let lost = match result {
                Ok(1) => {
                    e.last_ok = Instant::now();
                    e.due = e.last_ok + period(ttl);
                    continue;
                }
                Ok(0) => LostReason::Expired,
                Ok(_) => LostReason::Stolen,
                Err(err) if e.last_ok.elapsed() < ttl => {
                    tracing::warn!(lock = %name, error = %err, "lock renewal failed; retrying");
                    e.due = Instant::now() + period(ttl) / 4;
                    continue;
                }
                Err(_) => LostReason::Unreachable,
            };
            tracing::error!(lock = %name, reason = %lost, "lock lost while held");
            let _ = e.tx.send(Some(lost));
            st.entries.remove(&id);
        }
    }
}

/// One renewal: the reacquire script's code, or why it could not be sent.
async fn renew(conn: &Connection, name: &str, token: &[u8], ttl: Duration) -> Result<i64, String> {
    let mut shared = conn.shared().await.map_err(|e| e.to_string())?;
    wire::reacquire(name, token, ttl.as_millis().max(1) as u64)
        .invoke_async::<i64>(&mut shared)
        .await
        .map_err(|e| e.to_string())
}
