//! Event payloads (`celery/events/event.py`): common fields first (`hostname`,
//! `utcoffset`, `pid`, `clock`), then the type-specific ones, then `timestamp` and `type`.
//! The routing key of an event is its type with `-` replaced by `.`.

use super::time;
use serde_json::{Map, Value, json};

/// `sw_ident` celeriac reports. Flower shows it; nothing keys off it.
pub const SW_IDENT: &str = "celeriac";

/// Build an event body.
pub fn event(
    kind: &str,
    hostname: &str,
    pid: u32,
    clock: u64,
    fields: Map<String, Value>,
) -> Value {
    let mut m = Map::new();
    m.insert("hostname".into(), json!(hostname));
    m.insert("utcoffset".into(), json!(0.0));
    m.insert("pid".into(), json!(pid));
    m.insert("clock".into(), json!(clock));
    m.extend(fields);
    m.insert("timestamp".into(), json!(time::unix_now()));
    m.insert("type".into(), json!(kind));
    Value::Object(m)
}

/// The routing key of an event type (`task-succeeded` → `task.succeeded`).
pub fn routing_key(kind: &str) -> String {
    kind.replace('-', ".")
}
