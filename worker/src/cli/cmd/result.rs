//! `celeriac result ID`: wait for a task's result and print it as one JSON line, or with
//! `--meta` the whole stored meta.

use crate::cli::render;
use anyhow::Result;
use celeriac::State;
use celeriac::client::{ClientError, into_value};
use clap::Args;
use serde_json::Value;
use std::time::Duration;

/// `celeriac result`.
#[derive(Debug, Args)]
pub(crate) struct ResultArgs {
    /// Task id.
    pub id: String,
    /// Seconds to wait for a ready state.
    #[arg(long = "timeout", default_value_t = 60.0)]
    pub timeout: f64,
    /// Print the whole meta instead of the value.
    #[arg(long = "meta")]
    pub meta: bool,
}

/// Wait for the result; exit as [`report`] says, or with `--meta` 0 for SUCCESS, 1 for any
/// other ready state, 2 when none came.
pub(crate) async fn run(r: ResultArgs, backend: &str) -> Result<u8> {
    let backend = super::backend(backend).await?;
    let meta = backend
        .wait(&r.id, Duration::from_secs_f64(r.timeout))
        .await;
    if r.meta {
        return Ok(match meta {
            Ok(m) => {
                render::meta(&m);
                if m.status == State::Success { 0 } else { 1 }
            }
            Err(e) => {
                render::error(&e);
                2
            }
        });
    }
    report(meta.map_err(ClientError::from).and_then(into_value))
}

/// Print a task's outcome for a script: its value as one JSON line (exit 0), or the remote
/// exception (exit 1: the task failed or was revoked), or why there is no outcome (exit 2:
/// no result in time, or Redis failed).
pub(crate) fn report(outcome: Result<Value, ClientError>) -> Result<u8> {
    match outcome {
        Ok(v) => {
            render::json_line(&v)?;
            Ok(0)
        }
        Err(ClientError::Remote {
            exc,
            state,
            task_id,
            ..
        }) => {
            render::remote_failure(&task_id, &state, &exc);
            Ok(1)
        }
        Err(e) => {
            render::error(&e);
            Ok(2)
        }
    }
}
