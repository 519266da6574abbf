//! The prefork executor: one child process per slot, replaced after `--max-tasks-per-child`
//! tasks (`1` = a fresh process for every task, the JWQL mode).
//!
//! A standby child is spawned ahead of time for each slot, so the spawn cost (~1.5 ms) is
//! paid while the previous task runs, not on the critical path. Children run in their own
//! process group; a hard time limit, a revoke with `terminate`, or a cold shutdown kills the
//! whole group (the task and anything it started) with one `kill(-pgid, sig)`.

use super::child::{ChildReport, ChildRequest, ChildUpdateLine, PARENT_PID_ENV};
use super::executor::{ExecOutcome, Executor, RunFuture};
use celeriac::task::StateSink;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

/// A child process and the pipes of its protocol (shown in `Debug` by its pid).
struct ChildProc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    served: u64,
}

impl std::fmt::Debug for ChildProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "child {}", self.pid)
    }
}

/// Child processes, with standbys spawned ahead.
#[derive(Debug)]
pub(crate) struct ChildPool {
    exe: PathBuf,
    max_tasks: u64,
    config: Option<PathBuf>,
    standby_target: usize,
    /// `CELERIAC_LOCK_URL` for the children, when the worker's environment has none.
    lock_url: Option<String>,
    standby: Mutex<Vec<ChildProc>>,
    running: Mutex<Vec<u32>>,
}

impl ChildPool {
    /// A pool spawning `exe __child`, `standby_target` children kept ready.
    pub(crate) fn new(
        exe: PathBuf,
        max_tasks: u64,
        config: Option<PathBuf>,
        standby_target: usize,
        lock_url: Option<String>,
    ) -> Arc<Self> {
        Arc::new(ChildPool {
            exe,
            max_tasks,
            config,
            standby_target,
            lock_url,
            standby: Mutex::new(Vec::new()),
            running: Mutex::new(Vec::new()),
        })
    }

    /// Spawn the standbys now (worker start-up).
    pub(crate) fn warm_up(&self) -> std::io::Result<()> {
        for _ in 0..self.standby_target {
            let c = self.spawn()?;
            self.standby.lock().expect("standby").push(c);
        }
        Ok(())
    }

    fn spawn(&self) -> std::io::Result<ChildProc> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("__child")
            .arg("--max-tasks")
            .arg(self.max_tasks.to_string());
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        if let Some(url) = &self.lock_url {
            cmd.env("CELERIAC_LOCK_URL", url);
        }
        cmd.env(PARENT_PID_ENV, std::process::id().to_string())
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok(ChildProc {
            child,
            stdin,
            stdout,
            pid,
            served: 0,
        })
    }

    /// A standby child that is still alive, else a new one. A standby can have died while
    /// it waited (killed by an operator, the OOM killer): handing it a task would turn that
    /// task into a `WorkerLostError` it did nothing to earn.
    fn take(&self) -> std::io::Result<ChildProc> {
        loop {
            let ready = self.standby.lock().expect("standby").pop();
            match ready {
                Some(mut c) => match c.child.try_wait() {
                    Ok(None) => return Ok(c),
                    _ => {
                        tracing::warn!(pid = c.pid, "a standby child had exited; replacing it");
                        kill_group(c.pid, libc::SIGKILL);
                    }
                },
                None => return self.spawn(),
            }
        }
    }

    /// Spawn replacement standbys in the background.
    fn replenish_later(self: &Arc<Self>) {
        let pool = self.clone();
        tokio::spawn(async move { pool.replenish() });
    }

    fn replenish(&self) {
        let missing = self
            .standby_target
            .saturating_sub(self.standby.lock().expect("standby").len());
        for _ in 0..missing {
            match self.spawn() {
                Ok(c) => self.standby.lock().expect("standby").push(c),
                Err(e) => {
                    tracing::error!(error = %e, "cannot spawn a standby child");
                    break;
                }
            }
        }
    }

    async fn run(
        self: &Arc<Self>,
        req: ChildRequest,
        hard_limit: Option<Duration>,
        started: Box<dyn FnOnce(u32) + Send + '_>,
        terminate: &mut mpsc::UnboundedReceiver<i32>,
        updates: &StateSink,
    ) -> ExecOutcome {
        let mut c = match self.take() {
            Ok(c) => c,
            Err(e) => {
                return ExecOutcome::WorkerLost(format!("could not start a child process: {e}"));
            }
        };
        // A child on its last task is replaced now, while it runs, so the next task finds a
        // fresh child ready (JWQL mode: every task); a long-lived child goes back to standby.
        let last_task = self.max_tasks > 0 && c.served + 1 >= self.max_tasks;
        if last_task {
            self.replenish_later();
        }
        started(c.pid);
        self.running.lock().expect("running").push(c.pid);
        let (outcome, exiting) = self
            .talk(&mut c, &req, hard_limit, terminate, updates)
            .await;
        self.running
            .lock()
            .expect("running")
            .retain(|p| *p != c.pid);
        c.served += 1;
        // A child that said it exits (it gave up on a task past its soft limit) is retired
        // like one on its last task, and replaced.
        let reusable = matches!(outcome, ExecOutcome::Done(_)) && !last_task && !exiting;
        if reusable {
            self.standby.lock().expect("standby").push(c);
        } else {
            retire(c);
            if !last_task {
                // It died unexpectedly: nobody has started its successor yet.
                self.replenish_later();
            }
        }
        outcome
    }

    /// Hand `req` to the child and wait for its report; also returns whether the child
    /// said it exits after this task.
    async fn talk(
        &self,
        c: &mut ChildProc,
        req: &ChildRequest,
        hard_limit: Option<Duration>,
        terminate: &mut mpsc::UnboundedReceiver<i32>,
        updates: &StateSink,
    ) -> (ExecOutcome, bool) {
        let mut line = serde_json::to_vec(req).expect("request serializes");
        line.push(b'\n');
        if c.stdin.write_all(&line).await.is_err() || c.stdin.flush().await.is_err() {
            return (lost(c).await, false);
        }
        // The task's updates come first, one line each, stored in order; then its outcome.
        let stdout = &mut c.stdout;
        let read = async move {
            let mut buf = String::new();
            loop {
                buf.clear();
                match stdout.read_line(&mut buf).await {
                    Ok(n) if n > 0 => {
                        if let Ok(line) = serde_json::from_str::<ChildUpdateLine>(&buf) {
                            updates.send(&line.update.state, &line.update.meta);
                            continue;
                        }
                        return Some(serde_json::from_str::<ChildReport>(&buf));
                    }
                    _ => return None,
                }
            }
        };
        let sleep = async {
            match hard_limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            r = read => match r {
                Some(Ok(r)) => return (ExecOutcome::Done(r.outcome), r.exiting),
                Some(Err(e)) => ExecOutcome::WorkerLost(format!("child sent an unreadable outcome: {e}")),
                None => lost(c).await,
            },
            _ = sleep => {
                kill_group(c.pid, libc::SIGKILL);
                let _ = c.child.wait().await;
                ExecOutcome::TimeLimit(hard_limit.map(|d| d.as_secs_f64()).unwrap_or_default())
            }
            Some(sig) = terminate.recv() => {
                kill_group(c.pid, sig);
                // Give a polite signal a moment, then make sure.
                if tokio::time::timeout(Duration::from_secs(2), c.child.wait()).await.is_err() {
                    kill_group(c.pid, libc::SIGKILL);
                    let _ = c.child.wait().await;
                }
                ExecOutcome::Terminated(sig)
            }
        };
        (outcome, false)
    }

    fn kill_children(&self) {
        for pid in self.running.lock().expect("running").iter() {
            kill_group(*pid, libc::SIGKILL);
        }
        for c in self.standby.lock().expect("standby").drain(..) {
            kill_group(c.pid, libc::SIGKILL);
        }
    }

    fn child_pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.running.lock().expect("running").clone();
        v.extend(self.standby.lock().expect("standby").iter().map(|c| c.pid));
        v
    }
}

impl Executor for Arc<ChildPool> {
    fn run<'a>(
        &'a self,
        req: ChildRequest,
        _delivery: Arc<celeriac::transport::Delivery>,
        hard_limit: Option<Duration>,
        started: Box<dyn FnOnce(u32) + Send + 'a>,
        mut terminate: mpsc::UnboundedReceiver<i32>,
        updates: StateSink,
    ) -> RunFuture<'a> {
        Box::pin(async move {
            ChildPool::run(self, req, hard_limit, started, &mut terminate, &updates).await
        })
    }

    fn kill_all(&self) {
        self.kill_children();
    }

    fn pids(&self) -> Vec<u32> {
        self.child_pids()
    }
}

/// The child closed its output without an outcome: find out how it died.
async fn lost(c: &mut ChildProc) -> ExecOutcome {
    // Kill the rest of its group before reaping, while the group id cannot be reused.
    kill_group(c.pid, libc::SIGKILL);
    let status = tokio::time::timeout(Duration::from_secs(5), c.child.wait()).await;
    let detail = match status {
        Ok(Ok(st)) => describe_exit(st),
        _ => "unknown".into(),
    };
    // Celery/billiard: "Worker exited prematurely: signal 9 (SIGKILL) Job: N."
    ExecOutcome::WorkerLost(format!("Worker exited prematurely: {detail}."))
}

fn describe_exit(st: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.signal(), st.code()) {
        (Some(sig), _) => format!("signal {sig} ({})", signal_name(sig)),
        (None, Some(code)) => format!("exitcode {code}"),
        _ => "unknown".into(),
    }
}

/// `SIGKILL`-style name of a signal number.
pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Parse `SIGKILL`, `KILL`, `9`.
pub(crate) fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    (1..32).find(|&n| signal_name(n).strip_prefix("SIG") == Some(name))
}

/// Send `sig` to the process group `pgid` (a task child's: the task and what it started).
pub(super) fn kill_group(pgid: u32, sig: i32) {
    if pgid == 0 {
        return;
    }
    // SAFETY: kill(2) on a process group we created; no memory involved.
    unsafe {
        libc::kill(-(pgid as i32), sig);
    }
}

/// A child that served its last task: let it exit, then clean up its group and reap it.
fn retire(mut c: ChildProc) {
    tokio::spawn(async move {
        drop(c.stdin);
        if tokio::time::timeout(Duration::from_secs(5), c.child.wait())
            .await
            .is_err()
        {
            kill_group(c.pid, libc::SIGKILL);
            let _ = c.child.wait().await;
        }
        // Anything the task left running in its group dies with it.
        kill_group(c.pid, libc::SIGKILL);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGKILL"), Some(9));
        assert_eq!(parse_signal("term"), Some(15));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
}
