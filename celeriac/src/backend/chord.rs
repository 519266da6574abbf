//! Chord joins on the Redis backend, with the keys and semantics of Celery 5.7's
//! `on_chord_part_return` (`celery/backends/redis.py`), so celeriac and Python 5.7 workers can
//! share one chord's header tasks and the callback still runs exactly once:
//!
//! - `celery-taskset-meta-<gid>.j` zset: `[1, tid, state, result]` scored by `group_index`;
//! - `.d` set of `"<tid>:<group_index>"` (a redelivered header task is counted once);
//! - `.s` chord size (set by the client), `.t` extra header tasks (INCR by `add_to_chord`);
//! - `.c` claim: the worker whose part completes the count takes it with `SET NX`, dispatches
//!   the callback, then marks it `"done"` so a late duplicate cannot dispatch again.

use super::{Backend, BackendError};
use crate::protocol::{State, json};
use crate::transport::keys;
use redis::{AsyncCommands, Script};
use serde_json::{Value, json};
use std::sync::LazyLock;

/// Add one header result and, if it completes the chord, claim the callback.
///
/// KEYS: `.j`, `.t`, `.s`, `.d`, `<gid>`, `.c`. ARGV: task id, encoded entry, group index,
/// expiry seconds, claim expiry seconds, claim token.
/// Returns 0 when the chord is not complete (or already dispatched), 1 when this caller
/// completed it and owns the callback. The entries are not returned from here: the caller
/// reads them with a plain `ZRANGE` (the join keys stay until [`Backend::chord_done`], and
/// no part can be added once the claim is taken), so the header results, which may be
/// large, are not copied out of Lua while every other client waits.
static PART_RETURN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[6]) == 'done' then return 0 end
local member = ARGV[1] .. ':' .. ARGV[3]
if redis.call('SISMEMBER', KEYS[4], member) == 0 then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[2])
  redis.call('SADD', KEYS[4], member)
end
local count = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
-- EXPIRE of a key that does not exist is a no-op, so every join key can be named.
for i = 1, 5 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4])) end
local extra = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local size = tonumber(redis.call('GET', KEYS[3]) or '-1')
if size == nil or size < 0 then return 0 end
if count < size + extra then return 0 end
if not redis.call('SET', KEYS[6], ARGV[6], 'NX', 'EX', tonumber(ARGV[5])) then return 0 end
return 1
"#,
    )
});

/// Forget a dispatched chord: delete its join keys and mark the claim done (5 minutes).
static CLEANUP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('SET', KEYS[5], 'done', 'EX', 300)
return 1
"#,
    )
});

/// One header result as the join stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartResult {
    /// Header task id.
    pub task_id: String,
    /// Its state.
    pub state: State,
    /// Its value (or exception dict).
    pub result: Value,
}

impl Backend {
    /// Record a chord header task's result; when it completes the chord and this caller won
    /// the claim, returns the ordered header results (the caller dispatches the callback, then
    /// calls [`Backend::chord_done`]).
    pub async fn chord_part_return(
        &self,
        group_id: &str,
        task_id: &str,
        group_index: i64,
        state: &State,
        result: &Value,
    ) -> Result<Option<Vec<PartResult>>, BackendError> {
        let k = |s: &str| keys::group_meta(group_id, s);
        let entry = json::to_vec(&json!([1, task_id, state.as_str(), result]));
        let token = uuid::Uuid::new_v4().simple().to_string();
        let expires = self.expires().as_secs().max(1);
        let won: i64 = PART_RETURN
            .key(k(".j"))
            .key(k(".t"))
            .key(k(".s"))
            .key(k(".d"))
            .key(k(""))
            .key(k(".c"))
            .arg(task_id)
            .arg(entry)
            .arg(group_index)
            .arg(expires)
            .arg(60)
            .arg(token)
            .invoke_async(&mut self.conn())
            .await?;
        if won != 1 {
            return Ok(None);
        }
        let out: Vec<Vec<u8>> = self.conn().zrange(k(".j"), 0, -1).await?;
        if out.is_empty() {
            return Ok(None);
        }
        let parts = out
            .iter()
            .filter_map(|raw| {
                let v: Value = serde_json::from_slice(raw).ok()?;
                Some(PartResult {
                    task_id: v.get(1)?.as_str()?.to_string(),
                    state: State::parse(v.get(2)?.as_str()?),
                    result: v.get(3).cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        Ok(Some(parts))
    }

    /// Mark a chord's callback as dispatched and drop its join keys.
    pub async fn chord_done(&self, group_id: &str) -> Result<(), BackendError> {
        let k = |s: &str| keys::group_meta(group_id, s);
        let _: i64 = CLEANUP
            .key(k(".j"))
            .key(k(".t"))
            .key(k(".s"))
            .key(k(".d"))
            .key(k(".c"))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }
}
