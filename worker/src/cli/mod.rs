//! The `celeriac` command line: Celery's verbs and option names (`-A`, `-b`, `worker -c1
//! -ldebug -Ofair ...`), turned into validated configs before any library sees them.
//!
//! Both `-lINFO` and `-l info`, `--opt=value` and `--opt value` parse, as with Celery.

pub mod locks;
pub mod ops;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// A Celery-compatible task worker and operator CLI for Redis.
#[derive(Debug, Parser)]
#[command(name = "celeriac", version, about, propagate_version = true)]
pub struct Cli {
    /// Application name; accepted for compatibility with `celery -A shared_tasks ...` (the
    /// task registry is compiled in).
    #[arg(short = 'A', long = "app", global = true)]
    pub app: Option<String>,

    /// Broker URL.
    #[arg(
        short = 'b',
        long = "broker",
        global = true,
        env = "CELERY_BROKER_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    pub broker: String,

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

impl Cli {
    /// The backend URL, defaulting to the broker's.
    pub fn backend_url(&self) -> String {
        self.result_backend
            .clone()
            .unwrap_or_else(|| self.broker.clone())
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a worker.
    Worker(Box<WorkerArgs>),
    /// Send a task; prints its id, or its result as JSON with --wait.
    Call(CallArgs),
    /// Wait for and print a task's result as JSON; a failed task exits non-zero.
    Result(ResultArgs),
    /// Remove every message from the task queues (and wake waiters with REVOKED).
    Purge(ops::PurgeArgs),
    /// Remote control: shutdown, revoke, rate_limit, time_limit, add/cancel consumer.
    #[command(subcommand)]
    Control(ops::ControlCmd),
    /// Ask workers about themselves (ping, active, stats, ...).
    Inspect(ops::InspectArgs),
    /// One line per live worker node (from heartbeats).
    Status(ops::StatusArgs),
    /// Live view of worker and task events.
    Events(ops::EventsArgs),
    /// Queues, unacked messages, live workers and dead letters at a glance.
    Summary(ops::JsonFlag),
    /// List tasks by state.
    Jobs(ops::JobsArgs),
    /// Where one task is now and what became of it.
    Job(ops::JobArgs),
    /// The dead-letter list: list, show, requeue, purge.
    #[command(subcommand)]
    Dead(ops::DeadCmd),
    /// Global Redis locks (redis-py compatible): list, show, release, acquire.
    #[command(subcommand)]
    Locks(self::locks::LocksCmd),
    /// Internal: a task-executing child process (spawned by the worker).
    #[command(name = "__child", hide = true)]
    Child(ChildArgs),
}

/// Log levels, as Celery spells them (case-insensitive).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
#[value(rename_all = "lower")]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// Normal operation.
    Info,
    /// Problems.
    Warning,
    /// Errors.
    Error,
    /// Only fatal errors.
    Critical,
    /// Alias of critical.
    Fatal,
}

impl LogLevel {
    /// The tracing filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warn",
            LogLevel::Error | LogLevel::Critical | LogLevel::Fatal => "error",
        }
    }
}

/// Pool implementations.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PoolKind {
    /// Child processes (spawned, never forked); the default, as in Celery.
    Prefork,
    /// In-process, one task at a time.
    Solo,
    /// In-process threads.
    Threads,
}

/// `celeriac worker` options (Celery's names).
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Number of task slots (child processes or threads). Default, and `0`: the number of
    /// CPUs, as in Celery. `-P solo` has one slot.
    #[arg(short = 'c', long = "concurrency")]
    pub concurrency: Option<usize>,
    /// Pool implementation. Default: prefork (child processes, long-lived unless
    /// --max-tasks-per-child); solo/threads run task bodies in the worker process.
    #[arg(short = 'P', long = "pool", value_enum, ignore_case = true)]
    pub pool: Option<PoolKind>,
    /// Tasks a child runs before it is replaced (1 = a fresh process per task; 0 = no limit).
    #[arg(long = "max-tasks-per-child", default_value_t = 0)]
    pub max_tasks_per_child: u64,
    /// Prefetch = concurrency × this (0 = unlimited).
    #[arg(long = "prefetch-multiplier", default_value_t = 4)]
    pub prefetch_multiplier: usize,
    /// Scheduling strategy: `fair` and `default` are both fair (a task never goes to a busy slot).
    #[arg(short = 'O', value_parser = ["fair", "default", "fast", "fcfs"], default_value = "fair")]
    pub optimization: String,
    /// Ack after the task finished instead of before it starts (`task_acks_late`).
    #[arg(long = "acks-late", env = "CELERIAC_ACKS_LATE")]
    pub acks_late: bool,
    /// With --acks-late, requeue a task whose child died instead of storing WorkerLostError.
    #[arg(long = "reject-on-worker-lost")]
    pub reject_on_worker_lost: bool,
    /// With --acks-late, requeue (rather than ack) failed and timed-out tasks.
    #[arg(long = "no-acks-on-failure-or-timeout")]
    pub no_acks_on_failure_or_timeout: bool,
    /// Queues to consume (comma-separated). Default: celery.
    #[arg(short = 'Q', long = "queues", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Queues to exclude (comma-separated).
    #[arg(short = 'X', long = "exclude-queues", value_delimiter = ',')]
    pub exclude_queues: Vec<String>,
    /// Node name (`%h` host, `%n` short host, `%d` domain, `%i` process index).
    #[arg(short = 'n', long = "hostname")]
    pub hostname: Option<String>,
    /// Send task events (worker events are always sent, as Celery does).
    #[arg(short = 'E', long = "task-events")]
    pub task_events: bool,
    /// Log level.
    #[arg(
        short = 'l',
        long = "loglevel",
        value_enum,
        ignore_case = true,
        default_value = "warning"
    )]
    pub loglevel: LogLevel,
    /// Detach and run in the background.
    #[arg(short = 'D', long = "detach")]
    pub detach: bool,
    /// PID file (refuses to start if it names a live process; removed on exit).
    #[arg(long = "pidfile")]
    pub pidfile: Option<String>,
    /// Log file, appended (`%n`, `%i`, `%h` expanded).
    #[arg(short = 'f', long = "logfile")]
    pub logfile: Option<String>,
    /// Hard time limit in seconds (the task's process group is killed).
    #[arg(long = "time-limit")]
    pub time_limit: Option<f64>,
    /// Soft time limit in seconds (the task is told first).
    #[arg(long = "soft-time-limit")]
    pub soft_time_limit: Option<f64>,
    /// kombu's visibility timeout in seconds, for messages held by non-celeriac consumers.
    #[arg(long = "visibility-timeout", default_value_t = 3600.0)]
    pub visibility_timeout: f64,
    /// Lease in seconds: a celeriac worker's held message is restored when its holder has not
    /// refreshed it for this long.
    #[arg(long = "lease", default_value_t = 30.0)]
    pub lease: f64,
    /// Result expiry in seconds (`result_expires`; 0 = never).
    #[arg(long = "result-expires", default_value_t = 86400)]
    pub result_expires: u64,
    /// Store name/args/kwargs/worker/retries/queue in results (`result_extended`).
    #[arg(long = "result-extended")]
    pub result_extended: bool,
    /// Store STARTED when a task starts (`task_track_started`).
    #[arg(long = "track-started")]
    pub track_started: bool,
    /// Command tasks config (TOML).
    #[arg(long = "config", env = "CELERIAC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Largest message accepted, in bytes (bigger ones go to the dead-letter list).
    #[arg(long = "max-message-size", default_value_t = 64 * 1024 * 1024)]
    pub max_message_size: usize,
    /// Fail at once when the broker or backend is unreachable at start-up, instead of
    /// waiting for it as Celery does (`broker_connection_retry_on_startup = False`).
    #[arg(long = "no-broker-connection-retry-on-startup")]
    pub no_connection_retry_on_startup: bool,
    /// Attempts to reach the broker/backend at start-up, 2 s to 30 s apart
    /// (`broker_connection_max_retries`; 0 = retry forever).
    #[arg(long = "broker-connection-max-retries", default_value_t = 100)]
    pub connection_max_retries: u32,
    /// Heartbeat interval in seconds.
    #[arg(long = "heartbeat-interval", default_value_t = 2.0)]
    pub heartbeat_interval: f64,
    /// Run a redelivered task again even when a SUCCESS is already stored for its id.
    #[arg(long = "rerun-succeeded")]
    pub rerun_succeeded: bool,
    /// Accepted for compatibility; celeriac does not need mingle.
    #[arg(long = "without-mingle")]
    pub without_mingle: bool,
    /// Accepted for compatibility.
    #[arg(long = "without-gossip")]
    pub without_gossip: bool,
    /// Do not send heartbeats (not recommended: Flower and `status` use them).
    #[arg(long = "without-heartbeat")]
    pub without_heartbeat: bool,
}

/// `celeriac call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Task name, e.g. shared_tasks.add.
    pub task: String,
    /// Positional arguments as a JSON list.
    #[arg(short = 'a', long = "args", default_value = "[]")]
    pub args: String,
    /// Keyword arguments as a JSON object.
    #[arg(short = 'k', long = "kwargs", default_value = "{}")]
    pub kwargs: String,
    /// Queue.
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

/// `celeriac result`.
#[derive(Debug, Args)]
pub struct ResultArgs {
    /// Task id.
    pub id: String,
    /// Seconds to wait for a ready state.
    #[arg(long = "timeout", default_value_t = 60.0)]
    pub timeout: f64,
    /// Print the whole meta instead of the value.
    #[arg(long = "meta")]
    pub meta: bool,
}

/// Internal child-process options.
#[derive(Debug, Args)]
pub struct ChildArgs {
    /// Tasks to serve before exiting (0 = until stdin closes).
    #[arg(long = "max-tasks", default_value_t = 1)]
    pub max_tasks: u64,
    /// Command tasks config.
    #[arg(long = "config")]
    pub config: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (Some(1), 1, 1)
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
