//! A Celery app's own Python tasks, served unchanged by `celeriac -A APP worker`: one child
//! per task forked from a zygote that imported the app once. The fixture app
//! (`tests/py/apps/pytasks.py`) has a task for each way a task can end; the differential
//! test sends the same client script (`pytasks_client.py`) to a Python Celery worker and to
//! celeriac, on the same app, and compares every stored result meta field by field.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::apps::{apps_dir, celeriac_app_worker, python_app_worker, python_in, python_ok};
use tests::{RedisServer, celeriac_bin, python, python_celery55, wait_until};

/// JWQL's worker flags (the cheatsheet's line, less `-D -E -ldebug`).
const JWQL_FLAGS: &[&str] = &[
    "-Ofair",
    "-c1",
    "--max-tasks-per-child=1",
    "--prefetch-multiplier",
    "1",
];

/// What the client script stored, as JSON, with `python` serving the app, by celeriac with
/// `celeriac` flags, or by Python Celery when `None`.
fn stored_by(python: &Path, celeriac: Option<&[&str]>) -> Value {
    let server = RedisServer::start();
    let url = server.url(0);
    let dir = apps_dir();
    // Celery in JWQL mode manages under a task a second (a 5 s refill timer per child), so
    // its side keeps its child; celeriac runs the JWQL line, one child per task.
    let _worker: Box<dyn std::any::Any> = if let Some(flags) = celeriac {
        Box::new(celeriac_app_worker(
            python,
            &dir,
            "pytasks",
            Some(&url),
            flags,
        ))
    } else {
        Box::new(python_app_worker(
            python,
            &dir,
            "pytasks",
            &url,
            &["-c1", "--prefetch-multiplier", "1"],
        ))
    };
    let mut cmd = std::process::Command::new(python);
    cmd.current_dir(&dir)
        .arg("pytasks_client.py")
        .env("PYTHONPATH", &dir)
        .env("CELERY_BROKER_URL", &url)
        .env("CELERY_RESULT_BACKEND", &url);
    let out = tests::run_with_timeout(cmd, Duration::from_secs(120));
    assert!(
        out.success,
        "client failed ({}):\n{}\n{}",
        if celeriac.is_some() {
            "celeriac"
        } else {
            "celery"
        },
        out.stdout,
        out.stderr
    );
    serde_json::from_str(&out.stdout).expect("client prints JSON")
}

fn differential(python: &Path, celeriac: &[&str]) {
    let celery = stored_by(python, None);
    let ours = stored_by(python, Some(celeriac));
    let mut differences = Vec::new();
    for (scenario, theirs) in celery.as_object().expect("object") {
        let mine = &ours[scenario];
        if mine != theirs {
            differences.push(format!(
                "{scenario}:\n  celery:   {theirs}\n  celeriac: {mine}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "stored metas differ from Python Celery's:\n{}",
        differences.join("\n")
    );
    // The scenarios ran: nothing compared equal by being absent on both sides.
    for s in [
        "add",
        "whoami",
        "retrying",
        "custom_failure",
        "soft_catch",
        "chord",
    ] {
        assert!(ours[s].is_object(), "{s} stored nothing: {ours}");
    }
    assert_eq!(ours["add"]["result"], 5);
    assert_eq!(ours["soft_catch"]["result"], "caught");
    assert_eq!(ours["retrying"]["result"], 2);
    assert_eq!(ours["chord"]["result"], 6);
    assert_eq!(ours["custom_failure"]["result"]["exc_type"], "CustomError");
    assert_eq!(ours["custom_failure"]["result"]["exc_module"], "pytasks");
}

#[test]
fn every_way_a_python_task_ends_stores_what_python_celery_stores() {
    differential(&python(), JWQL_FLAGS);
}

#[test]
fn every_way_a_python_task_ends_stores_what_python_celery_stores_with_kept_children() {
    // The child serves task after task, as Celery's prefork child does (max tasks 0).
    differential(
        &python(),
        &[
            "-c1",
            "--prefetch-multiplier",
            "1",
            "--max-tasks-per-child",
            "0",
        ],
    );
}

#[test]
fn every_way_a_python_task_ends_stores_what_python_celery_5_5_stores() {
    differential(&python_celery55(), JWQL_FLAGS);
}

fn jwql_worker(server: &RedisServer) -> tests::CeleriacWorker {
    celeriac_app_worker(
        &python(),
        &apps_dir(),
        "pytasks",
        Some(&server.url(0)),
        JWQL_FLAGS,
    )
}

#[test]
fn a_hard_time_limit_kills_the_python_tasks_whole_process_group() {
    let server = RedisServer::start();
    let _w = jwql_worker(&server);
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("grandchild.pid");
    let out = python_ok(
        &apps_dir(),
        &server.url(0),
        &format!(
            "import pytasks\n\
             r = pytasks.spawn.apply_async((60, {:?}), time_limit=1)\n\
             try:\n    r.get(timeout=20)\nexcept Exception as e:\n    print(type(e).__name__, e)\n\
             print(pytasks.add.delay(1, 2).get(timeout=20))",
            pidfile.to_str().unwrap()
        ),
        Duration::from_secs(40),
    );
    assert!(out.contains("TimeLimitExceeded"), "{out}");
    assert!(out.trim_end().ends_with('3'), "the next task runs: {out}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until(
        Duration::from_secs(5),
        "the task's subprocess to be gone",
        || {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for init to reap it.
            (state.is_empty() || state.split_whitespace().nth(2) == Some("Z")).then_some(())
        },
    );
}

#[test]
fn a_python_child_killed_by_a_signal_segfault_or_exit_is_a_worker_lost_error_and_the_worker_serves_on()
 {
    let server = RedisServer::start();
    let w = jwql_worker(&server);
    let out = python_ok(
        &apps_dir(),
        &server.url(0),
        "import pytasks\n\
         for how in ('kill', 'segv', 'exit'):\n\
         \x20   try:\n\
         \x20       pytasks.crash.delay(how).get(timeout=20)\n\
         \x20   except Exception as e:\n\
         \x20       print(how, type(e).__name__, e)\n\
         print(pytasks.add.delay(20, 22).get(timeout=20))",
        Duration::from_secs(90),
    );
    assert!(
        out.contains("kill WorkerLostError Worker exited prematurely: signal 9 (SIGKILL)"),
        "{out}"
    );
    assert!(
        out.contains("segv WorkerLostError Worker exited prematurely: signal 11 (SIGSEGV)"),
        "{out}"
    );
    assert!(
        out.contains("exit WorkerLostError Worker exited prematurely: exitcode 3"),
        "{out}"
    );
    assert!(
        out.trim_end().ends_with("42"),
        "{out}\n{}",
        w.proc_.output()
    );
}

#[test]
fn revoke_with_terminate_ends_a_running_python_task_as_revoked() {
    let server = RedisServer::start();
    let _w = jwql_worker(&server);
    let out = python_ok(
        &apps_dir(),
        &server.url(0),
        "import pytasks, time\n\
         r = pytasks.sleep.delay(60)\n\
         deadline = time.time() + 20\n\
         while time.time() < deadline:\n\
         \x20   active = pytasks.app.control.inspect(timeout=0.5).active() or {}\n\
         \x20   if any(t['id'] == r.id for ts in active.values() for t in ts):\n\
         \x20       break\n\
         pytasks.app.control.revoke(r.id, terminate=True)\n\
         try:\n    r.get(timeout=20)\nexcept Exception as e:\n    print(type(e).__name__)\n\
         print(r.state)\n\
         print(pytasks.add.delay(1, 1).get(timeout=20))",
        Duration::from_secs(60),
    );
    assert!(out.contains("TaskRevokedError"), "{out}");
    assert!(out.contains("REVOKED"), "{out}");
    assert!(out.trim_end().ends_with('2'), "{out}");
}

/// The pids of `parent`'s children.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            after.split_whitespace().nth(1) == Some(parent.to_string().as_str())
        })
        .collect()
}

#[test]
fn a_zygote_killed_mid_task_is_replaced_and_its_task_requeued_not_lost() {
    let server = RedisServer::start();
    let mut flags = JWQL_FLAGS.to_vec();
    flags.push("--reject-on-worker-lost");
    let w = celeriac_app_worker(
        &python(),
        &apps_dir(),
        "pytasks",
        Some(&server.url(0)),
        &flags,
    );
    let zygotes = children_of(w.proc_.pid());
    assert_eq!(zygotes.len(), 1, "one zygote under the worker: {zygotes:?}");
    let url = server.url(0);
    let client = std::thread::spawn(move || {
        python_ok(
            &apps_dir(),
            &url,
            "import pytasks\nprint(pytasks.sleep.delay(2).get(timeout=60))",
            Duration::from_secs(90),
        )
    });
    w.proc_
        .wait_for_output("Task pytasks.sleep[", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on a pid read from /proc just now.
    unsafe { libc::kill(zygotes[0] as i32, libc::SIGKILL) };
    let out = client.join().unwrap();
    assert_eq!(out.trim(), "2", "the task ran again and succeeded");
    assert!(
        w.proc_
            .output()
            .contains("a new Python zygote is serving the app"),
        "{}",
        w.proc_.output()
    );
    let after = children_of(w.proc_.pid());
    assert!(
        !after.contains(&zygotes[0]) && !after.is_empty(),
        "{after:?}"
    );
}

#[test]
fn an_app_that_fails_to_import_stops_the_worker_with_its_traceback_and_consumes_nothing() {
    let server = RedisServer::start();
    let url = server.url(0);
    python_ok(
        &apps_dir(),
        &url,
        "import pytasks\npytasks.add.delay(1, 2)",
        Duration::from_secs(20),
    );
    let started = Instant::now();
    let mut cmd = std::process::Command::new(celeriac_bin());
    cmd.current_dir(apps_dir())
        .args(["-A", "broken_app", "worker", "-c1"])
        .env("CELERIAC_PYTHON", python())
        .env("CELERY_BROKER_URL", &url)
        .env("CELERY_RESULT_BACKEND", &url);
    let out = tests::run_with_timeout(cmd, Duration::from_secs(20));
    assert!(!out.success, "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(out.stderr.contains("ZeroDivisionError"), "{}", out.stderr);
    assert!(
        out.stderr.contains("broken_app.py"),
        "the traceback names the file: {}",
        out.stderr
    );
    let mut c = server.client(0);
    let queued: usize = redis::cmd("LLEN").arg("celery").query(&mut c).unwrap();
    assert_eq!(queued, 1, "the queued task was not consumed");
    // An operator command that needs the app's broker says why it has none, and purges
    // nothing.
    let mut purge = std::process::Command::new(celeriac_bin());
    purge
        .current_dir(apps_dir())
        .args(["-A", "broken_app", "purge", "-f"])
        .env("CELERIAC_PYTHON", python())
        .env_remove("CELERY_BROKER_URL")
        .env_remove("CELERY_RESULT_BACKEND");
    let out = tests::run_with_timeout(purge, Duration::from_secs(20));
    assert!(!out.success, "{out:?}");
    assert!(
        out.stderr.contains("did not import") && out.stderr.contains("ZeroDivisionError"),
        "{}",
        out.stderr
    );
    let queued: usize = redis::cmd("LLEN").arg("celery").query(&mut c).unwrap();
    assert_eq!(queued, 1, "nothing was purged");
}

#[test]
fn python_and_rust_tasks_are_served_side_by_side_and_a_mixed_chord_completes() {
    let server = RedisServer::start();
    let _w = jwql_worker(&server);
    let out = python_ok(
        &apps_dir(),
        &server.url(0),
        "import pytasks\n\
         from celery import chord, signature\n\
         names = set(n for ns in pytasks.app.control.inspect(timeout=1).registered().values() for n in ns)\n\
         print('py' if 'pytasks.add' in names else 'no-py', 'rust' if 'shared_tasks.add' in names else 'no-rust')\n\
         print(signature('shared_tasks.add', (2, 3), app=pytasks.app).delay().get(timeout=20))\n\
         r = chord([pytasks.add.s(1, 1), signature('shared_tasks.add', (2, 2), app=pytasks.app)])(pytasks.tsum.s())\n\
         print(r.get(timeout=30))",
        Duration::from_secs(60),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["py rust", "5", "6"], "{out}");
}

#[test]
fn a_task_name_claimed_by_the_app_and_a_built_in_task_is_refused_naming_it() {
    let server = RedisServer::start();
    let url = server.url(0);
    let mut cmd = std::process::Command::new(celeriac_bin());
    cmd.current_dir(apps_dir())
        .args(["-A", "clash_app", "worker", "-c1"])
        .env("CELERIAC_PYTHON", python())
        .env("CELERY_BROKER_URL", &url)
        .env("CELERY_RESULT_BACKEND", &url);
    let out = tests::run_with_timeout(cmd, Duration::from_secs(20));
    assert!(!out.success);
    assert!(out.stderr.contains("shared_tasks.add"), "{}", out.stderr);
}

#[test]
fn what_a_python_task_prints_goes_to_the_worker_log() {
    let server = RedisServer::start();
    let w = jwql_worker(&server);
    let out = python_ok(
        &apps_dir(),
        &server.url(0),
        "import pytasks\nprint(pytasks.shout.delay('over here').get(timeout=20))",
        Duration::from_secs(30),
    );
    assert_eq!(out.trim(), "9");
    wait_until(
        Duration::from_secs(5),
        "the task's print in the worker log",
        || {
            let log = w.proc_.output();
            (log.contains("task says: over here") && log.contains("task warns: over here"))
                .then_some(())
        },
    );
}

/// Kills the process named in a pid file when dropped (a detached worker a failed test
/// would otherwise leave running).
struct KillOnDrop(PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on the pid the worker wrote; no memory involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The JWQL-shaped app's directory, copied with a `config.json` naming `port`.
fn jwql_app(port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = tests::py_dir().join("jwql/shared_tasks.py");
    std::fs::copy(src, dir.path().join("shared_tasks.py")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        format!("{{\"redis_host\": \"127.0.0.1\", \"redis_port\": {port}}}"),
    )
    .unwrap();
    dir
}

#[test]
fn the_jwql_cheatsheet_line_serves_a_jwql_shaped_app_and_celery_control_shutdown_stops_it() {
    let server = RedisServer::start();
    let app = jwql_app(server.port);
    let dir: PathBuf = app.path().to_path_buf();
    let log = dir.join("worker.log");
    let pidfile = dir.join("worker.pid");
    // The cheatsheet's line with `celery` replaced, plus a log file to read (with -D and
    // no --logfile, a worker's stderr goes nowhere) and a pid file, so that a failing test
    // leaves no detached worker behind.
    let mut cmd = std::process::Command::new(celeriac_bin());
    cmd.current_dir(&dir)
        .args([
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
        ])
        .arg("--logfile")
        .arg(&log)
        .arg("--pidfile")
        .arg(&pidfile)
        .env("CELERIAC_PYTHON", python())
        .env_remove("CELERY_BROKER_URL")
        .env_remove("CELERY_RESULT_BACKEND");
    let out = tests::run_with_timeout(cmd, Duration::from_secs(20));
    assert!(out.success, "{out:?}");
    let _reaper = KillOnDrop(pidfile.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("celeriac worker ready")) {
        assert!(
            Instant::now() < deadline,
            "the detached worker was not ready within 30 s; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Two monitors at once, as JWQL's do: `delay(...).get()`, and a task behind only_one.
    let monitor = |code: &'static str| {
        let dir = dir.clone();
        std::thread::spawn(move || {
            let mut cmd = std::process::Command::new(python());
            cmd.current_dir(&dir)
                .args(["-c", code])
                .env("PYTHONPATH", &dir)
                .env_remove("CELERY_BROKER_URL")
                .env_remove("CELERY_RESULT_BACKEND");
            tests::run_with_timeout(cmd, Duration::from_secs(60))
        })
    };
    let a = monitor(
        "from shared_tasks import *\n\
         print(run_calwebb_detector1.delay('jw01_uncal.fits', 'jw01', ['rate', 'cal'], 'nircam').get())\n\
         try:\n    run_calwebb_detector1.delay('fail_uncal.fits', 'x', ['rate'], 'nircam').get()\n\
         except ValueError as e:\n    print('ValueError', e)\n\
         print(calwebb_detector1_save_jump.delay('jw02').get())",
    );
    let b = monitor(
        "from shared_tasks import *\n\
         print(guarded.delay('jw_monitor_lock', 0.3).get() is not None)",
    );
    // A Rust task served beside the app takes its global lock in the app's Redis (the
    // broker came from config.json, not -b): a lock the monitor holds there makes it skip.
    let c = monitor(
        "from shared_tasks import *\n\
         lock = REDIS_CLIENT.lock('jw_shared', timeout=30)\n\
         assert lock.acquire(blocking=False)\n\
         print(celery_app.send_task('shared_tasks.locked_sleep', ('jw_shared', 0.1)).get(timeout=30))\n\
         lock.release()\n\
         print(celery_app.send_task('shared_tasks.locked_sleep', ('jw_shared', 0.1)).get(timeout=30))",
    );
    let (a, b, c) = (a.join().unwrap(), b.join().unwrap(), c.join().unwrap());
    assert!(a.success && b.success && c.success, "{a:?}\n{b:?}\n{c:?}");
    assert_eq!(
        c.stdout.lines().collect::<Vec<_>>(),
        ["skipped", "ran"],
        "{c:?}"
    );
    assert_eq!(
        a.stdout.lines().collect::<Vec<_>>(),
        [
            "['jw01_rate.fits', 'jw01_cal.fits']",
            "ValueError Pipeline Failed",
            // JSON has no tuples: Celery gives the jump task's 3-tuple back as a list.
            "['jw02_jump.fits', 'jw02_fitopt.fits', None]",
        ],
        "{}",
        a.stdout
    );
    assert_eq!(b.stdout.trim(), "True");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("effective settings"),
        "-ldebug prints the settings:\n{logged}"
    );
    assert!(
        logged.contains(&format!("127.0.0.1:{}", server.port)),
        "the broker came from config.json"
    );
    // celeriac's operator commands, given the app and no -b, read the app's broker as
    // `celery -A shared_tasks inspect ping` does.
    let mut ping = std::process::Command::new(celeriac_bin());
    ping.current_dir(&dir)
        .args(["-A", "shared_tasks", "inspect", "ping", "--timeout", "2"])
        .env("CELERIAC_PYTHON", python())
        .env_remove("CELERY_BROKER_URL")
        .env_remove("CELERY_RESULT_BACKEND");
    let ping = tests::run_with_timeout(ping, Duration::from_secs(30));
    assert!(
        ping.success && ping.stdout.contains("pong"),
        "celeriac -A shared_tasks inspect ping: {ping:?}"
    );
    // Stopped by Python's own CLI, as the cheatsheet does.
    let mut stop = std::process::Command::new(python());
    stop.current_dir(&dir)
        .args(["-m", "celery", "-A", "shared_tasks", "control", "shutdown"])
        .env("PYTHONPATH", &dir)
        .env_remove("CELERY_BROKER_URL");
    // Celery's `control shutdown` waits for replies a shutdown never sends and exits 69
    // ("No nodes replied"), whichever worker it stops; what matters is that it stops.
    tests::run_with_timeout(stop, Duration::from_secs(30));
    wait_until(
        Duration::from_secs(20),
        "the worker to log its stop",
        || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains("worker stopped"))
                .map(|_| ())
        },
    );
    let ping = python_in(
        &dir,
        &server.url(0),
        &[
            "-m",
            "celery",
            "-A",
            "shared_tasks",
            "inspect",
            "ping",
            "--timeout",
            "1",
        ],
        Duration::from_secs(20),
    );
    assert!(
        !ping.stdout.contains("pong"),
        "nobody answers any more: {ping:?}"
    );
}

#[test]
fn pool_restart_serves_new_code_while_the_running_task_finishes_in_the_old_zygote() {
    let server = RedisServer::start();
    let url = server.url(0);
    let app = tempfile::tempdir().unwrap();
    let module = app.path().join("pytasks.py");
    std::fs::copy(apps_dir().join("pytasks.py"), &module).unwrap();
    let w = celeriac_app_worker(&python(), app.path(), "pytasks", Some(&url), &["-c2"]);
    let dir = app.path().to_path_buf();
    let (url2, dir2) = (url.clone(), dir.clone());
    // A task that runs across the restart: it must finish, in the old code, and succeed.
    let long = std::thread::spawn(move || {
        python_ok(
            &dir2,
            &url2,
            "import pytasks\nprint(pytasks.sleep.delay(3).get(timeout=60))",
            Duration::from_secs(90),
        )
    });
    w.proc_
        .wait_for_output("Task pytasks.sleep[", Duration::from_secs(20));
    let before = python_ok(
        &dir,
        &url,
        "import pytasks\nprint(pytasks.code_version.delay().get(timeout=20))",
        Duration::from_secs(30),
    );
    assert_eq!(before.trim(), "1");
    let code = std::fs::read_to_string(&module).unwrap();
    // A new size as well as a new text: Python trusts a cached .pyc whose source has the
    // same size and modification second.
    std::fs::write(
        &module,
        code.replace("CODE_VERSION = 1", "CODE_VERSION = 20"),
    )
    .unwrap();
    // Python's own CLI, as an operator deploying new code would.
    let out = python_in(
        &dir,
        &url,
        &["-m", "celery", "-A", "pytasks", "control", "pool_restart"],
        Duration::from_secs(30),
    );
    assert!(out.stdout.contains("reload started"), "{out:?}");
    w.proc_.wait_for_output(
        "the new Python code serves new tasks",
        Duration::from_secs(30),
    );
    let after = python_ok(
        &dir,
        &url,
        "import pytasks\nprint(pytasks.code_version.delay().get(timeout=20))",
        Duration::from_secs(30),
    );
    assert_eq!(after.trim(), "20", "new tasks run the new code");
    assert_eq!(
        long.join().unwrap().trim(),
        "3",
        "the running task finished and succeeded"
    );
    assert!(
        !w.proc_.output().contains("lost"),
        "nothing was lost:\n{}",
        w.proc_.output()
    );
}

#[test]
fn standby_children_killed_while_idle_are_replaced_and_the_next_task_runs() {
    let server = RedisServer::start();
    let w = jwql_worker(&server);
    let zygote = children_of(w.proc_.pid());
    assert_eq!(zygote.len(), 1, "{zygote:?}");
    let standbys = wait_until(Duration::from_secs(10), "standby children", || {
        let c = children_of(zygote[0]);
        (!c.is_empty()).then_some(c)
    });
    for pid in &standbys {
        // SAFETY: kill(2) on pids read from /proc just now.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    let out = python_ok(
        &apps_dir(),
        &server.url(0),
        "import pytasks\nprint(pytasks.add.delay(4, 5).get(timeout=20))",
        Duration::from_secs(30),
    );
    assert_eq!(out.trim(), "9", "{}", w.proc_.output());
    assert!(
        !w.proc_.output().contains("WorkerLostError"),
        "{}",
        w.proc_.output()
    );
}

#[test]
fn two_slots_run_two_python_tasks_at_once_with_children_per_task_or_kept() {
    for per_child in ["1", "0"] {
        let server = RedisServer::start();
        let _w = celeriac_app_worker(
            &python(),
            &apps_dir(),
            "pytasks",
            Some(&server.url(0)),
            &[
                "-c2",
                "--prefetch-multiplier",
                "1",
                "-Ofair",
                "--max-tasks-per-child",
                per_child,
            ],
        );
        // Two 2 s tasks on two slots end in about 2 s; one after the other would take 4 s.
        let out = python_ok(
            &apps_dir(),
            &server.url(0),
            "import time, pytasks\n\
             t = time.time()\n\
             rs = [pytasks.sleep.delay(2) for _ in range(2)]\n\
             print([r.get(timeout=20) for r in rs], round(time.time() - t, 2))\n\
             print(len({pytasks.pid.delay().get(timeout=20) for _ in range(4)}))",
            Duration::from_secs(40),
        );
        let lines: Vec<&str> = out.lines().collect();
        let took: f64 = lines[0].rsplit(' ').next().unwrap().parse().unwrap();
        assert!(
            lines[0].starts_with("[2, 2]") && took < 3.6,
            "--max-tasks-per-child {per_child}: {out}"
        );
        let pids: usize = lines[1].parse().unwrap();
        if per_child == "1" {
            assert_eq!(pids, 4, "a child per task: {out}");
        } else {
            assert!(pids <= 2, "kept children serve again: {out}");
        }
    }
}

/// A memory cgroup of its own with a limit (v1 `memory.limit_in_bytes` or v2 `memory.max`),
/// removed when dropped. Needs root, as the test run has.
struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    fn create(limit_mib: u64) -> MemoryCgroup {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        // cgroup v1: a `N:memory:/path` line; v2 only: the `0::/path` line.
        let v1 = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        });
        let (base, rel, v2) = match v1 {
            Some(p) => ("/sys/fs/cgroup/memory", p, false),
            None => {
                let p = own
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .unwrap_or("/");
                ("/sys/fs/cgroup", p.to_string(), true)
            }
        };
        let dir = PathBuf::from(format!("{base}{rel}"))
            .join(format!("celeriac-oom-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot create the memory cgroup {} ({e}): the OOM test needs root and a \
                 writable cgroup memory controller",
                dir.display()
            )
        });
        let (file, value) = if v2 {
            ("memory.max", format!("{}", limit_mib << 20))
        } else {
            ("memory.limit_in_bytes", format!("{}", limit_mib << 20))
        };
        std::fs::write(dir.join(file), value).unwrap();
        MemoryCgroup { dir, v2 }
    }

    /// How many times the kernel's OOM killer killed a process in this cgroup.
    fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The worker's processes leave the cgroup as they exit; it can be removed when empty.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .is_ok_and(|p| !p.trim().is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_python_task_killed_by_the_oom_killer_is_a_worker_lost_error_and_the_worker_serves_on() {
    let server = RedisServer::start();
    let cgroup = MemoryCgroup::create(256);
    // The worker, its zygote and every task child live in a cgroup limited to 256 MiB: a
    // task that touches 1 GiB is what the kernel's OOM killer stops, not anything of ours.
    let node = format!("celeriac-{}@localhost", tests::free_port());
    let mut cmd = std::process::Command::new("sh");
    cmd.current_dir(apps_dir())
        .args([
            "-c",
            "echo $$ > \"$CGROUP/cgroup.procs\" && exec \"$@\"",
            "sh",
        ])
        .arg(celeriac_bin())
        .args(["-A", "pytasks", "worker", "-n", &node, "-linfo"])
        .args(JWQL_FLAGS)
        .env("CGROUP", &cgroup.dir)
        .env("CELERIAC_PYTHON", python())
        .env("CELERY_BROKER_URL", server.url(0))
        .env("CELERY_RESULT_BACKEND", server.url(0));
    let w = tests::Proc::spawn(cmd);
    w.wait_for_output("ready.", Duration::from_secs(30));
    let out = python_ok(
        &apps_dir(),
        &server.url(0),
        "import pytasks\n\
         try:\n    print(pytasks.hog.delay(1024).get(timeout=60))\n\
         except Exception as e:\n    print(type(e).__name__, e)\n\
         print(pytasks.add.delay(2, 3).get(timeout=30))",
        Duration::from_secs(90),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("WorkerLostError") && lines[0].contains("SIGKILL"),
        "{out}\nworker:\n{}",
        w.output()
    );
    assert_eq!(lines[1], "5", "the worker serves on: {out}");
    assert!(cgroup.oom_kills() >= 1, "the OOM killer did it");
    drop(w);
}
