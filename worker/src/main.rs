//! `celeriac`: the worker and the operator CLI. Exit codes are decided here alone.

mod cli;
mod command;
mod daemon;
mod runtime;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cli::{Cli, Command, PoolKind, WorkerArgs};
use runtime::{PoolMode, WorkerConfig};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    // glibc gives each thread that allocates an arena of its own (up to 8 per core), and each
    // keeps the memory it freed; a worker's few threads allocate little, so two arenas hold
    // its idle footprint down without making the threads wait on each other.
    // SAFETY: a malloc tuning call before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Worker(_) | Command::Child(_)) {
        // A CLI command piped into `head` ends quietly, like any Unix tool, instead of
        // panicking on a closed stdout (Rust ignores SIGPIPE by default).
        // SAFETY: restoring the default disposition of one signal before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // Child processes and detaching must happen before any thread exists.
    if let Command::Child(args) = &cli.command {
        let registry = tasks_registry(args.config.as_deref()).unwrap_or_else(|e| {
            eprintln!("celeriac child: {e:#}");
            std::process::exit(70)
        });
        return ExitCode::from(runtime::child::child_main(registry, args.max_tasks) as u8);
    }
    if let Command::Worker(w) = &cli.command
        && w.detach
    {
        match daemon::detach() {
            Ok(()) => {}
            Err(e) => {
                eprintln!("celeriac: cannot detach: {e:#}");
                return ExitCode::from(1);
            }
        }
    }
    if let Command::Worker(_) = &cli.command
        && std::env::var_os("CELERIAC_LOCK_URL").is_none()
    {
        // Task bodies (and their child processes) take global locks where the broker is,
        // as JWQL keeps broker and locks in one Redis.
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("CELERIAC_LOCK_URL", &cli.broker) };
    }
    // In-process pools run task bodies on runtime threads: one per slot, plus two for the
    // consumer, heartbeats, pidbox and I/O.
    let threads = match &cli.command {
        Command::Worker(w) if in_process(w) => 2 + concurrency(w),
        _ => 2,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("celeriac: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether the worker runs task bodies in its own process (`-P solo|threads`); the default,
/// as in Celery, is prefork: child processes.
fn in_process(w: &WorkerArgs) -> bool {
    matches!(w.pool, Some(PoolKind::Solo | PoolKind::Threads))
}

/// Task slots: `-c N`; without `-c`, or with `-c 0`, the number of CPUs (Celery's
/// `WorkController.setup_defaults`: a falsy concurrency means `cpu_count()`); `-P solo` has
/// exactly one.
fn concurrency(w: &WorkerArgs) -> usize {
    if w.pool == Some(PoolKind::Solo) {
        return 1;
    }
    match w.concurrency {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// The tasks this binary serves: the compiled-in `shared_tasks` plus command tasks.
fn tasks_registry(config: Option<&std::path::Path>) -> Result<celeriac::task::Registry> {
    let mut registry = shared_tasks::registry();
    if let Some(path) = config {
        command::register(&mut registry, command::load(path)?);
    }
    Ok(registry)
}

async fn run(cli: Cli) -> Result<u8> {
    let backend_url = cli.backend_url();
    match cli.command {
        Command::Worker(w) => worker(*w, &cli.broker, &backend_url).await,
        Command::Call(c) => {
            init_cli_logging(&cli.cli_loglevel);
            call(c, &cli.broker, &backend_url).await
        }
        Command::Result(r) => {
            init_cli_logging(&cli.cli_loglevel);
            result(r, &backend_url).await
        }
        Command::Child(_) => unreachable!("handled before the runtime starts"),
        other => {
            init_cli_logging(&cli.cli_loglevel);
            let broker = cli.broker.as_str();
            match other {
                Command::Purge(a) => cli::ops::purge(a, broker, &backend_url).await,
                Command::Control(c) => cli::ops::control_cmd(c, broker).await,
                Command::Inspect(a) => cli::ops::inspect(a, broker).await,
                Command::Status(a) => cli::ops::status(a, broker).await,
                Command::Events(a) => cli::ops::events(a, broker).await,
                Command::Summary(a) => cli::ops::summary(a, broker).await,
                Command::Jobs(a) => cli::ops::jobs(a, broker, &backend_url).await,
                Command::Job(a) => cli::ops::job(a, broker, &backend_url).await,
                Command::Dead(c) => cli::ops::dead(c, broker).await,
                Command::Locks(c) => {
                    // Locks live where the broker is unless told otherwise (JWQL keeps both in db 0).
                    let url =
                        std::env::var("CELERIAC_LOCK_URL").unwrap_or_else(|_| broker.to_string());
                    cli::locks::run(c, &url)
                        .await
                        .map(|code| code.clamp(0, 255) as u8)
                }
                _ => unreachable!("matched above"),
            }
        }
    }
}

fn init_cli_logging(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// Expand `--pidfile`/`--logfile` placeholders as Celery's `node_format` does: `%p` the full
/// node name, `%n` its name part (before `@`), `%h` its host part, `%d` the host's domain,
/// `%i` the process index (0 in the main process), `%I` (empty in the main process).
pub fn expand_node_format(fmt: &str, node: &str) -> String {
    let (name, host) = node.split_once('@').unwrap_or(("celery", node));
    let domain = host.split_once('.').map_or("", |(_, d)| d);
    fmt.replace("%p", node)
        .replace("%n", name)
        .replace("%h", host)
        .replace("%d", domain)
        .replace("%i", "0")
        .replace("%I", "")
}

/// Expand Celery's node-name placeholders: `%h` host, `%n` name part, `%d` domain, `%i`
/// process index (0 in the main process), `%I` (empty in the main process), `%p` node.
pub fn expand_name(fmt: &str, host: &str, node: &str) -> String {
    let (name, domain) = host.split_once('.').unwrap_or((host, ""));
    fmt.replace("%h", host)
        .replace("%n", name)
        .replace("%d", domain)
        .replace("%i", "0")
        .replace("%I", "")
        .replace("%p", node)
}

async fn worker(w: WorkerArgs, broker: &str, backend: &str) -> Result<u8> {
    let host = celeriac::client::hostname();
    let node_fmt = w.hostname.clone().unwrap_or_else(|| "celery@%h".into());
    let node = expand_name(&node_fmt, &host, "");
    let node = if node.contains('@') {
        node
    } else {
        format!("celery@{node}")
    };
    let logfile = w.logfile.as_ref().map(|f| expand_node_format(f, &node));
    daemon::init_logging(w.loglevel.directive(), logfile.as_deref())?;
    let _pidfile = match &w.pidfile {
        Some(p) => Some(daemon::Pidfile::create(&expand_node_format(p, &node))?),
        None => None,
    };
    let concurrency = concurrency(&w);
    if w.concurrency == Some(0) && w.pool != Some(PoolKind::Solo) {
        tracing::info!(concurrency, "-c 0: one slot per CPU, as Celery");
    }
    let pool = if in_process(&w) {
        if w.max_tasks_per_child > 0 {
            tracing::warn!("--max-tasks-per-child has no effect with an in-process pool");
        }
        PoolMode::InProcess
    } else {
        PoolMode::Children {
            max_tasks_per_child: w.max_tasks_per_child,
        }
    };
    let mut queues: Vec<String> = if w.queues.is_empty() {
        vec!["celery".into()]
    } else {
        w.queues.clone()
    };
    queues.retain(|q| !q.is_empty() && !w.exclude_queues.contains(q));
    if queues.is_empty() {
        bail!("no queues left to consume after -X");
    }
    let secs = |s: f64, what: &str| -> Result<Duration> {
        if s.is_finite() && s >= 0.0 {
            Ok(Duration::from_secs_f64(s))
        } else {
            bail!("{what} must be a non-negative number of seconds")
        }
    };
    let mut cfg = WorkerConfig::new(broker);
    cfg.backend_url = backend.to_string();
    cfg.node = node;
    cfg.queues = queues;
    cfg.concurrency = concurrency;
    cfg.pool = pool;
    cfg.prefetch = concurrency * w.prefetch_multiplier;
    cfg.acks_late = w.acks_late;
    cfg.reject_on_worker_lost = w.reject_on_worker_lost;
    cfg.acks_on_failure_or_timeout = !w.no_acks_on_failure_or_timeout;
    cfg.task_events = w.task_events;
    cfg.time_limit = w.time_limit.map(|s| secs(s, "--time-limit")).transpose()?;
    cfg.soft_time_limit = w
        .soft_time_limit
        .map(|s| secs(s, "--soft-time-limit"))
        .transpose()?;
    cfg.visibility_timeout = secs(w.visibility_timeout, "--visibility-timeout")?;
    cfg.lease = secs(w.lease, "--lease")?.max(Duration::from_millis(600));
    cfg.result_expires = Duration::from_secs(w.result_expires);
    cfg.result_extended = w.result_extended;
    cfg.track_started = w.track_started;
    cfg.max_message_size = w.max_message_size;
    cfg.heartbeat = (!w.without_heartbeat)
        .then(|| secs(w.heartbeat_interval, "--heartbeat-interval"))
        .transpose()?;
    cfg.skip_succeeded = !w.rerun_succeeded;
    cfg.command_tasks = w.config.clone();
    cfg.connection_retry_on_startup = !w.no_connection_retry_on_startup;
    cfg.connection_max_retries = (w.connection_max_retries > 0).then_some(w.connection_max_retries);
    let registry = tasks_registry(cfg.command_tasks.as_deref())?;
    let shutdown = runtime::shutdown::Shutdown::new();
    runtime::shutdown::wire_signals(shutdown.clone()).context("installing signal handlers")?;
    tracing::info!(broker = %celeriac::url::redact(&cfg.broker_url), "starting worker");
    let exit = runtime::run(cfg, registry, shutdown)
        .await
        .context("worker failed")?;
    Ok(match exit {
        runtime::Exit::Warm => 0,
        runtime::Exit::Cold => 1,
    })
}

async fn call(c: cli::CallArgs, broker: &str, backend: &str) -> Result<u8> {
    let args: serde_json::Value =
        serde_json::from_str(&c.args).context("--args must be a JSON list")?;
    let serde_json::Value::Array(args) = args else {
        bail!("--args must be a JSON list")
    };
    let kwargs: serde_json::Value =
        serde_json::from_str(&c.kwargs).context("--kwargs must be a JSON object")?;
    let serde_json::Value::Object(kwargs) = kwargs else {
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
        queue: c.queue.clone(),
        priority: c.priority,
        countdown: c.countdown.map(Duration::from_secs_f64),
        eta,
        expires: c.expires.map(Duration::from_secs_f64),
        task_id: c.task_id.clone(),
        time_limit: c.time_limit,
        soft_time_limit: c.soft_time_limit,
        ..Default::default()
    };
    let res = client
        .send_task(&c.task, args, kwargs, opts)
        .await
        .context("sending the task")?;
    if !c.wait {
        println!("{}", res.id);
        return Ok(0);
    }
    print_result(res.get(Duration::from_secs_f64(c.timeout)).await)
}

async fn result(r: cli::ResultArgs, backend: &str) -> Result<u8> {
    let backend = celeriac::Backend::connect(backend)
        .await
        .context("connecting to the result backend")?;
    let meta = backend
        .wait(&r.id, Duration::from_secs_f64(r.timeout))
        .await;
    if r.meta {
        return match meta {
            Ok(m) => {
                println!("{}", celeriac::protocol::json::to_string(&m.to_value()));
                Ok(if m.status == celeriac::State::Success {
                    0
                } else {
                    1
                })
            }
            Err(e) => {
                eprintln!("Error: {e}");
                Ok(2)
            }
        };
    }
    print_result(
        meta.map_err(celeriac::client::ClientError::from)
            .and_then(celeriac::client::into_value),
    )
}

/// Print a value as JSON (exit 0), or the remote exception (exit 1), or a timeout (exit 2).
fn print_result(
    r: std::result::Result<serde_json::Value, celeriac::client::ClientError>,
) -> Result<u8> {
    match r {
        Ok(v) => {
            println!("{}", serde_json::to_string(&v)?);
            Ok(0)
        }
        Err(celeriac::client::ClientError::Remote {
            exc,
            state,
            task_id,
            ..
        }) => {
            eprintln!(
                "Error: task {task_id} {state}: {}.{}: {}",
                exc.exc_module,
                exc.exc_type,
                exc.message()
            );
            Ok(1)
        }
        Err(e) => {
            eprintln!("Error: {e}");
            Ok(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{expand_name, expand_node_format};

    fn worker_args(argv: &[&str]) -> super::WorkerArgs {
        use clap::Parser;
        let cli = super::Cli::try_parse_from(argv).expect("valid command line");
        match cli.command {
            super::Command::Worker(w) => *w,
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
            assert_eq!(super::concurrency(&worker_args(argv)), cpus, "{argv:?}");
        }
        assert_eq!(
            super::concurrency(&worker_args(&["celeriac", "worker", "-c", "3"])),
            3
        );
        assert_eq!(
            super::concurrency(&worker_args(&[
                "celeriac", "worker", "-P", "solo", "-c", "4"
            ])),
            1
        );
    }

    #[test]
    fn file_placeholders_use_the_node_name_like_celery() {
        assert_eq!(
            expand_node_format("/var/log/%n%I.log", "det@vm.example.org"),
            "/var/log/det.log"
        );
        assert_eq!(
            expand_node_format("%h-%d-%p", "w1@vm.example.org"),
            "vm.example.org-example.org-w1@vm.example.org"
        );
    }

    #[test]
    fn node_name_placeholders_expand_like_celery() {
        assert_eq!(
            expand_name("w1@%h", "host.example.org", ""),
            "w1@host.example.org"
        );
        assert_eq!(
            expand_name("%n-%d-%i", "host.example.org", ""),
            "host-example.org-0"
        );
        assert_eq!(
            expand_name("/tmp/%p.log", "h", "celery@h"),
            "/tmp/celery@h.log"
        );
    }
}
