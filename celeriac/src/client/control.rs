//! The remote-control client: broadcast a pidbox command and collect the replies, as
//! `celery inspect`/`celery control` do (`kombu/pidbox.py` `Mailbox._broadcast`), plus a
//! receiver for the event stream (`celery events`).
//!
//! A reply queue `<oid>.reply.celery.pidbox` is bound to `reply.celery.pidbox` *before* the
//! request is published (otherwise workers drop the reply); replies are collected until
//! `limit` arrived (the number of destinations, when given) or no reply came for `timeout`;
//! the binding and queue are removed afterwards.
//!
//! [`live_workers`] combines the two the way Flower does on start: it asks every worker for
//! a heartbeat and listens for them, so an operator sees who is up without waiting a whole
//! heartbeat interval.

use crate::protocol::control::{ControlRequest, ReplyTo};
use crate::protocol::envelope::Envelope;
use crate::transport::{Broker, TransportError, keys, mailbox};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One node's reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Node name.
    pub node: String,
    /// Its answer.
    pub value: Value,
}

/// Broadcast `method` with `arguments` to `destination` (all nodes when empty) and collect
/// replies. `timeout` is the wait for each next reply, like Celery's `timeout=1.0`.
pub async fn broadcast(
    broker: &Broker,
    method: &str,
    arguments: Map<String, Value>,
    destination: &[String],
    timeout: Duration,
    want_reply: bool,
) -> Result<Vec<Reply>, TransportError> {
    let reply_queue = mailbox::ReplyQueue::new();
    let ticket = uuid::Uuid::new_v4().to_string();
    if want_reply {
        reply_queue.declare(broker).await?;
    }
    let req = ControlRequest {
        method: method.into(),
        arguments,
        destination: (!destination.is_empty()).then(|| destination.to_vec()),
        pattern: None,
        matcher: None,
        ticket: want_reply.then(|| ticket.clone()),
        reply_to: want_reply.then(|| ReplyTo {
            exchange: keys::REPLY_EXCHANGE.into(),
            routing_key: reply_queue.oid.clone(),
        }),
    };
    let mut headers = Map::new();
    headers.insert("clock".into(), json!(1));
    headers.insert(
        "expires".into(),
        json!(crate::protocol::time::unix_now() + timeout.as_secs_f64()),
    );
    let env = Envelope::routed(
        &serde_json::to_value(&req).expect("request serializes"),
        headers,
        keys::PIDBOX_EXCHANGE,
        "",
        2,
    );
    mailbox::broadcast(broker, &env.encode()).await?;
    if !want_reply {
        return Ok(vec![]);
    }
    let mut replies = Vec::new();
    let limit = (!destination.is_empty()).then_some(destination.len());
    // A dedicated connection for the blocking pops.
    let mut bconn = broker
        .client()
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(timeout + Duration::from_secs(5))),
        )
        .await?;
    let keys_ = reply_queue.lists();
    loop {
        if limit.is_some_and(|l| replies.len() >= l) {
            break;
        }
        let popped: Option<(String, Vec<u8>)> = redis::cmd("BRPOP")
            .arg(&keys_[..])
            .arg(timeout.as_secs_f64())
            .query_async(&mut bconn)
            .await?;
        let Some((_, raw)) = popped else { break };
        let Ok(env) = Envelope::decode(&raw) else {
            continue;
        };
        if env.headers.get("ticket").and_then(Value::as_str) != Some(ticket.as_str()) {
            continue;
        }
        if let Ok(Value::Object(body)) = env.body_json() {
            for (node, value) in body {
                replies.push(Reply { node, value });
            }
        }
    }
    reply_queue.delete(broker).await?;
    Ok(replies)
}

/// What one node is running: its reply to `active` (`celery inspect active`).
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    /// Node name.
    pub node: String,
    /// One request info per running task (`id`, `name`, `args`, `time_start`, ...), as
    /// Celery's `Request.info()` gives it.
    pub tasks: Vec<Value>,
}

impl Running {
    /// The ids of the running tasks.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.tasks.iter().filter_map(|t| t["id"].as_str())
    }
}

/// Ask `destination` (every node when empty) what it is running, waiting `timeout` for each
/// next reply. Doubles as a ping: the nodes that answer are up. A reply that is not a list
/// (an error from the node) counts as running nothing.
pub async fn active(
    broker: &Broker,
    destination: &[String],
    timeout: Duration,
) -> Result<Vec<Running>, TransportError> {
    let replies = broadcast(broker, "active", Map::new(), destination, timeout, true).await?;
    Ok(replies
        .into_iter()
        .map(|r| Running {
            node: r.node,
            tasks: match r.value {
                Value::Array(tasks) => tasks,
                _ => Vec::new(),
            },
        })
        .collect())
}

/// A live stream of events (`PSUBSCRIBE /<db>.celeryev/*`), each batch of `task.multi`
/// flattened into single events.
pub async fn events(
    broker: &Broker,
) -> Result<impl futures_util::Stream<Item = Value> + use<>, TransportError> {
    let mut pubsub = broker.client().get_async_pubsub().await?;
    pubsub.psubscribe(keys::event_pattern(broker.db())).await?;
    Ok(pubsub.into_on_message().flat_map(|msg| {
        let events: Vec<Value> = Envelope::decode(msg.get_payload_bytes())
            .ok()
            .and_then(|e| e.body_json().ok())
            .map(|b| match b {
                Value::Array(list) => list,
                one => vec![one],
            })
            .unwrap_or_default();
        futures_util::stream::iter(events)
    }))
}

/// The event stream ([`events`]), subscribed before a `heartbeat` broadcast that makes every
/// live worker send one at once (as Flower does on start), so the stream begins with who is up.
pub async fn events_after_roll_call(
    broker: &Broker,
) -> Result<impl futures_util::Stream<Item = Value> + use<>, TransportError> {
    let stream = events(broker).await?;
    broadcast(
        broker,
        "heartbeat",
        Map::new(),
        &[],
        Duration::from_secs(1),
        false,
    )
    .await?;
    Ok(stream)
}

/// A worker seen alive through its heartbeat.
#[derive(Debug, Clone)]
pub struct LiveWorker {
    /// Its latest `worker-heartbeat` or `worker-online` event as published (`processed`,
    /// `active`, `freq`, `loadavg`, `sw_ident`, `sw_ver`, ...).
    pub event: Value,
    /// When that event arrived.
    pub seen: Instant,
}

/// The workers alive now, by node name: those whose heartbeat arrives within `listen` of a
/// `heartbeat` broadcast that makes every worker send one at once (as Flower does on start),
/// less those that announce `worker-offline` meanwhile. The subscription starts before the
/// broadcast, so no answer is missed.
pub async fn live_workers(
    broker: &Broker,
    listen: Duration,
) -> Result<BTreeMap<String, LiveWorker>, TransportError> {
    let mut events = Box::pin(events_after_roll_call(broker).await?);
    let mut nodes = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + listen;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.next()).await {
        let Some(node) = event["hostname"].as_str().map(String::from) else {
            continue;
        };
        match event["type"].as_str().unwrap_or("") {
            "worker-heartbeat" | "worker-online" => {
                let seen = Instant::now();
                nodes.insert(node, LiveWorker { event, seen });
            }
            "worker-offline" => {
                nodes.remove(&node);
            }
            _ => {}
        }
    }
    Ok(nodes)
}
