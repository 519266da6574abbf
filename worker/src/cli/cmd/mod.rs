//! One file per command, as ripgrep's `flags/` and mini-redis's `cmd/` keep theirs: each
//! owns its arguments (a clap `Args` struct or `Subcommand` enum) and an async `run` that
//! connects, asks the `celeriac` or `locks` library, hands what it found to
//! [`super::render`], and returns the exit code for `main` to use.
//!
//! | file | command |
//! |---|---|
//! | [`worker`] | `worker`: the flags, their translation into a `WorkerConfig`, start-up |
//! | [`child`] | the hidden `__child` a worker spawns per task slot |
//! | [`call`], [`result`] | send a task; wait for a result |
//! | [`purge`] | empty queues and wake the clients waiting on them |
//! | [`control`], [`inspect`] | remote control, as `celery control` / `celery inspect` |
//! | [`status`], [`events`], [`summary`] | who is up; the event stream; the fleet at a glance |
//! | [`jobs`], [`job`] | tasks by state; where one task is |
//! | [`dead`] | the dead-letter list |
//! | [`locks`] | global locks |
//!
//! What several commands share lives here: `--json`, node selection ([`Target`]),
//! connecting with a useful error, and asking for confirmation.

pub(crate) mod call;
pub(crate) mod child;
pub(crate) mod control;
pub(crate) mod dead;
pub(crate) mod events;
pub(crate) mod inspect;
pub(crate) mod job;
pub(crate) mod jobs;
pub(crate) mod locks;
pub(crate) mod purge;
pub(crate) mod result;
pub(crate) mod status;
pub(crate) mod summary;
pub(crate) mod worker;

use anyhow::{Context, Result};
use celeriac::{Backend, Broker};
use clap::Args;
use std::io::Write;
use std::time::Duration;

/// Celery's exit code when no node replied (`EX_UNAVAILABLE`).
pub(crate) const EX_UNAVAILABLE: u8 = 69;

/// `--json` only.
#[derive(Debug, Args)]
pub(crate) struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Node selection and output options shared by control and inspect commands.
#[derive(Debug, Args, Clone)]
pub(crate) struct Target {
    /// Only these nodes (comma-separated node names).
    #[arg(
        short = 'd',
        long = "destination",
        value_delimiter = ',',
        global = true
    )]
    pub destination: Vec<String>,
    /// Seconds to wait for replies.
    #[arg(short = 't', long = "timeout", default_value_t = 1.0, global = true)]
    pub timeout: f64,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Target {
    /// How long to wait for each next reply; never below 50 ms, because the wait is a
    /// `BRPOP` timeout, where 0 would mean for ever.
    pub(crate) fn reply_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.05))
    }
}

/// Connect to the broker, saying so if that fails.
async fn broker(url: &str) -> Result<Broker> {
    Broker::connect(url)
        .await
        .context("connecting to the broker")
}

/// Connect to the result backend, saying so if that fails.
async fn backend(url: &str) -> Result<Backend> {
    Backend::connect(url)
        .await
        .context("connecting to the result backend")
}

/// Ask a yes/no question on stderr (stdout stays for output); anything but yes is no.
fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N]: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}
