//! Publishing Celery events (`celeryev` topic exchange, a fanout over PUBLISH on Redis):
//! the kombu envelope an event travels in, and a batch published in one round trip, task
//! events of a batch merged into one `task.multi` message as Celery's dispatcher groups
//! them. What an event contains is [`crate::protocol::event`]'s.

use super::{Broker, Result, keys};
use crate::protocol::{Envelope, event};
use serde_json::{Map, Value, json};

/// Wrap an event body (or a list of them) from `node` in a kombu envelope for `routing_key`.
pub fn envelope(node: &str, routing_key: &str, body: &Value) -> Vec<u8> {
    let mut headers = Map::new();
    headers.insert("hostname".into(), json!(node));
    Envelope::routed(body, headers, keys::EVENT_EXCHANGE, routing_key, 1).encode()
}

/// Publish `batch` (events sent by `node`) in one pipeline: two or more task events go as
/// one `task.multi` list, every other event on its own routing key.
pub async fn publish(broker: &Broker, node: &str, batch: Vec<Value>) -> Result<()> {
    let db = broker.db();
    let mut pipe = redis::pipe();
    let (tasks, mut singles): (Vec<Value>, Vec<Value>) = batch
        .into_iter()
        .partition(|e| e["type"].as_str().is_some_and(|t| t.starts_with("task-")));
    if tasks.len() > 1 {
        let list = Value::Array(tasks);
        pipe.publish(
            keys::event_channel(db, "task.multi"),
            envelope(node, "task.multi", &list),
        )
        .ignore();
    } else {
        singles.extend(tasks);
    }
    for e in singles {
        let rk = event::routing_key(e["type"].as_str().unwrap_or("worker"));
        pipe.publish(keys::event_channel(db, &rk), envelope(node, &rk, &e))
            .ignore();
    }
    pipe.query_async::<()>(&mut broker.conn()).await?;
    Ok(())
}
