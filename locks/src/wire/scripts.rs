//! The Lua scripts that make each multi-step lock operation atomic on the server.
//!
//! Part of floor 1 (wire), private to [`crate::wire`]: only the wire module builds calls to
//! these scripts, so every key and argument order lives next to the script that reads it.
//!
//! Each script keeps redis-py's observable semantics for the lock key itself (see
//! `redis/lock.py`: `LUA_RELEASE_SCRIPT`, `LUA_EXTEND_SCRIPT`, `LUA_REACQUIRE_SCRIPT`), so a
//! Python process and a celeriac process holding the same name behave as two redis-py
//! clients would. The text is our own, so the SHA1 differs from redis-py's; only the
//! semantics need to match. On top, each script maintains the celeriac-only keys from
//! [`crate::keys`] in the same atomic step.
//!
//! Return codes shared by release/extend/reacquire: `1` done, `0` the key is gone (expired
//! or deleted), `-1` the key holds another token (someone else owns it now).

use std::sync::LazyLock;

use redis::Script;

/// Acquire: `SET name token NX [PX ms]` (redis-py `do_acquire`), and when it succeeds, in
/// the same step, take the next fencing number and write the holder hash with the lock's
/// TTL. When the lock is busy, report who holds it and for how long, so a waiter can decide
/// how long to wait and a skip can name the holder, without a second round trip.
///
/// KEYS: lock, holder hash, fence counter. ARGV: token, ttl ms (`0` = no expiry), then
/// holder field/value pairs.
/// Returns `{1, fence}` or `{0, pttl, current value, holder-hash-token or false}`.
pub(super) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ok
if ARGV[2] == '0' then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX')
end
if ok then
  local fence = redis.call('INCR', KEYS[3])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'token', ARGV[1], 'fence', fence, 'ttl_ms', ARGV[2], unpack(ARGV, 3))
  if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
  return {1, fence}
end
local cur = redis.call('GET', KEYS[1])
return {0, redis.call('PTTL', KEYS[1]), cur, redis.call('HGET', KEYS[2], 'token')}
"#,
    )
});

/// Fair (FIFO) acquire. Same as [`ACQUIRE`], but a celeriac waiter may only take the lock
/// when it is at the head of the queue of celeriac waiters; waiters that stopped refreshing
/// their lease are dropped first. Python acquirers do not queue and can still barge in
/// (they only see the lock key), which is the price of staying redis-py compatible.
///
/// KEYS: lock, holder hash, fence counter, queue zset, queue-alive zset.
/// ARGV: token (also the waiter id), ttl ms, waiter lease ms, then holder field/value pairs.
/// Returns `{1, fence}` or `{0, pttl, current value, holder-hash-token or false, position}`.
pub(super) static ACQUIRE_FAIR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now_ms)
for _, m in ipairs(dead) do
  redis.call('ZREM', KEYS[4], m)
  redis.call('ZREM', KEYS[5], m)
end
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  redis.call('ZADD', KEYS[4], tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[1])
end
local lease = tonumber(ARGV[3])
redis.call('ZADD', KEYS[5], now_ms + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[4], lease * 2)
redis.call('PEXPIRE', KEYS[5], lease * 2)
local head = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
local ok = false
if head == ARGV[1] then
  if ARGV[2] == '0' then
    ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
  else
    ok = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX')
  end
end
if ok then
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  local fence = redis.call('INCR', KEYS[3])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'token', ARGV[1], 'fence', fence, 'ttl_ms', ARGV[2], unpack(ARGV, 4))
  if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
  return {1, fence}
end
local cur = redis.call('GET', KEYS[1])
return {0, redis.call('PTTL', KEYS[1]), cur, redis.call('HGET', KEYS[2], 'token'),
        redis.call('ZRANK', KEYS[4], ARGV[1])}
"#,
    )
});

/// A fair waiter leaving the queue (gave up, cancelled).
/// KEYS: queue zset, queue-alive zset. ARGV: token.
pub(super) static LEAVE_QUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"#,
    )
});

/// Release: compare-and-delete (redis-py `LUA_RELEASE_SCRIPT`: delete only if the value is
/// our token), plus: drop our holder hash, and `PUBLISH` on the released channel so
/// celeriac waiters wake without polling. Distinguishes "gone" (0) from "someone else's"
/// (-1), which redis-py folds into one `LockNotOwnedError`.
///
/// KEYS: lock, holder hash. ARGV: token, released channel.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

/// The text of [`RELEASE`], sent as `EVAL` by releases whose reply is not waited for
/// ([`super::release_eval`]).
pub(super) const RELEASE_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[2])
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return 1
end
if cur then return -1 end
return 0
"#;

/// Extend (redis-py `LUA_EXTEND_SCRIPT`): if owned and the key has a TTL, set the TTL to
/// `ms` plus the remaining PTTL (additive, `ARGV[3] == "0"`) or to `ms` (replace, `"1"`),
/// and give the holder hash the same TTL. A key with no TTL cannot be extended; redis-py
/// returns 0 there (raising `LockNotOwnedError`), we return -2 so the error can say why.
///
/// KEYS: lock, holder hash. ARGV: token, ms, "0"|"1".
pub(super) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  if cur then return -1 end
  return 0
end
local pttl = redis.call('PTTL', KEYS[1])
if not pttl or pttl < 0 then return -2 end
local ttl = tonumber(ARGV[2])
if ARGV[3] == '0' then ttl = ttl + pttl end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
"#,
    )
});

/// Reacquire (redis-py `LUA_REACQUIRE_SCRIPT`): if owned, reset the TTL to `ms`; the
/// holder hash follows. This is what the watchdog sends every TTL/3.
///
/// KEYS: lock, holder hash. ARGV: token, ms.
pub(super) static REACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  if cur then return -1 end
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"#,
    )
});

/// All-or-nothing acquire of several locks. Because the whole set is taken in one atomic
/// step or not at all, a caller never holds part of a set while waiting for the rest, so
/// two callers with overlapping sets cannot deadlock whatever order they list names in
/// (the caller also sorts and de-duplicates, so a repeated name cannot self-deadlock).
///
/// KEYS: fence counter, then (lock, holder hash) per name. ARGV: token, ttl ms, then holder
/// field/value pairs.
/// Returns `{1, fence...}` or `{0, index of the first busy name (1-based), pttl, value,
/// holder-hash-token or false}`.
pub(super) static ACQUIRE_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for i = 2, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return {0, i / 2, redis.call('PTTL', KEYS[i]), redis.call('GET', KEYS[i]),
            redis.call('HGET', KEYS[i + 1], 'token')}
  end
end
local out = {1}
for i = 2, #KEYS, 2 do
  if ARGV[2] == '0' then
    redis.call('SET', KEYS[i], ARGV[1])
  else
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  end
  local fence = redis.call('INCR', KEYS[1])
  redis.call('DEL', KEYS[i + 1])
  redis.call('HSET', KEYS[i + 1], 'token', ARGV[1], 'fence', fence, 'ttl_ms', ARGV[2], unpack(ARGV, 3))
  if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[i + 1], ARGV[2]) end
  table.insert(out, fence)
end
return out
"#,
    )
});

/// Break a lock whatever its token (operator action from `celeriac locks release`), drop
/// its holder hash and wake celeriac waiters. Returns the value that was deleted, or false.
///
/// KEYS: lock, holder hash. ARGV: released channel, expected value ("" = any).
pub(super) static FORCE_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return false end
if ARGV[2] ~= '' and cur ~= ARGV[2] then return false end
redis.call('DEL', KEYS[1])
if redis.call('HGET', KEYS[2], 'token') == cur then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[1], cur)
return cur
"#,
    )
});
