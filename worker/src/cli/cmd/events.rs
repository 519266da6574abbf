//! `celeriac events`: the live stream of worker and task events, one line each, like
//! `celery events --dump`; `--json` prints each event as one JSON line.

use crate::cli::render;
use anyhow::Result;
use celeriac::client::control;
use clap::Args;
use futures_util::StreamExt;
use std::time::Duration;

/// `celeriac events`.
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// One line per event (the only view; accepted for `celery events --dump` compatibility).
    #[arg(long)]
    pub dump: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<usize>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Print each event as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Print events until `--count`, `--timeout`, Ctrl-C or a closed stdout; exit 0.
pub(crate) async fn run(a: EventsArgs, broker_url: &str) -> Result<u8> {
    let broker = super::broker(broker_url).await?;
    let mut stream = Box::pin(control::events_after_roll_call(&broker).await?);
    let deadline = a
        .timeout
        .map(|t| tokio::time::Instant::now() + Duration::from_secs_f64(t));
    let mut n = 0;
    // One Ctrl-C listener for the whole stream: a fresh one per event could miss a signal
    // that arrives while a line is being written.
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, stream.next())
                    .await
                    .ok()
                    .flatten(),
                None => stream.next().await,
            }
        };
        let ev = tokio::select! {
            ev = next => ev,
            _ = &mut interrupted => None,
        };
        let Some(ev) = ev else { break };
        // A closed pipe (`celeriac events | head`) ends the stream quietly.
        if !render::event(&ev, a.json)? {
            break;
        }
        n += 1;
        if a.count.is_some_and(|c| n >= c) {
            break;
        }
    }
    Ok(0)
}
