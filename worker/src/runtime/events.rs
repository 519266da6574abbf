//! The event dispatcher: worker events (`worker-online`, `worker-heartbeat`,
//! `worker-offline`, always sent, as Celery does) and task events (with `-E`), published on
//! `/<db>.celeryev/<routing key>` in kombu envelopes. Task events queued while a publish is
//! in flight go out together as one `task.multi` message, as Celery's buffered dispatcher
//! does, so events never add a round trip to a task's critical path.

use super::state::State;
use celeriac::Broker;
use celeriac::protocol::envelope::Envelope;
use celeriac::protocol::event;
use celeriac::transport::keys;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Sends events.
#[derive(Debug, Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<Value>,
    state: Arc<State>,
    task_events: Arc<AtomicBool>,
}

impl Events {
    /// Start the publisher task.
    pub fn start(
        broker: Broker,
        state: Arc<State>,
        task_events: bool,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = tokio::spawn(publisher(broker, state.clone(), rx));
        (
            Events {
                tx,
                state,
                task_events: Arc::new(AtomicBool::new(task_events)),
            },
            handle,
        )
    }

    /// Whether task events are enabled.
    pub fn task_events_enabled(&self) -> bool {
        self.task_events.load(Ordering::Relaxed)
    }

    /// `enable_events`/`disable_events`. Returns whether the setting changed.
    pub fn set_task_events(&self, on: bool) -> bool {
        self.task_events.swap(on, Ordering::Relaxed) != on
    }

    /// Send a task event (only with task events enabled).
    pub fn task(&self, kind: &str, fields: Map<String, Value>) {
        if self.task_events_enabled() {
            self.send(kind, fields);
        }
    }

    /// Send any event.
    pub fn send(&self, kind: &str, fields: Map<String, Value>) {
        let body = event::event(
            kind,
            &self.state.node,
            self.state.pid,
            self.state.tick(),
            fields,
        );
        let _ = self.tx.send(body);
    }

    /// The fields of a worker event (`freq`, `active`, `processed`, `loadavg`, `sw_*`).
    pub fn worker_fields(&self, freq: f64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("freq".into(), json!(freq));
        m.insert("active".into(), json!(self.state.active_count()));
        m.insert(
            "processed".into(),
            json!(self.state.processed.load(Ordering::Relaxed)),
        );
        m.insert("loadavg".into(), json!(loadavg()));
        m.insert("sw_ident".into(), json!(event::SW_IDENT));
        m.insert("sw_ver".into(), json!(celeriac::VERSION));
        m.insert("sw_sys".into(), json!("Linux"));
        m
    }
}

/// `os.getloadavg()` rounded to 2 decimals, as Celery reports it.
pub fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s
        .split_whitespace()
        .map(|x| (x.parse::<f64>().unwrap_or(0.0) * 100.0).round() / 100.0);
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// Wrap an event body (or a list of them) in a kombu envelope for `routing_key`.
pub fn envelope(node: &str, routing_key: &str, body: &Value) -> Vec<u8> {
    let mut headers = Map::new();
    headers.insert("hostname".into(), json!(node));
    Envelope::routed(body, headers, keys::EVENT_EXCHANGE, routing_key, 1).encode()
}

async fn publisher(broker: Broker, state: Arc<State>, mut rx: mpsc::UnboundedReceiver<Value>) {
    let db = broker.db();
    let mut conn = broker.conn();
    let mut batch: Vec<Value> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 24 {
            match rx.try_recv() {
                Ok(v) => batch.push(v),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        let (tasks, others): (Vec<Value>, Vec<Value>) = batch
            .drain(..)
            .partition(|e| e["type"].as_str().is_some_and(|t| t.starts_with("task-")));
        for e in others {
            let rk = event::routing_key(e["type"].as_str().unwrap_or("worker"));
            pipe.publish(keys::event_channel(db, &rk), envelope(&state.node, &rk, &e))
                .ignore();
        }
        match tasks.len() {
            0 => {}
            1 => {
                let e = &tasks[0];
                let rk = event::routing_key(e["type"].as_str().unwrap_or("task"));
                pipe.publish(keys::event_channel(db, &rk), envelope(&state.node, &rk, e))
                    .ignore();
            }
            _ => {
                let list = Value::Array(tasks);
                pipe.publish(
                    keys::event_channel(db, "task.multi"),
                    envelope(&state.node, "task.multi", &list),
                )
                .ignore();
            }
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            // Events are at-most-once pub/sub in Celery too; log and go on.
            tracing::warn!(error = %e, "could not publish events");
        }
    }
}
