//! The lock protocol as commands and replies: every script call and command the library
//! sends, built from a lock's name and token, and every script reply turned into a typed
//! answer. No I/O happens here.
//!
//! Floor 1 (wire). Imports only floor 0 ([`crate::keys`], [`crate::holder`],
//! [`crate::error`]) and its private [`scripts`]. The connection layer and the lock types
//! above send what this module builds and hand it the replies; nothing else invokes a script
//! or decides what a script's return code means, so the argument order each script expects is
//! written down once, next to the script, and a command sent on the async connection, on the
//! direct one, or pipelined behind another is the same command.

use std::collections::HashMap;
use std::time::Duration;

use redis::{Cmd, Pipeline, ScriptInvocation, Value};

use crate::error::{LockError, NotOwnedReason};
use crate::holder::{Holder, HolderInfo};
use crate::keys;

mod scripts;

/// What one acquire attempt found when the lock was busy.
#[derive(Debug)]
pub(crate) struct Busy {
    /// PTTL of the lock key (-1 no expiry, -2 gone since the `SET NX`).
    pub(crate) pttl: i64,
    /// The holder is a celeriac process (its release will publish a wake-up).
    pub(crate) celeriac: bool,
}

/// The answer of one acquire attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Taken, with this fencing number.
    Acquired(u64),
    /// Someone else holds it.
    Busy(Busy),
}

/// A lock TTL as the acquire scripts take it, in ms: `0` means no expiry, so a TTL shorter
/// than a millisecond is sent as 1 ms rather than as "for ever".
pub(crate) fn ttl_ms(ttl: Option<Duration>) -> u64 {
    ttl.map(|t| (t.as_millis() as u64).max(1)).unwrap_or(0)
}

/// One acquire attempt (`SET NX [PX]` + fence + holder hash; [`scripts::ACQUIRE`]).
/// `fields` are the holder-hash pairs from [`crate::holder::holder_fields`].
pub(crate) fn acquire(
    name: &str,
    token: &[u8],
    ttl_ms: u64,
    fields: &[String],
) -> ScriptInvocation<'static> {
    let mut inv = scripts::ACQUIRE.key(keys::lock_key(name));
    inv.key(keys::holder_key(name))
        .key(keys::FENCE_KEY)
        .arg(token)
        .arg(ttl_ms)
        .arg(fields);
    inv
}

/// One fair (FIFO) acquire attempt ([`scripts::ACQUIRE_FAIR`]): queues the waiter `token`
/// for `lease_ms` and takes the lock only at the head of the queue.
pub(crate) fn acquire_fair(
    name: &str,
    token: &[u8],
    ttl_ms: u64,
    lease_ms: u64,
    fields: &[String],
) -> ScriptInvocation<'static> {
    let mut inv = scripts::ACQUIRE_FAIR.key(keys::lock_key(name));
    inv.key(keys::holder_key(name))
        .key(keys::FENCE_KEY)
        .key(keys::queue_key(name))
        .key(keys::queue_alive_key(name))
        .arg(token)
        .arg(ttl_ms)
        .arg(lease_ms)
        .arg(fields);
    inv
}

/// The reply of [`acquire`] or [`acquire_fair`]; `None` if it is not what the script returns.
pub(crate) fn parse_attempt(v: &Value) -> Option<Attempt> {
    let Value::Array(items) = v else { return None };
    match int(items.first()?)? {
        1 => Some(Attempt::Acquired(int(items.get(1)?)? as u64)),
        _ => {
            let pttl = int(items.get(1)?)?;
            let cur = bytes(items.get(2)?);
            let holder_token = bytes(items.get(3)?);
            Some(Attempt::Busy(Busy {
                pttl,
                celeriac: cur.is_some() && cur == holder_token,
            }))
        }
    }
}

/// A fair waiter leaving the queue of `name` without the lock ([`scripts::LEAVE_QUEUE`]).
pub(crate) fn leave_queue(name: &str, token: &[u8]) -> ScriptInvocation<'static> {
    let mut inv = scripts::LEAVE_QUEUE.key(keys::queue_key(name));
    inv.key(keys::queue_alive_key(name)).arg(token);
    inv
}

/// All-or-nothing acquire of `names` (sorted and de-duplicated by the caller) with one
/// token ([`scripts::ACQUIRE_MANY`]).
pub(crate) fn acquire_many(
    names: &[String],
    token: &[u8],
    ttl_ms: u64,
    fields: &[String],
) -> ScriptInvocation<'static> {
    let mut inv = scripts::ACQUIRE_MANY.key(keys::FENCE_KEY);
    for n in names {
        inv.key(keys::lock_key(n)).key(keys::holder_key(n));
    }
    inv.arg(token).arg(ttl_ms).arg(fields);
    inv
}

/// The reply of [`acquire_many`] for a set of `count` names: every fence in name order, or
/// the index of the first busy name and what the attempt saw of it.
pub(crate) fn parse_acquire_many(
    v: &Value,
    count: usize,
) -> Option<Result<Vec<u64>, (usize, Busy)>> {
    let Value::Array(items) = v else {
        return None;
    };
    if int(items.first()?)? == 1 {
        let fences = items[1..]
            .iter()
            .map(|v| int(v).map(|f| f as u64))
            .collect::<Option<Vec<_>>>()?;
        return Some(Ok(fences));
    }
    let index = (int(items.get(1)?)? as usize).checked_sub(1)?;
    let pttl = int(items.get(2)?)?;
    let cur = bytes(items.get(3)?);
    let holder_token = bytes(items.get(4)?);
    Some(Err((
        index.min(count - 1),
        Busy {
            pttl,
            celeriac: cur.is_some() && cur == holder_token,
        },
    )))
}

/// The compare-and-delete of `name` held with `token` ([`scripts::RELEASE`]); its reply goes
/// to [`owned_result`].
pub(crate) fn release(name: &str, token: &[u8]) -> ScriptInvocation<'static> {
    let mut inv = scripts::RELEASE.key(keys::lock_key(name));
    inv.key(keys::holder_key(name))
        .arg(token)
        .arg(keys::released_channel(name));
    inv
}

/// The same compare-and-delete as one `EVAL` with the script's text, for releases whose
/// reply is not waited for: an `EVALSHA` answered `NOSCRIPT` (a fresh server, `SCRIPT
/// FLUSH`) would be retried only after whatever this client sent next, out of order.
pub(crate) fn release_eval(name: &str, token: &[u8]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(scripts::RELEASE_LUA)
        .arg(2)
        .arg(keys::lock_key(name))
        .arg(keys::holder_key(name))
        .arg(token)
        .arg(keys::released_channel(name));
    cmd
}

/// redis-py's `extend(additional_time, replace_ttl)` of `name` held with `token`
/// ([`scripts::EXTEND`]); its reply goes to [`owned_result`].
pub(crate) fn extend(
    name: &str,
    token: &[u8],
    by_ms: u64,
    replace_ttl: bool,
) -> ScriptInvocation<'static> {
    let mut inv = scripts::EXTEND.key(keys::lock_key(name));
    inv.key(keys::holder_key(name))
        .arg(token)
        .arg(by_ms)
        .arg(if replace_ttl { "1" } else { "0" });
    inv
}

/// redis-py's `reacquire()` of `name` held with `token`: reset its TTL to `ttl_ms`
/// ([`scripts::REACQUIRE`], also what the watchdog sends); its reply goes to
/// [`owned_result`].
pub(crate) fn reacquire(name: &str, token: &[u8], ttl_ms: u64) -> ScriptInvocation<'static> {
    let mut inv = scripts::REACQUIRE.key(keys::lock_key(name));
    inv.key(keys::holder_key(name)).arg(token).arg(ttl_ms);
    inv
}

/// The operator's break of `name` if it holds `expected` (anything, when `None`)
/// ([`scripts::FORCE_RELEASE`]); replies with the deleted value or nil.
pub(crate) fn force_release(name: &str, expected: Option<&[u8]>) -> ScriptInvocation<'static> {
    let mut inv = scripts::FORCE_RELEASE.key(keys::lock_key(name));
    inv.key(keys::holder_key(name))
        .arg(keys::released_channel(name))
        .arg(expected.unwrap_or(b""));
    inv
}

/// What the return code of release, extend or reacquire means for the holder of `name`:
/// `1` done, `0` the key is gone, `-2` it has no TTL (extend), anything else another token.
pub(crate) fn owned_result(name: &str, code: i64) -> Result<(), LockError> {
    match code {
        1 => Ok(()),
        0 => Err(LockError::NotOwned {
            name: name.to_string(),
            reason: NotOwnedReason::Expired,
        }),
        -2 => Err(LockError::NoTimeout {
            name: name.to_string(),
        }),
        _ => Err(LockError::NotOwned {
            name: name.to_string(),
            reason: NotOwnedReason::HeldByOther,
        }),
    }
}

/// The read of who holds `name`: `GET` and `PTTL` of the lock key and `HGETALL` of its
/// holder hash, in one round trip; its reply goes to [`holder_from_parts`].
pub(crate) fn read_holder(name: &str) -> Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd("GET")
        .arg(keys::lock_key(name))
        .cmd("PTTL")
        .arg(keys::lock_key(name))
        .cmd("HGETALL")
        .arg(keys::holder_key(name));
    pipe
}

/// The holder [`read_holder`] found: its token and TTL, and its holder hash only when the
/// hash describes the same token (a hash left by a lock deleted by hand describes nobody).
pub(crate) fn holder_from_parts(
    token: Vec<u8>,
    pttl: i64,
    hash: &HashMap<String, String>,
) -> Holder {
    let info = (hash.get("token").map(|t| t.as_bytes()) == Some(token.as_slice()))
        .then(|| HolderInfo::from_hash(hash).map(Box::new))
        .flatten();
    Holder {
        token,
        ttl: (pttl >= 0).then(|| Duration::from_millis(pttl as u64)),
        info,
    }
}

/// The error for a script reply of the wrong shape (a script from another version, say).
pub(crate) fn bad_reply(name: &str, v: &Value) -> LockError {
    LockError::redis(
        name,
        redis::RedisError::from((
            redis::ErrorKind::Parse,
            "unexpected reply from a lock script",
            format!("{v:?}"),
        )),
    )
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_and_extend_codes_map_to_redis_py_outcomes() {
        assert!(owned_result("l", 1).is_ok());
        assert!(matches!(
            owned_result("l", 0),
            Err(LockError::NotOwned {
                reason: NotOwnedReason::Expired,
                ..
            })
        ));
        assert!(matches!(
            owned_result("l", -1),
            Err(LockError::NotOwned {
                reason: NotOwnedReason::HeldByOther,
                ..
            })
        ));
        assert!(matches!(
            owned_result("l", -2),
            Err(LockError::NoTimeout { .. })
        ));
    }

    #[test]
    fn acquire_replies_parse_to_a_fence_or_who_is_busy() {
        let acquired = Value::Array(vec![Value::Int(1), Value::Int(42)]);
        assert!(matches!(
            parse_attempt(&acquired),
            Some(Attempt::Acquired(42))
        ));
        // A celeriac holder: the lock's value equals its holder hash's token.
        let tok = || Value::BulkString(b"t".to_vec());
        let busy = Value::Array(vec![Value::Int(0), Value::Int(900), tok(), tok()]);
        match parse_attempt(&busy) {
            Some(Attempt::Busy(b)) => assert!(b.pttl == 900 && b.celeriac, "{b:?}"),
            other => panic!("{other:?}"),
        }
        // A redis-py holder: no holder hash.
        let busy = Value::Array(vec![Value::Int(0), Value::Int(-1), tok(), Value::Nil]);
        assert!(matches!(
            parse_attempt(&busy),
            Some(Attempt::Busy(Busy {
                pttl: -1,
                celeriac: false
            }))
        ));
        assert!(parse_attempt(&Value::Okay).is_none());
        // Multi-lock: the second of three names is busy.
        let busy = Value::Array(vec![
            Value::Int(0),
            Value::Int(2),
            Value::Int(5),
            tok(),
            Value::Nil,
        ]);
        assert!(matches!(
            parse_acquire_many(&busy, 3),
            Some(Err((1, Busy { pttl: 5, .. })))
        ));
    }

    #[test]
    fn a_release_sent_unawaited_carries_the_script_text_not_its_sha() {
        let packed = release_eval("l", b"tok").get_packed_command();
        let text = String::from_utf8_lossy(&packed);
        assert!(
            text.contains("EVAL\r\n") && !text.contains("EVALSHA"),
            "{text}"
        );
        assert!(text.contains(scripts::RELEASE_LUA), "{text}");
        assert!(text.contains("celeriac:lock:released:l"), "{text}");
    }
}
