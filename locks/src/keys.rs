//! Every Redis key and channel name the lock library touches, in one place.
//!
//! The lock itself is stored under the name exactly as the caller gave it, with no prefix,
//! because that is what redis-py's `Lock` does (`Redis.lock(name)` → `SET name token NX`).
//! Everything celeriac keeps beside a lock lives under the `celeriac:lock:` prefix, which a
//! JWQL-style lock name (`dark_monitor`, `jw01000001001_01101_00001_nrca1`) never starts
//! with, so Python never reads, writes or deletes these keys and they never collide with a
//! Python lock name in normal use.
//!
//! No other module builds a key or channel name from a literal.
//!
//! Floor 0 (plain data): imports nothing from the crate; the wire and the waiting code
//! above use these names.

/// Prefix of every key and channel celeriac derives from a lock name.
pub const PREFIX: &str = "celeriac:lock:";

/// The lock key itself: the name as given (redis-py `Lock.name`, no prefix).
pub fn lock_key(name: &str) -> &str {
    name
}

/// `celeriac:lock:holder:<name>` — a hash describing the celeriac process holding `<name>`:
/// `token`, `fence`, `ttl_ms`, `host`, `pid`, `pid_start`, `boot_id`, `acquired_at_ms`,
/// `purpose`, `task_id`, `lib`. Written in the same script as the `SET NX` and given the
/// lock's TTL; it describes the lock only while its `token` field equals the lock's value
/// (a lock deleted by hand can leave a stale hash behind until its TTL runs out).
pub fn holder_key(name: &str) -> String {
    format!("{PREFIX}holder:{name}")
}

/// Pattern matching every holder hash (for `SCAN MATCH`).
pub const HOLDER_PATTERN: &str = "celeriac:lock:holder:*";

/// The lock name a holder hash key describes, if `key` is one.
pub fn name_from_holder_key(key: &str) -> Option<&str> {
    key.strip_prefix(PREFIX)?.strip_prefix("holder:")
}

/// `celeriac:lock:fence` — one counter for every lock name, `INCR`ed inside the acquire
/// script. One shared counter rather than one per name: it still gives strictly increasing
/// numbers for the successive holders of any one name (what a fencing check needs), and a
/// deployment that takes a lock per file (JWQL's `jw…` names) does not leave a counter key
/// behind for every file forever. It has no TTL: losing it would let numbers go backwards.
pub const FENCE_KEY: &str = "celeriac:lock:fence";

/// `celeriac:lock:queue:<name>` — sorted set of celeriac waiters in fair (FIFO) mode; score =
/// the Redis server time in µs when the waiter first queued, member = the waiter's token.
pub fn queue_key(name: &str) -> String {
    format!("{PREFIX}queue:{name}")
}

/// `celeriac:lock:queue-alive:<name>` — sorted set of the same waiters scored by the server
/// time (ms) after which a waiter that stopped refreshing is dropped from the queue, so a
/// killed waiter cannot block the line for ever.
pub fn queue_alive_key(name: &str) -> String {
    format!("{PREFIX}queue-alive:{name}")
}

/// `celeriac:lock:released:<name>` — pub/sub channel a celeriac release `PUBLISH`es to, so
/// celeriac waiters wake at once instead of polling. Python releasers never publish here,
/// which is why waiters still poll when the holder is not celeriac.
pub fn released_channel(name: &str) -> String {
    format!("{PREFIX}released:{name}")
}

/// `__keyspace@<db>__:<name>` — Redis keyspace-notification channel for the lock key. It
/// only carries messages when the server has `notify-keyspace-events` enabled (off by
/// default); when it does, a Python `DEL` or a TTL expiry wakes celeriac waiters too.
pub fn keyspace_channel(db: i64, name: &str) -> String {
    format!("__keyspace@{db}__:{name}")
}

/// True for keys that celeriac derives and that must never be listed as locks.
pub fn is_derived(key: &str) -> bool {
    key.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_key_round_trips_to_the_lock_name() {
        let k = holder_key("jw01_nrca1");
        assert_eq!(k, "celeriac:lock:holder:jw01_nrca1");
        assert_eq!(name_from_holder_key(&k), Some("jw01_nrca1"));
        assert!(is_derived(&k));
        assert!(!is_derived("dark_monitor"));
    }
}
