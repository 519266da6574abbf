//! `celeriac summary`: the fleet at a glance: each queue's length by priority, what is
//! taken and not acked (and how much of it under a celeriac lease), the live workers and
//! the number of dead letters.

use super::JsonFlag;
use crate::cli::render::{self, QueueRow, Summary, UnackedRow, WorkerRow};
use anyhow::Result;
use celeriac::client::control;
use std::time::Duration;

/// How long to listen for heartbeats: a worker answers the heartbeat broadcast at once.
const LISTEN: Duration = Duration::from_millis(1500);

/// Gather and print; exit 0.
pub(crate) async fn run(a: JsonFlag, broker_url: &str) -> Result<u8> {
    let broker = super::broker(broker_url).await?;
    let mut queues = Vec::new();
    for queue in broker.known_queues().await? {
        let by_priority = broker.queue_lens(&queue).await?;
        queues.push(QueueRow {
            total: by_priority.iter().sum(),
            queue,
            by_priority,
        });
    }
    let unacked = broker.unacked_stats().await?;
    let dead_letters = broker.dead_letter_count().await?;
    let workers = control::live_workers(&broker, LISTEN)
        .await?
        .into_iter()
        .map(|(node, live)| WorkerRow {
            node,
            active: live.event["active"].clone(),
            processed: live.event["processed"].clone(),
        })
        .collect();
    render::summary(
        &Summary {
            queues,
            unacked: UnackedRow {
                total: unacked.total,
                leased_by_celeriac: unacked.leased,
                oldest_age_s: unacked.oldest_age.map(|d| d.as_secs_f64()),
            },
            workers,
            dead_letters,
        },
        a.json,
    );
    Ok(0)
}
