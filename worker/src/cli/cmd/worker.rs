//! `celeriac worker`: Celery's worker options, their translation into a validated
//! [`WorkerConfig`], and start-up (logging, pidfile, signals, the runtime).
//!
//! Detaching (`-D`) happens in `main`, before any thread exists; everything else the worker
//! needs before it runs is here.

use crate::runtime::zygote::{AppReport, PythonPool, ZygoteSpec};
use crate::runtime::{self, PoolMode, WorkerConfig};
use crate::{command, daemon, pyapp};
use anyhow::{Context, Result, bail};
use celeriac::task::Registry;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Log levels, as Celery spells them (case-insensitive).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
#[value(rename_all = "lower")]
pub(crate) enum LogLevel {
    /// Everything, including each message received and the effective settings.
    Debug,
    /// Normal operation.
    Info,
    /// Problems the worker works around (retries, restored messages).
    Warning,
    /// Failed tasks and operations that gave up.
    Error,
    /// Only fatal errors.
    Critical,
    /// Alias of critical.
    Fatal,
}

impl LogLevel {
    /// Python's `logging` level name, for the app's side.
    pub(crate) fn python_name(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
            LogLevel::Critical | LogLevel::Fatal => "CRITICAL",
        }
    }

    /// The tracing filter directive.
    pub(crate) fn directive(self) -> &'static str {
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
pub(crate) enum PoolKind {
    /// Child processes (spawned, never forked); the default, as in Celery.
    Prefork,
    /// In-process, one task at a time.
    Solo,
    /// In-process threads.
    Threads,
}

/// `celeriac worker` options (Celery's names).
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Number of task slots (child processes or threads). Default, and `0`: the number of
    /// CPUs, as in Celery. `-P solo` has one slot.
    #[arg(short = 'c', long = "concurrency")]
    pub concurrency: Option<usize>,
    /// Pool implementation. Default: prefork (child processes, long-lived unless
    /// --max-tasks-per-child); solo/threads run task bodies in the worker process.
    #[arg(short = 'P', long = "pool", value_enum, ignore_case = true)]
    pub pool: Option<PoolKind>,
    /// Tasks a child runs before it is replaced (1 = a fresh process per task; 0 = no limit).
    /// Default: the Python app's `worker_max_tasks_per_child`, else 0.
    #[arg(long = "max-tasks-per-child")]
    pub max_tasks_per_child: Option<u64>,
    /// Prefetch = concurrency × this (0 = unlimited). Default: the Python app's
    /// `worker_prefetch_multiplier`, else 4.
    #[arg(long = "prefetch-multiplier")]
    pub prefetch_multiplier: Option<usize>,
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
    /// Default: the Python app's `broker_transport_options`, else 3600.
    #[arg(long = "visibility-timeout")]
    pub visibility_timeout: Option<f64>,
    /// Lease in seconds: a celeriac worker's held message is restored when its holder has not
    /// refreshed it for this long.
    #[arg(long = "lease", default_value_t = 30.0)]
    pub lease: f64,
    /// Result expiry in seconds (`result_expires`; 0 = never). Default: the Python app's,
    /// else one day.
    #[arg(long = "result-expires")]
    pub result_expires: Option<u64>,
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
    /// The Python interpreter that serves the app named by `-A` (default: $CELERIAC_PYTHON,
    /// else `python3` on PATH). Giving it also says `-A` is a Python app when the app is
    /// installed rather than in the current directory.
    #[arg(long = "python")]
    pub python: Option<PathBuf>,
}

/// What the global options say, as given (`None` when not given).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Given<'a> {
    /// `-A`.
    pub app: Option<&'a str>,
    /// `-b` or `$CELERY_BROKER_URL`.
    pub broker: Option<&'a str>,
    /// `--result-backend` or `$CELERY_RESULT_BACKEND`.
    pub backend: Option<&'a str>,
}

impl WorkerArgs {
    /// Whether the worker runs task bodies in its own process (`-P solo|threads`); the
    /// default, as in Celery, is prefork: child processes.
    pub(crate) fn in_process(&self) -> bool {
        matches!(self.pool, Some(PoolKind::Solo | PoolKind::Threads))
    }

    /// Task slots: `-c N`; without `-c`, or with `-c 0`, the number of CPUs (Celery's
    /// `WorkController.setup_defaults`: a falsy concurrency means `cpu_count()`); `-P solo`
    /// has exactly one.
    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency_or(None)
    }

    /// [`WorkerArgs::concurrency`], with the Python app's `worker_concurrency` where `-c`
    /// is not given.
    fn concurrency_or(&self, app: Option<u64>) -> usize {
        if self.pool == Some(PoolKind::Solo) {
            return 1;
        }
        match self.concurrency.or(app.map(|n| n as usize)) {
            Some(n) if n > 0 => n,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// The worker's configuration, validated: the node name expanded for this `host`, the
    /// queues left after `-X`, every duration checked. The URLs come from the global
    /// options; a Python `app`'s configuration fills in what the flags leave unsaid (flags
    /// win, as in Celery). Logs nothing: logging is not set up yet when this runs.
    pub(crate) fn config(
        &self,
        broker: &str,
        backend: &str,
        host: &str,
        app: Option<&AppReport>,
    ) -> Result<WorkerConfig> {
        let concurrency = self.concurrency_or(app.and_then(|a| a.worker_concurrency));
        let mut queues: Vec<String> = if !self.queues.is_empty() {
            self.queues.clone()
        } else if let Some(q) = app.and_then(|a| a.task_default_queue.clone()) {
            vec![q]
        } else {
            vec![celeriac::DEFAULT_QUEUE.into()]
        };
        queues.retain(|q| !q.is_empty() && !self.exclude_queues.contains(q));
        if queues.is_empty() {
            bail!("no queues left to consume after -X");
        }
        let mut cfg = WorkerConfig::new(broker);
        cfg.backend_url = backend.to_string();
        cfg.node = node_name(self.hostname.as_deref(), host);
        cfg.queues = queues;
        cfg.concurrency = concurrency;
        cfg.pool = if self.in_process() {
            PoolMode::InProcess
        } else {
            PoolMode::Children {
                max_tasks_per_child: self.max_tasks_per_child(app),
            }
        };
        let multiplier = self
            .prefetch_multiplier
            .or(app.and_then(|a| a.worker_prefetch_multiplier.map(|m| m as usize)))
            .unwrap_or(4);
        cfg.prefetch = concurrency * multiplier;
        cfg.acks_late = self.acks_late;
        cfg.reject_on_worker_lost = self.reject_on_worker_lost;
        cfg.acks_on_failure_or_timeout = !self.no_acks_on_failure_or_timeout;
        cfg.task_events = self.task_events || app.is_some_and(|a| a.worker_send_task_events);
        cfg.time_limit = self
            .time_limit
            .or(app.and_then(|a| a.task_time_limit))
            .map(|s| secs(s, "--time-limit"))
            .transpose()?;
        cfg.soft_time_limit = self
            .soft_time_limit
            .or(app.and_then(|a| a.task_soft_time_limit))
            .map(|s| secs(s, "--soft-time-limit"))
            .transpose()?;
        let app_visibility = app.map(pyapp::transport_options).transpose()?.flatten();
        cfg.visibility_timeout = secs(
            self.visibility_timeout.or(app_visibility).unwrap_or(3600.0),
            "--visibility-timeout",
        )?;
        cfg.lease = secs(self.lease, "--lease")?.max(Duration::from_millis(600));
        cfg.result_expires = match (self.result_expires, app.map(|a| a.result_expires)) {
            (Some(s), _) => Duration::from_secs(s),
            (None, Some(Some(s))) => secs(s, "result_expires")?,
            (None, Some(None)) => Duration::ZERO,
            (None, None) => celeriac::backend::DEFAULT_RESULT_EXPIRES,
        };
        cfg.result_extended = self.result_extended || app.is_some_and(|a| a.result_extended);
        cfg.track_started = self.track_started || app.is_some_and(|a| a.task_track_started);
        if let Some(a) = app {
            cfg.python_tasks = a.tasks.clone();
        }
        cfg.max_message_size = self.max_message_size;
        cfg.heartbeat = (!self.without_heartbeat)
            .then(|| secs(self.heartbeat_interval, "--heartbeat-interval"))
            .transpose()?;
        cfg.skip_succeeded = !self.rerun_succeeded;
        cfg.command_tasks = self.config.clone();
        cfg.connection_retry_on_startup = !self.no_connection_retry_on_startup;
        cfg.connection_max_retries =
            (self.connection_max_retries > 0).then_some(self.connection_max_retries);
        Ok(cfg)
    }
}

impl WorkerArgs {
    /// `--max-tasks-per-child`, else the Python app's `worker_max_tasks_per_child`, else 0.
    fn max_tasks_per_child(&self, app: Option<&AppReport>) -> u64 {
        self.max_tasks_per_child
            .or(app.and_then(|a| a.worker_max_tasks_per_child))
            .unwrap_or(0)
    }
}

/// Seconds given on the command line as a [`Duration`], refusing what is not one.
fn secs(s: f64, what: &str) -> Result<Duration> {
    if s.is_finite() && s >= 0.0 {
        Ok(Duration::from_secs_f64(s))
    } else {
        bail!("{what} must be a non-negative number of seconds")
    }
}

/// Run a worker until it is shut down: exit 0 after a warm shutdown, 1 after a cold one.
pub(crate) async fn run(w: WorkerArgs, given: Given<'_>, tasks: Registry) -> Result<u8> {
    let host = celeriac::client::hostname();
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let python_app = given
        .app
        .filter(|a| w.python.is_some() || pyapp::is_python_app(a, &cwd));
    let node = node_name(w.hostname.as_deref(), &host);
    let logfile = w.logfile.as_deref().map(|f| node_format(f, &node));
    daemon::init_logging(w.loglevel.directive(), logfile.as_deref())?;
    let _pidfile = match &w.pidfile {
        Some(p) => Some(daemon::Pidfile::create(&node_format(p, &node))?),
        None => None,
    };
    // A Python app is imported first: its configuration decides the broker, the queues and
    // the rest of what the flags leave unsaid, and an app that fails to import stops the
    // worker before it consumes anything.
    let (python, report) = match python_app {
        Some(app) => {
            let (pool, report) =
                start_python_app(&w, app, &node, logfile.as_deref(), given).await?;
            (Some(pool), Some(report))
        }
        None => (None, None),
    };
    let broker = match (
        given.broker,
        report.as_ref().and_then(|r| r.broker_url.as_deref()),
    ) {
        (Some(b), _) => b.to_string(),
        (None, Some(b)) => pyapp::redis_url("broker_url", b)?,
        (None, None) => crate::cli::DEFAULT_BROKER.to_string(),
    };
    let backend = match (
        given.backend,
        report.as_ref().and_then(|r| r.result_backend.as_deref()),
    ) {
        (Some(b), _) => b.to_string(),
        (None, Some(b)) => pyapp::redis_url("result_backend", b)?,
        (None, None) => broker.clone(),
    };
    let cfg = w.config(&broker, &backend, &host, report.as_ref())?;
    if w.concurrency == Some(0) && w.pool != Some(PoolKind::Solo) {
        tracing::info!(
            concurrency = cfg.concurrency,
            "-c 0: one slot per CPU, as Celery"
        );
    }
    if w.in_process() && w.max_tasks_per_child.is_some_and(|n| n > 0) {
        tracing::warn!("--max-tasks-per-child has no effect with an in-process pool");
    }
    let registry = tasks_registry(tasks, cfg.command_tasks.as_deref())?;
    refuse_name_clashes(&registry, &cfg)?;
    if let Some(r) = &report {
        log_effective_settings(&cfg, r);
    }
    let shutdown = runtime::shutdown::Shutdown::new();
    runtime::shutdown::wire_signals(shutdown.clone()).context("installing signal handlers")?;
    tracing::info!(broker = %celeriac::url::redact(&cfg.broker_url), "starting worker");
    let exit = runtime::run(cfg, registry, python, shutdown)
        .await
        .context("worker failed")?;
    Ok(match exit {
        runtime::Exit::Warm => 0,
        runtime::Exit::Cold => 1,
    })
}

/// Start the zygote for the Python `app` and wait for it to import the app.
async fn start_python_app(
    w: &WorkerArgs,
    app: &str,
    node: &str,
    logfile: Option<&str>,
    given: Given<'_>,
) -> Result<(std::sync::Arc<PythonPool>, AppReport)> {
    let python = pyapp::interpreter(w.python.as_deref());
    // As `celery -b` does, a broker given on the command line is the app's `broker_url`.
    let mut env = Vec::new();
    if let Some(b) = given.broker {
        env.push(("CELERY_BROKER_URL".to_string(), b.to_string()));
    }
    if let Some(b) = given.backend {
        env.push(("CELERY_RESULT_BACKEND".to_string(), b.to_string()));
    }
    let spec = ZygoteSpec {
        python: python.clone(),
        app: app.to_string(),
        node: node.to_string(),
        loglevel: w.loglevel.python_name().to_string(),
        logfile: logfile.map(str::to_string),
        max_tasks_per_child: w.max_tasks_per_child,
        env,
    };
    let started = std::time::Instant::now();
    let (pool, report) = PythonPool::start(spec)
        .await
        .with_context(|| format!("serving the Python app {app:?} with {}", python.display()))?;
    tracing::info!(
        app,
        python = %report.python,
        celery = %report.celery,
        tasks = report.tasks.len(),
        "imported the Python app in {:.3}s",
        started.elapsed().as_secs_f64()
    );
    Ok((pool, report))
}

/// A task name claimed by the Python app and by a built-in or command task: refused, with
/// both named (which one a message would reach must not depend on an accident).
fn refuse_name_clashes(registry: &celeriac::task::Registry, cfg: &WorkerConfig) -> Result<()> {
    let clashes: Vec<&String> = cfg
        .python_tasks
        .keys()
        .filter(|n| registry.get(n).is_some())
        .collect();
    if !clashes.is_empty() {
        bail!(
            "task names claimed both by the Python app and by a built-in or command task: {}; \
             rename one side (a command task's name is in its --config file)",
            clashes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// `-l debug`: the effective settings, once, passwords hidden.
fn log_effective_settings(cfg: &WorkerConfig, app: &AppReport) {
    tracing::debug!(
        app = app.main.as_deref().unwrap_or(""),
        broker_url = %celeriac::url::redact(&cfg.broker_url),
        result_backend = %celeriac::url::redact(&cfg.backend_url),
        queues = ?cfg.queues,
        concurrency = cfg.concurrency,
        prefetch = cfg.prefetch,
        pool = ?cfg.pool,
        acks_late = cfg.acks_late || app.task_acks_late,
        reject_on_worker_lost = cfg.reject_on_worker_lost || app.task_reject_on_worker_lost,
        acks_on_failure_or_timeout =
            cfg.acks_on_failure_or_timeout && app.task_acks_on_failure_or_timeout,
        time_limit = ?cfg.time_limit,
        soft_time_limit = ?cfg.soft_time_limit,
        visibility_timeout = ?cfg.visibility_timeout,
        result_expires = ?cfg.result_expires,
        result_extended = cfg.result_extended,
        track_started = cfg.track_started,
        task_events = cfg.task_events,
        "effective settings"
    );
    for (name, t) in &cfg.python_tasks {
        tracing::debug!(task = %name, acks_late = t.acks_late, time_limit = ?t.time_limit, soft_time_limit = ?t.soft_time_limit, rate_limit = ?t.rate_limit, "python task");
    }
}

/// The tasks this binary serves: its compiled-in `tasks` plus command tasks (the worker and
/// every child it spawns build the same registry).
pub(crate) fn tasks_registry(mut registry: Registry, config: Option<&Path>) -> Result<Registry> {
    if let Some(path) = config {
        command::register(&mut registry, command::load(path)?);
    }
    Ok(registry)
}

/// The node name for `-n` (default `celery@%h`), as Celery's worker computes it: the
/// placeholders expanded for this host ([`host_format`]), and `celery@` put in front of a
/// name without `@` (`default_nodename`).
fn node_name(option: Option<&str>, host: &str) -> String {
    let node = host_format(option.unwrap_or("celery@%h"), host, None, "");
    if node.contains('@') {
        node
    } else {
        format!("celery@{node}")
    }
}

/// `--pidfile`/`--logfile` placeholders, as Celery's `node_format` expands them: the host
/// and name parts of the node name `name@host` (a name without `@` is all host, with the
/// name `celery`), and `%p` the whole node name.
fn node_format(fmt: &str, node: &str) -> String {
    let (name, host) = node.split_once('@').unwrap_or(("celery", node));
    host_format(fmt, host, Some(name), node)
}

/// Celery's `host_format` (`celery/utils/nodenames.py`), in one pass like its
/// `simple_format`: `%h` the host, `%n` the name (the host's first label when there is no
/// name), `%d` the host's domain, `%p` the node name, `%i` the process index and `%I` the
/// same with a `-` prefix, which in the main process are `0` and empty. Any other `%x` is
/// kept as written (Celery refuses it).
fn host_format(fmt: &str, host: &str, name: Option<&str>, node: &str) -> String {
    let (first_label, domain) = host.split_once('.').unwrap_or((host, ""));
    let name = name.unwrap_or(first_label);
    let mut out = String::with_capacity(fmt.len() + host.len());
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let rest = chars.clone().next();
        let value = match rest {
            Some('h') => host,
            Some('n') => name,
            Some('d') => domain,
            Some('p') => node,
            Some('i') => "0",
            Some('I') => "",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(value);
        chars.next();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn worker_args(argv: &[&str]) -> WorkerArgs {
        let cli = Cli::try_parse_from(argv).expect("valid command line");
        match cli.command {
            Command::Worker(w) => *w,
            _ => panic!("not a worker command"),
        }
    }

    #[test]
    fn concurrency_zero_or_absent_means_one_slot_per_cpu_as_in_celery() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for argv in [
            &["celeriac", "worker"][..],
            &["celeriac", "worker", "-c", "0"],
        ] {
            assert_eq!(worker_args(argv).concurrency(), cpus, "{argv:?}");
        }
        assert_eq!(
            worker_args(&["celeriac", "worker", "-c", "3"]).concurrency(),
            3
        );
        assert_eq!(
            worker_args(&["celeriac", "worker", "-P", "solo", "-c", "4"]).concurrency(),
            1
        );
    }

    #[test]
    fn the_jwql_line_configures_one_fresh_child_per_task_holding_one_message() {
        let w = worker_args(&[
            "celeriac",
            "worker",
            "-E",
            "-c1",
            "--max-tasks-per-child=1",
            "--prefetch-multiplier",
            "1",
            "--acks-late",
        ]);
        let cfg = w
            .config("redis://b/0", "redis://r/1", "vm.example.org", None)
            .unwrap();
        assert_eq!(cfg.node, "celery@vm.example.org");
        assert_eq!(cfg.backend_url, "redis://r/1");
        assert_eq!(cfg.queues, ["celery"]);
        assert_eq!((cfg.concurrency, cfg.prefetch), (1, 1));
        assert!(matches!(
            cfg.pool,
            PoolMode::Children {
                max_tasks_per_child: 1
            }
        ));
        assert!(cfg.acks_late && cfg.task_events && cfg.skip_succeeded);
    }

    /// What the zygote reports for JWQL's app (its five settings), as JSON.
    fn jwql_app_report() -> AppReport {
        serde_json::from_value(serde_json::json!({
            "main": "shared_tasks", "broker_url": "redis://h:6379", "result_backend": "redis://h:6379",
            "task_acks_late": true, "task_reject_on_worker_lost": false,
            "task_acks_on_failure_or_timeout": true, "worker_prefetch_multiplier": 1,
            "worker_concurrency": 1, "worker_max_tasks_per_child": 1, "task_time_limit": null,
            "task_soft_time_limit": 30.0, "result_expires": 86400.0, "result_extended": false,
            "task_track_started": false, "task_default_queue": "jwql",
            "worker_send_task_events": false,
            "broker_transport_options": {"visibility_timeout": 14400},
            "tasks": {}, "python": "3.11", "celery": "5.7.0", "pid": 1
        }))
        .unwrap()
    }

    #[test]
    fn the_apps_settings_fill_what_the_flags_leave_unsaid() {
        let app = jwql_app_report();
        let cfg = worker_args(&["celeriac", "worker"])
            .config("redis://h:6379", "redis://h:6379", "h", Some(&app))
            .unwrap();
        assert_eq!((cfg.concurrency, cfg.prefetch), (1, 1));
        assert_eq!(cfg.queues, ["jwql"]);
        assert_eq!(cfg.visibility_timeout, Duration::from_secs(14400));
        assert_eq!(cfg.soft_time_limit, Some(Duration::from_secs(30)));
        assert!(matches!(
            cfg.pool,
            PoolMode::Children {
                max_tasks_per_child: 1
            }
        ));
    }

    #[test]
    fn flags_win_over_the_apps_settings_as_in_celery() {
        let app = jwql_app_report();
        let cfg = worker_args(&[
            "celeriac",
            "worker",
            "-c3",
            "--prefetch-multiplier",
            "2",
            "--max-tasks-per-child",
            "0",
            "-Q",
            "a",
            "--visibility-timeout",
            "60",
            "--soft-time-limit",
            "5",
            "--result-expires",
            "0",
        ])
        .config("redis://h:6379", "redis://h:6379", "h", Some(&app))
        .unwrap();
        assert_eq!((cfg.concurrency, cfg.prefetch), (3, 6));
        assert_eq!(cfg.queues, ["a"]);
        assert_eq!(cfg.visibility_timeout, Duration::from_secs(60));
        assert_eq!(cfg.soft_time_limit, Some(Duration::from_secs(5)));
        assert_eq!(cfg.result_expires, Duration::ZERO);
        assert!(matches!(
            cfg.pool,
            PoolMode::Children {
                max_tasks_per_child: 0
            }
        ));
    }

    #[test]
    fn transport_options_that_change_the_queues_layout_are_refused_by_name() {
        let mut app = jwql_app_report();
        app.broker_transport_options
            .insert("global_keyprefix".into(), serde_json::json!("jwql:"));
        let e = worker_args(&["celeriac", "worker"])
            .config("redis://h:6379", "redis://h:6379", "h", Some(&app))
            .unwrap_err();
        assert!(e.to_string().contains("global_keyprefix"), "{e}");
    }

    #[test]
    fn config_refuses_what_cannot_run() {
        let err = |argv: &[&str]| {
            worker_args(argv)
                .config("redis://b/0", "redis://b/0", "h", None)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&["celeriac", "worker", "-Q", "a", "-X", "a"]).contains("no queues"));
        assert!(err(&["celeriac", "worker", "--lease=-1"]).contains("--lease"));
        assert!(err(&["celeriac", "worker", "--time-limit", "NaN"]).contains("--time-limit"));
    }

    #[test]
    fn file_placeholders_use_the_node_name_like_celery() {
        assert_eq!(
            node_format("/var/log/%n%I.log", "det@vm.example.org"),
            "/var/log/det.log"
        );
        assert_eq!(
            node_format("%h-%d-%p", "w1@vm.example.org"),
            "vm.example.org-example.org-w1@vm.example.org"
        );
    }

    #[test]
    fn node_name_placeholders_expand_like_celery() {
        assert_eq!(
            host_format("w1@%h", "host.example.org", None, ""),
            "w1@host.example.org"
        );
        assert_eq!(
            host_format("%n-%d-%i", "host.example.org", None, ""),
            "host-example.org-0"
        );
        assert_eq!(
            host_format("/tmp/%p.log", "h", None, "celery@h"),
            "/tmp/celery@h.log"
        );
        assert_eq!(host_format("100%-%x", "h", None, ""), "100%-%x");
        assert_eq!(node_name(None, "vm.example.org"), "celery@vm.example.org");
        assert_eq!(node_name(Some("%n"), "vm.example.org"), "celery@vm");
        assert_eq!(node_name(Some("w1@%h"), "vm"), "w1@vm");
    }
}
