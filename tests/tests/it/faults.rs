//! Fault injection: celeriac must be the worker you can kill -9 at any instant. Each test
//! asserts from Redis and the result backend that every submitted task id ends with exactly
//! one terminal result, and counts executions (each execution of `append_line` leaves one
//! line in a file) against the stated guarantee. Bounded in count and time; loopback only.

use celeriac::protocol::TaskMessage;
use redis::Commands;
use std::time::{Duration, Instant};
use tests::runs::{RESILIENT_FLEET, RunLog, count_succeeded, worker_running_one_task};
use tests::{CeleriacWorker, PythonWorker, RedisServer, wait_until};

const FLEET: &[&str] = &[
    "-P",
    "threads",
    "-c2",
    "--prefetch-multiplier",
    "2",
    "--acks-late",
    "--lease",
    "2",
    "-lwarning",
];

#[test]
fn kill_9_at_random_points_loses_nothing_and_reruns_only_killed_tasks() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let runs = RunLog::new();
    let mut c = redis.client(0);
    let ids = runs.submit(&mut c, 2000, 0.03);
    let mut workers: Vec<CeleriacWorker> =
        (0..3).map(|_| CeleriacWorker::start(&url, FLEET)).collect();
    let mut kills = 0;
    let mut rng = 0x2545F4914F6CDD1Du64;
    let start = Instant::now();
    while kills < 100 && start.elapsed() < Duration::from_secs(120) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(20 + rng % 80));
        let victim = (rng % 3) as usize;
        workers[victim].proc_.kill_9();
        kills += 1;
        workers[victim] = CeleriacWorker::start(&url, FLEET);
    }
    assert_eq!(kills, 100);
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let d = count_succeeded(&mut c, &ids);
        if d == ids.len() {
            break d;
        }
        if Instant::now() >= deadline {
            // Say where the rest are, and what the live workers were doing.
            let unacked: usize = c.hlen("unacked").unwrap_or(0);
            let queued: usize = c.llen("celery").unwrap_or(0);
            let dead: usize = c.llen("celeriac.dead").unwrap_or(0);
            let tails: Vec<String> = workers
                .iter()
                .map(|w| {
                    let out = w.proc_.output();
                    let lines: Vec<&str> = out.lines().collect();
                    lines[lines.len().saturating_sub(15)..].join("\n")
                })
                .collect();
            panic!(
                "{d} of {} tasks succeeded within 120 s of the last kill; unacked {unacked}, \
                 queued {queued}, dead {dead}; the live workers' last lines:\n{}",
                ids.len(),
                tails.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let executed = runs.executions();
    let lost: Vec<&String> = ids.iter().filter(|i| !executed.contains_key(*i)).collect();
    let twice: usize = executed.values().filter(|n| **n > 1).count();
    eprintln!(
        "kill -9 fault test: {} tasks, {kills} kills, {done} succeeded, {} lost, {twice} executed more than once",
        ids.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost tasks: {lost:?}");
    // Only tasks running when their worker was killed may run again: at most 2 slots × kills.
    assert!(twice <= 2 * kills, "{twice} duplicates for {kills} kills");
    let unacked: usize = c.hlen("unacked").unwrap();
    let queued: usize = c.llen("celery").unwrap();
    let dead: usize = c.llen("celeriac.dead").unwrap();
    assert_eq!((unacked, queued, dead), (0, 0, 0));
}

#[test]
fn a_killed_workers_running_task_reruns_elsewhere_within_the_lease() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let runs = RunLog::new();
    let mut c = redis.client(0);
    let flags = [
        "-c1",
        "--prefetch-multiplier",
        "1",
        "--acks-late",
        "--lease",
        "2",
    ];
    // A runs the task before B exists, so only A's death can hand it to B.
    let (mut a, id) = worker_running_one_task(&redis, &runs, &flags, 3.0);
    let b = CeleriacWorker::start(&url, &flags);
    let killed = Instant::now();
    a.proc_.kill_9();
    wait_until(
        Duration::from_secs(2 + 5),
        "B to pick the task up (lease + 5 s)",
        || b.proc_.output().contains(&id).then_some(()),
    );
    eprintln!(
        "re-run started {:.2}s after kill -9",
        killed.elapsed().as_secs_f64()
    );
    wait_until(Duration::from_secs(10), "the re-run to succeed", || {
        (count_succeeded(&mut c, std::slice::from_ref(&id)) == 1).then_some(())
    });
}

/// The README promises a dead worker's task back "within the lease": measured from the end of
/// the lease its dead holder last wrote (the `unacked_index` score), not from a wait long
/// enough to hide the sweeper's interval. The second worker starts after the kill, as a
/// restarted host would, and its sweeper must catch the lease's end within a second or so.
#[test]
fn a_dead_workers_task_is_restored_within_a_second_of_its_lease_end() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let runs = RunLog::new();
    let mut c = redis.client(0);
    let flags = [
        "-c1",
        "--max-tasks-per-child=1",
        "--prefetch-multiplier",
        "1",
        "--acks-late",
        "--lease",
        "12",
    ];
    let (mut a, id) = worker_running_one_task(&redis, &runs, &flags, 30.0);
    std::thread::sleep(Duration::from_secs(1));
    a.proc_.kill_9();
    let tags: Vec<String> = c.hkeys("unacked").unwrap();
    assert_eq!(tags.len(), 1, "the killed worker's message is in unacked");
    let lease_end: f64 = c.zscore("unacked_index", &tags[0]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let b = CeleriacWorker::start(&url, &flags);
    wait_until(
        Duration::from_secs(12 + 10),
        "B to receive the dead worker's task",
        || b.proc_.output().contains(&id).then_some(()),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let late = now - lease_end;
    eprintln!("restored {late:.2}s after the lease ended");
    assert!(
        late < 1.6,
        "the task came back {late:.2}s after its lease ended (promise: within a second)"
    );
}

#[test]
fn a_python_sweeper_with_a_5s_visibility_timeout_never_duplicates_a_live_60s_task() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let runs = RunLog::new();
    let mut c = redis.client(0);
    let (_w, id) = worker_running_one_task(
        &redis,
        &runs,
        &["-c1", "--prefetch-multiplier", "1", "--acks-late"],
        60.0,
    );
    // Python workers sharing the queue run kombu's restore_visible at start-up (and
    // periodically): start one every 12 s while the task runs, each with a 5 s timeout.
    let t0 = Instant::now();
    let mut pythons = 0;
    while t0.elapsed() < Duration::from_secs(48) {
        std::thread::sleep(Duration::from_secs(12));
        let p = PythonWorker::start(
            &url,
            &[
                ("CELERIAC_VISIBILITY_TIMEOUT", "5"),
                ("CELERIAC_ACKS_LATE", "1"),
            ],
            &["-P", "solo"],
        );
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            !p.proc_.output().contains(&id),
            "the Python worker received the live task"
        );
        pythons += 1;
    }
    wait_until(Duration::from_secs(30), "the task to finish", || {
        (count_succeeded(&mut c, std::slice::from_ref(&id)) == 1).then_some(())
    });
    assert_eq!(
        runs.executions().get(&id),
        Some(&1),
        "executed more than once"
    );
    assert!(pythons >= 3);
}

#[test]
fn redis_restarted_mid_run_loses_nothing_and_workers_resume_within_5s() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = redis.url(0);
    let runs = RunLog::new();
    let mut c = redis.client(0);
    let ids = runs.submit(&mut c, 400, 0.02);
    let w1 = CeleriacWorker::start(&url, RESILIENT_FLEET);
    let w2 = CeleriacWorker::start(&url, RESILIENT_FLEET);
    wait_until(Duration::from_secs(20), "some progress", || {
        (count_succeeded(&mut c, &ids) >= 50).then_some(())
    });
    redis.terminate();
    std::thread::sleep(Duration::from_secs(2));
    redis.restart();
    let back = Instant::now();
    let mut c = redis.client(0);
    let before = count_succeeded(&mut c, &ids);
    wait_until(
        Duration::from_secs(5),
        "a task to complete after the restart",
        || (count_succeeded(&mut c, &ids) > before).then_some(()),
    );
    let resumed = back.elapsed();
    wait_until(Duration::from_secs(60), "every task to succeed", || {
        (count_succeeded(&mut c, &ids) == ids.len()).then_some(())
    });
    let executed = runs.executions();
    let lost = ids.iter().filter(|i| !executed.contains_key(*i)).count();
    let twice = executed.values().filter(|n| **n > 1).count();
    eprintln!(
        "redis restart: resumed after {:.2}s, {lost} lost, {twice} executed twice",
        resumed.as_secs_f64()
    );
    assert_eq!(lost, 0);
    // The pidbox subscriptions came back too: both workers answer remote control again.
    wait_until(
        Duration::from_secs(10),
        "both workers to answer inspect ping",
        || {
            let out = tests::celeriac(
                &["inspect", "ping", "--json"],
                &[("CELERY_BROKER_URL", url.as_str())],
                Duration::from_secs(10),
            );
            (out.success && out.stdout.contains(&w1.node) && out.stdout.contains(&w2.node))
                .then_some(())
        },
    );
}

#[test]
fn ten_thousand_malformed_messages_among_a_thousand_valid_ones() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let runs = RunLog::new();
    let mut c = redis.client(0);
    let good = TaskMessage::new(
        "shared_tasks.add",
        vec![1.into(), 2.into()],
        Default::default(),
    )
    .to_envelope("celery", 0)
    .encode();
    let good = String::from_utf8(good).unwrap();
    let mut rng = 0x9E3779B97F4A7C15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut bad_count = 0;
    let mut ids = Vec::new();
    let mut pipe = redis::pipe();
    for i in 0..11_000usize {
        if i % 11 == 5 {
            let mut msg = TaskMessage::new("shared_tasks.append_line", vec![], Default::default());
            msg.args = vec![runs.path_str().into(), msg.headers.id.clone().into()];
            ids.push(msg.headers.id.clone());
            pipe.lpush("celery", msg.to_envelope("celery", 0).encode())
                .ignore();
            continue;
        }
        let r = next();
        let tag = format!("bad-{i}");
        let payload: Vec<u8> = match r % 8 {
            0 => (0..(r % 200)).map(|_| (next() % 256) as u8).collect(),
            1 => b"{\"body\": 12, \"properties\": []}".to_vec(),
            2 => good
                .replace("W1sxLCAy", "%%%%")
                .replace(&good_tag(&good), &tag)
                .into_bytes(),
            3 => good
                .replace("application/json", "application/x-python-serialize")
                .replace(&good_tag(&good), &tag)
                .into_bytes(),
            4 => good
                .replace("application/json", "application/x-yaml")
                .replace(&good_tag(&good), &tag)
                .into_bytes(),
            5 => {
                let cut = (r as usize) % good.len();
                good.as_bytes()[..cut].to_vec()
            }
            6 => good
                .replace("\"task\": \"shared_tasks.add\"", "\"task\": 42")
                .replace(&good_tag(&good), &tag)
                .into_bytes(),
            _ => good
                .replace("\"eta\": null", "\"eta\": \"not a date\"")
                .replace(&good_tag(&good), &tag)
                .into_bytes(),
        };
        bad_count += 1;
        pipe.lpush("celery", payload).ignore();
    }
    pipe.query::<()>(&mut c).unwrap();
    let mut w = CeleriacWorker::start(
        &url,
        &[
            "-P",
            "threads",
            "-c2",
            "--prefetch-multiplier",
            "16",
            "-lerror",
        ],
    );
    wait_until(Duration::from_secs(120), "the queue to drain", || {
        let q: usize = c.llen("celery").unwrap();
        let u: usize = c.hlen("unacked").unwrap();
        (q == 0 && u == 0).then_some(())
    });
    wait_until(
        Duration::from_secs(30),
        "all valid tasks to succeed",
        || (count_succeeded(&mut c, &ids) == ids.len()).then_some(()),
    );
    assert!(
        w.proc_.child.try_wait().unwrap().is_none(),
        "the worker exited"
    );
    let dead: usize = c.llen("celeriac.dead").unwrap();
    assert_eq!(
        dead, bad_count,
        "every bad message is in the dead-letter list"
    );
    let executed = runs.executions();
    assert!(
        ids.iter().all(|i| executed.get(i) == Some(&1)),
        "every valid task ran exactly once"
    );
    w.proc_.signal(libc::SIGTERM);
    assert!(w.proc_.wait_exit(Duration::from_secs(10)).success());
}

fn good_tag(good: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(good).unwrap();
    v["properties"]["delivery_tag"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_redelivered_task_that_already_succeeded_is_acked_not_rerun() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let runs = RunLog::new();
    let mut c = redis.client(0);
    let w = CeleriacWorker::start(&url, &["-c1", "--acks-late"]);
    let ids = runs.submit(&mut c, 1, 0.0);
    wait_until(Duration::from_secs(10), "the first run", || {
        (count_succeeded(&mut c, &ids) == 1).then_some(())
    });
    // The same message comes back (as after a crash between storing the result and acking).
    let mut msg = TaskMessage::new("shared_tasks.append_line", vec![], Default::default());
    msg.headers.id = ids[0].clone();
    msg.args = vec![runs.path_str().into(), ids[0].clone().into()];
    let mut env = msg.to_envelope("celery", 0);
    env.mark_redelivered();
    let _: i64 = c.lpush("celery", env.encode()).unwrap();
    wait_until(Duration::from_secs(10), "the duplicate to be acked", || {
        w.proc_.output().contains("already succeeded").then_some(())
    });
    assert_eq!(runs.executions().get(&ids[0]), Some(&1));
}

#[test]
fn a_chord_member_redelivered_after_its_result_was_stored_still_completes_the_chord() {
    // As if a worker died between storing a header task's result and the chord join.
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mut c = redis.client(0);
    let (group, member, callback) = ("g-redelivered", "m-redelivered", "cb-redelivered");
    let _: () = c
        .set_ex(format!("celery-taskset-meta-{group}.s"), "1", 600)
        .unwrap();
    let _: () = c
        .set_ex(
            format!("celery-task-meta-{member}"),
            format!(r#"{{"status": "SUCCESS", "result": 7, "traceback": null, "children": [], "date_done": "2026-01-01T00:00:00.000000+00:00", "group_id": "{group}", "task_id": "{member}"}}"#),
            600,
        )
        .unwrap();
    let mut msg = TaskMessage::new(
        "shared_tasks.add",
        vec![3.into(), 4.into()],
        Default::default(),
    );
    msg.headers.id = member.into();
    msg.headers.group = Some(group.into());
    msg.headers.group_index = Some(0);
    msg.embed.chord = Some(serde_json::json!({
        "task": "shared_tasks.echo", "args": [], "kwargs": {},
        "options": {"task_id": callback, "group_id": group}, "subtask_type": null, "immutable": false
    }));
    let mut env = msg.to_envelope("celery", 0);
    env.mark_redelivered();
    let _: i64 = c.lpush("celery", env.encode()).unwrap();
    let w = CeleriacWorker::start(&url, &["-c1"]);
    let meta: String = wait_until(
        Duration::from_secs(15),
        "the chord callback's result",
        || {
            c.get::<_, Option<String>>(format!("celery-task-meta-{callback}"))
                .unwrap()
        },
    );
    assert!(
        meta.contains(r#""result": {"args": [[7]], "kwargs": {}}"#),
        "{meta}"
    );
    assert!(
        w.proc_.output().contains("already succeeded"),
        "the member must not run again"
    );
}

/// A fleet started by systemd before its Redis: the worker waits and logs, as Celery does
/// with `broker_connection_retry_on_startup`, then serves once Redis is up.
#[test]
fn a_worker_started_before_redis_waits_for_it_and_then_serves() {
    let port = tests::free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut cmd = std::process::Command::new(tests::celeriac_bin());
    cmd.args([
        "-b",
        &url,
        "worker",
        "-c1",
        "-linfo",
        "-n",
        "early@localhost",
    ])
    .env_remove("CELERY_RESULT_BACKEND")
    .env_remove("CELERIAC_CONFIG");
    let mut w = tests::Proc::spawn(cmd);
    w.wait_for_output("Trying again in 2.00 seconds", Duration::from_secs(10));
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the worker exited instead of waiting for Redis:\n{}",
        w.output()
    );
    let redis = RedisServer::start_in(tempfile::tempdir().unwrap(), Some(port), &[]);
    w.wait_for_output("ready.", Duration::from_secs(15));
    let out = tests::celeriac(
        &[
            "-b",
            &redis.url(0),
            "call",
            "shared_tasks.add",
            "--args",
            "[2, 3]",
            "--wait",
            "--timeout",
            "10",
        ],
        &[],
        Duration::from_secs(20),
    );
    assert!(out.success, "{}\n{}", out.stderr, w.output());
    assert_eq!(out.stdout.trim(), "5");
    w.signal(libc::SIGTERM);
    assert!(w.wait_exit(Duration::from_secs(10)).success());
}

/// Waiting cannot mend a wrong password: that fails at once with the reason, instead of
/// retrying a hundred times.
#[test]
fn a_wrong_password_at_start_fails_at_once_with_the_reason() {
    let redis = RedisServer::start_with(&["--requirepass", "right"]);
    let url = format!("redis://:wrong@127.0.0.1:{}/0", redis.port);
    // Resolve (and, without CELERIAC_BIN, build) the binary before the clock starts.
    tests::celeriac_bin();
    let t0 = Instant::now();
    let out = tests::celeriac(
        &["-b", &url, "worker", "-c1", "-n", "pw@localhost"],
        &[],
        Duration::from_secs(20),
    );
    assert!(!out.success, "the worker started with a wrong password");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?} to fail",
        t0.elapsed()
    );
    let said = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(
        said.contains("wrongpass") || said.contains("auth") || said.contains("password"),
        "no reason given: {said}"
    );
    assert!(!said.contains("trying again"), "it retried: {said}");
}

#[test]
fn a_restore_sweep_holds_the_unacked_mutex_for_30_s_at_most_so_a_killed_sweeper_blocks_little() {
    // kombu takes `unacked_mutex` for 300 s: a consumer killed mid-restore would hide the
    // fleet's stale messages that long. celeriac's sweeps take it for 30 s at most.
    let redis = RedisServer::start();
    let url = redis.url(0);
    let runs = RunLog::new();
    let mut c = redis.client(0);
    let flags = [
        "-P",
        "threads",
        "-c2",
        "--prefetch-multiplier",
        "400",
        "--acks-late",
        "--lease",
        "2",
    ];
    // A holds 800 messages (two running for a minute), then dies: 800 stale entries.
    let ids = runs.submit(&mut c, 800, 60.0);
    let mut a = CeleriacWorker::start(&url, &flags);
    wait_until(Duration::from_secs(20), "A to hold 800 messages", || {
        (c.hlen::<_, usize>("unacked").unwrap_or(0) == ids.len()).then_some(())
    });
    a.proc_.kill_9();
    std::thread::sleep(Duration::from_secs(3)); // past A's lease
    // Watch the mutex from before B starts until B's sweep has released it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let mut c = redis.client(0);
        std::thread::spawn(move || {
            let mut longest_ms: i64 = -2;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let pttl: i64 = redis::cmd("PTTL")
                    .arg("unacked_mutex")
                    .query(&mut c)
                    .unwrap();
                longest_ms = longest_ms.max(pttl);
            }
            longest_ms
        })
    };
    let _b = CeleriacWorker::start(&url, &["-c1", "--acks-late", "--lease", "2"]);
    wait_until(Duration::from_secs(20), "B to restore A's messages", || {
        (c.llen::<_, usize>("celery").unwrap_or(0) > 0
            && !c.exists::<_, bool>("unacked_mutex").unwrap_or(true))
        .then_some(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let longest_ms = watcher.join().unwrap();
    assert!(
        longest_ms > 0,
        "the sweep was seen holding the mutex (PTTL {longest_ms})"
    );
    assert!(
        longest_ms <= 30_000,
        "the mutex was taken for {longest_ms} ms"
    );
}
