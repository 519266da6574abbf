//! Waiting for a busy lock to come free: how long to wait before the next attempt
//! ([`wait_interval`]), the wake-up that cuts the wait short when a celeriac holder releases
//! ([`Waiter`]), and the fair-mode queue's lease and clean exit ([`FairQueueExit`]).
//!
//! A celeriac release `PUBLISH`es on the lock's released channel, so a waiter subscribed to
//! it retries at once; a redis-py holder publishes nothing, so while one holds the lock the
//! waiter polls every `sleep`, as redis-py does, unless keyspace notifications wake it.
//!
//! Floor 3 (locks). Works on a [`Connection`] and on what an attempt saw ([`Busy`]); the
//! acquire loops of [`crate::Lock`] and [`crate::MultiLock`] drive it.

use std::time::Duration;

use futures_util::StreamExt;

use crate::connection::Connection;
use crate::keys;
use crate::wire::{self, Busy};

/// Longest a waiter sleeps between attempts while a celeriac holder has the lock: its
/// release wakes us through pub/sub, so this only bounds the cost of a missed wake-up
/// (holder killed with a TTL-less lock, pub/sub connection dropped).
const CELERIAC_HOLDER_MAX_WAIT: Duration = Duration::from_secs(1);

/// How long a fair-mode waiter stays queued without refreshing (it refreshes at every
/// attempt, at least once per [`CELERIAC_HOLDER_MAX_WAIT`]).
pub(crate) const FAIR_WAITER_LEASE: Duration = Duration::from_secs(5);

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

/// Waits for a wake-up on the released channels (and keyspace notifications, when the
/// server sends them) of some lock names, or for a timeout.
pub(crate) struct Waiter<'a> {
    conn: &'a Connection,
    names: &'a [String],
    sub: Option<redis::aio::PubSub>,
    tried: bool,
}

impl<'a> Waiter<'a> {
    /// A waiter on `names`, not subscribed yet (an acquire that succeeds at once never
    /// opens a pub/sub connection).
    pub(crate) fn new(conn: &'a Connection, names: &'a [String]) -> Self {
        Waiter {
            conn,
            names,
            sub: None,
            tried: false,
        }
    }

    /// Whether a subscription was attempted (if it failed, we poll).
    pub(crate) fn subscribed(&self) -> bool {
        self.tried
    }

    /// Subscribe to the wake-ups of every name; on failure or after 2 s, fall back to
    /// polling.
    pub(crate) async fn subscribe(&mut self) {
        self.tried = true;
        let mut channels = Vec::new();
        for n in self.names {
            channels.push(keys::released_channel(n));
            channels.push(keys::keyspace_channel(self.conn.db(), n));
        }
        let sub = async {
            let mut ps = self.conn.pubsub().await?;
            ps.subscribe(&channels).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        match tokio::time::timeout(Duration::from_secs(2), sub).await {
            Ok(Ok(ps)) => self.sub = Some(ps),
            Ok(Err(e)) => tracing::debug!(error = %e, "no pub/sub wake-ups; polling"),
            Err(_) => tracing::debug!("pub/sub subscribe timed out; polling"),
        }
    }

    /// Return after `max`, or sooner when a wake-up arrives.
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
pub(crate) struct FairQueueExit {
    armed: Option<(Connection, String, Vec<u8>)>,
}

impl FairQueueExit {
    /// Armed only for a `fair` waiter on `name` queued as `token`.
    pub(crate) fn new(conn: &Connection, name: &str, token: &[u8], fair: bool) -> Self {
        FairQueueExit {
            armed: fair.then(|| (conn.clone(), name.to_string(), token.to_vec())),
        }
    }

    /// The waiter got the lock: the acquire script already took it out of the queue.
    pub(crate) fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for FairQueueExit {
    fn drop(&mut self) {
        if let Some((conn, name, token)) = self.armed.take() {
            conn.spawn_handle().spawn(async move {
                if let Ok(mut shared) = conn.shared().await {
                    let _: Result<i64, _> = wire::leave_queue(&name, &token)
                        .invoke_async(&mut shared)
                        .await;
                }
            });
        }
    }
}
