//! [`MultiLock`]: take several locks at once, all or nothing, in one atomic script.
//!
//! JWQL's `run_parallel_pipeline` takes one blocking lock per file in list order, so two
//! monitors with overlapping lists in different orders can deadlock, and a file listed
//! twice deadlocks with itself. Here the names are sorted and de-duplicated and the whole
//! set is taken by one Lua script or not at all, so no caller ever holds part of a set while
//! waiting for the rest. Each lock is still a plain redis-py-compatible key, so Python
//! holders of any single name are excluded as usual.
//!
//! Floor 3 (locks), beside [`crate::Lock`]: it shares its options ([`LockOptions`]), its
//! waiting ([`crate::wait`]) and its guard, one per name; [`Client::multi_lock`] is defined
//! here.

use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use crate::client::Client;
use crate::error::LockError;
use crate::guard::LockGuard;
use crate::holder::holder_fields;
use crate::lock::{LockOptions, read_holder};
use crate::wait::{Waiter, wait_interval};
use crate::wire::{self, Busy};

/// Several lock names to be acquired together. Build with [`Client::multi_lock`].
#[derive(Debug, Clone)]
pub struct MultiLock {
    client: Client,
    names: Vec<String>,
    opts: LockOptions,
}

/// The held set; each lock has its own guard (and watchdog, when it has a TTL).
#[derive(Debug)]
pub struct MultiGuard {
    guards: Vec<LockGuard>,
}

impl Client {
    /// Several locks to be taken together, all or nothing (see [`MultiLock`]).
    pub fn multi_lock<I, S>(&self, names: I) -> MultiLock
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = names.into_iter().map(Into::into).collect();
        names.sort();
        names.dedup();
        MultiLock {
            client: self.clone(),
            names,
            opts: LockOptions::default(),
        }
    }
}

impl MultiLock {
    /// Key TTL of every lock in the set.
    pub fn timeout(mut self, ttl: Duration) -> Self {
        self.opts.timeout = Some(ttl).filter(|t| !t.is_zero());
        self
    }

    /// Longest [`acquire`](MultiLock::acquire) waits for the whole set to be free (redis-py
    /// `blocking_timeout`).
    pub fn blocking_timeout(mut self, wait: Duration) -> Self {
        self.opts.blocking_timeout = Some(wait);
        self
    }

    /// Whether to wait when any lock of the set is busy.
    pub fn blocking(mut self, blocking: bool) -> Self {
        self.opts.blocking = blocking;
        self
    }

    /// Record what the set is for.
    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.opts.purpose = Some(purpose.into());
        self
    }

    /// Polling interval while a non-celeriac holder has a lock of the set.
    pub fn sleep(mut self, interval: Duration) -> Self {
        self.opts.sleep = interval;
        self
    }

    /// The names, sorted and de-duplicated.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Take every lock of the set, or none; waits as the options say.
    pub async fn acquire(&self) -> Result<MultiGuard, LockError> {
        let token = uuid::Uuid::new_v4().simple().to_string().into_bytes();
        let started = Instant::now();
        let deadline = self
            .opts
            .blocking_timeout
            .filter(|_| self.opts.blocking)
            .map(|t| started + t);
        let mut waiter = Waiter::new(self.client.connection(), &self.names);
        loop {
            match self.attempt(&token).await? {
                Ok(fences) => return Ok(self.guards(&token, fences)),
                Err((index, busy)) => {
                    let now = Instant::now();
                    if !self.opts.blocking || deadline.is_some_and(|d| now >= d) {
                        let name = self.names[index].clone();
                        let holder = read_holder(self.client.connection(), &name).await?;
                        return Err(LockError::NotAcquired {
                            name,
                            holder,
                            waited: started.elapsed(),
                        });
                    }
                    if !waiter.subscribed() {
                        waiter.subscribe().await;
                        continue;
                    }
                    let mut wait = wait_interval(&busy, self.opts.sleep, false);
                    if let Some(d) = deadline {
                        wait = wait.min(d - now);
                    }
                    waiter.wait(wait).await;
                }
            }
        }
    }

    /// One all-or-nothing attempt: every fence, or the index of the first busy name and
    /// what the attempt saw of it.
    #[allow(clippy::type_complexity)]
    async fn attempt(&self, token: &[u8]) -> Result<Result<Vec<u64>, (usize, Busy)>, LockError> {
        let label = self.names.join(",");
        let mut conn = self.client.connection().shared().await?;
        let fields = holder_fields(self.opts.purpose.as_deref(), self.opts.task_id.as_deref());
        let reply: Value =
            wire::acquire_many(&self.names, token, wire::ttl_ms(self.opts.timeout), &fields)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| LockError::redis(&label, e))?;
        wire::parse_acquire_many(&reply, self.names.len())
            .ok_or_else(|| wire::bad_reply(&label, &reply))
    }

    /// One guard per name, all with the set's token.
    fn guards(&self, token: &[u8], fences: Vec<u64>) -> MultiGuard {
        MultiGuard {
            guards: self
                .names
                .iter()
                .zip(fences)
                .map(|(n, f)| {
                    LockGuard::new(
                        self.client.clone(),
                        n.clone(),
                        token.to_vec(),
                        f,
                        self.opts.timeout,
                        self.opts.watchdog,
                    )
                })
                .collect(),
        }
    }
}

impl MultiGuard {
    /// The guard of each lock, in sorted name order.
    pub fn guards(&self) -> &[LockGuard] {
        &self.guards
    }

    /// Release every lock; returns the first error after trying them all.
    pub async fn release(self) -> Result<(), LockError> {
        let mut first = Ok(());
        for g in self.guards {
            let r = g.release().await;
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}
