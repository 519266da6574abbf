//! The JWQL worker line, behaviour by behaviour, driven by Python Celery clients: one task
//! per child process, fair single-slot prefetch, late ack, time limits, ETA/expires/retries,
//! shutdown phases, daemon mode and command tasks.

use redis::Commands;
use std::time::{Duration, Instant};
use tests::{JWQL, RedisServer, wait_until};

const T: Duration = Duration::from_secs(90);

fn succeeded(log: &str, id: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(id) && l.contains("succeeded"))
        .count()
}

#[test]
fn jwql_mode_runs_every_task_in_a_fresh_process() {
    let redis = RedisServer::start();
    let w = redis.start_worker(JWQL);
    let out = redis.py(
        "print(json.dumps([pid.delay().get(timeout=10) for _ in range(6)]))",
        T,
    );
    let pids: Vec<u32> = serde_json::from_str(out.trim()).unwrap();
    let distinct: std::collections::BTreeSet<_> = pids.iter().collect();
    assert_eq!(distinct.len(), pids.len(), "pids repeat: {pids:?}");
    assert!(
        !pids.contains(&w.proc_.pid()),
        "a task ran in the worker process itself"
    );
}

#[test]
fn leaked_memory_does_not_accumulate_across_tasks() {
    let redis = RedisServer::start();
    let _w = redis.start_worker(JWQL);
    let out = redis.py(
        "print(json.dumps([alloc.delay(64).get(timeout=20) for _ in range(4)]))",
        T,
    );
    let rss: Vec<u64> = serde_json::from_str(out.trim()).unwrap();
    assert!(
        rss[0] >= 64 * 1024,
        "alloc(64) should show at least 64 MiB resident: {rss:?}"
    );
    for r in &rss[1..] {
        assert!(
            *r < rss[0] + 16 * 1024,
            "memory accumulated across tasks: {rss:?}"
        );
    }
}

#[test]
fn crashing_task_raises_worker_lost_error_in_python_and_the_worker_goes_on() {
    let redis = RedisServer::start();
    let _w = redis.start_worker(JWQL);
    let out = redis.py(
        r#"
from billiard.exceptions import WorkerLostError
r = crash.delay()
t0 = time.time()
try:
    r.get(timeout=10)
    raise SystemExit("no exception")
except WorkerLostError as e:
    assert "signal 6 (SIGABRT)" in str(e), str(e)
    print("lost after", round(time.time() - t0, 3))
assert add.delay(1, 2).get(timeout=10) == 3
print("ok")
"#,
        T,
    );
    assert!(out.contains("ok"), "{out}");
    let secs: f64 = out.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(secs < 1.0, "WorkerLostError took {secs}s");
}

fn processes_with_arg(arg: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if cmd.contains(arg) && !zombie {
            found.push(pid);
        }
    }
    found
}

#[test]
fn hard_time_limit_kills_the_task_and_its_grandchildren() {
    let redis = RedisServer::start();
    let _w = redis.start_worker(JWQL);
    let marker = "61.4321";
    let out = redis.py(
        &format!(
            r#"
from billiard.exceptions import TimeLimitExceeded
r = app.send_task("shared_tasks.spawn_sleepers", args=[3, {marker}], time_limit=1.5)
try:
    r.get(timeout=20)
    raise SystemExit("no exception")
except TimeLimitExceeded as e:
    print("limit", e.args)
r = app.send_task("shared_tasks.spin", args=[30], time_limit=1)
try:
    r.get(timeout=20)
    raise SystemExit("no exception")
except TimeLimitExceeded:
    print("spin killed")
"#
        ),
        T,
    );
    assert!(
        out.contains("limit (1.5,)") && out.contains("spin killed"),
        "{out}"
    );
    wait_until(Duration::from_secs(5), "grandchildren to be gone", || {
        processes_with_arg(marker).is_empty().then_some(())
    });
}

#[test]
fn soft_time_limit_ends_a_task_that_ignores_it_with_soft_time_limit_exceeded() {
    let redis = RedisServer::start();
    let _w = redis.start_worker(JWQL);
    let out = redis.py(
        r#"
from billiard.exceptions import SoftTimeLimitExceeded
r = app.send_task("shared_tasks.sleep", args=[20], soft_time_limit=0.5)
try:
    r.get(timeout=15)
    raise SystemExit("no exception")
except SoftTimeLimitExceeded:
    print("soft")
"#,
        T,
    );
    assert_eq!(out.trim(), "soft");
}

/// A long-lived child (the default prefork pool, no `--max-tasks-per-child`) gives up on a
/// task past its soft limit by exiting; the next task, sent back to back, must run in a
/// fresh child, not be handed to the one that left (it became `WorkerLostError: exitcode 0`).
#[test]
fn the_task_right_after_a_soft_time_limit_runs_in_every_pool() {
    let redis = RedisServer::start();
    for flags in [
        &["-c1", "--soft-time-limit", "1"][..],
        &["-c1", "--soft-time-limit", "1", "--acks-late"][..],
        &["-c2", "--soft-time-limit", "1"][..],
    ] {
        let w = redis.start_worker(flags);
        let out = redis.py(
            r#"
from billiard.exceptions import SoftTimeLimitExceeded
for _ in range(2):
    r = sleep.delay(5)
    try:
        r.get(timeout=15)
        raise SystemExit("no exception")
    except SoftTimeLimitExceeded:
        pass
    print(add.delay(1, 2).get(timeout=10))
"#,
            T,
        );
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["3", "3"],
            "{flags:?}"
        );
        w.stop();
    }
}

#[test]
fn a_busy_single_slot_worker_takes_no_second_message() {
    let redis = RedisServer::start();
    let _w = redis.start_worker(JWQL);
    let mut c = redis.client(0);
    redis.py("sleep.delay(2); add.delay(1, 1)", T);
    wait_until(Duration::from_secs(5), "the sleep task to start", || {
        let held: usize = c.hlen("unacked").unwrap();
        (held == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(700));
    let queued: usize = c.llen("celery").unwrap();
    let held: usize = c.hlen("unacked").unwrap();
    assert_eq!(
        (queued, held),
        (1, 1),
        "a busy -c1 --prefetch-multiplier 1 --acks-late worker must hold exactly one message"
    );
}

#[test]
fn two_single_slot_workers_split_a_queue_of_long_tasks() {
    let redis = RedisServer::start();
    let a = redis.start_worker(JWQL);
    let b = redis.start_worker(JWQL);
    // Timed inside the client, from the first send to the last result: the interpreter's
    // start-up (seconds on a loaded machine) is no part of what is measured.
    let out = redis.py(
        "t0 = time.monotonic()\nrs = [sleep.delay(1.5) for _ in range(4)]\nvals = [r.get(timeout=30) for r in rs]\nprint(json.dumps(vals), time.monotonic() - t0)",
        T,
    );
    let (vals, secs) = out.trim().rsplit_once(' ').expect("values and seconds");
    let took = Duration::from_secs_f64(secs.parse().expect("seconds"));
    assert_eq!(vals, "[1.5, 1.5, 1.5, 1.5]");
    // 4 × 1.5 s on 2 slots is 3 s; 1 busy + 1 idle would take 6 s.
    assert!(
        took < Duration::from_millis(5200),
        "took {took:?}: a task waited while a worker idled"
    );
    let (la, lb) = (a.proc_.output(), b.proc_.output());
    let (na, nb) = (
        la.matches("succeeded").count(),
        lb.matches("succeeded").count(),
    );
    assert_eq!((na, nb), (2, 2), "work split {na}/{nb}");
}

#[test]
fn warm_shutdown_mid_task_finishes_it_and_gives_the_rest_back() {
    let redis = RedisServer::start();
    let mut first = redis.start_worker(&[
        "-c1",
        "--prefetch-multiplier",
        "2",
        "--acks-late",
        "-P",
        "prefork",
    ]);
    let ids = redis.py(
        "ids = [sleep.delay(2).id] + [echo.delay(i).id for i in range(4)]\nprint(json.dumps(ids))",
        T,
    );
    let ids: Vec<String> = serde_json::from_str(ids.trim()).unwrap();
    let mut c = redis.client(0);
    wait_until(Duration::from_secs(5), "the long task to start", || {
        first.proc_.output().contains("received").then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    first.proc_.signal(libc::SIGTERM);
    let status = first.proc_.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "warm shutdown exits 0: {status:?}");
    let first_log = first.proc_.output();
    assert_eq!(
        succeeded(&first_log, &ids[0]),
        1,
        "the running task finished before the worker exited"
    );
    let meta: Option<String> = c.get(format!("celery-task-meta-{}", ids[0])).unwrap();
    assert!(
        meta.is_some_and(|m| m.contains("SUCCESS")),
        "the running task's result is stored"
    );
    let second = redis.start_worker(&["-c1"]);
    let out = redis.py(
                &format!(
            "from celery.result import AsyncResult\nprint(json.dumps([AsyncResult(i, app=app).get(timeout=20) for i in {ids:?}]))"
        ),
        T,
    );
    assert!(out.contains("2, {\"args\": [0]"), "{out}");
    let second_log = second.proc_.output();
    for id in &ids {
        let runs = succeeded(&first_log, id) + succeeded(&second_log, id);
        assert_eq!(runs, 1, "task {id} ran {runs} times across both workers");
    }
    let unacked: usize = c.hlen("unacked").unwrap();
    assert_eq!(unacked, 0);
}

#[test]
fn cold_shutdown_kills_the_running_task_and_requeues_its_message() {
    let redis = RedisServer::start();
    let mut first = redis.start_worker(JWQL);
    let id = redis.py("print(sleep.delay(30).id)", T).trim().to_string();
    wait_until(Duration::from_secs(5), "the task to start", || {
        first.proc_.output().contains("received").then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    first.proc_.signal(libc::SIGQUIT);
    let status = first.proc_.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "cold shutdown exits non-zero");
    let mut c = redis.client(0);
    let queued: Vec<String> = c.lrange("celery", 0, -1).unwrap();
    assert_eq!(
        queued.len(),
        1,
        "the killed task's message is back in the queue"
    );
    assert!(queued[0].contains(&id) && queued[0].contains("\"redelivered\": true"));
    let meta: Option<String> = c.get(format!("celery-task-meta-{id}")).unwrap();
    assert!(
        meta.is_none(),
        "nothing stored for a task killed by cold shutdown: {meta:?}"
    );
}

#[test]
fn countdown_task_waits_without_blocking_others_and_expired_task_is_revoked() {
    let redis = RedisServer::start();
    let _w = redis.start_worker(&["-c1", "--prefetch-multiplier", "1"]);
    let out = redis.py(
        r#"
from celery.exceptions import TaskRevokedError
t0 = time.time()
later = add.apply_async((1, 1), countdown=2)
now = add.delay(2, 2)
assert now.get(timeout=10) == 4
quick = time.time() - t0
assert later.get(timeout=10) == 2
slow = time.time() - t0
print(round(quick, 2), round(slow, 2))
r = add.apply_async((1, 2), countdown=2, expires=1)
try:
    r.get(timeout=10)
    raise SystemExit("expired task ran")
except TaskRevokedError as e:
    print("revoked", e)
"#,
        T,
    );
    let mut it = out.split_whitespace();
    let quick: f64 = it.next().unwrap().parse().unwrap();
    let slow: f64 = it.next().unwrap().parse().unwrap();
    assert!(quick < 1.5, "a held ETA task blocked the next task: {out}");
    assert!(slow >= 2.0, "the ETA task ran early: {out}");
    assert!(out.contains("revoked expired"), "{out}");
}

#[test]
fn retries_republish_with_the_same_id_and_end_in_success() {
    let redis = RedisServer::start();
    let w = redis.start_worker(JWQL);
    let out = redis.py(
        "r = retry_until.delay(3)\nprint(r.get(timeout=20), r.id)",
        T,
    );
    let mut it = out.split_whitespace();
    assert_eq!(it.next(), Some("3"));
    let id = it.next().unwrap();
    let log = w.proc_.output();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(id) && l.contains("received"))
            .count(),
        4,
        "{log}"
    );
}

/// Celery's `self.retry()` publishes the retry while the original still runs, so the
/// retry arrives holding the id of a running task. Every pool must run it.
#[test]
fn a_retry_received_while_the_original_runs_is_executed_in_every_pool() {
    let redis = RedisServer::start();
    for flags in [
        &["-c1"][..],
        &["-P", "solo"][..],
        &["-P", "threads", "-c2"][..],
        &["-c1", "--acks-late"][..],
        JWQL,
    ] {
        let w = redis.start_worker(flags);
        let out = redis.py(
            "print(json.dumps([retry_until.delay(2).get(timeout=10) for _ in range(3)]))",
            T,
        );
        assert_eq!(out.trim(), "[2, 2, 2]", "{flags:?}");
        w.stop();
    }
}

/// The reduced form: a second message with the id of a task that is still running.
#[test]
fn a_message_whose_task_id_is_still_running_is_executed() {
    let redis = RedisServer::start();
    let w = redis.start_worker(&["-c1"]);
    redis.py(
        r#"
first = sleep.apply_async((1,), task_id="same-id")
second = add.apply_async((1, 2), task_id="same-id", countdown=1.5)
time.sleep(0.2)
"#,
        T,
    );
    wait_until(Duration::from_secs(10), "both messages to run", || {
        let log = w.proc_.output();
        (log.contains("shared_tasks.sleep[same-id] succeeded")
            && log.contains("shared_tasks.add[same-id] succeeded"))
        .then_some(())
    });
    let mut c = redis.client(0);
    let unacked: usize = c.hlen("unacked").unwrap();
    assert_eq!(unacked, 0, "a message stayed in unacked");
}

#[test]
fn detached_worker_writes_pidfile_and_log_and_stops_through_the_pidfile() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("w.pid");
    let logfile = dir.path().join("%n.log");
    let started = Instant::now();
    let out = tests::celeriac(
        &[
            "-A",
            "shared_tasks",
            "worker",
            "-D",
            "-E",
            "-ldebug",
            "-Ofair",
            "-c1",
            "--max-tasks-per-child=1",
            "--prefetch-multiplier",
            "1",
            "-n",
            "det@%h",
            "--pidfile",
            pidfile.to_str().unwrap(),
            "--logfile",
            logfile.to_str().unwrap(),
        ],
        &[("CELERY_BROKER_URL", url.as_str())],
        Duration::from_secs(10),
    );
    assert!(out.success, "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "-D must return at once"
    );
    let pid: i32 = wait_until(Duration::from_secs(10), "the pidfile", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    });
    // If an assertion below fails, do not leave the daemon running.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: signalling the daemon this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _guard = KillOnDrop(pid);
    assert_eq!(
        redis.py("print(add.delay(2, 3).get(timeout=10))", T).trim(),
        "5"
    );
    let log_path = dir.path().join("det.log");
    let log = wait_until(Duration::from_secs(5), "the log file", || {
        std::fs::read_to_string(&log_path)
            .ok()
            .filter(|l| l.contains("succeeded"))
    });
    assert!(log.contains("shared_tasks.add"), "{log}");
    // A second worker on the same pidfile refuses to start.
    let second = tests::celeriac(
        &["worker", "-c1", "--pidfile", pidfile.to_str().unwrap()],
        &[("CELERY_BROKER_URL", url.as_str())],
        Duration::from_secs(10),
    );
    assert!(
        !second.success && second.stderr.contains("running"),
        "{second:?}"
    );
    // SAFETY: signalling the pid the worker wrote.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_until(
        Duration::from_secs(10),
        "the worker to exit and remove its pidfile",
        || {
            // SAFETY: signal 0 only checks existence.
            (!pidfile.exists() && unsafe { libc::kill(pid, 0) } != 0).then_some(())
        },
    );
}

#[test]
fn command_tasks_run_a_program_with_json_on_stdin() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tasks.toml");
    std::fs::write(
        &cfg,
        r#"
[tasks."jwql.shared_tasks.shared_tasks.run_calwebb_detector1"]
program = "sh"
args = ["-c", "echo starting >&2; cat; echo"]

[tasks."jwql.broken"]
program = "sh"
args = ["-c", "echo 'pipeline failed: bad file' >&2; exit 7"]

[tasks."jwql.slow"]
program = "sh"
args = ["-c", "sleep 61.777; echo done"]
"#,
    )
    .unwrap();
    let _w = redis.start_worker(&[
        "-c1",
        "--max-tasks-per-child=1",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let out = redis.py(
                r#"
import subprocess
from billiard.exceptions import TimeLimitExceeded
r = app.send_task("jwql.shared_tasks.shared_tasks.run_calwebb_detector1", args=["jw01_uncal.fits; rm -rf /", "NRCA1"], kwargs={"x": 1})
print(json.dumps(r.get(timeout=10)))
try:
    app.send_task("jwql.broken").get(timeout=10)
except subprocess.CalledProcessError as e:
    print("failed", e.returncode, e.stderr.strip())
try:
    app.send_task("jwql.slow", time_limit=1).get(timeout=10)
except TimeLimitExceeded:
    print("killed")
"#,
        T,
    );
    let mut lines = out.lines();
    let v: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(
        v["args"],
        serde_json::json!(["jw01_uncal.fits; rm -rf /", "NRCA1"])
    );
    assert_eq!(v["kwargs"], serde_json::json!({"x": 1}));
    assert_eq!(lines.next(), Some("failed 7 pipeline failed: bad file"));
    assert_eq!(lines.next(), Some("killed"));
    wait_until(
        Duration::from_secs(5),
        "the killed program to be gone",
        || processes_with_arg("61.777").is_empty().then_some(()),
    );
}

#[test]
fn sigterm_on_an_idle_worker_exits_zero_quickly() {
    let redis = RedisServer::start();
    let w = redis.start_worker(JWQL);
    let t0 = Instant::now();
    assert!(w.stop().success());
    assert!(t0.elapsed() < Duration::from_secs(3));
}
