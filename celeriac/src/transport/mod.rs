//! kombu's Redis transport, spoken from Rust.
//!
//! Owns: publishing task messages (LPUSH to the priority list), declaring and binding queues
//! as Python writes them, the loss-free claim ([`scripts::CLAIM`]) that records every
//! delivery in kombu's `unacked`/`unacked_index` and dead-letters what must not run
//! ([`Claimed`]) without parsing or encoding a large message inside Redis, ack,
//! reject/requeue and restore of stale unacked entries under `unacked_mutex` (so Python
//! workers restore ours and we theirs), lease refresh, purge, and fanout publishing; the
//! dead-letter list and its entry format ([`dead`]); what operators ask of queues and
//! `unacked` ([`admin`]). Does not own: what a message means ([`crate::protocol`]) or
//! results ([`crate::backend`]).
//!
//! Connections: commands go over one self-healing multiplexed connection ([`crate::conn`]),
//! which follows a Sentinel failover. Blocking waits never share it: [`wait::IdleWaiter`]
//! keeps its own connections (redis-rs times responses out after 500 ms by default, and a
//! blocking command would stall every other command queued behind it).

pub mod admin;
pub mod dead;
pub mod events;
pub mod keys;
pub mod mailbox;
pub mod scripts;
pub mod wait;

pub use admin::{Hold, Queued, Unacked, UnackedStats};
pub use dead::{DeadLetter, DeadLetterEntry, DeadLetterError};
/// The queue a task goes to when nothing routes it elsewhere (`task_default_queue`).
pub use keys::DEFAULT_QUEUE;

use crate::conn::{Conn, ConnOptions};
use crate::protocol::{Envelope, time};
use crate::url::RedisUrl;
use redis::AsyncCommands;
use serde_json::Value;
use std::time::Duration;

/// Transport errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Redis failed; the connection manager reconnects by itself, so retrying is reasonable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The URL was refused.
    #[error(transparent)]
    Url(#[from] crate::url::UrlError),
}

impl TransportError {
    /// Whether waiting and trying again may succeed (see [`crate::conn::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, TransportError::Redis(e) if crate::conn::is_transient(e))
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, TransportError>;

/// A message taken off a queue and recorded in `unacked`.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `properties.delivery_tag`: the field in `unacked`.
    pub tag: String,
    /// The list it came from (with priority suffix).
    pub key: String,
    /// The original envelope bytes, exactly as popped.
    pub raw: Vec<u8>,
    /// What follows `raw` in its `unacked` entry: `, "<exchange>", "<routing_key>"]`.
    pub unacked_suffix: Vec<u8>,
}

impl Delivery {
    /// The `unacked` hash value written for it, `[raw, exchange, routing_key]`, byte for
    /// byte (only needed to compare-and-move it, so it is not kept beside `raw`).
    pub fn unacked_value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.raw.len() + self.unacked_suffix.len() + 1);
        v.push(b'[');
        v.extend_from_slice(&self.raw);
        v.extend_from_slice(&self.unacked_suffix);
        v
    }

    /// The queue name (the list key without its priority suffix).
    pub fn queue(&self) -> &str {
        keys::queue_of_key(&self.key)
    }
}

/// What one message taken by [`Broker::claim`] became.
#[derive(Debug, Clone)]
pub enum Claimed {
    /// A message to run, recorded in `unacked` under its tag and held by this node until it
    /// is acked or requeued, or its lease lapses.
    Delivery(Delivery),
    /// A message that must not run (larger than the maximum message size, or not a kombu
    /// envelope with a delivery tag and delivery info). It is already on the dead-letter list
    /// and out of `unacked`, so nothing of it is held; what is left is to tell whoever waits
    /// for `task_id` (Celery stores nothing for such a message and its caller's `get()`
    /// blocks until its timeout).
    DeadLettered {
        /// The queue it was taken from (no priority suffix).
        queue: String,
        /// `headers.id`, when the message names one.
        task_id: Option<String>,
        /// Why it was refused; the dead-letter entry carries the same text.
        reason: String,
    },
}

impl Claimed {
    /// The queue the message was taken from.
    pub fn queue(&self) -> &str {
        match self {
            Claimed::Delivery(d) => d.queue(),
            Claimed::DeadLettered { queue, .. } => queue,
        }
    }
}

/// The broker side of kombu's Redis transport.
#[derive(Clone)]
pub struct Broker {
    url: RedisUrl,
    client: redis::Client,
    conn: Conn,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.url.redacted())
            .finish()
    }
}

/// How long celeriac holds `unacked_mutex` at most. kombu takes it for 300 s
/// (`unacked_mutex_expire`), so a holder killed mid-restore stops every restore in the fleet
/// for five minutes and the dead's messages stay invisible that long; a celeriac worker
/// killed while restoring blocks the others for this long instead.
pub const RESTORE_MUTEX_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// How long one restore sweep keeps restoring under the mutex before it leaves the rest to
/// the next sweep: a third of [`RESTORE_MUTEX_TTL`], so the mutex never expires under it.
const RESTORE_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

impl Broker {
    /// Connect to `url` with default timeouts ([`ConnOptions::default`]).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, ConnOptions::default()).await
    }

    /// Connect with explicit timeouts.
    pub async fn connect_with(url: &str, opts: ConnOptions) -> Result<Self> {
        let url = RedisUrl::parse(url)?;
        let client = url.client().await?;
        let conn = Conn::connect(url.clone(), opts).await?;
        Ok(Broker { url, client, conn })
    }

    /// The parsed URL.
    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// The database number, used in fanout channel names.
    pub fn db(&self) -> i64 {
        self.url.db()
    }

    /// The redis-rs client of the server resolved at connect time (for short-lived dedicated
    /// connections; long-lived ones use [`Broker::fresh_client`]).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A client for wherever the URL points now (re-asks the sentinels for a Sentinel URL).
    pub async fn fresh_client(&self) -> Result<redis::Client> {
        Ok(self.url.client().await?)
    }

    /// A clone of the shared command connection.
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Declare + bind a task queue the way a Python 5.7 publisher does: `LLEN` of the four
    /// lists, then `SADD` the binding member to `_kombu.binding.<q>` and the permanent set.
    pub async fn declare_queue(&self, queue: &str) -> Result<()> {
        let member = keys::binding_member(queue, "", queue);
        let mut p = redis::pipe();
        p.atomic()
            .sadd(keys::binding(queue), &member)
            .ignore()
            .sadd(keys::binding_permanent(queue), &member)
            .ignore();
        p.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// LPUSH an encoded envelope onto the list for `queue` at `priority`.
    pub async fn publish(&self, queue: &str, priority: u8, envelope: &[u8]) -> Result<()> {
        let _: i64 = self
            .conn
            .clone()
            .lpush(keys::queue_key(queue, priority), envelope)
            .await?;
        Ok(())
    }

    /// Claim up to `max` messages from `queues` (in the given order; rotate it between calls
    /// for kombu's round robin), recording each in `unacked` atomically. See [`scripts::CLAIM`]
    /// for the guarantee and for what bounds the work of one call inside Redis (a call may
    /// return fewer than `max` even when more are queued).
    ///
    /// The `unacked_index` score written is the end of the holder's lease (now + `lease`),
    /// not kombu's delivery time: a Python sweeper restores entries older than
    /// `now - visibility_timeout`, so a lease in the future keeps it off our live messages
    /// whatever its timeout, while our own sweeper restores a lapsed lease at once.
    ///
    /// Messages the script did not parse are read back here with a plain `HGET` (one round
    /// trip for all of them) and checked outside Redis: one larger than `max_size` (0 = no
    /// limit), or one that is not a kombu envelope with `properties.delivery_tag` and
    /// `properties.delivery_info` (kombu's consumer would fail on it), is moved to the
    /// dead-letter list, stamped with the current time, and returned as
    /// [`Claimed::DeadLettered`]. If that move fails the message stays in `unacked`
    /// unrefreshed, so a sweeper restores it when its lease lapses and a later claim retries.
    pub async fn claim(
        &self,
        queues: &[String],
        max: usize,
        node: &str,
        max_size: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>> {
        if queues.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let consume = keys::consume_keys(queues);
        let mut inv = scripts::CLAIM.prepare_invoke();
        inv.key(keys::UNACKED)
            .key(keys::UNACKED_INDEX)
            .key(keys::HOLDERS);
        for k in &consume {
            inv.key(k);
        }
        // Tags minted for messages the script does not parse: unique per call, then `<n>`.
        let prefix = format!("{}.", uuid::Uuid::new_v4());
        inv.arg((time::unix_now() + lease.as_secs_f64()).to_string())
            .arg(max)
            .arg(queues.len())
            .arg(node)
            .arg(max_size)
            .arg(&prefix)
            .arg(scripts::CLAIM_PARSE_MAX)
            .arg(scripts::CLAIM_PARSE_BUDGET)
            .arg(scripts::CLAIM_MOVE_BUDGET);
        for q in queues {
            inv.arg(q);
        }
        let flat: Vec<Vec<u8>> = inv.invoke_async(&mut self.conn.clone()).await?;
        let mut records = Vec::with_capacity(flat.len() / 5);
        let mut it = flat.into_iter();
        while let (Some(kind), Some(key), Some(tag), Some(suffix), Some(payload)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        {
            records.push(ClaimRecord {
                kind: kind.first().copied().unwrap_or(b'?'),
                key: String::from_utf8_lossy(&key).into_owned(),
                tag: String::from_utf8_lossy(&tag).into_owned(),
                suffix,
                payload,
            });
        }
        let fetched = self.fetch_by_reference(&records).await;
        let mut out: Vec<Option<Claimed>> = Vec::with_capacity(records.len());
        let mut refused: Vec<(usize, Vec<u8>, String)> = Vec::new();
        for (rec, entry) in records.into_iter().zip(fetched) {
            let raw = match rec.kind {
                b'p' | b'u' => rec.payload,
                _ => match entry.and_then(|e| strip_unacked(e, &rec.suffix)) {
                    Some(raw) => raw,
                    None => {
                        // Unreadable now: left in `unacked`, unrefreshed, for the sweeper.
                        out.push(None);
                        continue;
                    }
                },
            };
            let problem = match rec.kind {
                b'p' => None,
                b'o' => Some(format!(
                    "message of {} bytes exceeds the maximum of {max_size}",
                    raw.len()
                )),
                _ => envelope_problem(&raw).map(String::from),
            };
            let delivery = Delivery {
                tag: rec.tag,
                key: rec.key,
                raw,
                unacked_suffix: rec.suffix,
            };
            match problem {
                None => out.push(Some(Claimed::Delivery(delivery))),
                Some(reason) => {
                    let entry = DeadLetter::new(delivery.queue(), &reason, &delivery.raw).encode();
                    refused.push((out.len(), entry, reason));
                    out.push(Some(Claimed::Delivery(delivery)));
                }
            }
        }
        if !refused.is_empty() {
            let mut p = redis::pipe();
            p.atomic();
            for (i, entry, _) in &refused {
                if let Some(Claimed::Delivery(d)) = &out[*i] {
                    ack_dead_pipe(&mut p, &d.tag, entry);
                }
            }
            let moved = p.query_async::<()>(&mut self.conn.clone()).await;
            for (i, _, reason) in refused {
                let Some(Claimed::Delivery(d)) = out[i].take() else {
                    continue;
                };
                match &moved {
                    Ok(()) => {
                        out[i] = Some(Claimed::DeadLettered {
                            queue: d.queue().to_string(),
                            task_id: task_id_of(&d.raw),
                            reason,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(
                            tag = %d.tag,
                            error = %e,
                            %reason,
                            "could not dead-letter a refused message; it stays in unacked until its lease lapses"
                        );
                    }
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// The `unacked` entries of the claimed messages whose bytes the claim script did not
    /// return (kinds `b` and `o`), in one round trip; `None` where absent or unreadable.
    async fn fetch_by_reference(&self, records: &[ClaimRecord]) -> Vec<Option<Vec<u8>>> {
        let wanted: Vec<&str> = records
            .iter()
            .filter(|r| !matches!(r.kind, b'p' | b'u'))
            .map(|r| r.tag.as_str())
            .collect();
        let mut got = if wanted.is_empty() {
            Vec::new()
        } else {
            let mut p = redis::pipe();
            for tag in &wanted {
                p.hget(keys::UNACKED, *tag);
            }
            match p
                .query_async::<Vec<Option<Vec<u8>>>>(&mut self.conn.clone())
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        count = wanted.len(),
                        "could not read claimed messages back; they stay in unacked until their lease lapses"
                    );
                    vec![None; wanted.len()]
                }
            }
        }
        .into_iter();
        records
            .iter()
            .map(|r| match r.kind {
                b'p' | b'u' => None,
                _ => got.next().flatten(),
            })
            .collect()
    }

    /// Publish a message again at the front of its queue (RPUSH: the next one taken),
    /// marked redelivered: how a message already acked is given back (early ack, then a
    /// cold shutdown or a lost process with `reject_on_worker_lost`).
    pub async fn republish_front(&self, delivery: &Delivery) -> Result<()> {
        let Ok(mut env) = Envelope::decode(&delivery.raw) else {
            // The claim recorded it and the worker decoded it; nothing else reaches here.
            return Ok(());
        };
        env.mark_redelivered();
        let key = keys::queue_key(delivery.queue(), env.properties.priority);
        let _: i64 = self.conn.clone().rpush(key, env.encode()).await?;
        Ok(())
    }

    /// Ack: `ZREM unacked_index`, `HDEL unacked` (kombu `basic_ack`), plus celeriac's holder entry.
    pub async fn ack(&self, tag: &str) -> Result<()> {
        ack_pipe(&mut redis::pipe(), tag)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Ack a message and put it on the dead-letter list with `reason`, atomically (one
    /// `MULTI`/`EXEC`: a poison message is never both gone from `unacked` and missing from
    /// the dead-letter list). A transaction, not a script, so the entry's bytes are not
    /// copied through Lua.
    pub async fn ack_dead(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let entry = DeadLetter::new(delivery.queue(), reason, &delivery.raw).encode();
        ack_dead_pipe(redis::pipe().atomic(), &delivery.tag, &entry)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Put a message back, marked redelivered: RPUSH (front of the queue, kombu's restore at
    /// shutdown) or, with `back`, LPUSH (kombu's reject-requeue). Returns false when the
    /// unacked entry changed under us (someone else already restored or acked it).
    pub async fn requeue(&self, delivery: &Delivery, back: bool) -> Result<bool> {
        restore_entry(
            &mut self.conn.clone(),
            &delivery.tag,
            &delivery.unacked_value(),
            back,
        )
        .await
    }

    /// Refresh the `unacked_index` score of messages this worker holds to the end of a new
    /// lease (now + `lease`), so no visibility-timeout sweeper, Python's or ours, restores a
    /// live task. `XX`: entries already acked are not recreated.
    pub async fn refresh_leases(&self, tags: &[String], lease: Duration) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let now = time::unix_now() + lease.as_secs_f64();
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(keys::UNACKED_INDEX).arg("XX");
        for t in tags {
            cmd.arg(now).arg(t);
        }
        cmd.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// kombu's `restore_visible`: under `unacked_mutex` (a redis-py lock; see
    /// [`RESTORE_MUTEX_TTL`] for how long celeriac takes it),
    /// restore (RPUSH, redelivered) every unacked message whose score is older than
    /// `visibility_timeout`; celeriac-held messages (in `celeriac.holders`) as soon as their
    /// lease (the score, renewed by a live holder) has passed.
    /// Returns the number restored, or `None` when another consumer holds the mutex.
    ///
    /// Cheap when nothing is due: one `ZRANGE ... LIMIT 0 1` and no mutex, so workers can
    /// sweep every second and a dead holder's message comes back within a second of its
    /// lease's end instead of a whole sweep interval later.
    pub async fn restore_visible(&self, visibility_timeout: Duration) -> Result<Option<usize>> {
        let mut conn = self.conn.clone();
        let due: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys::UNACKED_INDEX)
            .arg("-inf")
            .arg(time::unix_now())
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(1)
            .query_async(&mut conn)
            .await?;
        if due.is_empty() {
            return Ok(Some(0));
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let got: Option<String> = redis::cmd("SET")
            .arg(keys::UNACKED_MUTEX)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(RESTORE_MUTEX_TTL.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        if got.is_none() {
            return Ok(None);
        }
        let result = self.restore_stale(&mut conn, visibility_timeout).await;
        let _: i64 = scripts::LOCK_RELEASE
            .key(keys::UNACKED_MUTEX)
            .arg(&token)
            .invoke_async(&mut conn)
            .await?;
        result.map(Some)
    }

    async fn restore_stale(&self, conn: &mut Conn, vt: Duration) -> Result<usize> {
        let now = time::unix_now();
        // celeriac holders write the end of their lease as the score: anything at or below
        // `now` is a candidate; entries without a celeriac holder keep kombu's rule.
        let stale: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(keys::UNACKED_INDEX)
            .arg(now)
            .arg(0)
            .arg("BYSCORE")
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(conn)
            .await?;
        if stale.is_empty() {
            return Ok(0);
        }
        // One round trip for every candidate's holder (a Python worker's messages are
        // candidates at every sweep until their visibility timeout passes).
        let holders: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(keys::HOLDERS)
            .arg(stale.iter().map(|(t, _)| t).collect::<Vec<_>>())
            .query_async(conn)
            .await?;
        let mut restored = 0;
        let started = std::time::Instant::now();
        for ((tag, score), holder) in stale.into_iter().zip(holders) {
            // Well inside the mutex's time: the rest waits for the next sweep (a second).
            if started.elapsed() > RESTORE_BUDGET {
                break;
            }
            let horizon = if holder.is_some() {
                now
            } else {
                now - vt.as_secs_f64()
            };
            if score > horizon {
                continue;
            }
            let Some(value): Option<Vec<u8>> = conn.hget(keys::UNACKED, &tag).await? else {
                // Index entry without a payload (half-acked by a crashed peer): drop it, as kombu does.
                let _: i64 = conn.zrem(keys::UNACKED_INDEX, &tag).await?;
                continue;
            };
            if restore_entry(conn, &tag, &value, false).await? {
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// Remove every message of `queue` (all four priority lists) and return them, atomically
    /// (`LRANGE` + `DEL` of each list in one `MULTI`/`EXEC`; Celery's purge is `LLEN` + `DEL`
    /// in one MULTI and removes exactly the same messages). Returning them lets the caller
    /// tell waiting clients their tasks are gone. A transaction, not a script: the messages
    /// are not copied through Lua.
    pub async fn purge(&self, queue: &str) -> Result<Vec<Vec<u8>>> {
        let mut p = redis::pipe();
        p.atomic();
        for k in keys::queue_keys(queue) {
            p.lrange(k.as_str(), 0, -1).del(k.as_str()).ignore();
        }
        let lists: Vec<Vec<Vec<u8>>> = p.query_async(&mut self.conn.clone()).await?;
        Ok(lists.into_iter().flatten().collect())
    }

    /// Unacked entries as `(tag, [envelope, exchange, routing_key] bytes)`, read with HSCAN.
    pub async fn unacked_entries(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<(String, Vec<u8>)>) = redis::cmd("HSCAN")
                .arg(keys::UNACKED)
                .arg(cursor)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await?;
            out.extend(page);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Length of every list of `queue` (sum over priorities).
    pub async fn queue_len(&self, queue: &str) -> Result<usize> {
        Ok(self.queue_lens(queue).await?.into_iter().sum())
    }

    /// Length of each of the four lists of `queue`, in pop order: priorities 0–2, 3–5, 6–8
    /// and 9 (kombu's [`keys::PRIORITY_STEPS`]), read in one round trip.
    pub async fn queue_lens(&self, queue: &str) -> Result<[usize; 4]> {
        let mut p = redis::pipe();
        for k in keys::queue_keys(queue) {
            p.llen(k);
        }
        let lens: Vec<usize> = p.query_async(&mut self.conn.clone()).await?;
        let mut out = [0; 4];
        for (o, n) in out.iter_mut().zip(lens) {
            *o = n;
        }
        Ok(out)
    }
}

/// One message as the claim script reports it (see [`scripts::CLAIM`] for the kinds).
struct ClaimRecord {
    kind: u8,
    key: String,
    tag: String,
    suffix: Vec<u8>,
    payload: Vec<u8>,
}

/// The envelope inside an `unacked` value `'[' + envelope + suffix`, if it has that shape.
fn strip_unacked(mut value: Vec<u8>, suffix: &[u8]) -> Option<Vec<u8>> {
    if value.first() != Some(&b'[') || !value[1..].ends_with(suffix) {
        return None;
    }
    value.truncate(value.len() - suffix.len());
    value.remove(0);
    Some(value)
}

/// The fields of an envelope the claim checks. Unknown fields, the body among them (the
/// bulk of a large message), are skipped by serde without being built.
#[derive(serde::Deserialize)]
struct EnvelopePeek {
    #[serde(default)]
    headers: Option<Value>,
    #[serde(default)]
    properties: Option<Value>,
}

fn peek(raw: &[u8]) -> Option<EnvelopePeek> {
    // An object only: serde would also read a struct from a JSON array.
    let first = raw.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice(raw).ok()
}

/// Why a message is not something kombu's consumer could take (the checks the claim script
/// makes on the messages it parses), or `None` when it is.
fn envelope_problem(raw: &[u8]) -> Option<&'static str> {
    const NO_TAG: &str = "envelope is not JSON or has no properties.delivery_tag";
    let Some(env) = peek(raw) else {
        return Some(NO_TAG);
    };
    let props = env.properties.unwrap_or(Value::Null);
    if props["delivery_tag"].as_str().is_none_or(str::is_empty) {
        return Some(NO_TAG);
    }
    if !props["delivery_info"].is_object() {
        return Some("envelope has no properties.delivery_info");
    }
    None
}

/// `headers.id` of an envelope, when it names one (protocol v2).
pub fn task_id_of(raw: &[u8]) -> Option<String> {
    let env = peek(raw)?;
    env.headers?["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(String::from)
}

/// Ack `tag` and push `entry` onto the dead-letter list (add to an atomic pipeline).
fn ack_dead_pipe<'a>(
    p: &'a mut redis::Pipeline,
    tag: &str,
    entry: &[u8],
) -> &'a mut redis::Pipeline {
    p.zrem(keys::UNACKED_INDEX, tag)
        .ignore()
        .hdel(keys::UNACKED, tag)
        .ignore()
        .hdel(keys::HOLDERS, tag)
        .ignore()
        .lpush(keys::DEAD_LETTER, entry)
        .ignore()
}

fn ack_pipe<'a>(p: &'a mut redis::Pipeline, tag: &str) -> &'a mut redis::Pipeline {
    p.atomic()
        .zrem(keys::UNACKED_INDEX, tag)
        .ignore()
        .hdel(keys::UNACKED, tag)
        .ignore()
        .hdel(keys::HOLDERS, tag)
        .ignore()
}

/// Restore one `unacked` entry (`[envelope, exchange, routing_key]`) to its queue, marked
/// redelivered, if the entry still equals `value`.
async fn restore_entry(conn: &mut Conn, tag: &str, value: &[u8], back: bool) -> Result<bool> {
    let (env_bytes, dest) = match redelivered_envelope(value) {
        Some(x) => x,
        None => {
            // An entry we cannot parse cannot be routed; keep its bytes in the dead-letter list.
            let entry = DeadLetter::new(
                "",
                "unacked entry is not [envelope, exchange, routing_key]",
                value,
            )
            .encode();
            ack_dead_pipe(redis::pipe().atomic(), tag, &entry)
                .query_async::<()>(conn)
                .await?;
            return Ok(false);
        }
    };
    let moved: i64 = scripts::RESTORE
        .key(keys::UNACKED)
        .key(keys::UNACKED_INDEX)
        .key(keys::HOLDERS)
        .key(dest)
        .arg(tag)
        .arg(value)
        .arg(env_bytes)
        .arg(if back { "1" } else { "0" })
        .invoke_async(conn)
        .await?;
    Ok(moved == 1)
}

/// Parse an `unacked` value and produce the redelivered envelope and its destination list
/// (`_lookup(exchange, routing_key)`: for the anonymous exchange, the routing key).
fn redelivered_envelope(value: &[u8]) -> Option<(Vec<u8>, String)> {
    let triple: (serde_json::Value, String, String) = serde_json::from_slice(value).ok()?;
    let (env_v, _exchange, rk) = triple;
    let mut env: Envelope = serde_json::from_value(env_v).ok()?;
    env.mark_redelivered();
    let queue = if rk.is_empty() {
        keys::DEFAULT_QUEUE.to_string()
    } else {
        rk
    };
    Some((
        env.encode(),
        keys::queue_key(&queue, env.properties.priority),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"body": "W10=", "headers": {"id": "t-1", "task": "x"}, "properties": {"delivery_tag": "d", "delivery_info": {"exchange": "", "routing_key": "celery"}}}"#;

    #[test]
    fn envelope_problems_are_those_the_claim_script_checks() {
        assert_eq!(envelope_problem(GOOD.as_bytes()), None);
        for (raw, reason) in [
            ("this is not json {", "not JSON"),
            ("[1, 2, 3]", "not JSON"),
            (r#"{"properties": {"delivery_info": {}}}"#, "delivery_tag"),
            (r#"{"properties": {"delivery_tag": ""}}"#, "delivery_tag"),
            (r#"{"properties": {"delivery_tag": "d"}}"#, "delivery_info"),
            (
                r#"{"properties": {"delivery_tag": "d", "delivery_info": []}}"#,
                "delivery_info",
            ),
        ] {
            let got = envelope_problem(raw.as_bytes()).unwrap_or("accepted");
            assert!(
                got.contains(reason),
                "{raw}: expected {reason:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn task_id_comes_from_the_headers_when_named() {
        assert_eq!(task_id_of(GOOD.as_bytes()).as_deref(), Some("t-1"));
        assert_eq!(task_id_of(br#"{"headers": {"id": ""}}"#), None);
        assert_eq!(task_id_of(br#"{"headers": null}"#), None);
        assert_eq!(task_id_of(b"not json"), None);
    }

    #[test]
    fn an_unacked_value_gives_back_the_envelope_it_wraps() {
        let suffix = br#", "", "celery"]"#;
        let value = [b"[".as_slice(), GOOD.as_bytes(), suffix].concat();
        assert_eq!(
            strip_unacked(value, suffix).as_deref(),
            Some(GOOD.as_bytes())
        );
        assert_eq!(strip_unacked(b"{}".to_vec(), suffix), None);
        assert_eq!(
            strip_unacked(b"[x, \"\", \"other\"]".to_vec(), suffix),
            None
        );
        assert_eq!(strip_unacked(Vec::new(), suffix), None);
    }
}
