//! `celeriac locks`: list, inspect and safely break global locks, and hold a lock around a
//! shell command. Exit codes only; the work is `locks::admin` and `locks::Lock`, the
//! printing [`crate::cli::render`]'s.
//!
//! Exit codes: 0 done; 1 the lock is not held (`show`, `release`); 3 `release` refused
//! because the holder is not known to be dead (use `--force`); 75 (EX_TEMPFAIL)
//! `acquire` could not take the lock in time; 76 `acquire` lost the lock while the command
//! ran (the command was sent SIGTERM); otherwise `acquire` exits with the command's code
//! (128 + signal if it was killed).

use std::time::Duration;

use crate::cli::render;
use ::locks::admin::ReleaseOutcome;
use ::locks::{Client, LockError};
use anyhow::Context;

/// Exit code when `acquire` could not take the lock (EX_TEMPFAIL, as `flock -n` users expect
/// a distinct code).
pub(crate) const EXIT_BUSY: i32 = 75;
/// Exit code when the lock was lost while the command ran.
pub(crate) const EXIT_LOST: i32 = 76;
/// Exit code when `release` refused to break a lock.
pub(crate) const EXIT_REFUSED: i32 = 3;

/// `celeriac locks ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum LocksCmd {
    /// List locks: name, holder (if known), TTL or "no expiry", age. Uses SCAN, never KEYS.
    List {
        /// Only keys matching this Redis glob (e.g. 'jw*'); every string key matching it is
        /// shown, whatever its value.
        #[arg(long)]
        pattern: Option<String>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one lock: holder identity, whether the holder is alive, fence, TTL, age.
    Show {
        /// Lock name (the Redis key).
        name: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Release a lock whose holder is known dead (same host, pid gone or reused), or any
    /// lock with --force; prints who held it.
    Release {
        /// Lock name.
        name: String,
        /// Release whoever holds it.
        #[arg(long)]
        force: bool,
    },
    /// Hold a lock while running a command: `celeriac locks acquire NAME -- cmd args...`.
    Acquire {
        /// Lock name.
        name: String,
        /// Lock TTL in seconds, renewed every TTL/3 while the command runs, so a killed
        /// `celeriac` frees the lock within this time.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
        /// Wait up to this many seconds for the lock (default: do not wait).
        #[arg(long)]
        wait: Option<f64>,
        /// The command and its arguments.
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
}

/// Run a `locks` subcommand; returns the exit code. Locks live where the broker is unless
/// `CELERIAC_LOCK_URL` says otherwise (JWQL keeps both in db 0), as for the worker's tasks.
pub(crate) async fn run(cmd: LocksCmd, broker_url: &str) -> anyhow::Result<u8> {
    let url = std::env::var("CELERIAC_LOCK_URL").unwrap_or_else(|_| broker_url.to_string());
    // A command's exit status is 0..=255 already; anything else would be a bug, not a code.
    exec(cmd, &url).await.map(|code| code.clamp(0, 255) as u8)
}

/// Run a `locks` subcommand against the Redis at `redis_url`; returns the exit code.
async fn exec(cmd: LocksCmd, redis_url: &str) -> anyhow::Result<i32> {
    let client = Client::open(redis_url).context("opening the lock client")?;
    match cmd {
        LocksCmd::List { pattern, json } => {
            let entries = ::locks::admin::list(&client, pattern.as_deref())
                .await
                .context("listing locks")?;
            render::lock_list(&entries, json);
            Ok(0)
        }
        LocksCmd::Show { name, json } => {
            match ::locks::admin::show(&client, &name)
                .await
                .context("reading the lock")?
            {
                Some(e) => render::lock(&e, json),
                None => {
                    eprintln!("lock {name:?} is not held");
                    return Ok(1);
                }
            }
            Ok(0)
        }
        LocksCmd::Release { name, force } => {
            match ::locks::admin::release(&client, &name, force)
                .await
                .context("releasing the lock")?
            {
                ReleaseOutcome::Released(e) => {
                    render::lock_released(&name, &e);
                    Ok(0)
                }
                ReleaseOutcome::NotHeld => {
                    eprintln!("lock {name:?} is not held");
                    Ok(1)
                }
                ReleaseOutcome::Refused(e, why) => {
                    eprintln!(
                        "not releasing {name:?}, held by {}: {why}. If you are sure its holder \
                         is gone, run again with --force.",
                        e.holder
                    );
                    Ok(EXIT_REFUSED)
                }
            }
        }
        LocksCmd::Acquire {
            name,
            timeout,
            wait,
            command,
        } => acquire_and_run(&client, &name, timeout, wait, &command).await,
    }
}

async fn acquire_and_run(
    client: &Client,
    name: &str,
    timeout: f64,
    wait: Option<f64>,
    command: &[String],
) -> anyhow::Result<i32> {
    anyhow::ensure!(
        timeout.is_finite() && timeout > 0.0,
        "--timeout must be a positive number of seconds"
    );
    let mut lock = client
        .lock(name)
        .timeout(Duration::from_secs_f64(timeout))
        .purpose(format!("celeriac locks acquire -- {}", command.join(" ")));
    lock = match wait {
        Some(w) if w > 0.0 => lock.blocking_timeout(Duration::from_secs_f64(w)),
        _ => lock.blocking(false),
    };
    let guard = match lock.acquire().await {
        Ok(g) => g,
        Err(e @ LockError::NotAcquired { .. }) => {
            eprintln!("{e}");
            return Ok(EXIT_BUSY);
        }
        Err(e) => return Err(e).context("acquiring the lock"),
    };
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("CELERIAC_LOCK_NAME", name)
        .env("CELERIAC_LOCK_FENCE", guard.fence().to_string())
        .spawn()
        .with_context(|| format!("starting {:?}", command[0]))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing a SIGTERM handler")?;
    let pid = child.id();
    let terminate = |why: &str| {
        eprintln!("{why}; sending SIGTERM to the command");
        if let Some(pid) = pid {
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
    };
    let mut lost = false;
    let status = tokio::select! {
        st = child.wait() => st,
        reason = guard.lost() => {
            lost = true;
            terminate(&format!("lock {name:?} lost: {reason}"));
            child.wait().await
        }
        _ = tokio::signal::ctrl_c() => {
            terminate("interrupted");
            child.wait().await
        }
        _ = term.recv() => {
            terminate("terminated");
            child.wait().await
        }
    }
    .context("waiting for the command")?;
    if let Err(e) = guard.release().await
        && !lost
    {
        eprintln!("warning: {e}");
    }
    if lost {
        return Ok(EXIT_LOST);
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
