//! `celeriac purge`: empty task queues as `celery purge` does, then go further than Celery:
//! drop the messages of those queues that workers reserved but have not started, and wake
//! every client waiting on a purged task with `TaskRevokedError('purged')`.

use crate::cli::render::{self, PurgeReport};
use anyhow::{Context, Result};
use celeriac::client::control;
use celeriac::protocol::{ExceptionInfo, ResultMeta, State, TaskMessage};
use celeriac::{Backend, Broker};
use clap::Args;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// `celeriac purge`.
#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    /// Queues to purge (comma-separated). Default: celery.
    #[arg(short = 'Q', long = "queues", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Queues to leave alone.
    #[arg(short = 'X', long = "exclude-queues", value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Purge, after confirmation unless `-f`; exit 1 when the operator declines.
pub(crate) async fn run(a: PurgeArgs, broker_url: &str, backend_url: &str) -> Result<u8> {
    let broker = super::broker(broker_url).await?;
    let mut queues: Vec<String> = if a.queues.is_empty() {
        vec![celeriac::DEFAULT_QUEUE.into()]
    } else {
        a.queues.clone()
    };
    queues.retain(|q| !a.exclude.contains(q));
    if !a.force {
        let mut total = 0;
        for q in &queues {
            total += broker.queue_len(q).await?;
        }
        if !super::confirm(&format!(
            "{total} messages in {} queue(s) ({}) will be deleted. Are you sure?",
            queues.len(),
            queues.join(", ")
        )) {
            eprintln!("purge cancelled");
            return Ok(1);
        }
    }
    let backend = super::backend(backend_url).await?;
    let mut per_queue = BTreeMap::new();
    let mut ids = Vec::new();
    for q in &queues {
        let msgs = broker.purge(q).await?;
        per_queue.insert(q.clone(), msgs.len());
        ids.extend(msgs.iter().filter_map(|m| TaskMessage::id_of(m)));
    }
    // Beyond Celery: wake every client waiting on a purged task with REVOKED('purged'). A
    // message taken off the list can no longer run anywhere, so this goes first, before the
    // slower look at what workers hold.
    revoke_purged(&backend, &ids).await?;
    let (unacked_removed, dropped_ids) = drop_reserved(&broker, &queues, &mut per_queue).await?;
    revoke_purged(&backend, &dropped_ids).await?;
    ids.extend(dropped_ids);
    render::purge(
        &PurgeReport {
            total: per_queue.values().sum(),
            purged: per_queue,
            unacked_removed,
            revoked_ids: ids.len(),
        },
        queues.len(),
        a.json,
    );
    Ok(0)
}

/// Reserved-but-not-running messages of `queues` sit in `unacked`; Celery leaves them there
/// (they come back after the visibility timeout, and run). Ask the workers what is running,
/// drop the rest, and tell the workers holding those in memory to discard them. Returns how
/// many were dropped (also counted into `per_queue`) and the task ids they named.
async fn drop_reserved(
    broker: &Broker,
    queues: &[String],
    per_queue: &mut BTreeMap<String, usize>,
) -> Result<(usize, Vec<String>)> {
    let active: BTreeSet<String> = control::active(broker, &[], Duration::from_secs(1))
        .await
        .unwrap_or_default()
        .iter()
        .flat_map(|r| r.ids().map(String::from))
        .collect();
    let mut dropped = 0;
    let mut dropped_ids = Vec::new();
    for entry in broker.unacked().await? {
        if !queues.contains(&entry.queue) {
            continue;
        }
        if entry.task_id.as_ref().is_some_and(|i| active.contains(i)) {
            continue;
        }
        // Dropping a reserved message is an ack: it leaves unacked without a requeue.
        broker.ack(&entry.tag).await?;
        dropped += 1;
        *per_queue.entry(entry.queue).or_default() += 1;
        dropped_ids.extend(entry.task_id);
    }
    if !dropped_ids.is_empty() {
        let mut revoke = Map::new();
        revoke.insert("task_id".into(), json!(dropped_ids));
        let _ =
            control::broadcast(broker, "revoke", revoke, &[], Duration::from_secs(1), false).await;
    }
    Ok((dropped, dropped_ids))
}

/// Store and publish REVOKED(`purged`) for each id, waking `AsyncResult.get()` callers.
async fn revoke_purged(backend: &Backend, ids: &[String]) -> Result<()> {
    for id in ids {
        let mut meta =
            ResultMeta::exception(id, State::Revoked, &ExceptionInfo::revoked("purged"), None);
        meta.children = Value::Null;
        backend
            .store(&meta)
            .await
            .with_context(|| format!("storing REVOKED for purged task {id}"))?;
    }
    Ok(())
}
