//! `celeriac call`: send a task as `send_task`/`apply_async` does; print its id, or with
//! `--wait` its result as one JSON line (see [`super::result::report`] for the exit codes).

use super::result::report;
use crate::cli::render;
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;
use std::time::Duration;

/// `celeriac call`.
#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    /// Task name, e.g. shared_tasks.add.
    pub task: String,
    /// Positional arguments as a JSON list.
    #[arg(short = 'a', long = "args", default_value = "[]")]
    pub args: String,
    /// Keyword arguments as a JSON object.
    #[arg(short = 'k', long = "kwargs", default_value = "{}")]
    pub kwargs: String,
    /// The queue to send the task to (default: `celery`).
    #[arg(long = "queue", short = 'q')]
    pub queue: Option<String>,
    /// Priority 0–9 (lower runs first on Redis).
    #[arg(long = "priority")]
    pub priority: Option<u8>,
    /// Delay in seconds.
    #[arg(long = "countdown")]
    pub countdown: Option<f64>,
    /// Absolute ISO-8601 run-after time.
    #[arg(long = "eta")]
    pub eta: Option<String>,
    /// Expire after this many seconds.
    #[arg(long = "expires")]
    pub expires: Option<f64>,
    /// Explicit task id.
    #[arg(long = "task-id")]
    pub task_id: Option<String>,
    /// Hard time limit in seconds.
    #[arg(long = "time-limit")]
    pub time_limit: Option<f64>,
    /// Soft time limit in seconds.
    #[arg(long = "soft-time-limit")]
    pub soft_time_limit: Option<f64>,
    /// Wait for the result and print it as JSON.
    #[arg(long = "wait")]
    pub wait: bool,
    /// With --wait: seconds to wait.
    #[arg(long = "timeout", default_value_t = 60.0)]
    pub timeout: f64,
}

/// Send the task; exit 0, or with `--wait` the code of its outcome.
pub(crate) async fn run(c: CallArgs, broker: &str, backend: &str) -> Result<u8> {
    let Value::Array(args) = serde_json::from_str(&c.args).context("--args must be a JSON list")?
    else {
        bail!("--args must be a JSON list")
    };
    let Value::Object(kwargs) =
        serde_json::from_str(&c.kwargs).context("--kwargs must be a JSON object")?
    else {
        bail!("--kwargs must be a JSON object")
    };
    let client = celeriac::Client::connect(broker, backend)
        .await
        .context("connecting to the broker/backend")?;
    let eta = match &c.eta {
        Some(s) => Some(
            celeriac::protocol::time::parse_iso(s)
                .with_context(|| format!("--eta {s:?} is not an ISO-8601 date"))?,
        ),
        None => None,
    };
    let opts = celeriac::SendOptions {
        queue: c.queue,
        priority: c.priority,
        countdown: c.countdown.map(Duration::from_secs_f64),
        eta,
        expires: c.expires.map(Duration::from_secs_f64),
        task_id: c.task_id,
        time_limit: c.time_limit,
        soft_time_limit: c.soft_time_limit,
        ..Default::default()
    };
    let res = client
        .send_task(&c.task, args, kwargs, opts)
        .await
        .context("sending the task")?;
    if !c.wait {
        render::line(&res.id);
        return Ok(0);
    }
    report(res.get(Duration::from_secs_f64(c.timeout)).await)
}
