//! The event dispatcher: worker events (`worker-online`, `worker-heartbeat`,
//! `worker-offline`, always sent, as Celery does) and task events (with `-E`), published on
//! `/<db>.celeryev/<routing key>` in kombu envelopes. Task events queued while a publish is
//! in flight go out together as one `task.multi` message, as Celery's buffered dispatcher
//! does, so events never add a round trip to a task's critical path.

use super::state::State;
use celeriac::Broker;
use celeriac::protocol::event;
use celeriac::transport::events;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the publisher task receives.
#[derive(Debug)]
enum Msg {
    /// An event body.
    Event(Value),
    /// Answer once everything queued before this has been published.
    Flush(oneshot::Sender<()>),
}

/// Sends events.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    tx: mpsc::UnboundedSender<Msg>,
    state: Arc<State>,
    task_events: Arc<AtomicBool>,
}

impl Events {
    /// Start the publisher task.
    pub(crate) fn start(broker: Broker, state: Arc<State>, task_events: bool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(publisher(broker, state.clone(), rx));
        Events {
            tx,
            state,
            task_events: Arc::new(AtomicBool::new(task_events)),
        }
    }

    /// Wait (up to `timeout`) until every event sent so far has been published — so a
    /// stopping worker's `worker-offline` reaches Redis before the process exits.
    pub(crate) async fn flush(&self, timeout: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(timeout, rx).await;
        }
    }

    /// Whether task events are enabled.
    pub(crate) fn task_events_enabled(&self) -> bool {
        self.task_events.load(Ordering::Relaxed)
    }

    /// `enable_events`/`disable_events`. Returns whether the setting changed.
    pub(crate) fn set_task_events(&self, on: bool) -> bool {
        self.task_events.swap(on, Ordering::Relaxed) != on
    }

    /// Send a task event (only with task events enabled).
    pub(crate) fn task(&self, kind: &str, fields: Map<String, Value>) {
        if self.task_events_enabled() {
            self.send(kind, fields);
        }
    }

    /// Send any event.
    pub(crate) fn send(&self, kind: &str, fields: Map<String, Value>) {
        let body = event::event(
            kind,
            &self.state.node,
            self.state.pid,
            self.state.tick(),
            fields,
        );
        let _ = self.tx.send(Msg::Event(body));
    }

    /// The fields of a worker event (`freq`, `active`, `processed`, `loadavg`, `sw_*`).
    pub(crate) fn worker_fields(&self, freq: f64) -> Map<String, Value> {
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
pub(crate) fn loadavg() -> [f64; 3] {
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

async fn publisher(broker: Broker, state: Arc<State>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch: Vec<Value> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(v) => batch.push(v),
                Msg::Flush(done) => flushes.push(done),
            }
            if batch.len() < 24 {
                next = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            continue;
        }
        if let Err(e) = events::publish(&broker, &state.node, std::mem::take(&mut batch)).await {
            // Events are at-most-once pub/sub in Celery too; log and go on.
            tracing::warn!(error = %e, "could not publish events");
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}
