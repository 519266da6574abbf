//! `celeriac locks`: list, inspect and safely break global locks, and hold a lock around a
//! shell command. Formatting and exit codes only; the work is `locks::admin` and
//! `locks::Lock`.
//!
//! Exit codes: 0 done; 1 the lock is not held (`show`, `release`); 3 `release` refused
//! because the holder is not known to be dead (use `--force`); 75 (EX_TEMPFAIL)
//! `acquire` could not take the lock in time; 76 `acquire` lost the lock while the command
//! ran (the command was sent SIGTERM); otherwise `acquire` exits with the command's code
//! (128 + signal if it was killed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::locks::admin::{LockEntry, LockKind, ReleaseOutcome};
use ::locks::{Client, Liveness, LockError};
use anyhow::Context;
use serde_json::{Value, json};

/// Exit code when `acquire` could not take the lock (EX_TEMPFAIL, as `flock -n` users expect
/// a distinct code).
pub const EXIT_BUSY: i32 = 75;
/// Exit code when the lock was lost while the command ran.
pub const EXIT_LOST: i32 = 76;
/// Exit code when `release` refused to break a lock.
pub const EXIT_REFUSED: i32 = 3;

/// `celeriac locks ...`
#[derive(Debug, clap::Subcommand)]
pub enum LocksCmd {
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

/// Run a `locks` subcommand against the Redis at `redis_url`; returns the exit code.
pub async fn run(cmd: LocksCmd, redis_url: &str) -> anyhow::Result<i32> {
    let client = Client::open(redis_url).context("opening the lock client")?;
    match cmd {
        LocksCmd::List { pattern, json } => {
            let entries = ::locks::admin::list(&client, pattern.as_deref())
                .await
                .context("listing locks")?;
            if json {
                let arr: Vec<Value> = entries.iter().map(entry_json).collect();
                println!("{}", Value::Array(arr));
            } else {
                print_table(&entries);
            }
            Ok(0)
        }
        LocksCmd::Show { name, json } => {
            match ::locks::admin::show(&client, &name)
                .await
                .context("reading the lock")?
            {
                Some(e) if json => println!("{}", entry_json(&e)),
                Some(e) => print_entry(&e),
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
                    println!("released {name:?}, held by {}", e.holder);
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

fn secs_since(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn holder_text(e: &LockEntry) -> String {
    match (&e.holder.info, e.kind) {
        (Some(i), _) => {
            let alive = match &e.liveness {
                Some(Liveness::Alive) => " alive",
                Some(Liveness::Dead(_)) => " DEAD",
                _ => "",
            };
            let mut s = format!("pid {} on {}{alive}", i.pid, i.host);
            if let Some(p) = &i.purpose {
                // Keep the table readable; `show` prints the whole purpose.
                let short: String = p.chars().take(40).collect();
                let more = if p.chars().count() > 40 { "…" } else { "" };
                s.push_str(&format!(" ({short}{more})"));
            }
            s
        }
        (None, LockKind::RedisPy) => match e.holder.uuid1() {
            Some((_, node)) => format!("redis-py, node {node:012x}"),
            None => "redis-py".into(),
        },
        (None, _) => format!("token {}", e.holder.token_str()),
    }
}

fn print_table(entries: &[LockEntry]) {
    let rows: Vec<[String; 4]> = entries
        .iter()
        .map(|e| {
            [
                e.name.clone(),
                holder_text(e),
                e.holder
                    .ttl
                    .map(human)
                    .unwrap_or_else(|| "no expiry".into()),
                e.age.map(human).unwrap_or_else(|| "?".into()),
            ]
        })
        .collect();
    let head = ["NAME", "HOLDER", "TTL", "AGE"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 3 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3]]);
    }
}

fn print_entry(e: &LockEntry) {
    println!("name:      {}", e.name);
    println!("token:     {}", e.holder.token_str());
    println!(
        "ttl:       {}",
        e.holder
            .ttl
            .map(human)
            .unwrap_or_else(|| "no expiry".into())
    );
    if let Some(a) = e.age {
        println!("age:       {}", human(a));
    }
    match &e.holder.info {
        Some(i) => {
            println!("holder:    celeriac pid {} on {}", i.pid, i.host);
            match &e.liveness {
                Some(Liveness::Alive) => println!("alive:     yes"),
                Some(Liveness::Dead(why)) => println!("alive:     no ({why})"),
                Some(Liveness::Unknown(why)) => println!("alive:     unknown ({why})"),
                None => {}
            }
            println!("fence:     {}", i.fence);
            if let Some(p) = &i.purpose {
                println!("purpose:   {p}");
            }
            if let Some(t) = &i.task_id {
                println!("task:      {t}");
            }
        }
        None => match e.holder.uuid1() {
            Some((at, node)) => println!(
                "holder:    redis-py (uuid1 token: taken at unix {:.3}, node {node:012x})",
                secs_since(at)
            ),
            None => println!("holder:    unknown (not a celeriac or redis-py default token)"),
        },
    }
}

fn entry_json(e: &LockEntry) -> Value {
    let info = e.holder.info.as_ref().map(|i| {
        json!({
            "host": i.host,
            "pid": i.pid,
            "pid_start": i.pid_start,
            "acquired_at": secs_since(i.acquired_at),
            "fence": i.fence,
            "purpose": i.purpose,
            "task_id": i.task_id,
        })
    });
    let alive = match &e.liveness {
        Some(Liveness::Alive) => json!(true),
        Some(Liveness::Dead(_)) => json!(false),
        _ => Value::Null,
    };
    json!({
        "name": e.name,
        "kind": match e.kind {
            LockKind::Celeriac => "celeriac",
            LockKind::RedisPy => "redis-py",
            LockKind::Other => "other",
        },
        "token": e.holder.token_str(),
        "ttl": e.holder.ttl.map(|t| t.as_secs_f64()),
        "age": e.age.map(|a| a.as_secs_f64()),
        "holder": info,
        "alive": alive,
    })
}
