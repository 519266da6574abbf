//! Shared helpers for the integration tests: a private `redis-server` per test, the
//! Python venv that `scripts/test.sh` creates (pinned Celery, redis-py, Flower), the
//! `celeriac` binary (and the `lockbench` example), and bounded waiting. [`runs`] counts the
//! executions and results of tasks run under fault injection.
//!
//! Nothing here skips: a missing `redis-server`, venv or binary makes the test fail with
//! a hint saying how to install it. Every wait is bounded by an explicit deadline.

use redis::Commands;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod apps;
pub mod runs;

/// Root of the workspace (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate lives one level below the workspace root")
        .to_path_buf()
}

/// A free TCP port on 127.0.0.1 (bound once, then released for the child to take).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local addr").port()
}

/// Poll `check` every 20 ms until it returns `Some`, or panic with `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private `redis-server` on a free loopback port, killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    args: Vec<String>,
    password: Option<String>,
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    /// Its working directory (RDB/AOF files land here).
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start a server with no persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Start a server with extra `--option value` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        Self::start_in(dir, None, extra)
    }

    /// Start a server in `dir` on `port` (a restart keeps the same port and data).
    pub fn start_in(dir: tempfile::TempDir, port: Option<u16>, extra: &[&str]) -> Self {
        let bin = which("redis-server").unwrap_or_else(|| {
            panic!(
                "redis-server not found on PATH. Install it with `apt-get install -y redis-server` \
                 or run scripts/test.sh, which installs it."
            )
        });
        let port = port.unwrap_or_else(free_port);
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--daemonize".into(),
            "no".into(),
            "--logfile".into(),
            "".into(),
        ];
        // Later options override earlier ones in redis-server's argument parser.
        args.extend(extra.iter().map(|s| s.to_string()));
        let password = extra
            .windows(2)
            .find(|w| w[0] == "--requirepass")
            .map(|w| w[1].to_string());
        let mut server = RedisServer {
            child: spawn_redis(&bin, &args),
            args,
            password,
            port,
            dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let port = self.port.to_string();
        let mut cli_args = vec!["-p", port.as_str()];
        if let Some(pw) = &self.password {
            cli_args.extend(["--no-auth-warning", "-a", pw]);
        }
        wait_for_pong("redis-server to accept PING", &cli_args);
    }

    /// Start the server again on the same port and directory (after [`RedisServer::terminate`]
    /// or [`RedisServer::kill`]); with AOF on, the data comes back.
    pub fn restart(&mut self) {
        let bin = which("redis-server").expect("redis-server on PATH");
        self.child = spawn_redis(&bin, &self.args);
        self.wait_ready();
    }

    /// `redis://127.0.0.1:<port>/<db>`
    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{}", self.port, db)
    }

    /// A synchronous client on `db`.
    pub fn client(&self, db: u32) -> redis::Connection {
        redis::Client::open(self.url(db))
            .expect("redis url")
            .get_connection()
            .expect("connect to test redis")
    }

    /// Stop the server gracefully (SIGTERM: it flushes its AOF) and wait for it.
    pub fn terminate(&mut self) {
        // SAFETY: kill(2) on our child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }

    /// Kill the server at once (SIGKILL) and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Start `celeriac worker <args>` with db 0 as broker and result backend (see
    /// [`CeleriacWorker::start`]).
    pub fn start_worker(&self, args: &[&str]) -> CeleriacWorker {
        CeleriacWorker::start(&self.url(0), args)
    }

    /// Run a Python client snippet with db 0 as broker and result backend, asserting success;
    /// returns stdout (see [`py`]).
    pub fn py(&self, code: &str, timeout: Duration) -> String {
        let url = self.url(0);
        py(&url, &url, code, timeout)
    }

    /// Wait up to `timeout` until `key` exists in db 0; panics naming `what` otherwise.
    pub fn wait_for_key(&self, key: &str, timeout: Duration, what: &str) {
        // A fresh connection each poll: the test's own connections may be busy or paused.
        wait_until(timeout, what, || {
            self.client(0).exists::<_, bool>(key).ok()?.then_some(())
        });
    }

    /// Wait up to `timeout` until `key` is gone from db 0 (deleted or expired); panics naming
    /// `what` otherwise.
    pub fn wait_for_key_gone(&self, key: &str, timeout: Duration, what: &str) {
        wait_until(timeout, what, || {
            let exists: bool = self.client(0).exists(key).expect("EXISTS");
            (!exists).then_some(())
        });
    }
}

/// Wait up to 10 s until `redis-cli <cli_args> PING` answers PONG (`cli_args` say where and
/// how to connect); panics naming `what` otherwise.
pub fn wait_for_pong(what: &str, cli_args: &[&str]) {
    wait_until(Duration::from_secs(10), what, || {
        let out = Command::new("redis-cli")
            .args(cli_args)
            .arg("PING")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains("PONG")
            .then_some(())
    });
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_redis(bin: &Path, args: &[String]) -> Child {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

/// Find an executable on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The Python interpreter of the test venv (`.venv/` at the workspace root, made by
/// `scripts/test.sh`), or `$CELERIAC_PYTHON`. Panics with a hint when it is missing or
/// lacks Celery.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let py = std::env::var_os("CELERIAC_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
        let ok = Command::new(&py)
            .args([
                "-c",
                "import celery, redis, flower; print(celery.__version__)",
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "Python venv with celery/redis/flower not found at {}. Run scripts/test.sh \
             (it creates .venv with the pinned versions from scripts/requirements.txt), \
             or set CELERIAC_PYTHON to an interpreter that has them.",
            py.display()
        );
        py
    })
    .clone()
}

/// The interpreter of the Celery 5.5 venv (`.venv-celery55/`, made by `scripts/test.sh`), or
/// `$CELERIAC_PYTHON_CELERY55`. Panics with a hint when it is missing.
pub fn python_celery55() -> PathBuf {
    let py = std::env::var_os("CELERIAC_PYTHON_CELERY55")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-celery55/bin/python"));
    let version = Command::new(&py)
        .args(["-c", "import celery; print(celery.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert!(
        version.as_deref().is_some_and(|v| v.starts_with("5.5")),
        "Celery 5.5 venv not found at {} (got {version:?}). Run scripts/test.sh (it creates \
         .venv-celery55 from scripts/requirements-celery55.txt) or set CELERIAC_PYTHON_CELERY55.",
        py.display()
    );
    py
}

/// Directory holding the Python helper modules used by tests (`tests/py`).
pub fn py_dir() -> PathBuf {
    workspace_root().join("tests/py")
}

/// Run a Python snippet with `tests/py` on `PYTHONPATH` and the given environment; returns
/// (exit status success, stdout, stderr). Killed after `timeout`.
pub fn run_python(code: &str, env: &[(&str, &str)], timeout: Duration) -> PyOutput {
    let mut cmd = Command::new(python());
    cmd.arg("-c")
        .arg(code)
        .env("PYTHONPATH", py_dir())
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, timeout)
}

/// Output of a bounded child run.
#[derive(Debug)]
pub struct PyOutput {
    /// Exited with status 0.
    pub success: bool,
    /// Exit code, if it exited normally.
    pub code: Option<i32>,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

/// Run a command with captured output, killing it after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> PyOutput {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn child");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = t_out.join().unwrap();
    let stderr = t_err.join().unwrap();
    match status {
        Some(st) => PyOutput {
            success: st.success(),
            code: st.code(),
            stdout,
            stderr,
        },
        None => panic!(
            "command {cmd:?} did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ),
    }
}

/// Path of the `celeriac` binary: `$CELERIAC_BIN` when set (scripts/test.sh builds the
/// workspace binaries first and sets it), else built once per test process so it is never
/// stale.
pub fn celeriac_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CELERIAC_BIN").map(PathBuf::from) {
            assert!(
                bin.is_file(),
                "CELERIAC_BIN={} is not a file",
                bin.display()
            );
            return bin;
        }
        cargo_build(
            &["-p", "celeriac-worker", "--bin", "celeriac"],
            "debug/celeriac",
        )
    })
    .clone()
}

/// The stand-alone example crate's worker (`examples/own-worker`, outside the workspace: a
/// crate of a user's own that runs the celeriac CLI with its typed tasks), built once per test
/// process (`OWN_WORKER_BIN` names a prebuilt one).
pub fn own_worker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("OWN_WORKER_BIN").map(PathBuf::from) {
            assert!(
                bin.is_file(),
                "OWN_WORKER_BIN={} is not a file",
                bin.display()
            );
            return bin;
        }
        let manifest = workspace_root().join("examples/own-worker/Cargo.toml");
        cargo_build(
            &[
                "--locked",
                "--manifest-path",
                manifest.to_str().expect("UTF-8 path"),
            ],
            "debug/own-worker",
        )
    })
    .clone()
}

/// Path of the `lockbench` helper binary (`locks/examples/lockbench.rs`), built once per test
/// process so it is never stale.
pub fn lockbench() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        cargo_build(
            &["-p", "locks", "--example", "lockbench"],
            "debug/examples/lockbench",
        )
    })
    .clone()
}

/// A `lockbench hold` process that took lock `name` on `url` (no TTL) and was then killed
/// with SIGKILL: the lock stays behind, held by a process that is provably dead.
pub fn killed_lock_holder(url: &str, name: &str) -> Proc {
    let mut cmd = Command::new(lockbench());
    cmd.args(["hold", url, name]);
    let mut holder = Proc::spawn(cmd);
    holder.wait_for_output("held ", Duration::from_secs(30));
    holder.kill_9();
    holder
}

/// `cargo build --quiet <what>` in the workspace; returns `artifact` under the target dir.
fn cargo_build(what: &[&str], artifact: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The workspace's target directory for every build, the stand-alone example's too, so
    // their shared dependencies are built once.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let status = Command::new(cargo)
        .args(["build", "--quiet"])
        .args(what)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap_or_else(|e| panic!("run cargo build {what:?}: {e}"));
    assert!(status.success(), "cargo build {what:?} failed");
    let bin = target.join(artifact);
    assert!(
        bin.is_file(),
        "cargo build {what:?} left no {}",
        bin.display()
    );
    bin
}

/// A child process killed on drop, whose stderr lines are kept for failure messages.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    pub child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proc {
    /// Spawn `cmd`, capturing stdout+stderr lines.
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("CELERIAC_TEST_ECHO").is_some() {
                        eprintln!("  | {line}");
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        Proc { child, log }
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Wait until the output contains `needle`.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(needle) {
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {needle:?} in output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Kill the process at once (SIGKILL, as `kill -9` does) and wait up to 5 s for it to exit.
    pub fn kill_9(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(5));
    }

    /// Wait for exit, up to `timeout`; returns the exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() >= deadline {
                panic!(
                    "process did not exit within {timeout:?}; output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `celeriac worker` started against a test Redis, killed on drop.
#[derive(Debug)]
pub struct CeleriacWorker {
    /// The process (stderr/stdout captured).
    pub proc_: Proc,
    /// Its node name.
    pub node: String,
}

impl CeleriacWorker {
    /// Start `celeriac worker <args>` with broker (and backend) `broker_url`, wait for "ready".
    pub fn start(broker_url: &str, args: &[&str]) -> Self {
        Self::start_with_backend(broker_url, broker_url, args)
    }

    /// Start with a distinct result backend.
    pub fn start_with_backend(broker_url: &str, backend_url: &str, args: &[&str]) -> Self {
        let node = args
            .windows(2)
            .find(|w| w[0] == "-n" || w[0] == "--hostname")
            .map(|w| w[1].to_string())
            .unwrap_or_else(|| format!("celeriac-{}@localhost", free_port()));
        let mut cmd = Command::new(celeriac_bin());
        cmd.arg("worker")
            .args(args)
            .env("CELERY_BROKER_URL", broker_url)
            .env("CELERY_RESULT_BACKEND", backend_url)
            .env_remove("CELERIAC_CONFIG");
        if !args.iter().any(|a| *a == "-n" || *a == "--hostname") {
            cmd.args(["-n", &node]);
        }
        if !args
            .iter()
            .any(|a| a.starts_with("-l") || a.starts_with("--loglevel"))
        {
            cmd.arg("-linfo");
        }
        let proc_ = Proc::spawn(cmd);
        proc_.wait_for_output("ready.", Duration::from_secs(20));
        CeleriacWorker { proc_, node }
    }

    /// Send SIGTERM (warm shutdown) and wait for exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.proc_.signal(libc::SIGTERM);
        self.proc_.wait_exit(Duration::from_secs(30))
    }
}

/// A Python Celery worker serving `tests/py/shared_tasks.py`, killed (with its pool) on drop.
#[derive(Debug)]
pub struct PythonWorker {
    /// The process.
    pub proc_: Proc,
    /// Node name.
    pub node: String,
}

impl PythonWorker {
    /// Start `celery -A shared_tasks worker <args>` against `broker_url`, wait for "ready".
    pub fn start(broker_url: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::start_with(&python(), broker_url, env, args)
    }

    /// The same with another interpreter (e.g. [`python_celery55`]).
    pub fn start_with(
        python: &Path,
        broker_url: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let node = format!("py-{}@localhost", free_port());
        let mut cmd = Command::new(python);
        cmd.args([
            "-m",
            "celery",
            "-A",
            "shared_tasks",
            "worker",
            "-n",
            &node,
            "-l",
            "info",
            "--without-mingle",
            "--without-gossip",
        ])
        .args(args)
        .current_dir(py_dir())
        .env("PYTHONPATH", py_dir())
        .env("CELERY_BROKER_URL", broker_url)
        .env_remove("CELERY_RESULT_BACKEND")
        .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc_ = Proc::spawn(cmd);
        proc_.wait_for_output("ready.", Duration::from_secs(60));
        PythonWorker { proc_, node }
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        // Kill the whole group: the prefork pool children too.
        // SAFETY: kill(2) on the process group we created.
        unsafe {
            libc::kill(-(self.proc_.pid() as i32), libc::SIGKILL);
        }
    }
}

/// Run `celeriac <args>` to completion with the given environment.
pub fn celeriac(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> PyOutput {
    let mut cmd = Command::new(celeriac_bin());
    cmd.args(args)
        .env_remove("CELERY_BROKER_URL")
        .env_remove("CELERY_RESULT_BACKEND");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, timeout)
}

/// Python code prelude: import the shared_tasks twin with broker/backend from the env.
pub const PY_PRELUDE: &str = "import json, sys, os, time\nfrom shared_tasks import *\n";

/// Run a Python snippet (after [`PY_PRELUDE`]) against `broker` (and `backend`), asserting
/// success, returning stdout.
pub fn py(broker: &str, backend: &str, code: &str, timeout: Duration) -> String {
    let out = run_python(
        &format!("{PY_PRELUDE}{code}"),
        &[
            ("CELERY_BROKER_URL", broker),
            ("CELERY_RESULT_BACKEND", backend),
        ],
        timeout,
    );
    assert!(
        out.success,
        "python failed:\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// The worker flags JWQL runs (README): one slot, a fresh child per task, fair scheduling,
/// prefetch 1, late ack.
pub const JWQL: &[&str] = &[
    "-Ofair",
    "-c1",
    "--max-tasks-per-child=1",
    "--prefetch-multiplier",
    "1",
    "--acks-late",
];

/// `python` (the test venv's) with `tests/py` as cwd and on `PYTHONPATH`, unbuffered, with
/// broker and result backend `url`.
pub fn python_cmd(url: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.current_dir(py_dir())
        .env("PYTHONPATH", py_dir())
        .env("PYTHONUNBUFFERED", "1")
        .env("CELERY_BROKER_URL", url)
        .env("CELERY_RESULT_BACKEND", url);
    cmd
}

/// Python's own `celery -A shared_tasks <args>` against `url` (broker and backend), run as a
/// process of its own and killed after `timeout`.
pub fn celery_cli(url: &str, args: &[&str], timeout: Duration) -> PyOutput {
    let mut cmd = python_cmd(url);
    cmd.args(["-m", "celery", "-A", "shared_tasks"]).args(args);
    run_with_timeout(cmd, timeout)
}

/// Python's `celery inspect ping` through `url` succeeds and worker `node` answers it.
pub fn assert_celery_ping_answered(url: &str, node: &str, timeout: Duration) {
    let out = celery_cli(url, &["inspect", "ping"], timeout);
    assert!(
        out.success && out.stdout.contains(node),
        "celery inspect ping through {} got no answer from {node}:\n{}\n{}",
        celeriac::url::redact(url),
        out.stdout,
        out.stderr
    );
}
