//! `celeriac __child` (hidden): the process a worker spawns for a task slot. It reads task
//! requests on stdin and writes typed outcomes on stdout (see `runtime::child`); `main` runs
//! it before any thread or runtime exists, so nothing here may be async.

use crate::runtime;
use clap::Args;
use std::path::PathBuf;

/// Internal child-process options.
#[derive(Debug, Args)]
pub(crate) struct ChildArgs {
    /// Tasks to serve before exiting (0 = until stdin closes).
    #[arg(long = "max-tasks", default_value_t = 1)]
    pub max_tasks: u64,
    /// Command tasks config.
    #[arg(long = "config")]
    pub config: Option<PathBuf>,
}

/// Exit code of a child that cannot build its task registry (`EX_SOFTWARE`, sysexits.h).
const EX_SOFTWARE: u8 = 70;

/// Serve tasks until done; returns the exit code.
pub(crate) fn run(args: &ChildArgs, tasks: &celeriac::task::Registry) -> u8 {
    let registry = match super::worker::tasks_registry(tasks.clone(), args.config.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("celeriac child: {e:#}");
            return EX_SOFTWARE;
        }
    };
    runtime::child::child_main(registry, args.max_tasks) as u8
}
