//! [`Client`]: the handle a program holds — the lock server's connections shared by every lock
//! the process takes, and the watchdog that renews those it holds — and where it is
//! configured from.
//!
//! Configuration follows celeriac's convention of one Redis unless told otherwise:
//! [`Client::from_env`] reads `CELERIAC_LOCK_URL`, then `CELERY_BROKER_URL`, then uses
//! `redis://127.0.0.1:6379/0` — JWQL keeps broker, results and locks in db 0 of one server.
//!
//! Floor 3 (locks). It pairs a [`Connection`] (floor 2) with a [`Watchdog`] and knows no
//! lock type: [`Client::lock`] and [`Client::multi_lock`] are defined beside [`crate::Lock`]
//! and [`crate::MultiLock`], which build on this module.

use std::sync::OnceLock;

use crate::connection::{Connection, redact};
use crate::error::LockError;
use crate::watchdog::Watchdog;

/// Default Redis URL when no environment variable names one.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";

/// Environment variables read by [`Client::from_env`], in order of precedence.
pub const URL_ENV_VARS: [&str; 2] = ["CELERIAC_LOCK_URL", "CELERY_BROKER_URL"];

/// A handle to the Redis server that holds the locks. Cheap to clone: clones share the
/// connections and the watchdog.
#[derive(Clone)]
pub struct Client {
    conn: Connection,
    /// Renews the TTL of every lock this client holds.
    watchdog: Watchdog,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &redact(self.conn.url()))
            .field("private_runtime", &self.conn.is_private())
            .finish()
    }
}

impl Client {
    /// A client for the Redis at `url` (`redis://host:port/db`). Connects lazily, on first
    /// use, from the tokio runtime that first uses it; background work (watchdog renewals)
    /// runs on that runtime.
    pub fn open(url: &str) -> Result<Client, LockError> {
        Self::build(url, false)
    }

    /// Like [`Client::open`], but the connection and every background task live on the
    /// library's private runtime, so the client works from any thread and any runtime and
    /// its watchdogs outlive the caller's runtime. Used by the blocking API.
    pub fn open_detached(url: &str) -> Result<Client, LockError> {
        Self::build(url, true)
    }

    fn build(url: &str, private: bool) -> Result<Client, LockError> {
        Ok(Client {
            conn: Connection::open(url, private)?,
            watchdog: Watchdog::default(),
        })
    }

    /// The URL from `CELERIAC_LOCK_URL`, else `CELERY_BROKER_URL`, else [`DEFAULT_URL`].
    pub fn url_from_env() -> String {
        URL_ENV_VARS
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| DEFAULT_URL.to_string())
    }

    /// A detached client (see [`Client::open_detached`]) for [`Client::url_from_env`].
    pub fn from_env() -> Result<Client, LockError> {
        Self::open_detached(&Self::url_from_env())
    }

    /// The process-wide client from the environment that `#[only_one]` uses when no
    /// `client = ...` is given. Built once; later changes to the environment are ignored.
    pub fn global() -> Result<Client, LockError> {
        static GLOBAL: OnceLock<Client> = OnceLock::new();
        if let Some(c) = GLOBAL.get() {
            return Ok(c.clone());
        }
        let c = Self::from_env()?;
        Ok(GLOBAL.get_or_init(|| c).clone())
    }

    /// The URL this client was opened with.
    pub fn url(&self) -> &str {
        self.conn.url()
    }

    /// The database number locks live in.
    pub fn db(&self) -> i64 {
        self.conn.db()
    }

    /// The connections every lock of this client uses.
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The watchdog that renews the locks of this client.
    pub(crate) fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }
}
