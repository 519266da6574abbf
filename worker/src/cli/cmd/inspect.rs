//! `celeriac inspect METHOD`: ask workers about themselves, as `celery inspect` does, and
//! print each node's answer the way Celery's CLI shows it.

use super::{EX_UNAVAILABLE, Target};
use crate::cli::render;
use anyhow::Result;
use celeriac::client::control;
use clap::Args;
use serde_json::{Map, json};

/// `celeriac inspect ...`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// ping, active, reserved, scheduled, registered, stats, revoked, active_queues,
    /// query_task, conf, clock, report.
    #[arg(value_parser = ["ping", "active", "reserved", "scheduled", "registered", "stats", "revoked", "active_queues", "query_task", "conf", "clock", "report"])]
    pub method: String,
    /// Task ids (query_task).
    pub ids: Vec<String>,
    /// Which nodes: every live one, or those named with `-d`.
    #[command(flatten)]
    pub target: Target,
}

/// Ask and print; exit [`EX_UNAVAILABLE`] when no node replied.
pub(crate) async fn run(a: InspectArgs, broker_url: &str) -> Result<u8> {
    let broker = super::broker(broker_url).await?;
    // The arguments Celery's `inspect` sends with these methods.
    let mut arguments = Map::new();
    match a.method.as_str() {
        "query_task" => arguments.insert("ids".into(), json!(a.ids)),
        "registered" => arguments.insert("taskinfoitems".into(), json!([])),
        "conf" => arguments.insert("with_defaults".into(), json!(false)),
        _ => None,
    };
    let replies = control::broadcast(
        &broker,
        &a.method,
        arguments,
        &a.target.destination,
        a.target.reply_timeout(),
        true,
    )
    .await?;
    render::inspect_replies(&a.method, &replies, a.target.json);
    Ok(if replies.is_empty() {
        EX_UNAVAILABLE
    } else {
        0
    })
}
