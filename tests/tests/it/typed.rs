//! Typed Rust tasks (`#[celeriac::task]`) as clients see them: a Rust client calling a task
//! Python serves through a declared stub, Python clients calling typed Rust tasks with
//! Python's argument rules, and `update_state` from a Rust task, beside Python Celery's.

use celeriac::client::ClientError;
use serde_json::Value;
use std::time::Duration;
use tests::apps::{apps_dir, celeriac_app_worker};
use tests::{CeleriacWorker, PythonWorker, RedisServer, python};

/// Tasks of the Python fixture app (`tests/py/apps/pytasks.py`), declared by signature.
mod pytasks {
    /// `pytasks.add(x, y)`.
    #[celeriac::task(name = "pytasks.add", remote)]
    pub fn add(x: i64, y: i64) -> i64;

    /// The same task, declared with a result type it does not return.
    #[celeriac::task(name = "pytasks.add", remote)]
    pub fn add_as_text(x: i64, y: i64) -> String;

    /// `pytasks.custom_failure(msg)`: raises the app's own `CustomError(msg)`.
    #[celeriac::task(name = "pytasks.custom_failure", remote)]
    pub fn custom_failure(msg: String) -> String;

    /// `pytasks.echo(*args, **kwargs)`.
    #[celeriac::task(name = "pytasks.echo", remote)]
    pub fn echo(a: Vec<i64>, b: Option<String>) -> serde_json::Value;
}

#[test]
fn a_rust_client_calls_a_python_served_task_through_a_declared_stub_with_typed_results_and_errors()
{
    let server = RedisServer::start();
    let url = server.url(0);
    let _w = celeriac_app_worker(
        &python(),
        &apps_dir(),
        "pytasks",
        Some(&url),
        &["-c1", "--prefetch-multiplier", "1"],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = celeriac::Client::connect(&url, &url).await.unwrap();
        let wait = Duration::from_secs(20);
        let sum: i64 = pytasks::add::delay(&client, 2, 40)
            .await
            .unwrap()
            .get(wait)
            .await
            .unwrap();
        assert_eq!(sum, 42);
        let r = pytasks::add::apply_async(&client, (1, 2), celeriac::SendOptions::default())
            .await
            .unwrap();
        assert_eq!(r.get(wait).await.unwrap(), 3);
        let echoed = pytasks::echo::delay(&client, vec![1, 2], None)
            .await
            .unwrap()
            .get(wait)
            .await
            .unwrap();
        assert_eq!(echoed["args"], serde_json::json!([[1, 2], null]));
        // The remote exception, typed: the app's own class and module.
        match pytasks::custom_failure::delay(&client, "no".into())
            .await
            .unwrap()
            .get(wait)
            .await
        {
            Err(ClientError::Remote { exc, state, .. }) => {
                assert_eq!(
                    (
                        exc.exc_type.as_str(),
                        exc.exc_module.as_str(),
                        state.as_str()
                    ),
                    ("CustomError", "pytasks", "FAILURE")
                );
            }
            other => panic!("expected the remote CustomError, got {other:?}"),
        }
        // A result of another type than declared is a typed error, not a panic.
        match pytasks::add_as_text::delay(&client, 1, 1)
            .await
            .unwrap()
            .get(wait)
            .await
        {
            Err(ClientError::Decode { expected, .. }) => assert!(expected.contains("String")),
            other => panic!("expected a decode error, got {other:?}"),
        }
    });
}

/// A Python client sends `shared_tasks.progress(5, 0.15)` and records every distinct
/// `(state, result)` it reads (both from one read of the meta) until the result is ready.
const WATCH_PROGRESS: &str = "r = app.send_task('shared_tasks.progress', (5, 0.15))\n\
    seen, deadline = [], time.time() + 30\n\
    while time.time() < deadline:\n\
    \x20   m = app.backend.get_task_meta(r.id)\n\
    \x20   s = (m['status'], m['result'])\n\
    \x20   if not seen or seen[-1] != s:\n\
    \x20       seen.append(s)\n\
    \x20   if m['status'] in ('SUCCESS', 'FAILURE'):\n\
    \x20       break\n\
    \x20   time.sleep(0.01)\n\
    print(json.dumps(seen))\n";

fn progress_seen(url: &str) -> Vec<Value> {
    let out = tests::py(url, url, WATCH_PROGRESS, Duration::from_secs(60));
    serde_json::from_str(out.trim()).expect("the client prints JSON")
}

fn assert_progress(seen: &[Value], who: &str) {
    let progress: Vec<&Value> = seen.iter().filter(|s| s[0] == "PROGRESS").collect();
    assert!(
        progress.len() >= 3,
        "{who}: most PROGRESS steps are seen: {seen:?}"
    );
    for p in &progress {
        assert_eq!(p[1]["total"], 5, "{who}: {seen:?}");
    }
    let currents: Vec<i64> = progress
        .iter()
        .map(|p| p[1]["current"].as_i64().unwrap())
        .collect();
    assert!(
        currents.windows(2).all(|w| w[0] < w[1]),
        "{who}: steps in order: {seen:?}"
    );
    assert_eq!(
        seen.last().unwrap(),
        &serde_json::json!(["SUCCESS", 5]),
        "{who}: ends in SUCCESS: {seen:?}"
    );
}

#[test]
fn update_state_from_a_rust_task_shows_progress_then_success_as_from_a_python_task() {
    // Python Celery first, with the Python twin of the task: the assertions hold there.
    let server = RedisServer::start();
    let url = server.url(0);
    let py = PythonWorker::start(&url, &[], &["-P", "solo"]);
    let theirs = progress_seen(&url);
    drop(py);
    assert_progress(&theirs, "celery");
    // celeriac, one child per task (updates go through the child's pipe) and in process.
    for flags in [
        &[
            "-c1",
            "--max-tasks-per-child=1",
            "--prefetch-multiplier",
            "1",
            "-Ofair",
        ][..],
        &["-P", "solo"][..],
    ] {
        let server = RedisServer::start();
        let url = server.url(0);
        let _w = CeleriacWorker::start(&url, flags);
        assert_progress(&progress_seen(&url), &format!("celeriac {flags:?}"));
    }
}

#[test]
fn python_clients_get_pythons_type_errors_from_typed_rust_tasks() {
    let server = RedisServer::start();
    let url = server.url(0);
    let _w = CeleriacWorker::start(&url, &["-P", "solo"]);
    let out = server.py(
        "def call(name, *args, **kwargs):\n\
         \x20   try:\n\
         \x20       return repr(app.send_task(name, args, kwargs).get(timeout=20))\n\
         \x20   except Exception as e:\n\
         \x20       return f'{type(e).__name__}: {e}'\n\
         print(call('shared_tasks.alloc', 'lots'))\n\
         print(call('shared_tasks.alloc'))\n\
         print(call('shared_tasks.append_line', '/dev/null', 'x', 0, 1))\n\
         print(call('shared_tasks.append_line', path='/dev/null', line='kw'))\n\
         print(call('shared_tasks.spin', 0, seconds=0))\n",
        Duration::from_secs(60),
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "TypeError: alloc() argument 'mib': invalid type: string \"lots\", expected f64",
            "TypeError: alloc() missing 1 required positional argument: 'mib'",
            "TypeError: append_line() takes from 2 to 3 positional arguments but 4 were given",
            "'kw'",
            "TypeError: spin() got multiple values for argument 'seconds'",
        ]
    );
}

#[test]
fn a_typed_task_under_only_one_fails_as_not_run_while_redis_py_holds_its_lock() {
    let server = RedisServer::start();
    let url = server.url(0);
    let _w = CeleriacWorker::start(&url, &["-c1", "--max-tasks-per-child=1"]);
    let out = server.py(
        "import redis\n\
         lock = redis.Redis.from_url(os.environ['CELERY_BROKER_URL']).lock('calibrate:jw01.fits', timeout=30)\n\
         assert lock.acquire(blocking=False)\n\
         try:\n\
         \x20   r = app.send_task('shared_tasks.calibrate', ('jw01.fits',))\n\
         \x20   print(r.get(timeout=20))\n\
         except Exception as e:\n\
         \x20   raw = json.loads(app.backend.client.get('celery-task-meta-' + r.id))\n\
         \x20   print(raw['status'], raw['result']['exc_module'], type(e).__name__, e)\n\
         lock.release()\n\
         print(app.send_task('shared_tasks.calibrate', ('jw01.fits',)).get(timeout=20))\n",
        Duration::from_secs(60),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(
            "FAILURE locks.error NotRun skipped: lock `calibrate:jw01.fits` is held by redis-py"
        ),
        "{out}"
    );
    assert_eq!(lines[1], "9", "the lock free, the task runs: {out}");
}

#[test]
fn an_async_rust_task_runs_in_a_child_and_in_process() {
    for flags in [
        &[
            "-c1",
            "--max-tasks-per-child=1",
            "--prefetch-multiplier",
            "1",
        ][..],
        &["-P", "solo"][..],
        &["-P", "threads", "-c2"][..],
    ] {
        let server = RedisServer::start();
        let _w = CeleriacWorker::start(&server.url(0), flags);
        let out = server.py(
            "rs = [app.send_task('shared_tasks.async_sleep', (0.2,)) for _ in range(2)]\n\
             print([r.get(timeout=20) for r in rs], app.send_task('shared_tasks.add', (1, 2)).get(timeout=20))\n",
            Duration::from_secs(60),
        );
        assert_eq!(out.trim(), "[0.2, 0.2] 3", "{flags:?}");
    }
}
