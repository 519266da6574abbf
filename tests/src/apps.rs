//! Workers serving a Python Celery app's own tasks (`tests/py/apps`): celeriac with
//! `-A APP` in the app's directory, and Python Celery with the same app and flags, so a
//! test can send the same client script to both and compare what each stored.

use crate::{
    CeleriacWorker, Proc, PyOutput, PythonWorker, celeriac_bin, free_port, py_dir, python,
    run_with_timeout,
};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The fixture apps' directory (`tests/py/apps`).
pub fn apps_dir() -> PathBuf {
    py_dir().join("apps")
}

/// `celeriac -A <app> worker <args>` run in `dir` with `python` serving the app, broker and
/// backend `url` (through the environment, as a Celery deployment sets them), waiting for
/// the worker's ready line.
pub fn celeriac_app_worker(
    python: &Path,
    dir: &Path,
    app: &str,
    url: Option<&str>,
    args: &[&str],
) -> CeleriacWorker {
    let node = format!("celeriac-{}@localhost", free_port());
    let mut cmd = Command::new(celeriac_bin());
    cmd.current_dir(dir)
        .args(["-A", app, "worker", "-n", &node])
        .args(args)
        .env("CELERIAC_PYTHON", python)
        .env("PYTHONPATH", dir)
        .env_remove("CELERY_BROKER_URL")
        .env_remove("CELERY_RESULT_BACKEND")
        .env_remove("CELERIAC_CONFIG");
    if let Some(url) = url {
        cmd.env("CELERY_BROKER_URL", url)
            .env("CELERY_RESULT_BACKEND", url);
    }
    if !args.iter().any(|a| a.starts_with("-l")) {
        cmd.arg("-linfo");
    }
    let proc_ = Proc::spawn(cmd);
    proc_.wait_for_output("ready.", Duration::from_secs(30));
    CeleriacWorker { proc_, node }
}

/// Python Celery's `celery -A <app> worker <args>` in `dir`, broker and backend `url`.
pub fn python_app_worker(
    python: &Path,
    dir: &Path,
    app: &str,
    url: &str,
    args: &[&str],
) -> PythonWorker {
    let node = format!("py-{}@localhost", free_port());
    let mut cmd = Command::new(python);
    cmd.current_dir(dir)
        .args([
            "-m", "celery", "-A", app, "worker", "-n", &node, "-l", "info",
        ])
        .args(["--without-mingle", "--without-gossip"])
        .args(args)
        .env("PYTHONPATH", dir)
        .env("CELERY_BROKER_URL", url)
        .env("CELERY_RESULT_BACKEND", url)
        .process_group(0);
    let proc_ = Proc::spawn(cmd);
    proc_.wait_for_output("ready.", Duration::from_secs(60));
    PythonWorker { proc_, node }
}

/// Run a Python script (a file in `dir`, or `-c CODE`) with `dir` as cwd and on the path,
/// against `url`, with the test venv's interpreter; killed after `timeout`.
pub fn python_in(dir: &Path, url: &str, args: &[&str], timeout: Duration) -> PyOutput {
    let mut cmd = Command::new(python());
    cmd.current_dir(dir)
        .args(args)
        .env("PYTHONPATH", dir)
        .env("PYTHONUNBUFFERED", "1")
        .env("CELERY_BROKER_URL", url)
        .env("CELERY_RESULT_BACKEND", url);
    run_with_timeout(cmd, timeout)
}

/// [`python_in`] asserting success; returns stdout.
pub fn python_ok(dir: &Path, url: &str, code: &str, timeout: Duration) -> String {
    let out = python_in(dir, url, &["-c", code], timeout);
    assert!(
        out.success,
        "python failed:\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}
