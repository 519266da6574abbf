//! The Lua scripts of the transport, each stating what it guarantees. They run atomically
//! inside Redis, which is what makes the claim loss-free (kombu's BRPOP-then-MULTI has a
//! window where a crash loses the message) and restores race-free.

use redis::Script;
use std::sync::LazyLock;

/// Claim up to `max` messages, moving each atomically from its queue list into kombu's
/// `unacked` hash + `unacked_index` zset (plus celeriac's holder hash).
///
/// KEYS: `unacked`, `unacked_index`, `celeriac.dead`, `celeriac.holders`, then the queue
/// lists in consume order (priority outer, queue inner). ARGV: now (float seconds),
/// max, number of queues, node name, max message bytes (0 = no limit).
///
/// Guarantee: every element popped here ends, in the same atomic step, either recorded in
/// `unacked`/`unacked_index` exactly as kombu's `QoS.append` would record it (so Python
/// workers can restore it), or pushed onto the dead-letter list with the reason and the
/// original bytes (base64). Nothing is ever only in the client's memory.
///
/// Order: all messages of a lower priority step before any of a higher one; within one step
/// the queues are taken round-robin, one message each, starting with the first queue given
/// (the caller rotates the queue order after each claim, as kombu's `_queue_cycle` does).
///
/// Returns a flat array `key, raw, tag, suffix` per recorded message, where the `unacked`
/// value written is exactly `'[' .. raw .. suffix` (so the caller can compare-and-move it
/// later without re-encoding anything, and without parsing the message twice).
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now, max, nq, node, maxsize = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local b64chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64(data)
  return ((data:gsub('.', function(x)
    local r, b = '', x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end
local function dead(key, raw, reason)
  redis.call('LPUSH', KEYS[3], cjson.encode({reason = reason, queue = key, time = tonumber(now), node = node, payload_b64 = b64(raw)}))
end
local out, got = {}, 0
local nkeys = #KEYS - 4
local steps = nkeys / nq
for s = 0, steps - 1 do
  local live = {}
  for q = 1, nq do live[q] = true end
  local any = true
  while any and got < max do
    any = false
    for q = 1, nq do
      if got >= max then break end
      if live[q] then
        local key = KEYS[4 + s * nq + q]
        local raw = redis.call('RPOP', key)
        if not raw then
          live[q] = false
        else
          any = true
          if maxsize > 0 and #raw > maxsize then
            dead(key, raw, 'message of ' .. #raw .. ' bytes exceeds the maximum of ' .. maxsize)
          else
            local ok, env = pcall(cjson.decode, raw)
            local props = ok and type(env) == 'table' and env['properties']
            local tag = type(props) == 'table' and props['delivery_tag']
            local di = type(props) == 'table' and props['delivery_info']
            if type(tag) ~= 'string' or tag == '' then
              dead(key, raw, 'envelope is not JSON or has no properties.delivery_tag')
            elseif type(di) ~= 'table' then
              dead(key, raw, 'envelope has no properties.delivery_info')
            else
              local ex, rk = di['exchange'], di['routing_key']
              if type(ex) ~= 'string' then ex = '' end
              if type(rk) ~= 'string' then rk = '' end
              local suffix = ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']'
              redis.call('ZADD', KEYS[2], now, tag)
              redis.call('HSET', KEYS[1], tag, '[' .. raw .. suffix)
              redis.call('HSET', KEYS[4], tag, node)
              out[#out + 1] = key
              out[#out + 1] = raw
              out[#out + 1] = tag
              out[#out + 1] = suffix
              got = got + 1
            end
          end
        end
      end
    end
  end
  if got >= max then break end
end
return out
"#,
    )
});

/// Move one unacked message back onto a queue list, only if its `unacked` entry is still
/// the one the caller read (compare-and-move, the Lua form of kombu's WATCH/MULTI
/// `restore_by_tag`).
///
/// KEYS: `unacked`, `unacked_index`, `celeriac.holders`, destination list.
/// ARGV: tag, expected `unacked` value, envelope to push, `"1"` to LPUSH (back of the
/// queue, kombu's `leftmost=True` reject-requeue) else RPUSH (front, kombu's restore).
/// Returns 1 if moved, 0 if the entry changed or vanished (someone else acked/restored it).
pub static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if ARGV[4] == '1' then redis.call('LPUSH', KEYS[4], ARGV[3]) else redis.call('RPUSH', KEYS[4], ARGV[3]) end
return 1
"#,
    )
});

/// Ack a message and record it in the dead-letter list in one step, so a poison message is
/// never both gone from `unacked` and missing from the dead-letter list.
/// KEYS: `unacked`, `unacked_index`, `celeriac.holders`, `celeriac.dead`. ARGV: tag, entry.
pub static ACK_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[2])
return 1
"#,
    )
});

/// redis-py's lock release: delete the key only if it still holds our token. Used for
/// `unacked_mutex`, which kombu takes with redis-py's `Lock`.
/// KEYS: lock name. ARGV: token. Returns 1 if released.
pub static LOCK_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local token = redis.call('get', KEYS[1])
if not token or token ~= ARGV[1] then
    return 0
end
redis.call('del', KEYS[1])
return 1
"#,
    )
});

/// kombu 5.7's binding refresh for queues with `x-expires` (pidbox and reply queues):
/// add the member and push the exchange's deadline forward (never backward).
/// KEYS: binding table, `_kombu.binding_deadlines`. ARGV: member, exchange, ttl ms.
pub static REFRESH_BINDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('SADD', KEYS[1], ARGV[1])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], 'GT', now_ms + tonumber(ARGV[3]), ARGV[2])
return 1
"#,
    )
});

/// Purge: take every message off the given lists and delete them, atomically, returning the
/// messages (so the caller can tell waiting clients their tasks are gone). Celery's purge is
/// `LLEN` + `DEL` in one MULTI; this removes exactly the same messages.
/// KEYS: the lists. Returns a flat array of messages.
pub static PURGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for _, k in ipairs(KEYS) do
  local items = redis.call('LRANGE', k, 0, -1)
  for _, m in ipairs(items) do out[#out + 1] = m end
  redis.call('DEL', k)
end
return out
"#,
    )
});
