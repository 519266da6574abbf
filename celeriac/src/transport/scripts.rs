//! The Lua scripts of the transport, each stating what it guarantees. They run atomically
//! inside Redis, which is what makes the claim loss-free (kombu's BRPOP-then-MULTI has a
//! window where a crash loses the message) and restores race-free.
//!
//! A script blocks every other client of the server while it runs, so none of them does
//! work that grows with the size of a message beyond copying it: no script parses, encodes
//! or scans a message of unbounded size. Audit of the scripts here (and in
//! [`crate::backend`] and the `locks` crate):
//!
//! - [`CLAIM`] parses (cjson) only messages up to [`CLAIM_PARSE_MAX`] bytes and at most
//!   [`CLAIM_PARSE_BUDGET`] bytes per call, moves at most [`CLAIM_MOVE_BUDGET`] bytes per
//!   call (at least one message), returns larger messages by reference (the caller reads
//!   them with a plain `HGET`), and writes no dead letter itself. Its earlier form decoded
//!   every message with cjson (tens of ms for 5 MB) and base64-encoded refused ones in
//!   interpreted Lua (0.46 s at 200 kB, seconds beyond a megabyte, then `BUSY` for every
//!   client), stamping their dead letters with the lease end instead of the time.
//! - Dead-lettering ([`crate::transport::Broker::ack_dead`]) and purge are plain
//!   `MULTI`/`EXEC` transactions: they need no decision inside Redis, and a value passed
//!   through a script is copied in and out of Lua several times (measured at ~5 ms per MB,
//!   against ~0.5 ms per MB for the same bytes as a plain command argument or reply).
//! - [`RESTORE`] compares the stored `unacked` entry with the caller's copy and pushes the
//!   envelope: copies only, and only on shutdown, reject or a lapsed lease.
//! - The result backend stores a meta larger than a few KiB with a `WATCH`ed transaction
//!   instead of its script, and its SUCCESS check reads the status from the meta's first
//!   bytes instead of decoding the whole stored meta; the chord join returns only whether
//!   this caller completed the chord, and the caller reads the parts with a plain `ZRANGE`.
//! - The `locks` scripts and [`LOCK_RELEASE`]/[`REFRESH_BINDING`] handle tokens, names and
//!   holder fields only: bounded, no change needed.

use redis::Script;
use std::sync::LazyLock;

/// Largest message [`CLAIM`] parses inside Redis (cjson), to take its `delivery_tag` as the
/// `unacked` field exactly as kombu's `QoS.append` does. A larger message is recorded under a
/// tag the caller mints and parsed by the caller, outside Redis.
pub const CLAIM_PARSE_MAX: usize = 32 * 1024;

/// Bytes [`CLAIM`] may parse in one call: it takes no further message once this much was
/// parsed (cjson decodes about 100 MB/s, so this bounds a call's parsing to a few ms while
/// a batch of 256 typical 1 KB task messages still fits in one round trip).
pub const CLAIM_PARSE_BUDGET: usize = 256 * 1024;

/// Bytes [`CLAIM`] may move in one call: it takes no further message once this much was
/// popped (a single larger message is still taken, alone).
pub const CLAIM_MOVE_BUDGET: usize = 1024 * 1024;

/// Claim up to `max` messages, moving each atomically from its queue list into kombu's
/// `unacked` hash + `unacked_index` zset (plus celeriac's holder hash).
///
/// KEYS: `unacked`, `unacked_index`, `celeriac.holders`, then the queue lists in consume
/// order (priority outer, queue inner). ARGV: `unacked_index` score (the lease end), max,
/// number of queues, node name, max message bytes (0 = no limit), tag prefix (unique per
/// call), [`CLAIM_PARSE_MAX`], [`CLAIM_PARSE_BUDGET`], [`CLAIM_MOVE_BUDGET`], then the queue
/// names (in the order of the lists of one priority step).
///
/// Guarantee: every element popped here ends, in the same atomic step, recorded in
/// `unacked`/`unacked_index`/`celeriac.holders`; nothing is ever only in the client's
/// memory, and nothing is dropped. A message this script parsed and found to be a kombu
/// envelope is recorded exactly as kombu's `QoS.append` would record it: field =
/// `properties.delivery_tag`, value = `[envelope, exchange, routing_key]`. Any other message
/// (too large to parse here, not JSON, no delivery tag or delivery info, over the size limit)
/// is recorded under `<tag prefix><n>` with the value `[envelope, "", "<queue>"]`: kombu's
/// `restore_by_tag` sends an anonymous-exchange message to the queue named by its routing
/// key (`_lookup`), so a Python worker restores it to the queue it came from. The caller
/// then delivers it or moves it to the dead-letter list (see `Broker::claim`).
///
/// Cost: the script parses at most [`CLAIM_PARSE_MAX`] bytes per message and stops taking
/// messages once [`CLAIM_PARSE_BUDGET`] bytes were parsed or [`CLAIM_MOVE_BUDGET`] bytes
/// moved (always taking at least one), so a call does a bounded amount of work besides
/// copying the bytes of one large message into its `unacked` entry.
///
/// Order: all messages of a lower priority step before any of a higher one; within one step
/// the queues are taken round-robin, one message each, starting with the first queue given
/// (the caller rotates the queue order after each claim, as kombu's `_queue_cycle` does).
///
/// Returns a flat array of five fields per recorded message: kind, list key, tag, suffix,
/// payload; the `unacked` value written is exactly `'[' .. envelope .. suffix`. Kinds:
/// `p` parsed here (payload = the envelope), `u` small but not a kombu envelope (payload =
/// the envelope), `b` larger than [`CLAIM_PARSE_MAX`] and `o` larger than the max message
/// bytes (payload = the size in bytes, as text: the caller reads the entry itself, so the
/// bytes are never copied out of Lua into the reply).
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local score, max, nq, node = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local maxsize, prefix = tonumber(ARGV[5]), ARGV[6]
local parse_max, parse_budget, move_budget = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local out, got, parsed, moved, minted = {}, 0, 0, 0, 0
local steps = (#KEYS - 3) / nq
local spent = false
for s = 0, steps - 1 do
  local live = {}
  for q = 1, nq do live[q] = true end
  local any = true
  while any and not spent do
    any = false
    for q = 1, nq do
      if got >= max or (got > 0 and (parsed >= parse_budget or moved >= move_budget)) then
        spent = true
        break
      end
      if live[q] then
        local key = KEYS[3 + s * nq + q]
        local raw = redis.call('RPOP', key)
        if not raw then
          live[q] = false
        else
          any = true
          got = got + 1
          local size = #raw
          moved = moved + size
          local over = maxsize > 0 and size > maxsize
          local kind, tag, suffix = 'b', nil, nil
          if over then
            kind = 'o'
          elseif size <= parse_max then
            parsed = parsed + size
            kind = 'u'
            local ok, env = pcall(cjson.decode, raw)
            local props = ok and type(env) == 'table' and env['properties']
            local t = type(props) == 'table' and props['delivery_tag']
            local di = type(props) == 'table' and props['delivery_info']
            if type(t) == 'string' and t ~= '' and type(di) == 'table' then
              local ex, rk = di['exchange'], di['routing_key']
              if type(ex) ~= 'string' then ex = '' end
              if type(rk) ~= 'string' then rk = '' end
              kind, tag = 'p', t
              suffix = ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']'
            end
          end
          if kind ~= 'p' then
            minted = minted + 1
            tag = prefix .. minted
            suffix = ', "", ' .. cjson.encode(ARGV[9 + q]) .. ']'
          end
          redis.call('ZADD', KEYS[2], score, tag)
          redis.call('HSET', KEYS[1], tag, '[' .. raw .. suffix)
          redis.call('HSET', KEYS[3], tag, node)
          out[#out + 1] = kind
          out[#out + 1] = key
          out[#out + 1] = tag
          out[#out + 1] = suffix
          if kind == 'p' or kind == 'u' then
            out[#out + 1] = raw
          else
            out[#out + 1] = tostring(size)
          end
        end
      end
    end
  end
  if spent then break end
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
