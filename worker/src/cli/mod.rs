//! The `celeriac` command line: Celery's verbs and option names (`-A`, `-b`, `worker -c1
//! -ldebug -Ofair ...`), turned into validated configs before any library sees them.
//!
//! Both `-lINFO` and `-l info`, `--opt=value` and `--opt value` parse, as with Celery.
//!
//! - this file: the global options and the list of commands;
//! - [`cmd`]: one file per command, each owning its arguments and its `run`;
//! - [`render`]: everything a command prints (tables, `--json`, the JSON line a script reads).
//!
//! Nothing under `cli` speaks Redis: commands call the `celeriac` and `locks` libraries'
//! typed APIs.

pub(crate) mod cmd;
pub(crate) mod render;

use clap::{Parser, Subcommand};

/// A Celery-compatible task worker and operator CLI for Redis.
#[derive(Debug, Parser)]
#[command(name = "celeriac", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// The Celery app (`module`, `module:attr`, `package`): a Python app in the current
    /// directory or on PYTHONPATH is served by `worker` with its own tasks and
    /// configuration; any other name is accepted for compatibility and the built-in tasks
    /// are served.
    #[arg(short = 'A', long = "app", global = true)]
    pub app: Option<String>,

    /// Broker URL (default: the Python app's `broker_url`, else redis://127.0.0.1:6379/0).
    #[arg(short = 'b', long = "broker", global = true, env = "CELERY_BROKER_URL")]
    pub broker: Option<String>,

    /// Result backend URL (default: the broker URL).
    #[arg(long = "result-backend", global = true, env = "CELERY_RESULT_BACKEND")]
    pub result_backend: Option<String>,

    /// Log level for commands other than `worker` (which has its own -l).
    #[arg(
        long = "log-level",
        global = true,
        hide = true,
        default_value = "warning"
    )]
    pub cli_loglevel: String,

    #[command(subcommand)]
    pub command: Command,
}

/// The broker when none is given and no Python app names one.
pub(crate) const DEFAULT_BROKER: &str = "redis://127.0.0.1:6379/0";

impl Cli {
    /// The broker URL: `-b`, else `$CELERY_BROKER_URL`, else [`DEFAULT_BROKER`].
    pub(crate) fn broker_url(&self) -> &str {
        self.broker.as_deref().unwrap_or(DEFAULT_BROKER)
    }

    /// The backend URL, defaulting to the broker's (Celery's `result_backend` is separate,
    /// but JWQL keeps results in the broker's database and passes no flag for it).
    pub(crate) fn backend_url(&self) -> String {
        self.result_backend
            .clone()
            .unwrap_or_else(|| self.broker_url().to_string())
    }
}

/// The commands `celeriac` runs.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start a worker.
    Worker(Box<cmd::worker::WorkerArgs>),
    /// Send a task; prints its id, or its result as JSON with --wait.
    Call(cmd::call::CallArgs),
    /// Wait for and print a task's result as JSON; a failed task exits non-zero.
    Result(cmd::result::ResultArgs),
    /// Remove every message from the task queues (and wake waiters with REVOKED).
    Purge(cmd::purge::PurgeArgs),
    /// Remote control: shutdown, revoke, rate_limit, time_limit, add/cancel consumer.
    #[command(subcommand)]
    Control(cmd::control::ControlCmd),
    /// Ask workers about themselves (ping, active, stats, ...).
    Inspect(cmd::inspect::InspectArgs),
    /// One line per live worker node (from heartbeats).
    Status(cmd::status::StatusArgs),
    /// Live view of worker and task events.
    Events(cmd::events::EventsArgs),
    /// Queues, unacked messages, live workers and dead letters at a glance.
    Summary(cmd::JsonFlag),
    /// List tasks by state.
    Jobs(cmd::jobs::JobsArgs),
    /// Where one task is now and what became of it.
    Job(cmd::job::JobArgs),
    /// The dead-letter list: list, show, requeue, purge.
    #[command(subcommand)]
    Dead(cmd::dead::DeadCmd),
    /// Global Redis locks (redis-py compatible): list, show, release, acquire.
    #[command(subcommand)]
    Locks(cmd::locks::LocksCmd),
    /// Internal: a task-executing child process (spawned by the worker).
    #[command(name = "__child", hide = true)]
    Child(cmd::child::ChildArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use cmd::worker::LogLevel;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn jwql_command_line_is_accepted_verbatim() {
        let cli = parse(&[
            "celeriac",
            "-A",
            "shared_tasks",
            "worker",
            "-D",
            "-E",
            "-ldebug",
            "-Ofair",
            "-c1",
            "--max-tasks-per-child=1",
            "--prefetch-multiplier",
            "1",
        ]);
        let Command::Worker(w) = cli.command else {
            panic!("not worker")
        };
        assert!(w.detach && w.task_events);
        assert_eq!(w.loglevel, LogLevel::Debug);
        assert_eq!(
            (w.concurrency, w.max_tasks_per_child, w.prefetch_multiplier),
            (Some(1), Some(1), Some(1))
        );
        assert_eq!(cli.app.as_deref(), Some("shared_tasks"));
    }

    #[test]
    fn loglevel_spellings_all_parse() {
        for form in [
            &["-lINFO"][..],
            &["-l", "info"],
            &["--loglevel=INFO"],
            &["--loglevel", "Info"],
        ] {
            let mut args = vec!["celeriac", "worker"];
            args.extend_from_slice(form);
            let Command::Worker(w) = parse(&args).command else {
                panic!()
            };
            assert_eq!(w.loglevel, LogLevel::Info, "{form:?}");
        }
    }

    #[test]
    fn app_option_is_global() {
        let cli = parse(&["celeriac", "worker", "-A", "shared_tasks", "-Q", "a,b"]);
        let Command::Worker(w) = cli.command else {
            panic!()
        };
        assert_eq!(w.queues, vec!["a", "b"]);
        assert_eq!(cli.app.as_deref(), Some("shared_tasks"));
    }
}
