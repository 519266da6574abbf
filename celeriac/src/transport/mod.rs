//! kombu's Redis transport, spoken from Rust.
//!
//! Owns: publishing task messages (LPUSH to the priority list), declaring and binding queues
//! as Python writes them, the loss-free claim ([`scripts::CLAIM`]) that records every
//! delivery in kombu's `unacked`/`unacked_index`, ack, reject/requeue and restore of stale
//! unacked entries under `unacked_mutex` (so Python workers restore ours and we theirs),
//! lease refresh, purge, and fanout publishing. Does not own: what a message means
//! ([`crate::protocol`]) or results ([`crate::backend`]).
//!
//! Connections: commands go over one self-healing multiplexed connection ([`crate::conn`]),
//! which follows a Sentinel failover. Blocking waits never share it: [`wait::IdleWaiter`]
//! keeps its own connections (redis-rs times responses out after 500 ms by default, and a
//! blocking command would stall every other command queued behind it).

pub mod keys;
pub mod scripts;
pub mod wait;

use crate::conn::{Conn, ConnOptions};
use crate::protocol::{Envelope, json, time};
use crate::url::RedisUrl;
use redis::AsyncCommands;
use serde_json::json;
use std::time::Duration;

/// Transport errors.
#[derive(Debug, thiserror::Error)]
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

/// Connection settings for the broker.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Maximum time for a response to an ordinary command.
    pub response_timeout: Duration,
    /// Maximum time to establish a connection.
    pub connect_timeout: Duration,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(4),
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

impl Broker {
    /// Connect to `url` with default options.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, BrokerOptions::default()).await
    }

    /// Connect with explicit options.
    pub async fn connect_with(url: &str, opts: BrokerOptions) -> Result<Self> {
        let url = RedisUrl::parse(url)?;
        let client = url.client().await?;
        let conn = Conn::connect(
            url.clone(),
            ConnOptions {
                response_timeout: opts.response_timeout,
                connect_timeout: opts.connect_timeout,
            },
        )
        .await?;
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
    /// for kombu's round robin), recording each in `unacked` atomically. See [`scripts::CLAIM`].
    ///
    /// The `unacked_index` score written is the end of the holder's lease (now + `lease`),
    /// not kombu's delivery time: a Python sweeper restores entries older than
    /// `now - visibility_timeout`, so a lease in the future keeps it off our live messages
    /// whatever its timeout, while our own sweeper restores a lapsed lease at once.
    pub async fn claim(
        &self,
        queues: &[String],
        max: usize,
        node: &str,
        max_size: usize,
        lease: Duration,
    ) -> Result<Vec<Delivery>> {
        let consume = keys::consume_keys(queues);
        let mut inv = scripts::CLAIM.prepare_invoke();
        inv.key(keys::UNACKED)
            .key(keys::UNACKED_INDEX)
            .key(keys::DEAD_LETTER)
            .key(keys::HOLDERS);
        for k in &consume {
            inv.key(k);
        }
        inv.arg((time::unix_now() + lease.as_secs_f64()).to_string())
            .arg(max)
            .arg(queues.len())
            .arg(node)
            .arg(max_size);
        let flat: Vec<Vec<u8>> = inv.invoke_async(&mut self.conn.clone()).await?;
        let mut out = Vec::with_capacity(flat.len() / 4);
        let mut it = flat.into_iter();
        while let (Some(key), Some(raw), Some(tag), Some(suffix)) =
            (it.next(), it.next(), it.next(), it.next())
        {
            out.push(Delivery {
                tag: String::from_utf8_lossy(&tag).into_owned(),
                key: String::from_utf8_lossy(&key).into_owned(),
                raw,
                unacked_suffix: suffix,
            });
        }
        Ok(out)
    }

    /// Ack: `ZREM unacked_index`, `HDEL unacked` (kombu `basic_ack`), plus celeriac's holder entry.
    pub async fn ack(&self, tag: &str) -> Result<()> {
        ack_pipe(&mut redis::pipe(), tag)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Ack a message and put it on the dead-letter list with `reason`, atomically.
    pub async fn ack_dead(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let entry = dead_entry(delivery.queue(), reason, &delivery.raw);
        let _: i64 = scripts::ACK_DEAD
            .key(keys::UNACKED)
            .key(keys::UNACKED_INDEX)
            .key(keys::HOLDERS)
            .key(keys::DEAD_LETTER)
            .arg(&delivery.tag)
            .arg(entry)
            .invoke_async(&mut self.conn.clone())
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

    /// kombu's `restore_visible`: under `unacked_mutex` (a redis-py lock, `PX 300000`),
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
            .arg(300_000)
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
        for ((tag, score), holder) in stale.into_iter().zip(holders) {
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

    /// Remove every message of `queue` (all four priority lists) and return them.
    pub async fn purge(&self, queue: &str) -> Result<Vec<Vec<u8>>> {
        let mut inv = scripts::PURGE.prepare_invoke();
        for k in keys::queue_keys(queue) {
            inv.key(k);
        }
        Ok(inv.invoke_async(&mut self.conn.clone()).await?)
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
        let mut p = redis::pipe();
        for k in keys::queue_keys(queue) {
            p.llen(k);
        }
        let lens: Vec<usize> = p.query_async(&mut self.conn.clone()).await?;
        Ok(lens.into_iter().sum())
    }

    /// PUBLISH an envelope on a fanout channel.
    pub async fn publish_fanout(&self, channel: &str, envelope: &[u8]) -> Result<()> {
        let _: i64 = self.conn.clone().publish(channel, envelope).await?;
        Ok(())
    }
}

/// A dead-letter entry: reason, queue, time and the original bytes (base64, so any bytes
/// survive).
pub fn dead_entry(queue: &str, reason: &str, raw: &[u8]) -> Vec<u8> {
    use base64::Engine;
    json::to_vec(&json!({
        "reason": reason,
        "queue": queue,
        "time": time::unix_now(),
        "payload_b64": base64::engine::general_purpose::STANDARD.encode(raw),
    }))
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
            let entry = dead_entry(
                "",
                "unacked entry is not [envelope, exchange, routing_key]",
                value,
            );
            let _: i64 = scripts::ACK_DEAD
                .key(keys::UNACKED)
                .key(keys::UNACKED_INDEX)
                .key(keys::HOLDERS)
                .key(keys::DEAD_LETTER)
                .arg(tag)
                .arg(entry)
                .invoke_async(conn)
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
