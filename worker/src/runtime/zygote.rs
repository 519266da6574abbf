//! Python tasks: the executor that runs a Celery app's own task functions, one forked child
//! per task, from a zygote — one long-lived Python process that imported the app once.
//!
//! The Python side is `worker/python/celeriac_zygote.py`, embedded in this binary and run
//! with `python -c` in the app's directory, so nothing is installed into the app's
//! virtualenv. It reports the app's configuration and tasks once (`ready`), then forks a
//! child per job (a standby child is forked ahead) that runs the message through Celery's
//! own tracer — results, retries, `update_state`, task signals and canvas steps are Celery's
//! bytes by construction. Everything else stays here, unchanged for Python tasks: claim,
//! lease, ack, prefetch, events, remote control, revoke, and the time limits (SIGUSR1 to the
//! child for the soft limit, as billiard does; SIGKILL to its process group for the hard
//! one), and the results only the parent can write (`TimeLimitExceeded`, `WorkerLostError`).
//!
//! A zygote that dies takes its children with it (they have a parent-death signal): their
//! jobs end as lost workers, settled by the ack plan as any lost child is, and a new zygote
//! is started, importing the app again. `pool_restart` does the same on purpose: new jobs go
//! to a fresh zygote with the new code while the old one finishes what it runs.

use super::executor::{ExecOutcome, Executor, RunFuture};
use super::pool::{kill_group, signal_name};
use celeriac::transport::Delivery;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

/// The Python side, shipped inside the binary.
const ZYGOTE_PY: &str = include_str!("../../python/celeriac_zygote.py");

/// How to start a zygote: the interpreter, the app (`-A`) and what its children need.
#[derive(Debug, Clone)]
pub(crate) struct ZygoteSpec {
    /// The Python interpreter (`--python`, `$CELERIAC_PYTHON`, else `python3`).
    pub python: PathBuf,
    /// The app, as `-A` names it (`module`, `module:attr`, `package`, ...).
    pub app: String,
    /// The node name, the `hostname` a task's request carries.
    pub node: String,
    /// Celery's log level name for the Python side (`DEBUG`, `INFO`, ...).
    pub loglevel: String,
    /// The worker's log file, which the Python side appends to as well.
    pub logfile: Option<String>,
    /// Tasks a child runs before it exits (0 = no limit; `None`: the app's
    /// `worker_max_tasks_per_child`, else no limit).
    pub max_tasks_per_child: Option<u64>,
    /// Environment the app must see (the broker URL given with `-b`, as `celery -b` sets it).
    pub env: Vec<(String, String)>,
}

/// One task of the app, as the zygote describes it (the Celery task attributes the worker's
/// parent side uses).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct PyTask {
    /// `Task.acks_late`.
    pub acks_late: bool,
    /// `Task.reject_on_worker_lost`.
    pub reject_on_worker_lost: bool,
    /// `Task.acks_on_failure_or_timeout`.
    pub acks_on_failure_or_timeout: bool,
    /// `Task.time_limit`, seconds.
    pub time_limit: Option<f64>,
    /// `Task.soft_time_limit`, seconds.
    pub soft_time_limit: Option<f64>,
    /// `Task.rate_limit` (`"10/m"`).
    pub rate_limit: Option<String>,
    /// `Task.ignore_result`.
    pub ignore_result: bool,
}

/// What the zygote reports once the app is imported: the app's configuration, as
/// `app.conf` reads it (environment first, as Celery's `broker_url` does), and its tasks.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AppReport {
    /// `app.main`.
    pub main: Option<String>,
    /// `broker_url` (`$CELERY_BROKER_URL` first).
    pub broker_url: Option<String>,
    /// `result_backend` (`$CELERY_RESULT_BACKEND` first).
    pub result_backend: Option<String>,
    /// `task_acks_late`.
    pub task_acks_late: bool,
    /// `task_reject_on_worker_lost`.
    pub task_reject_on_worker_lost: bool,
    /// `task_acks_on_failure_or_timeout`.
    pub task_acks_on_failure_or_timeout: bool,
    /// `worker_prefetch_multiplier`.
    pub worker_prefetch_multiplier: Option<u64>,
    /// `worker_concurrency`.
    pub worker_concurrency: Option<u64>,
    /// `worker_max_tasks_per_child`.
    pub worker_max_tasks_per_child: Option<u64>,
    /// `task_time_limit`, seconds.
    pub task_time_limit: Option<f64>,
    /// `task_soft_time_limit`, seconds.
    pub task_soft_time_limit: Option<f64>,
    /// `result_expires`, seconds.
    pub result_expires: Option<f64>,
    /// `result_extended`.
    pub result_extended: bool,
    /// `task_track_started`.
    pub task_track_started: bool,
    /// `task_default_queue`.
    pub task_default_queue: Option<String>,
    /// `worker_send_task_events`.
    pub worker_send_task_events: bool,
    /// `broker_transport_options` (the JSON-representable ones).
    pub broker_transport_options: Map<String, Value>,
    /// Every task of the app, Celery's built-ins (`celery.*`) included.
    pub tasks: std::collections::BTreeMap<String, PyTask>,
    /// Python's version.
    pub python: String,
    /// Celery's version.
    pub celery: String,
    /// The zygote's pid.
    pub pid: u32,
}

/// How a Python child's run ended, as it reports it (`celeriac_zygote.run_task`). The
/// result, if any, is already stored by Celery's tracer in the child.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "state", rename_all = "UPPERCASE")]
pub(crate) enum PyReport {
    /// SUCCESS stored; `result` is the `saferepr` of the value, for `task-succeeded`.
    Success {
        /// `saferepr(retval)`.
        result: String,
        /// Seconds in the tracer.
        runtime: f64,
    },
    /// FAILURE stored; for `task-failed`.
    Failure {
        /// `safe_repr(exception)`.
        exception: String,
        /// The formatted traceback.
        traceback: Option<String>,
    },
    /// RETRY stored and the retry message published (`Task.retry`); for `task-retried`.
    Retry {
        /// `safe_repr(exc)`.
        exception: String,
        /// The traceback.
        traceback: Option<String>,
    },
    /// `Ignore` raised: nothing stored, the message is acked.
    Ignored,
    /// `Reject` raised; without requeue, FAILURE is stored.
    Rejected {
        /// Whether the message goes back to its queue.
        requeue: bool,
        /// `safe_repr(exception)`.
        exception: String,
        /// The traceback.
        traceback: Option<String>,
    },
    /// The task raised `SystemExit` or `KeyboardInterrupt`: Celery treats the child as lost.
    Lost {
        /// `SystemExit.code` when it is an int.
        exitcode: Option<i64>,
    },
}

/// How a job ended, as the zygote tells it.
#[derive(Debug)]
enum JobEnd {
    /// The child reported.
    Report(PyReport),
    /// The child died without a report (or the zygote died under it).
    Lost(String),
}

#[derive(Debug)]
struct Pending {
    started: Option<oneshot::Sender<u32>>,
    end: oneshot::Sender<JobEnd>,
    /// The zygote the job was written to (0 until written): the jobs a dying zygote takes
    /// with it are exactly these.
    zygote: u32,
}

/// The running zygotes: where their lines are written, and which one takes new jobs. Two
/// live together for a while after a pool restart: the old one finishing what it runs.
#[derive(Debug, Default)]
struct Conns {
    stdins: HashMap<u32, ChildStdin>,
    current: Option<u32>,
}

/// The executor for a Python app's tasks.
#[derive(Debug)]
pub(crate) struct PythonPool {
    spec: ZygoteSpec,
    conns: tokio::sync::Mutex<Conns>,
    /// Signalled when a (new) zygote is ready to take jobs.
    ready: tokio::sync::Notify,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Pids of running children, by job (for `stats.pool.processes` and cold shutdown).
    running: Mutex<HashMap<u64, u32>>,
    zygote_pid: std::sync::atomic::AtomicU32,
    next_job: AtomicU64,
    /// Set when the worker stops: a zygote that exits is not replaced.
    stopping: std::sync::atomic::AtomicBool,
}

/// A zygote that could not start the app.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ZygoteError {
    /// The interpreter could not be started.
    #[error("cannot start the Python interpreter {python}: {source}")]
    Spawn {
        /// The interpreter.
        python: String,
        /// Why.
        source: std::io::Error,
    },
    /// The app failed to load (its traceback went to stderr).
    #[error("the Python app {app:?} failed to load: {message}")]
    App {
        /// The app as named.
        app: String,
        /// The exception.
        message: String,
    },
    /// The zygote exited or said something unexpected before it was ready.
    #[error("the Python zygote for {app:?} exited before it was ready{detail}")]
    Exited {
        /// The app as named.
        app: String,
        /// What is known.
        detail: String,
    },
}

/// Start a zygote for `spec` and wait until it has imported the app.
async fn start(
    spec: &ZygoteSpec,
) -> Result<(Child, ChildStdin, ChildStdout, AppReport), ZygoteError> {
    let mut cmd = Command::new(&spec.python);
    cmd.arg("-c")
        .arg(ZYGOTE_PY)
        .arg("--app")
        .arg(&spec.app)
        .arg("--node")
        .arg(&spec.node)
        .arg("--loglevel")
        .arg(&spec.loglevel);
    if let Some(n) = spec.max_tasks_per_child {
        cmd.arg("--max-tasks").arg(n.to_string());
    }
    if let Some(f) = &spec.logfile {
        cmd.arg("--logfile").arg(f);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        // Celery's child logging reads these; the wire is line-buffered by hand.
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ZygoteError::Spawn {
        python: spec.python.display().to_string(),
        source,
    })?;
    let stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = stdout.read_line(&mut line).await.unwrap_or(0);
        if n == 0 {
            let status = child.wait().await.ok();
            return Err(ZygoteError::Exited {
                app: spec.app.clone(),
                detail: status.map(|s| format!(" ({s})")).unwrap_or_default(),
            });
        }
        let msg: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Some(fatal) = msg.get("fatal") {
            let _ = child.wait().await;
            return Err(ZygoteError::App {
                app: spec.app.clone(),
                message: fatal.as_str().unwrap_or("").to_string(),
            });
        }
        if let Some(ready) = msg.get("ready") {
            let report: AppReport =
                serde_json::from_value(ready.clone()).map_err(|e| ZygoteError::Exited {
                    app: spec.app.clone(),
                    detail: format!(": unreadable report: {e}"),
                })?;
            return Ok((child, stdin, stdout.into_inner(), report));
        }
    }
}

impl PythonPool {
    /// Start the first zygote and wait for the app's report. The app fails to import →
    /// an error carrying its exception (the traceback is already on stderr).
    pub(crate) async fn start(
        spec: ZygoteSpec,
    ) -> Result<(Arc<PythonPool>, AppReport), ZygoteError> {
        let (child, stdin, stdout, report) = start(&spec).await?;
        let pool = Arc::new(PythonPool {
            spec,
            conns: tokio::sync::Mutex::new(Conns::default()),
            ready: tokio::sync::Notify::new(),
            pending: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            zygote_pid: std::sync::atomic::AtomicU32::new(report.pid),
            next_job: AtomicU64::new(1),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        pool.adopt(stdin, report.pid).await;
        let serving = pool.clone();
        tokio::spawn(async move { serving.serve(child, stdout, report.pid).await });
        Ok((pool, report))
    }

    /// Make the zygote at `pid` the one new jobs go to; returns the one it replaces.
    async fn adopt(&self, stdin: ChildStdin, pid: u32) -> Option<u32> {
        let mut conns = self.conns.lock().await;
        conns.stdins.insert(pid, stdin);
        let old = conns.current.replace(pid);
        drop(conns);
        self.zygote_pid.store(pid, Ordering::Relaxed);
        self.ready.notify_waiters();
        old
    }

    /// Read a zygote's reports; when the current one exits, fail its jobs and start
    /// another, in this same loop. A retired zygote (after a pool restart) just ends.
    async fn serve(self: Arc<Self>, mut child: Child, mut stdout: ChildStdout, mut pid: u32) {
        loop {
            if !self.read(&mut child, stdout, pid).await {
                return;
            }
            match self.restart().await {
                Some((c, out, p)) => (child, stdout, pid) = (c, out, p),
                None => return,
            }
        }
    }

    /// Start a fresh zygote, which imports the app's code again, and send new jobs to it;
    /// the old one finishes the jobs it runs and exits (`pool_restart`: how new code goes
    /// live without a restart). Returns the new zygote's pid.
    pub(crate) async fn pool_restart(self: &Arc<Self>) -> Result<u32, ZygoteError> {
        let (child, stdin, stdout, report) = start(&self.spec).await?;
        let pid = report.pid;
        if let Some(old) = self.adopt(stdin, pid).await {
            let mut conns = self.conns.lock().await;
            if let Some(stdin) = conns.stdins.get_mut(&old) {
                let _ = stdin.write_all(b"{\"drain\":true}\n").await;
            }
            tracing::warn!(
                old,
                new = pid,
                "pool restart: a new Python zygote takes new tasks; the old one finishes its running tasks"
            );
        }
        let serving = self.clone();
        tokio::spawn(async move { serving.serve(child, stdout, pid).await });
        Ok(pid)
    }

    /// Read one zygote's reports until it exits, then fail the jobs it took with it.
    /// Returns whether it was the current zygote (which must then be replaced).
    async fn read(&self, child: &mut Child, stdout: ChildStdout, pid: u32) -> bool {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                tracing::warn!(line, "unreadable line from the Python zygote");
                continue;
            };
            self.on_message(&msg);
        }
        let status = child.wait().await.ok();
        // Its children died with it (parent-death signal); nothing will report for them.
        let mut conns = self.conns.lock().await;
        conns.stdins.remove(&pid);
        let current = conns.current == Some(pid);
        if current {
            conns.current = None;
        }
        drop(conns);
        // Every job written to it is known now (writes hold the connection's lock).
        let orphans: Vec<u64> = self
            .pending
            .lock()
            .expect("pending")
            .iter()
            .filter(|(_, p)| p.zygote == pid)
            .map(|(j, _)| *j)
            .collect();
        let stopping = self.stopping.load(Ordering::Relaxed);
        if current && !stopping {
            tracing::error!(pid, status = ?status, jobs = orphans.len(), "the Python zygote exited; its running tasks are lost; starting a new one");
        } else if !orphans.is_empty() {
            tracing::warn!(
                pid,
                jobs = orphans.len(),
                "a Python zygote exited with tasks running"
            );
        }
        for job in orphans {
            self.end(
                job,
                JobEnd::Lost("Worker exited prematurely: the Python zygote exited.".into()),
            );
        }
        current && !stopping
    }

    /// Start a new zygote after one exited (not when the worker stops), retrying with a
    /// capped backoff while the app fails to import.
    async fn restart(&self) -> Option<(Child, ChildStdout, u32)> {
        let mut delay = Duration::from_millis(100);
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return None;
            }
            match start(&self.spec).await {
                Ok((child, stdin, stdout, report)) => {
                    tracing::warn!(pid = report.pid, "a new Python zygote is serving the app");
                    self.adopt(stdin, report.pid).await;
                    return Some((child, stdout, report.pid));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot restart the Python zygote; trying again in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn on_message(&self, msg: &Value) {
        let job = |k: &str| msg.get(k).and_then(Value::as_u64);
        if let Some(j) = job("started") {
            let pid = msg["pid"].as_u64().unwrap_or(0) as u32;
            self.running.lock().expect("running").insert(j, pid);
            if let Some(p) = self.pending.lock().expect("pending").get_mut(&j)
                && let Some(tx) = p.started.take()
            {
                let _ = tx.send(pid);
            }
        } else if let Some(j) = job("done") {
            match serde_json::from_value::<PyReport>(msg["report"].clone()) {
                Ok(r) => self.end(j, JobEnd::Report(r)),
                Err(e) => self.end(
                    j,
                    JobEnd::Lost(format!(
                        "Worker exited prematurely: unreadable report ({e})."
                    )),
                ),
            }
        } else if let Some(j) = job("lost") {
            let detail = match (msg["signal"].as_i64(), msg["exitcode"].as_i64()) {
                (Some(sig), _) => format!("signal {sig} ({})", signal_name(sig as i32)),
                (None, Some(code)) => format!("exitcode {code}"),
                _ => "unknown".into(),
            };
            self.end(
                j,
                JobEnd::Lost(format!("Worker exited prematurely: {detail}.")),
            );
        }
    }

    fn end(&self, job: u64, end: JobEnd) {
        self.running.lock().expect("running").remove(&job);
        if let Some(p) = self.pending.lock().expect("pending").remove(&job) {
            let _ = p.end.send(end);
        }
    }

    /// Write a job's line to the current zygote, waiting for one while it (re)starts, and
    /// record which zygote took it.
    async fn write(&self, line: &[u8], job: u64) -> std::io::Result<()> {
        loop {
            let notified = self.ready.notified();
            {
                let mut conns = self.conns.lock().await;
                if let Some(pid) = conns.current
                    && let Some(stdin) = conns.stdins.get_mut(&pid)
                {
                    if let Some(p) = self.pending.lock().expect("pending").get_mut(&job) {
                        p.zygote = pid;
                    }
                    stdin.write_all(line).await?;
                    return Ok(());
                }
            }
            if self.stopping.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("the worker is stopping"));
            }
            notified.await;
        }
    }

    /// Signal a job's child (its process group), through the zygote that runs it.
    async fn signal(&self, job: u64, sig: i32) {
        let Some(pid) = self
            .pending
            .lock()
            .expect("pending")
            .get(&job)
            .map(|p| p.zygote)
        else {
            return;
        };
        let line = format!("{{\"signal\":{job},\"sig\":{sig}}}\n");
        if let Some(stdin) = self.conns.lock().await.stdins.get_mut(&pid) {
            let _ = stdin.write_all(line.as_bytes()).await;
        }
    }

    async fn run_job(
        &self,
        delivery: Arc<Delivery>,
        soft: Option<Duration>,
        hard: Option<Duration>,
        started: Box<dyn FnOnce(u32) + Send + '_>,
        mut terminate: mpsc::UnboundedReceiver<i32>,
    ) -> ExecOutcome {
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        let (start_tx, mut start_rx) = oneshot::channel();
        let (end_tx, mut end_rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(
            job,
            Pending {
                started: Some(start_tx),
                end: end_tx,
                zygote: 0,
            },
        );
        let mut line = Vec::with_capacity(delivery.raw.len() + 32);
        line.extend_from_slice(format!("{{\"run\":{job},\"envelope\":").as_bytes());
        if delivery.raw.contains(&b'\n') {
            // The wire is one JSON object per line: an envelope a producer pretty-printed is
            // passed on re-encoded on one line (the same JSON value).
            match serde_json::from_slice::<Value>(&delivery.raw) {
                Ok(v) => line.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default()),
                Err(_) => line.extend_from_slice(b"null"),
            }
        } else {
            line.extend_from_slice(&delivery.raw);
        }
        line.extend_from_slice(b"}\n");
        if let Err(e) = self.write(&line, job).await {
            self.pending.lock().expect("pending").remove(&job);
            return ExecOutcome::WorkerLost(format!(
                "Worker exited prematurely: the Python zygote took no job ({e})."
            ));
        }
        enum Kill {
            Hard(f64),
            Term(i32),
        }
        let mut started = Some(started);
        let mut t0: Option<tokio::time::Instant> = None;
        let mut soft_sent = false;
        let mut killed: Option<Kill> = None;
        loop {
            let soft_at = soft.zip(t0).filter(|_| !soft_sent).map(|(s, t)| t + s);
            let hard_at = hard
                .zip(t0)
                .filter(|_| killed.is_none())
                .map(|(h, t)| t + h);
            tokio::select! {
                pid = &mut start_rx, if t0.is_none() => {
                    t0 = Some(tokio::time::Instant::now());
                    if let (Ok(pid), Some(f)) = (pid, started.take()) {
                        f(pid);
                    }
                }
                end = &mut end_rx => {
                    return match (end, killed) {
                        (Ok(JobEnd::Report(PyReport::Lost { exitcode })), _) => ExecOutcome::WorkerLost(
                            format!("Worker exited prematurely: exitcode {}.", exitcode.unwrap_or(0)),
                        ),
                        (Ok(JobEnd::Report(r)), _) => ExecOutcome::Traced(r),
                        (_, Some(Kill::Hard(secs))) => ExecOutcome::TimeLimit(secs),
                        (_, Some(Kill::Term(sig))) => ExecOutcome::Terminated(sig),
                        (Ok(JobEnd::Lost(detail)), None) => ExecOutcome::WorkerLost(detail),
                        (Err(_), None) => ExecOutcome::WorkerLost("Worker exited prematurely: unknown.".into()),
                    };
                }
                _ = tokio::time::sleep_until(soft_at.unwrap_or_else(tokio::time::Instant::now)), if soft_at.is_some() => {
                    soft_sent = true;
                    self.signal(job, libc::SIGUSR1).await;
                }
                _ = tokio::time::sleep_until(hard_at.unwrap_or_else(tokio::time::Instant::now)), if hard_at.is_some() => {
                    killed = Some(Kill::Hard(hard.map_or(0.0, |h| h.as_secs_f64())));
                    self.signal(job, libc::SIGKILL).await;
                }
                sig = terminate.recv(), if killed.is_none() => {
                    if let Some(sig) = sig {
                        killed = Some(Kill::Term(sig));
                        self.signal(job, sig).await;
                    }
                }
            }
        }
    }

    /// Stop: close every zygote's stdin (each kills what still runs and exits).
    pub(crate) async fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        *self.conns.lock().await = Conns::default();
        self.ready.notify_waiters();
    }
}

impl Executor for Arc<PythonPool> {
    fn run<'a>(
        &'a self,
        req: super::child::ChildRequest,
        delivery: Arc<Delivery>,
        hard_limit: Option<Duration>,
        started: Box<dyn FnOnce(u32) + Send + 'a>,
        terminate: mpsc::UnboundedReceiver<i32>,
        // Celery's tracer stores a Python task's `update_state` itself.
        _updates: celeriac::task::StateSink,
    ) -> RunFuture<'a> {
        let soft = req.soft_time_limit.map(Duration::from_secs_f64);
        Box::pin(self.run_job(delivery, soft, hard_limit, started, terminate))
    }

    fn kill_all(&self) {
        for pid in self.running.lock().expect("running").values() {
            kill_group(*pid, libc::SIGKILL);
        }
    }

    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.zygote_pid.load(Ordering::Relaxed)];
        pids.extend(self.running.lock().expect("running").values().copied());
        pids
    }
}
