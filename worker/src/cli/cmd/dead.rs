//! `celeriac dead ...`: the dead-letter list: list it, show one entry with its original
//! bytes, put entries back on their queue, or delete them all.

use crate::cli::render::{self, DeadRow};
use anyhow::{Result, bail};
use clap::Subcommand;

/// `celeriac dead ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeadCmd {
    /// List dead letters (newest first).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its original bytes.
    Show {
        /// Index from `dead list` (0 = newest).
        index: usize,
    },
    /// Put dead letters back on their queue (fix the cause first).
    Requeue {
        /// Index from `dead list`.
        index: Option<usize>,
        /// All of them.
        #[arg(long)]
        all: bool,
    },
    /// Delete all dead letters.
    Purge {
        /// Do not ask for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
}

/// Run the subcommand: exit 0, or 1 when the operator declines a purge; a missing entry is
/// an error.
pub(crate) async fn run(cmd: DeadCmd, broker_url: &str) -> Result<u8> {
    let broker = super::broker(broker_url).await?;
    match cmd {
        DeadCmd::List { limit, json } => {
            // `--limit 0` lists them all.
            let entries = broker.dead_letters((limit > 0).then_some(limit)).await?;
            let rows: Vec<DeadRow> = entries
                .iter()
                .map(|e| match &e.letter {
                    Ok(l) => DeadRow {
                        index: e.index,
                        time: Some(l.time),
                        queue: Some(l.queue.clone()),
                        reason: l.reason.clone(),
                        task_id: l.task_id(),
                    },
                    Err(_) => DeadRow {
                        index: e.index,
                        time: None,
                        queue: None,
                        reason: "unreadable dead-letter entry".into(),
                        task_id: None,
                    },
                })
                .collect();
            render::dead_list(&rows, json);
            Ok(0)
        }
        DeadCmd::Show { index } => {
            let Some(entry) = broker.dead_letter(index).await? else {
                bail!("no dead letter at index {index}")
            };
            let letter = match entry.letter {
                Ok(l) => l,
                Err(e) => bail!("dead letter {index}: {e}"),
            };
            render::dead_letter(&letter)?;
            Ok(0)
        }
        DeadCmd::Requeue { index, all } => {
            let picked = match (index, all) {
                (_, true) => broker.dead_letters(None).await?,
                (Some(i), false) => broker.dead_letter(i).await?.into_iter().collect(),
                (None, false) => bail!("give an index or --all"),
            };
            if picked.is_empty() {
                bail!("no such dead letter");
            }
            let mut n = 0;
            for entry in &picked {
                if broker.requeue_dead_letter(entry).await? {
                    n += 1;
                }
            }
            render::counted("requeued", n, "message");
            Ok(0)
        }
        DeadCmd::Purge { force } => {
            if !force {
                let len = broker.dead_letter_count().await?;
                if !super::confirm(&format!("Delete {len} dead letters?")) {
                    eprintln!("cancelled");
                    return Ok(1);
                }
            }
            let n = broker.purge_dead_letters().await?;
            render::counted("deleted", n, "dead letter");
            Ok(0)
        }
    }
}
