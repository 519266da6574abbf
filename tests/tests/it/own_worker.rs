//! A crate of a user's own (`examples/own-worker`, outside the workspace, depending on
//! celeriac by path) runs the whole `celeriac` CLI with its own `#[celeriac::task]`
//! functions: Python clients call them by name, with Python's argument rules and
//! exceptions, and in the JWQL mode every task runs in a child that is the user's binary.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tests::{Proc, RedisServer, free_port, own_worker_bin, python_cmd};

/// `own-worker [-A APP] worker <flags>` on broker and backend `url` (run in `dir`, with the
/// test venv's Python for an app), waiting for its ready line; returns it and its node name.
fn start_own_worker(
    url: &str,
    dir: Option<&Path>,
    before: &[&str],
    flags: &[&str],
) -> (Proc, String) {
    let node = format!("own-{}@localhost", free_port());
    let mut cmd = Command::new(own_worker_bin());
    if let Some(dir) = dir {
        cmd.current_dir(dir).env("CELERIAC_PYTHON", tests::python());
    }
    cmd.args(before)
        .args(["worker", "-n", &node, "-linfo"])
        .args(flags)
        .env("CELERY_BROKER_URL", url)
        .env("CELERY_RESULT_BACKEND", url)
        .env_remove("CELERIAC_CONFIG");
    let worker = Proc::spawn(cmd);
    worker.wait_for_output("ready.", Duration::from_secs(30));
    (worker, node)
}

/// Run `code` in a Python client whose `app` is a bare Celery app on `url` (it knows the
/// tasks by name only); returns its stdout lines, failing with the worker's log if it fails.
fn client(url: &str, code: &str, timeout: Duration, worker: &Proc) -> Vec<String> {
    let mut py = python_cmd(url);
    py.args([
        "-c",
        &format!(
            "from celery import Celery\n\
             import os, time\n\
             app = Celery(broker=os.environ['CELERY_BROKER_URL'], \
             backend=os.environ['CELERY_RESULT_BACKEND'])\n{code}"
        ),
    ]);
    let out = tests::run_with_timeout(py, timeout);
    assert!(out.success, "{out:?}\nworker:\n{}", worker.output());
    out.stdout.lines().map(str::to_string).collect()
}

#[test]
fn a_crate_of_its_own_serves_its_typed_tasks_one_child_of_its_own_binary_per_task() {
    let server = RedisServer::start();
    let url = server.url(0);
    let (worker, node) = start_own_worker(
        &url,
        None,
        &[],
        &[
            "-Ofair",
            "-c1",
            "--max-tasks-per-child=1",
            "--prefetch-multiplier",
            "1",
        ],
    );
    let code = "def call(name, args=(), kwargs=None):\n\
        \x20   try:\n\
        \x20       return repr(app.send_task(name, args, kwargs or {}).get(timeout=20))\n\
        \x20   except Exception as e:\n\
        \x20       return f'{type(e).__name__}: {e}'\n\
        print(call('own.add', (2, 3)))\n\
        print(call('own.add', kwargs={'x': 2, 'y': 40}))\n\
        print(call('own.greet', ('Ada',)))\n\
        print(call('own.greet', ('Ada',), {'greeting': 'Hi'}))\n\
        print(call('own.add', ('a', 1)))\n\
        print(call('own.add', (1,)))\n\
        print(call('own.add', (1, 2, 3)))\n\
        print(call('own.add', (1,), {'x': 2}))\n\
        print(call('own.add', (1, 2), {'z': 2}))\n\
        print(call('own.sqrt', (-4,)))\n\
        print(call('own.sqrt', (16,)))\n\
        print(call('own.exe'))\n\
        print(len({app.send_task('own.pid').get(timeout=20) for _ in range(3)}))\n\
        r = app.send_task('own.whoami')\n\
        w = r.get(timeout=20)\n\
        print(w[:4], w[4] == r.id)\n";
    let lines = client(&url, code, Duration::from_secs(120), &worker);
    let expected = [
        "5",
        "42",
        "'Hello, Ada!'",
        "'Hi, Ada!'",
        "TypeError: add() argument 'x': invalid type: string \"a\", expected i64",
        "TypeError: add() missing 1 required positional argument: 'y'",
        "TypeError: add() takes 2 positional arguments but 3 were given",
        "TypeError: add() got multiple values for argument 'x'",
        "TypeError: add() got an unexpected keyword argument 'z'",
        "ValueError: math domain error: sqrt(-4)",
        "4.0",
        "'own-worker'",
        "3",
    ];
    let expected: Vec<String> = expected
        .iter()
        .map(|s| s.to_string())
        .chain([format!("['own.whoami', '{node}', '\"celery\"', '0'] True")])
        .collect();
    assert_eq!(lines, expected, "\nworker:\n{}", worker.output());
}

#[test]
fn a_crate_of_its_own_serves_a_python_app_beside_its_own_tasks() {
    let server = RedisServer::start();
    let url = server.url(0);
    let (worker, _) = start_own_worker(
        &url,
        Some(&tests::apps::apps_dir()),
        &["-A", "pytasks"],
        &[
            "-c1",
            "--max-tasks-per-child=1",
            "--prefetch-multiplier",
            "1",
        ],
    );
    let lines = client(
        &url,
        "print(app.send_task('pytasks.add', (2, 3)).get(timeout=20), \
         app.send_task('own.add', (4, 5)).get(timeout=20))\n",
        Duration::from_secs(60),
        &worker,
    );
    assert_eq!(lines, ["5 9"], "\nworker:\n{}", worker.output());
}

#[test]
fn a_typed_tasks_own_options_are_honoured_by_the_worker() {
    let server = RedisServer::start();
    let url = server.url(0);
    let (worker, _) = start_own_worker(&url, None, &[], &["-c1", "--max-tasks-per-child=1"]);
    let lines = client(
        &url,
        "t = time.time()\n\
         try:\n\
         \x20   app.send_task('own.spin', (30,)).get(timeout=20)\n\
         except Exception as e:\n\
         \x20   print(type(e).__name__, e, time.time() - t < 10)\n\
         q = app.send_task('own.quiet')\n\
         print(app.send_task('own.add', (1, 1)).get(timeout=20))\n\
         time.sleep(0.5)\n\
         print(q.state, app.backend.client.exists('celery-task-meta-' + q.id))\n",
        Duration::from_secs(60),
        &worker,
    );
    assert_eq!(
        lines,
        [
            "TimeLimitExceeded TimeLimitExceeded(1.0,) True",
            "2",
            "PENDING 0"
        ],
        "\nworker:\n{}",
        worker.output()
    );
    assert!(
        worker.output().contains("own.quiet"),
        "the quiet task ran: {}",
        worker.output()
    );
}
