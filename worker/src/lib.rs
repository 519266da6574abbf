//! The `celeriac` worker and operator CLI as a library: a crate of your own serves its own
//! tasks with the whole `celeriac` command line (worker, purge, control, inspect, locks, ...):
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! #[celeriac::task(name = "myapp.add")]
//! fn add(x: i64, y: i64) -> i64 {
//!     x + y
//! }
//!
//! fn main() -> ExitCode {
//!     celeriac_worker::main(celeriac::tasks![add])
//! }
//! ```
//!
//! Everything works as with the `celeriac` binary, which is this library given the
//! `shared_tasks` registry: the one-task-per-child mode re-executes *your* binary for each
//! child, command tasks and Python apps (`-A`) are served beside your tasks. Exit codes are
//! decided here alone.
//!
//! [`main`] parses the command line, does what must happen before any thread exists (run a
//! task child, detach, restore SIGPIPE, tune malloc, export the lock URL), starts the tokio
//! runtime and hands the command to its file under `cli/cmd/`.

mod cli;
mod command;
mod daemon;
mod pyapp;
mod runtime;

use celeriac::task::Registry;
use clap::Parser;
use cli::{Cli, Command, cmd};
use std::process::ExitCode;

/// Run the `celeriac` command line (from `std::env::args`) serving `tasks` beside command
/// tasks and a Python app's tasks; returns the process's exit code. Call it from `main`,
/// before any thread is started: it forks, detaches and sets the environment.
pub fn main(tasks: Registry) -> ExitCode {
    // glibc gives each thread that allocates an arena of its own (up to 8 per core), and each
    // keeps the memory it freed; a worker's few threads allocate little, so two arenas hold
    // its idle footprint down without making the threads wait on each other.
    // SAFETY: a malloc tuning call before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let mut cli = Cli::parse();
    if let Err(e) = broker_from_app(&mut cli) {
        eprintln!("Error: {e:#}");
        return ExitCode::from(1);
    }
    if !matches!(cli.command, Command::Worker(_) | Command::Child(_)) {
        // A CLI command piped into `head` ends quietly, like any Unix tool, instead of
        // panicking on a closed stdout (Rust ignores SIGPIPE by default).
        // SAFETY: restoring the default disposition of one signal before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // Child processes and detaching must happen before any thread exists.
    if let Command::Child(args) = &cli.command {
        return ExitCode::from(cmd::child::run(args, &tasks));
    }
    if let Command::Worker(w) = &cli.command {
        if w.detach
            && let Err(e) = daemon::detach()
        {
            eprintln!("celeriac: cannot detach: {e:#}");
            return ExitCode::from(1);
        }
        // Without -b the broker may come from a Python app's configuration, known only once
        // the zygote has imported it: the worker then gives it to its task children itself.
        if std::env::var_os("CELERIAC_LOCK_URL").is_none() && cli.broker.is_some() {
            // Task bodies (and their child processes) take global locks where the broker
            // is, as JWQL keeps broker and locks in one Redis.
            // SAFETY: no other thread exists yet.
            unsafe { std::env::set_var("CELERIAC_LOCK_URL", cli.broker_url()) };
        }
    }
    // In-process pools run task bodies on runtime threads: one per slot, plus two for the
    // consumer, heartbeats, pidbox and I/O.
    let threads = match &cli.command {
        Command::Worker(w) if w.in_process() => 2 + w.concurrency(),
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
    match rt.block_on(run(cli, tasks)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// An operator command (`purge`, `inspect`, `control`, ...) given `-A APP` for a Python app
/// and no `-b` talks to the app's own broker and backend, as `celery -A APP <command>` does.
/// The worker reads them from its zygote instead, so as not to import the app twice.
fn broker_from_app(cli: &mut Cli) -> anyhow::Result<()> {
    if cli.broker.is_some() || matches!(cli.command, Command::Worker(_) | Command::Child(_)) {
        return Ok(());
    }
    let Some(app) = cli.app.as_deref() else {
        return Ok(());
    };
    let cwd = std::env::current_dir()?;
    if !pyapp::is_python_app(app, &cwd) {
        return Ok(());
    }
    let urls = pyapp::app_urls(app, &pyapp::interpreter(None))?;
    if cli.result_backend.is_none() {
        cli.result_backend = urls.result_backend;
    }
    cli.broker = urls.broker_url;
    Ok(())
}

/// Run the command; its `Ok` value is the exit code.
async fn run(cli: Cli, tasks: Registry) -> anyhow::Result<u8> {
    let backend = cli.backend_url();
    let broker = cli.broker_url().to_string();
    let broker = broker.as_str();
    let (app, given_broker, given_backend) = (
        cli.app.clone(),
        cli.broker.clone(),
        cli.result_backend.clone(),
    );
    if !matches!(cli.command, Command::Worker(_)) {
        // The worker sets up its own logging, to its log file when it has one.
        init_cli_logging(&cli.cli_loglevel);
    }
    match cli.command {
        Command::Worker(w) => {
            let given = cmd::worker::Given {
                app: app.as_deref(),
                broker: given_broker.as_deref(),
                backend: given_backend.as_deref(),
            };
            cmd::worker::run(*w, given, tasks).await
        }
        Command::Call(a) => cmd::call::run(a, broker, &backend).await,
        Command::Result(a) => cmd::result::run(a, &backend).await,
        Command::Purge(a) => cmd::purge::run(a, broker, &backend).await,
        Command::Control(c) => cmd::control::run(c, broker).await,
        Command::Inspect(a) => cmd::inspect::run(a, broker).await,
        Command::Status(a) => cmd::status::run(a, broker).await,
        Command::Events(a) => cmd::events::run(a, broker).await,
        Command::Summary(a) => cmd::summary::run(a, broker).await,
        Command::Jobs(a) => cmd::jobs::run(a, broker, &backend).await,
        Command::Job(a) => cmd::job::run(a, broker, &backend).await,
        Command::Dead(c) => cmd::dead::run(c, broker).await,
        Command::Locks(c) => cmd::locks::run(c, broker).await,
        Command::Child(_) => unreachable!("handled before the runtime starts"),
    }
}

/// Logging for the operator commands: warnings and errors on stderr (stdout is their
/// output), or what `RUST_LOG` asks for.
fn init_cli_logging(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}
