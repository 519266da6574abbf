//! `celeriac job ID`: where one task is now (queued at some position, held by a worker under
//! a lease, running, dead-lettered) and what became of it (its stored state and result).

use super::jobs::queued_row;
use crate::cli::render;
use anyhow::Result;
use celeriac::client::control;
use celeriac::protocol::time;
use clap::Args;
use serde_json::{Map, json};
use std::time::Duration;

/// `celeriac job ID`.
#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    /// Task id.
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Seconds rounded to a tenth, as shown.
fn tenths(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}

/// Look the task up everywhere and print what was found; exit 0 (an unknown id is an
/// answer: `where: unknown`).
pub(crate) async fn run(a: JobArgs, broker_url: &str, backend_url: &str) -> Result<u8> {
    let broker = super::broker(broker_url).await?;
    let backend = super::backend(backend_url).await?;
    let mut out = Map::new();
    out.insert("id".into(), json!(a.id));
    if let Some(q) = broker.find_queued(&a.id).await? {
        out.insert("where".into(), json!("queued"));
        out.insert("queue".into(), json!(q.queue));
        // The list's name carries kombu's binary priority separator; shown escaped.
        out.insert("list".into(), json!(q.list.escape_debug().to_string()));
        out.insert("position".into(), json!(q.position));
        if let Some(row) = queued_row(&q) {
            out.insert("message".into(), row);
        }
    } else if let Some(hold) = broker.find_unacked(&a.id).await? {
        out.insert("where".into(), json!("unacked"));
        out.insert("delivery_tag".into(), json!(hold.tag));
        out.insert("holder".into(), json!(hold.holder));
        let now = time::unix_now();
        // A celeriac holder's score is the end of its lease; anyone else's, the delivery time.
        match (&hold.holder, hold.score) {
            (Some(_), Some(s)) => out.insert("lease_expires_in_s".into(), json!(tenths(s - now))),
            (None, Some(s)) => out.insert("held_for_s".into(), json!(tenths(now - s))),
            _ => None,
        };
    }
    let replies = control::broadcast(
        &broker,
        "query_task",
        Map::from_iter([("ids".to_string(), json!([a.id]))]),
        &[],
        Duration::from_secs(1),
        true,
    )
    .await?;
    for r in replies {
        // Celery's `query_task` answers `{id: [state, request info]}`.
        if let Some(entry) = r.value.get(&a.id) {
            out.insert("worker".into(), json!(r.node));
            out.insert("worker_state".into(), entry[0].clone());
            out.insert("retries".into(), entry[1]["retries"].clone());
            out.insert("time_start".into(), entry[1]["time_start"].clone());
        }
    }
    match backend.get(&a.id).await? {
        Some(m) => {
            out.insert("state".into(), json!(m.status.as_str()));
            out.insert("result".into(), m.result.clone());
            out.insert("date_done".into(), json!(m.date_done));
            if let Some(x) = &m.extended {
                out.insert("retries".into(), json!(x.retries));
            }
        }
        None => {
            out.insert("state".into(), json!("PENDING"));
        }
    }
    if let Some(i) = broker.find_dead_letter(&a.id).await? {
        out.insert("dead_letter_index".into(), json!(i));
    }
    if !out.contains_key("where") && !out.contains_key("worker") {
        out.insert(
            "where".into(),
            json!(if out["state"] == "PENDING" {
                "unknown"
            } else {
                "finished"
            }),
        );
    }
    render::job(&out, a.json);
    Ok(0)
}
