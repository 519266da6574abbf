//! One task per child process: the child side (`celeriac __child`) and the wire between
//! parent and child.
//!
//! The worker never forks its threaded self: it spawns its own binary with the hidden
//! `__child` subcommand, writes one JSON request line per task on the child's stdin and
//! reads one JSON outcome line back. The child keeps the original stdout for this protocol
//! and points fd 1 at stderr, so whatever a task prints cannot corrupt an outcome. It asks
//! the kernel for SIGKILL when the worker dies (`PR_SET_PDEATHSIG`), and it runs in its own
//! process group, so the worker can kill a task's whole tree at once.

use celeriac::protocol::ExceptionInfo;
use celeriac::task::{Registry, StateSink, TaskCall, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Environment variable carrying the parent's pid (the child exits if it was re-parented
/// before it could arm its parent-death signal).
pub(crate) const PARENT_PID_ENV: &str = "CELERIAC_PARENT_PID";

/// A task handed to a child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildRequest {
    /// Task name.
    pub task: String,
    /// Task id.
    pub id: String,
    /// Positional args.
    pub args: Vec<Value>,
    /// Keyword args.
    pub kwargs: Map<String, Value>,
    /// Retries so far.
    pub retries: i64,
    /// Worker node name.
    pub hostname: String,
    /// Soft time limit, seconds.
    pub soft_time_limit: Option<f64>,
    /// `self.request.delivery_info`.
    #[serde(default)]
    pub delivery_info: Value,
}

/// What a child reports back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChildOutcome {
    /// The value.
    Ok(Value),
    /// An exception.
    Err {
        /// The exception.
        exc: ExceptionInfo,
        /// Its traceback text.
        traceback: Option<String>,
    },
    /// A retry request.
    Retry {
        /// Countdown in seconds.
        countdown: f64,
        /// Max retries.
        max_retries: Option<i64>,
        /// The exception that caused the retry (stored with the RETRY state).
        exc: ExceptionInfo,
    },
}

/// A line a child writes while its task runs: the task's `update_state`, for the worker to
/// store before the outcome comes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChildUpdate {
    /// The state to store (`PROGRESS`, or any name the task chose).
    pub state: String,
    /// Its meta (the stored `result`).
    pub meta: Value,
}

/// The wire form of a [`ChildUpdate`] line: `{"update": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChildUpdateLine {
    /// The update.
    pub update: ChildUpdate,
}

/// One line a child writes back: the outcome, and whether the child exits after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChildReport {
    /// What the task did.
    pub outcome: ChildOutcome,
    /// The child exits after this report (it gave up on a task past its soft limit), so the
    /// parent must not hand it another task.
    #[serde(default)]
    pub exiting: bool,
}

impl ChildOutcome {
    /// From a task body's result.
    pub(crate) fn from_result(r: Result<Value, TaskError>) -> Self {
        match r {
            Ok(v) => ChildOutcome::Ok(v),
            Err(TaskError::Exception { exc, traceback }) => ChildOutcome::Err { exc, traceback },
            Err(TaskError::Retry {
                countdown,
                max_retries,
                exc,
            }) => ChildOutcome::Retry {
                countdown: countdown.as_secs_f64(),
                max_retries,
                exc,
            },
        }
    }
}

/// Run a request in this process (used by the child and by the in-process pool); the
/// task's `update_state` calls go to `updates`.
pub(crate) fn execute(registry: &Registry, req: &ChildRequest, updates: StateSink) -> ChildOutcome {
    let call = TaskCall {
        args: req.args.clone(),
        kwargs: req.kwargs.clone(),
        id: req.id.clone(),
        retries: req.retries,
        hostname: req.hostname.clone(),
        delivery_info: req.delivery_info.clone(),
        updates,
    };
    ChildOutcome::from_result(registry.run(&req.task, &call))
}

/// How long a task gets, after being told its soft limit passed, to return by itself. Celery
/// raises `SoftTimeLimitExceeded` inside the task at the limit, so a client sees the failure
/// right then; a Rust task that checks the flag a few times a second still gets to return its
/// own outcome, and one that ignores it fails within this much of Celery's moment.
const SOFT_LIMIT_GRACE: Duration = Duration::from_millis(200);

/// Entry point of `celeriac __child`. Returns the process exit code.
pub(crate) fn child_main(registry: Registry, max_tasks: u64) -> i32 {
    arm_parent_death_signal();
    // Keep the real stdout for outcomes; send fd 1 (task prints) to stderr.
    // SAFETY: plain fd syscalls on fds this process owns.
    let proto_fd = unsafe { libc::dup(1) };
    if proto_fd < 0 || unsafe { libc::dup2(2, 1) } < 0 {
        eprintln!("celeriac child: cannot set up its output pipe");
        return 70;
    }
    // SAFETY: proto_fd was just returned by dup and is owned by nobody else.
    let proto: std::fs::File = unsafe { std::os::fd::FromRawFd::from_raw_fd(proto_fd) };
    let proto = Arc::new(Mutex::new(proto));
    // Generation of the task in progress, so a late soft-limit timer does not fire on the next one.
    let generation = Arc::new(AtomicU64::new(0));
    let stdin = std::io::stdin();
    let mut served = 0u64;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let req: ChildRequest = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                write_outcome(
                    &proto,
                    ChildOutcome::Err {
                        exc: ExceptionInfo::value_error(format!("bad child request: {e}")),
                        traceback: None,
                    },
                    false,
                );
                continue;
            }
        };
        let my_gen = generation.fetch_add(1, Ordering::SeqCst) + 1;
        celeriac::task::set_soft_time_limit_exceeded(false);
        if let Some(soft) = req.soft_time_limit.filter(|s| *s > 0.0) {
            let proto = proto.clone();
            let generation = generation.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs_f64(soft));
                if generation.load(Ordering::SeqCst) != my_gen {
                    return;
                }
                // Tell the task first (it may check the flag and return), then give up on it.
                celeriac::task::set_soft_time_limit_exceeded(true);
                std::thread::sleep(SOFT_LIMIT_GRACE);
                if generation.load(Ordering::SeqCst) == my_gen {
                    let exc = ExceptionInfo {
                        exc_type: "SoftTimeLimitExceeded".into(),
                        exc_message: vec![],
                        exc_module: "billiard.exceptions".into(),
                    };
                    let traceback = Some(format!(
                        "Traceback (most recent call last):\nbilliard.exceptions.SoftTimeLimitExceeded: SoftTimeLimitExceeded({soft})\n"
                    ));
                    // The task body is still running on the main thread and cannot be
                    // unwound from here: report, and say this child is gone, so the worker
                    // replaces it instead of handing it the next task.
                    write_outcome(&proto, ChildOutcome::Err { exc, traceback }, true);
                    // SAFETY: terminate now; the parent reaps us and kills our process group.
                    unsafe { libc::_exit(0) };
                }
            });
        }
        // An update is written and flushed before the task goes on, and the parent stores
        // each one before it reads the next line: the final result always comes last.
        let sink = {
            let proto = proto.clone();
            StateSink::new(move |state, meta| {
                let line = ChildUpdateLine {
                    update: ChildUpdate {
                        state: state.to_string(),
                        meta: meta.clone(),
                    },
                };
                if let Ok(mut bytes) = serde_json::to_vec(&line) {
                    bytes.push(b'\n');
                    let mut f = proto.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = f.write_all(&bytes);
                    let _ = f.flush();
                }
            })
        };
        let outcome = execute(&registry, &req, sink);
        // Claim the generation so a soft-limit timer that fires now does nothing.
        if generation
            .compare_exchange(
                my_gen,
                my_gen + 1_000_000_000,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_err()
        {
            // The timer already reported; it is exiting the process.
            std::thread::sleep(Duration::from_secs(5));
        }
        write_outcome(&proto, outcome, false);
        served += 1;
        if max_tasks > 0 && served >= max_tasks {
            break;
        }
    }
    0
}

fn write_outcome(proto: &Mutex<std::fs::File>, outcome: ChildOutcome, exiting: bool) {
    let report = ChildReport { outcome, exiting };
    let mut line =
        serde_json::to_vec(&report).unwrap_or_else(|_| b"{\"outcome\":{\"err\":null}}".to_vec());
    line.push(b'\n');
    let mut f = proto.lock().unwrap_or_else(|e| e.into_inner());
    let _ = f.write_all(&line);
    let _ = f.flush();
}

/// Ask for SIGKILL when the parent dies, and exit if it already did.
fn arm_parent_death_signal() {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a plain integer argument.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    if let Some(expected) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    {
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != expected {
            std::process::exit(0);
        }
    }
}
