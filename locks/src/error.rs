//! Every error of the lock library, the reasons they carry (including why a held lock was
//! lost), and the not-run outcome of `#[only_one]`.
//!
//! Floor 0 (plain data). This module imports nothing from the crate but [`Holder`], the
//! plain description of a lock's holder that the busy cases carry, so every floor above can
//! return these types without an import circle.
//!
//! redis-py has `LockError` (client-side misuse, acquire timeout in `__enter__`) and
//! `LockNotOwnedError` (the server said the token no longer matches). Here each case is
//! its own variant, and "not owned" says whether the key had expired or someone else now
//! holds it, because an operator acts differently on each.

use std::fmt;
use std::time::Duration;

use crate::holder::Holder;

/// Why a lock operation failed.
///
/// New cases may be added in a minor release, so a `match` outside this crate needs a
/// wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The lock was held by someone else and was not acquired (immediately for a
    /// non-blocking acquire, or within `blocking_timeout`).
    #[error(
        "lock `{name}` not acquired after {waited:?}: held by {}",
        fmt_holder(holder)
    )]
    NotAcquired {
        /// The lock that was busy (for a multi-lock, the first busy name of the set).
        name: String,
        /// The holder seen at the last attempt, if any was still there.
        holder: Option<Holder>,
        /// How long the caller waited.
        waited: Duration,
    },
    /// Release, extend or reacquire found that this holder no longer owns the lock
    /// (redis-py's `LockNotOwnedError`).
    #[error("lock `{name}` is no longer owned by this holder: {reason}")]
    NotOwned {
        /// The lock whose key no longer holds this holder's token.
        name: String,
        /// Expired/deleted, or taken by another token.
        reason: NotOwnedReason,
    },
    /// `extend` on a lock without TTL (redis-py: "Cannot extend a lock with no timeout").
    #[error("lock `{name}` has no timeout, so it cannot be extended; give it a timeout")]
    NoTimeout {
        /// The lock that was taken without a TTL.
        name: String,
    },
    /// Redis could not be reached or answered with an error; retrying may help.
    #[error(
        "redis error on lock `{name}`: {source} (check the Redis URL and that the server is up)"
    )]
    Redis {
        /// The lock being worked on (empty for connection set-up; for a multi-lock, the
        /// names joined by commas).
        name: String,
        /// What redis-rs reported; its kind tells a refused or dropped connection (retry
        /// later) from a server error reply.
        #[source]
        source: redis::RedisError,
    },
    /// The Redis URL could not be parsed.
    #[error("invalid Redis URL {url:?}: {source}")]
    Url {
        /// The URL given, with any password replaced by `********`.
        url: String,
        /// redis-rs's reason for refusing the URL (unknown scheme, bad port, ...).
        #[source]
        source: redis::RedisError,
    },
}

/// Why a holder no longer owns its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotOwnedReason {
    /// The key is gone: its TTL ran out or someone deleted it.
    Expired,
    /// The key holds another token: it expired and someone else took it, or it was
    /// never ours.
    HeldByOther,
}

impl fmt::Display for NotOwnedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotOwnedReason::Expired => "it expired or was deleted",
            NotOwnedReason::HeldByOther => "another holder owns it now",
        })
    }
}

/// Why a held lock was lost, as the watchdog found it (see [`crate::LostSignal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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

fn fmt_holder(h: &Option<Holder>) -> String {
    match h {
        Some(h) => h.to_string(),
        None => "nobody by the last attempt".to_string(),
    }
}

impl LockError {
    pub(crate) fn redis(name: &str, source: redis::RedisError) -> Self {
        LockError::Redis {
            name: name.to_string(),
            source,
        }
    }

    /// True for [`LockError::NotOwned`].
    pub fn is_not_owned(&self) -> bool {
        matches!(self, LockError::NotOwned { .. })
    }

    /// True for [`LockError::NotAcquired`].
    pub fn is_not_acquired(&self) -> bool {
        matches!(self, LockError::NotAcquired { .. })
    }
}

/// Why an `#[only_one]` function body did not run (or was cut short). Returned as the
/// `Err` of the function's new return type `Result<T, NotRun>`, so a skipped run can never
/// be mistaken for a successful one (JWQL's `only_one` returned `None` for both).
///
/// New cases may be added in a minor release, so a `match` outside this crate needs a
/// wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotRun {
    /// Policy `skip` (the default): the lock was busy, the body was not run.
    #[error("skipped: lock `{key}` is held by {}", fmt_holder(holder))]
    Skipped {
        /// The lock name the attribute's `key` formatted to.
        key: String,
        /// The holder seen by the failed attempt (`None` if it released in between).
        holder: Option<Holder>,
    },
    /// Policy `error`: the lock was busy; this is meant to be reported as a failure.
    #[error("lock `{key}` is busy: held by {}", fmt_holder(holder))]
    Busy {
        /// The lock name the attribute's `key` formatted to.
        key: String,
        /// The holder seen by the failed attempt (`None` if it released in between).
        holder: Option<Holder>,
    },
    /// Policy `wait` with a deadline: the lock did not come free in time.
    #[error(
        "gave up waiting {waited:?} for lock `{key}`, held by {}",
        fmt_holder(holder)
    )]
    TimedOut {
        /// The lock name the attribute's `key` formatted to.
        key: String,
        /// Who held it at the last attempt.
        holder: Option<Holder>,
        /// How long the call waited.
        waited: Duration,
    },
    /// An `async fn` body was started but cancelled because the watchdog found the lock
    /// gone (expired, deleted or stolen), so it stopped before running unprotected.
    #[error("lock `{key}` was lost while the body ran ({reason}); the body was cancelled")]
    Lost {
        /// The lock name the attribute's `key` formatted to.
        key: String,
        /// What the watchdog's renewal found: the key gone, taken, or Redis unreachable.
        reason: LostReason,
    },
    /// The lock could not be taken because of a Redis error.
    #[error(transparent)]
    Lock(LockError),
}

impl NotRun {
    /// True when the body was skipped because another holder had the lock.
    pub fn is_skipped(&self) -> bool {
        matches!(self, NotRun::Skipped { .. })
    }

    /// The holder that kept the body from running, when known.
    pub fn holder(&self) -> Option<&Holder> {
        match self {
            NotRun::Skipped { holder, .. }
            | NotRun::Busy { holder, .. }
            | NotRun::TimedOut { holder, .. } => holder.as_ref(),
            _ => None,
        }
    }
}
