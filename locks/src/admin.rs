//! Operator views of the locks in a Redis database: list, show, and break a lock safely.
//! This is the library behind `celeriac locks`; it formats nothing.
//!
//! Finding locks uses `SCAN` (never `KEYS`, which blocks the server on a big database):
//! celeriac locks are found through their holder hashes; redis-py locks are string keys
//! whose value is a 32-hex-digit token (`uuid1().hex`). With an explicit pattern, every
//! string key matching it is listed, whatever its value (a Python lock taken with a custom
//! token, `acquire(token="host1:pid42")`, still shows up).
//!
//! Floor 4 (front-ends): reads holders the way [`crate::Lock::holder`] does and breaks
//! locks with the wire's force-release; it holds no lock itself, so it never touches guards
//! or the watchdog.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use crate::client::Client;
use crate::error::LockError;
use crate::holder::{Holder, Liveness};
use crate::keys;
use crate::lock::read_holder;
use crate::wire;

/// Which kind of client wrote a lock, as far as its value and holder hash tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// A celeriac process (holder hash present and matching).
    Celeriac,
    /// A redis-py default token (`uuid1().hex`).
    RedisPy,
    /// Some other string value (redis-py with a custom token, or not a lock at all).
    Other,
}

/// One lock as seen by an operator.
#[derive(Debug, Clone)]
pub struct LockEntry {
    /// The lock name (= key).
    pub name: String,
    /// The lock's token and TTL, and the holder's identity when a celeriac process holds it.
    pub holder: Holder,
    /// Which kind of client wrote it.
    pub kind: LockKind,
    /// How long it has been held, when the holder recorded or encoded a time.
    pub age: Option<Duration>,
    /// Whether the holder process is alive (celeriac holders only).
    pub liveness: Option<Liveness>,
}

impl LockEntry {
    fn new(name: String, holder: Holder) -> LockEntry {
        let (kind, since) = match (&holder.info, holder.uuid1()) {
            (Some(i), _) => (LockKind::Celeriac, Some(i.acquired_at)),
            (None, Some((at, _))) => (LockKind::RedisPy, Some(at)),
            (None, None) => (LockKind::Other, None),
        };
        let age = since.and_then(|t| SystemTime::now().duration_since(t).ok());
        let liveness = holder.info.as_ref().map(|i| i.liveness());
        LockEntry {
            name,
            holder,
            kind,
            age,
            liveness,
        }
    }
}

/// Keys matching `pattern` (and of `TYPE type_`, if given), by SCAN.
async fn scan(
    client: &Client,
    pattern: &str,
    type_: Option<&str>,
) -> Result<Vec<String>, LockError> {
    let mut conn = client.connection().shared().await?;
    let mut cursor: u64 = 0;
    let mut out = BTreeSet::new();
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        if let Some(t) = type_ {
            cmd.arg("TYPE").arg(t);
        }
        let (next, batch): (u64, Vec<String>) = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| LockError::redis(pattern, e))?;
        out.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(out.into_iter().collect())
}

fn looks_like_redis_py_token(v: &[u8]) -> bool {
    v.len() == 32
        && v.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Every lock, or every string key matching `pattern` (a Redis glob), sorted by name.
pub async fn list(client: &Client, pattern: Option<&str>) -> Result<Vec<LockEntry>, LockError> {
    let mut found: BTreeMap<String, LockEntry> = BTreeMap::new();
    let holder_pattern = format!(
        "{}{}",
        keys::HOLDER_PATTERN.trim_end_matches('*'),
        pattern.unwrap_or("*")
    );
    for hk in scan(client, &holder_pattern, Some("hash")).await? {
        if let Some(name) = keys::name_from_holder_key(&hk)
            && let Some(h) = read_holder(client.connection(), name).await?
        {
            found.insert(name.to_string(), LockEntry::new(name.to_string(), h));
        }
    }
    for key in scan(client, pattern.unwrap_or("*"), Some("string")).await? {
        if keys::is_derived(&key) || found.contains_key(&key) {
            continue;
        }
        if let Some(h) = read_holder(client.connection(), &key).await?
            && (pattern.is_some() || h.info.is_some() || looks_like_redis_py_token(&h.token))
        {
            found.insert(key.clone(), LockEntry::new(key, h));
        }
    }
    Ok(found.into_values().collect())
}

/// One lock by name; `None` when nobody holds it.
pub async fn show(client: &Client, name: &str) -> Result<Option<LockEntry>, LockError> {
    Ok(read_holder(client.connection(), name)
        .await?
        .map(|h| LockEntry::new(name.to_string(), h)))
}

/// What [`release`] did.
#[derive(Debug, Clone)]
pub enum ReleaseOutcome {
    /// Deleted; this was the holder.
    Released(LockEntry),
    /// Nobody held the lock.
    NotHeld,
    /// Not deleted: the holder is not known to be dead (reason given); use `force`.
    Refused(LockEntry, String),
}

/// Break a lock: only when its holder is known dead (a celeriac holder on this host whose
/// pid is gone or recycled), or unconditionally with `force`. Deletes the value that was
/// inspected and nothing else, so a lock re-taken meanwhile by someone else survives.
pub async fn release(
    client: &Client,
    name: &str,
    force: bool,
) -> Result<ReleaseOutcome, LockError> {
    let Some(entry) = show(client, name).await? else {
        return Ok(ReleaseOutcome::NotHeld);
    };
    if !force {
        let why = match &entry.liveness {
            Some(Liveness::Dead(_)) => None,
            Some(Liveness::Alive) => Some("its holder process is alive".to_string()),
            Some(Liveness::Unknown(r)) => Some(r.clone()),
            None => Some(
                "its holder is not a celeriac process, so whether it is alive cannot be \
                 checked"
                    .to_string(),
            ),
        };
        if let Some(why) = why {
            return Ok(ReleaseOutcome::Refused(entry, why));
        }
    }
    if force_release(client, name, Some(&entry.holder.token)).await? {
        Ok(ReleaseOutcome::Released(entry))
    } else {
        Ok(ReleaseOutcome::NotHeld)
    }
}

/// Delete `name` if it holds `expected` (or whatever it holds, when `None`), drop its
/// holder hash and wake celeriac waiters. True if something was deleted.
pub async fn force_release(
    client: &Client,
    name: &str,
    expected: Option<&[u8]>,
) -> Result<bool, LockError> {
    let mut conn = client.connection().shared().await?;
    let deleted: Option<Vec<u8>> = wire::force_release(name, expected)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| LockError::redis(name, e))?;
    Ok(deleted.is_some())
}

/// Release every lock held by process `pid` on this host — for a worker whose task child
/// died, so its locks free at once instead of after their TTL. Returns the names released.
pub async fn release_held_by_pid(client: &Client, pid: u32) -> Result<Vec<String>, LockError> {
    let host = crate::holder::hostname();
    let mut released = Vec::new();
    for hk in scan(client, keys::HOLDER_PATTERN, Some("hash")).await? {
        let Some(name) = keys::name_from_holder_key(&hk) else {
            continue;
        };
        if let Some(h) = read_holder(client.connection(), name).await?
            && let Some(info) = &h.info
            && info.pid == pid
            && info.host == host
            && force_release(client, name, Some(&h.token)).await?
        {
            released.push(name.to_string());
        }
    }
    Ok(released)
}
