//! `celeriac status`: one line per live worker node, from heartbeats (as Flower finds
//! them), with what each one is running.

use super::EX_UNAVAILABLE;
use crate::cli::render::{self, StatusRow};
use anyhow::Result;
use celeriac::client::control;
use clap::Args;
use std::time::Duration;

/// `celeriac status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Seconds to listen for heartbeats.
    #[arg(short = 't', long = "timeout", default_value_t = 2.5)]
    pub timeout: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// List the live nodes; exit [`EX_UNAVAILABLE`] when there are none.
pub(crate) async fn run(a: StatusArgs, broker_url: &str) -> Result<u8> {
    let broker = super::broker(broker_url).await?;
    let nodes = control::live_workers(&broker, Duration::from_secs_f64(a.timeout)).await?;
    let active = control::active(&broker, &[], Duration::from_secs(1))
        .await
        .unwrap_or_default();
    let rows: Vec<StatusRow> = nodes
        .iter()
        .map(|(node, live)| {
            let ev = &live.event;
            StatusRow {
                node: node.clone(),
                active: active
                    .iter()
                    .filter(|r| &r.node == node)
                    .flat_map(|r| r.tasks.iter())
                    .map(render::task_label)
                    .collect(),
                processed: ev["processed"].clone(),
                heartbeat_age: (live.seen.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                sw: format!(
                    "{} {}",
                    ev["sw_ident"].as_str().unwrap_or("?"),
                    ev["sw_ver"].as_str().unwrap_or("?")
                ),
                loadavg: ev["loadavg"].clone(),
            }
        })
        .collect();
    render::status(&rows, a.timeout, a.json);
    Ok(if rows.is_empty() { EX_UNAVAILABLE } else { 0 })
}
