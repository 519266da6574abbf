//! Running as a daemon: `-D/--detach` (re-executes this binary in a new session, stdio on
//! /dev/null or the log file, and returns to the shell at once), `--pidfile` (refuses to
//! start over a live process, removes a stale file, deletes it on exit), and logging to
//! stderr or an appended `--logfile`.

use anyhow::{Context, Result, bail};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Detach: start the same command line without `-D`/`--detach` in a new session and exit.
/// Celery forks twice and re-execs; spawning our own binary gives the same result without
/// forking a process that may hold threads.
/// The detached worker's stdio goes to /dev/null; with `--logfile` it logs there itself
/// (after expanding `%n`/`%h`/`%i`, which needs the node name).
pub(crate) fn detach() -> Result<()> {
    let exe = std::env::current_exe().context("locating the celeriac binary")?;
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "-D" && a != "--detach")
        .map(|a| {
            // Combined short flags such as `-DE` lose their D.
            if a.starts_with('-')
                && !a.starts_with("--")
                && a.len() > 2
                && a[1..].chars().all(|c| c.is_ascii_alphabetic())
                && a.contains('D')
            {
                a.replace('D', "")
            } else {
                a
            }
        })
        .collect();
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory; we are single-threaded here.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().context("starting the detached worker")?;
    std::process::exit(0);
}

/// Set up tracing to stderr or to an appended log file.
pub(crate) fn init_logging(level: &str, logfile: Option<&str>) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| format!("{level},redis=warn").into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match logfile {
        Some(path) => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {path}"))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init()
                .ok();
        }
        None => {
            // Colours only for a person at a terminal, not for journald or a pipe.
            use std::io::IsTerminal;
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .try_init()
                .ok();
        }
    }
    Ok(())
}

/// A pid file held for the life of the worker.
#[derive(Debug)]
pub(crate) struct Pidfile {
    path: PathBuf,
}

impl Pidfile {
    /// Create `path` with our pid; refuse when it names a live process, replace it when stale.
    pub(crate) fn create(path: &str) -> Result<Self> {
        let path = PathBuf::from(path);
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id())?;
                    return Ok(Pidfile { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let content = std::fs::read_to_string(&path).unwrap_or_default();
                    match content.trim().parse::<i32>() {
                        // SAFETY: kill with signal 0 only checks for existence.
                        Ok(pid) if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 => {
                            bail!(
                                "pidfile {} names a running process ({pid}); is a worker already running?",
                                path.display()
                            )
                        }
                        _ => {
                            std::fs::remove_file(&path).with_context(|| {
                                format!("removing stale pidfile {}", path.display())
                            })?;
                        }
                    }
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("creating pidfile {}", path.display()));
                }
            }
        }
        bail!("could not create pidfile {}", path.display())
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
