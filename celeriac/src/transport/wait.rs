//! Waiting for work without polling and without taking a message off its queue.
//!
//! Redis cannot block inside a Lua script, and kombu's BRPOP takes the message out of Redis
//! before it is recorded anywhere (a crash there loses it). celeriac separates *waiting*
//! from *taking*: while idle, one dedicated connection per queue list blocks in
//! `BLMOVE list list RIGHT RIGHT` — which returns as soon as the list has an element and
//! moves it onto itself (the list is unchanged) — and the worker then takes messages with
//! the atomic claim script. Waking is one round trip after the producer's LPUSH; taking is
//! one more; nothing is ever only in the worker's memory.
//!
//! A waiter that fired stays quiet until [`IdleWaiter::rearm`] is called (after a claim
//! found the queues empty), so a busy worker issues no blocking commands at all.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// How long one blocking peek lasts before it is re-issued (keeps dead connections from
/// going unnoticed; kombu uses 1 s for BRPOP).
const PEEK_TIMEOUT_SECS: f64 = 5.0;

/// Wakes the consumer when any of its queue lists becomes non-empty.
#[derive(Debug)]
pub struct IdleWaiter {
    notify: Arc<Notify>,
    arm: watch::Sender<u64>,
    tasks: Vec<JoinHandle<()>>,
}

impl IdleWaiter {
    /// Start waiting on every list of `queues` (all priorities, in consume order).
    pub fn for_queues(url: crate::url::RedisUrl, queues: &[String]) -> Self {
        Self::start(url, super::keys::consume_keys(queues))
    }

    /// Start one peeking connection per list key.
    pub fn start(url: crate::url::RedisUrl, keys: Vec<String>) -> Self {
        let notify = Arc::new(Notify::new());
        let (arm, _) = watch::channel(0u64);
        let tasks = keys
            .into_iter()
            .map(|key| {
                let notify = notify.clone();
                let rx = arm.subscribe();
                let url = url.clone();
                tokio::spawn(peek_loop(url, key, notify, rx))
            })
            .collect();
        IdleWaiter { notify, arm, tasks }
    }

    /// Let every peeker issue its next blocking wait (call after a claim came back empty).
    pub fn rearm(&self) {
        self.arm.send_modify(|g| *g += 1);
    }

    /// Wait until some list may have become non-empty since the last rearm.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl Drop for IdleWaiter {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn peek_loop(
    url: crate::url::RedisUrl,
    key: String,
    notify: Arc<Notify>,
    mut arm: watch::Receiver<u64>,
) {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs_f64(PEEK_TIMEOUT_SECS + 5.0)))
        .set_connection_timeout(Some(Duration::from_secs(4)));
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    'connect: loop {
        let client = url.client().await;
        let conn = match client {
            Ok(c) => c.get_multiplexed_async_connection_with_config(&cfg).await,
            Err(e) => Err(e),
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(key = %key.escape_debug(), error = %e, "idle waiter cannot connect; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                // A wake-up lets the consumer fall back to its own periodic claim.
                notify.notify_one();
                continue 'connect;
            }
        };
        backoff.reset();
        loop {
            // Wait to be armed (the generation moves on each rearm).
            if arm.changed().await.is_err() {
                return;
            }
            loop {
                let r: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("BLMOVE")
                    .arg(&key)
                    .arg(&key)
                    .arg("RIGHT")
                    .arg("RIGHT")
                    .arg(PEEK_TIMEOUT_SECS)
                    .query_async(&mut conn)
                    .await;
                match r {
                    Ok(Some(_)) => {
                        notify.notify_one();
                        break;
                    }
                    Ok(None) => {
                        // Timed out with nothing: if a rearm happened meanwhile, mark it seen.
                        arm.borrow_and_update();
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(key = %key.escape_debug(), error = %e, "idle waiter lost its connection; reconnecting");
                        notify.notify_one();
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue 'connect;
                    }
                }
            }
        }
    }
}
