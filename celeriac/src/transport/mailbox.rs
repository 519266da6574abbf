//! kombu's `Mailbox` on Redis, both ends: a worker's pidbox (declare and refresh its binding
//! to the `celery.pidbox` fanout exchange, subscribe to the fanout channel, route replies
//! to the direct reply exchange, unbind at shutdown) and the reply queue of a client that
//! broadcasts a command. Binding members, TTLs and routing are kombu 5.7's; everything that
//! names a key lives in [`super::keys`].

use super::{Broker, Result, keys, scripts};
use crate::protocol::Envelope;
use redis::AsyncCommands;
use serde_json::{Map, Value, json};

/// kombu 5.7 refreshes bindings of expiring queues with a TTL of max(2 × x-expires, 1 h).
pub const BINDING_TTL_MS: u64 = 3_600_000;

/// The routing key of a binding: a pidbox queue is bound with an empty one, a reply queue
/// with the client's oid.
fn member(routing_key: &str, queue: &str) -> String {
    keys::binding_member(routing_key, "", queue)
}

/// Bind `queue` to `exchange` (or push its deadline forward), as kombu 5.7 does for queues
/// with `x-expires` (pidbox and reply queues).
async fn bind(broker: &Broker, exchange: &str, routing_key: &str, queue: &str) -> Result<()> {
    let _: i64 = scripts::REFRESH_BINDING
        .key(keys::binding(exchange))
        .key(keys::BINDING_DEADLINES)
        .arg(member(routing_key, queue))
        .arg(exchange)
        .arg(BINDING_TTL_MS)
        .invoke_async(&mut broker.conn())
        .await?;
    Ok(())
}

/// Remove a queue's binding (both sets) and its lists, as kombu's `queue_delete` does.
async fn unbind(broker: &Broker, exchange: &str, routing_key: &str, queue: &str) -> Result<()> {
    let member = member(routing_key, queue);
    let mut p = redis::pipe();
    p.srem(keys::binding(exchange), &member).ignore();
    p.srem(keys::binding_permanent(exchange), &member).ignore();
    for k in keys::queue_keys(queue) {
        p.del(k).ignore();
    }
    p.query_async::<()>(&mut broker.conn()).await?;
    Ok(())
}

/// A worker's pidbox: where broadcast control commands reach node `node`.
#[derive(Debug, Clone)]
pub struct Pidbox {
    broker: Broker,
    queue: String,
}

impl Pidbox {
    /// The pidbox of `node` (`<node>.celery.pidbox`).
    pub fn new(broker: Broker, node: &str) -> Self {
        Pidbox {
            broker,
            queue: keys::pidbox_queue(node),
        }
    }

    /// Declare (bind) the pidbox queue, or refresh its binding's deadline; a worker does it
    /// at start-up and at least every [`BINDING_TTL_MS`] / 3 while it lives.
    pub async fn declare(&self) -> Result<()> {
        bind(&self.broker, keys::PIDBOX_EXCHANGE, "", &self.queue).await
    }

    /// Subscribe to the pidbox fanout channel on a connection of its own; control requests
    /// arrive as kombu envelopes on the returned subscription.
    pub async fn subscribe(&self) -> Result<redis::aio::PubSub> {
        let mut pubsub = self.broker.fresh_client().await?.get_async_pubsub().await?;
        pubsub
            .psubscribe(keys::pidbox_channel(self.broker.db()))
            .await?;
        Ok(pubsub)
    }

    /// Remove the binding and the queue, as a Python worker does on shutdown.
    pub async fn unbind(&self) -> Result<()> {
        unbind(&self.broker, keys::PIDBOX_EXCHANGE, "", &self.queue).await
    }
}

/// Publish a control reply the way kombu routes a direct exchange: every queue bound to
/// `exchange` with `routing_key` gets an LPUSH of the envelope (`ticket` and `clock` in its
/// headers).
pub async fn reply(
    broker: &Broker,
    body: &Value,
    ticket: &str,
    clock: u64,
    exchange: &str,
    routing_key: &str,
) -> Result<()> {
    let mut headers = Map::new();
    headers.insert("ticket".into(), json!(ticket));
    headers.insert("clock".into(), json!(clock));
    let raw = Envelope::routed(body, headers, exchange, routing_key, 1).encode();
    let mut conn = broker.conn();
    let members: Vec<String> = conn.smembers(keys::binding(exchange)).await?;
    for m in members {
        if let Some((rk, _, queue)) = keys::parse_binding_member(&m)
            && rk == routing_key
        {
            let _: i64 = conn.lpush(queue, &raw).await?;
        }
    }
    Ok(())
}

/// The reply queue of one broadcast (`<oid>.reply.celery.pidbox`, bound to the reply
/// exchange with the oid as routing key).
#[derive(Debug, Clone)]
pub struct ReplyQueue {
    /// The oid: the routing key replies are sent with.
    pub oid: String,
    /// The queue name.
    pub queue: String,
}

impl ReplyQueue {
    /// A fresh reply queue (not yet bound).
    pub fn new() -> Self {
        let oid = uuid::Uuid::new_v4().to_string();
        ReplyQueue {
            queue: keys::reply_queue(&oid),
            oid,
        }
    }

    /// Bind it, so replies routed to the oid land in it.
    pub async fn declare(&self, broker: &Broker) -> Result<()> {
        bind(broker, keys::REPLY_EXCHANGE, &self.oid, &self.queue).await
    }

    /// The lists a reply may be in (all priorities), for a blocking pop.
    pub fn lists(&self) -> [String; 4] {
        keys::queue_keys(&self.queue)
    }

    /// Remove its binding and lists.
    pub async fn delete(&self, broker: &Broker) -> Result<()> {
        unbind(broker, keys::REPLY_EXCHANGE, &self.oid, &self.queue).await
    }
}

impl Default for ReplyQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// Publish a control request on the pidbox fanout channel.
pub async fn broadcast(broker: &Broker, envelope: &[u8]) -> Result<()> {
    let _: i64 = broker
        .conn()
        .publish(keys::pidbox_channel(broker.db()), envelope)
        .await?;
    Ok(())
}
