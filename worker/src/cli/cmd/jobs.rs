//! `celeriac jobs --state ...`: tasks by state. Queued ones come from the queues in the
//! order workers take them, reserved/active/scheduled ones from the workers themselves,
//! failed ones from the result backend.

use crate::cli::render;
use anyhow::Result;
use celeriac::client::control;
use celeriac::transport::Queued;
use clap::Args;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// `celeriac jobs`.
#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    /// Which tasks: queued, reserved, active, scheduled, failed.
    #[arg(long, default_value = "queued", value_parser = ["queued", "reserved", "active", "scheduled", "failed"])]
    pub state: String,
    /// Only this queue.
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// List and print; exit 0.
pub(crate) async fn run(a: JobsArgs, broker_url: &str, backend_url: &str) -> Result<u8> {
    let broker = super::broker(broker_url).await?;
    let mut rows = Vec::new();
    match a.state.as_str() {
        "queued" => {
            let queues = match &a.queue {
                Some(q) => vec![q.clone()],
                None => broker.known_queues().await?,
            };
            'queues: for q in queues {
                for queued in broker.queued(&q).await? {
                    if rows.len() >= a.limit {
                        break 'queues;
                    }
                    rows.extend(queued_row(&queued));
                }
            }
        }
        "reserved" | "active" | "scheduled" => {
            let replies = control::broadcast(
                &broker,
                &a.state,
                Map::new(),
                &[],
                Duration::from_secs(1),
                true,
            )
            .await?;
            for r in replies {
                for item in r.value.as_array().cloned().unwrap_or_default() {
                    // `scheduled` entries wrap the request: `{eta, priority, request}`.
                    let req = if item.get("request").is_some() {
                        item["request"].clone()
                    } else {
                        item.clone()
                    };
                    let q = req["delivery_info"]["routing_key"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    if a.queue.as_ref().is_some_and(|want| *want != q) {
                        continue;
                    }
                    rows.push(json!({"id": req["id"], "task": req["name"], "queue": q, "worker": r.node,
                                     "eta": item.get("eta"), "time_start": req["time_start"], "worker_pid": req["worker_pid"]}));
                }
            }
            rows.truncate(a.limit);
        }
        _ => {
            let backend = super::backend(backend_url).await?;
            for m in backend.failures(a.limit).await? {
                let exc = m.exception_info();
                rows.push(json!({"id": m.task_id, "date_done": m.date_done,
                    "exception": exc.map(|e| e.repr())}));
            }
        }
    }
    render::jobs(&rows, &a.state, a.json);
    Ok(0)
}

/// The row of a queued message: what it is and where it stands. `None` for bytes that are
/// not a task message (the worker dead-letters those when it takes them).
pub(crate) fn queued_row(q: &Queued) -> Option<Value> {
    let msg = q.message()?;
    Some(json!({
        "id": msg.headers.id, "task": msg.headers.task, "queue": q.queue, "priority": msg.properties.priority,
        "eta": msg.headers.eta, "retries": msg.headers.retries, "args": msg.headers.argsrepr, "position": q.position,
    }))
}
