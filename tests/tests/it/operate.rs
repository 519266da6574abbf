//! Operating a fleet (issue 4): Python's own `celery` CLI against a celeriac worker, and
//! celeriac's CLI against celeriac and Python Celery workers, with exit codes; purge waking
//! blocked monitors; `control shutdown` that waits for running tasks; bad pidbox input; the
//! operator views (`status`, `summary`, `jobs`, `job`, `dead`, `events`).
//!
//! Python CLI runs that only read go through one interpreter (click's `CliRunner` on Celery's
//! own `celery` command object, the one `python -m celery` calls), so a dozen `inspect`
//! commands cost one Python start-up; the commands whose process behaviour matters
//! (`control shutdown` exiting 69, `purge -f`, `events --dump`) run as real processes.

use celeriac::protocol::TaskMessage;
use redis::Commands;
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tests::{
    CeleriacWorker, Proc, PyOutput, PythonWorker, RedisServer, celeriac, celery_cli, py,
    python_cmd, run_with_timeout, wait_until,
};

const T: Duration = Duration::from_secs(60);

/// Seconds since the epoch, comparable with Python's `time.time()` on this machine.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// One invocation of Python's `celery` command in a batch.
#[derive(Debug)]
struct CliRun {
    args: Vec<String>,
    code: i64,
    stdout: String,
    stderr: String,
}

impl CliRun {
    /// Assert the exit code and that stdout contains every needle.
    fn expect(&self, code: i64, needles: &[&str]) -> &Self {
        assert_eq!(
            self.code, code,
            "celery {:?}: exit code\nstdout:\n{}\nstderr:\n{}",
            self.args, self.stdout, self.stderr
        );
        for n in needles {
            assert!(
                self.stdout.contains(n),
                "celery {:?}: expected {n:?} in stdout:\n{}\nstderr:\n{}",
                self.args,
                self.stdout,
                self.stderr
            );
        }
        self
    }

    /// stdout parsed as JSON (`--json`).
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "celery {:?}: stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.args, self.stdout, self.stderr
            )
        })
    }
}

/// Run several `celery -A shared_tasks ...` invocations in one interpreter, in order.
fn celery_batch(url: &str, runs: &[Vec<String>]) -> Vec<CliRun> {
    const RUNNER: &str = r#"
import json, sys
from click.testing import CliRunner
from celery.bin.celery import celery
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(celery, ["-A", "shared_tasks"] + args)
    crash = r.exception if r.exception and not isinstance(r.exception, SystemExit) else None
    out.append({"code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr + (repr(crash) if crash else "")})
print(json.dumps(out))
"#;
    let mut cmd = python_cmd(url);
    cmd.args(["-c", RUNNER, &serde_json::to_string(runs).unwrap()]);
    let out = run_with_timeout(cmd, T);
    assert!(
        out.success,
        "celery CLI batch failed:\n{}\n{}",
        out.stdout, out.stderr
    );
    let results: Vec<Value> = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("batch output is not JSON ({e}): {}", out.stdout));
    runs.iter()
        .zip(results)
        .map(|(args, r)| CliRun {
            args: args.clone(),
            code: r["code"].as_i64().unwrap_or(-1),
            stdout: r["stdout"].as_str().unwrap_or("").into(),
            stderr: r["stderr"].as_str().unwrap_or("").into(),
        })
        .collect()
}

/// `celeriac <args>` against broker (and backend) `url`.
fn cli(url: &str, args: &[&str]) -> PyOutput {
    celeriac(args, &[("CELERY_BROKER_URL", url)], T)
}

/// Assert a celeriac CLI run's exit code, with its output in the failure message.
fn expect_code(o: &PyOutput, code: i32, what: &str) {
    assert_eq!(
        o.code,
        Some(code),
        "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
        o.stdout,
        o.stderr
    );
}

/// stdout of a celeriac CLI run parsed as JSON.
fn json_of(o: &PyOutput, what: &str) -> Value {
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            o.stdout, o.stderr
        )
    })
}

/// LPUSH a Celery v2 message for `task(args)` onto `queue` (celeriac's encoder, byte-identical
/// to Python's); returns the task id.
/// One prefork slot with late ack: the running task keeps the only prefetch slot, so
/// whatever is submitted next stays queued while it runs.
fn single_slot_late_ack_worker(url: &str) -> CeleriacWorker {
    CeleriacWorker::start(
        url,
        &[
            "-P",
            "prefork",
            "-c1",
            "--prefetch-multiplier",
            "1",
            "--acks-late",
        ],
    )
}

fn submit(c: &mut redis::Connection, queue: &str, task: &str, args: Vec<Value>) -> String {
    let msg = TaskMessage::new(task, args, Default::default());
    let () = c
        .lpush(queue, msg.to_envelope(queue, 0).encode())
        .expect("LPUSH task");
    msg.headers.id
}

/// The stored result meta of `id`, if any.
fn meta(c: &mut redis::Connection, id: &str) -> Option<Value> {
    let raw: Option<String> = c.get(format!("celery-task-meta-{id}")).expect("GET meta");
    raw.map(|r| serde_json::from_str(&r).expect("meta is JSON"))
}

/// Wait until `node` reports `id` as active (it is running, not just received).
fn wait_active(url: &str, node: &str, id: &str) {
    wait_until(T, &format!("{id} active on {node}"), || {
        let o = cli(url, &["inspect", "active", "-d", node, "--json"]);
        o.stdout.contains(id).then_some(())
    });
}

/// Total length of a queue's four priority lists.
fn queue_len(c: &mut redis::Connection, queue: &str) -> usize {
    celeriac::transport::keys::queue_keys(queue)
        .iter()
        .map(|k| c.llen::<_, usize>(k).expect("LLEN"))
        .sum()
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

// ---------------------------------------------------------------------------------------
// Python's celery CLI against a celeriac worker
// ---------------------------------------------------------------------------------------

#[test]
fn python_celery_inspect_shows_the_celeriac_node_its_tasks_and_settings() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let w = CeleriacWorker::start(&url, &["-P", "prefork", "-c2"]);
    let node = w.node.as_str();
    let ids = py(
        &url,
        &url,
        "a = sleep.delay(30); b = add.apply_async((1, 2), countdown=300); print(a.id, b.id)",
        T,
    );
    let (running, eta) = ids.trim().split_once(' ').expect("two ids");
    wait_active(&url, node, running);

    let d = ["-d", node];
    let with_d = |cmd: &[&str]| argv(&[cmd, &d[..]].concat());
    let runs = celery_batch(
        &url,
        &[
            argv(&["inspect", "ping"]),
            with_d(&["inspect", "active"]),
            with_d(&["inspect", "active", "--json"]),
            with_d(&["inspect", "scheduled", "--json"]),
            with_d(&["inspect", "reserved"]),
            with_d(&["inspect", "registered"]),
            with_d(&["inspect", "stats", "--json"]),
            with_d(&["inspect", "active_queues", "--json"]),
            with_d(&["inspect", "query_task", running, eta, "--json"]),
            with_d(&["inspect", "conf", "--json"]),
            with_d(&["inspect", "clock"]),
            with_d(&["inspect", "report"]),
            with_d(&["control", "rate_limit", "shared_tasks.add", "10/m"]),
            with_d(&["control", "rate_limit", "shared_tasks.nope", "1/s"]),
            with_d(&["control", "time_limit", "shared_tasks.add", "5", "10"]),
            with_d(&["inspect", "registered"]),
            with_d(&["control", "add_consumer", "extra"]),
            with_d(&["inspect", "active_queues", "--json"]),
            with_d(&["control", "cancel_consumer", "extra"]),
            argv(&["inspect", "ping", "-d", "nobody@nowhere"]),
        ],
    );
    let mut r = runs.iter();
    r.next()
        .unwrap()
        .expect(0, &[&format!("->  {node}: OK"), "pong", "1 node online."]);
    r.next()
        .unwrap()
        .expect(0, &[running, "shared_tasks.sleep", "1 node online."]);
    let active = r.next().unwrap().expect(0, &[]).json();
    let info = &active[node][0];
    assert_eq!(info["id"], running);
    assert_eq!(info["name"], "shared_tasks.sleep");
    assert_eq!(info["args"], json!([30]));
    assert_eq!(info["hostname"], node);
    assert_eq!(info["delivery_info"]["routing_key"], "celery");
    let child_pid = info["worker_pid"].as_u64().expect("worker_pid");
    assert_ne!(
        child_pid,
        u64::from(w.proc_.pid()),
        "prefork runs tasks in a child"
    );
    let scheduled = r.next().unwrap().expect(0, &[]).json();
    assert_eq!(scheduled[node][0]["request"]["id"], eta);
    assert!(scheduled[node][0]["eta"].is_string(), "{scheduled}");
    r.next().unwrap().expect(0, &["- empty -"]);
    r.next()
        .unwrap()
        .expect(0, &["* shared_tasks.add", "* shared_tasks.sleep"]);
    let stats = r.next().unwrap().expect(0, &[]).json();
    let s = &stats[node];
    assert_eq!(s["pid"], w.proc_.pid());
    assert!(s["clock"].is_string(), "stats.clock is a string: {s}");
    assert_eq!(s["pool"]["max-concurrency"], 2);
    assert!(
        s["pool"]["processes"]
            .as_array()
            .unwrap()
            .contains(&json!(child_pid)),
        "pool.processes lists the running child: {s}"
    );
    assert_eq!(s["broker"]["transport"], "redis");
    assert_eq!(s["broker"]["port"], redis.port);
    let queues = r.next().unwrap().expect(0, &[]).json();
    assert_eq!(queues[node][0]["name"], "celery");
    let q = r.next().unwrap().expect(0, &[]).json();
    assert_eq!(q[node][running][0], "active");
    assert_eq!(q[node][eta][0], "scheduled");
    assert_eq!(q[node][eta][1]["name"], "shared_tasks.add");
    let conf = r.next().unwrap().expect(0, &[]).json();
    assert!(
        conf[node]["broker_url"]
            .as_str()
            .unwrap()
            .contains(&redis.port.to_string()),
        "{conf}"
    );
    r.next().unwrap().expect(0, &["clock"]);
    r.next().unwrap().expect(0, &["celeriac"]);
    r.next()
        .unwrap()
        .expect(0, &["new rate limit set successfully"]);
    // Python's CLI prints an error reply and still exits 0; so does it for a Python worker.
    r.next()
        .unwrap()
        .expect(0, &[&format!("{node}: ERROR"), "unknown task"]);
    r.next()
        .unwrap()
        .expect(0, &["time limits set successfully"]);
    r.next()
        .unwrap()
        .expect(0, &["* shared_tasks.add [rate_limit=10/m]"]);
    r.next().unwrap().expect(0, &["add consumer extra"]);
    let queues = r.next().unwrap().expect(0, &[]).json();
    let names: Vec<&str> = queues[node]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert_eq!(names, ["celery", "extra"]);
    r.next()
        .unwrap()
        .expect(0, &["no longer consuming from extra"]);
    let nobody = r.next().unwrap();
    nobody.expect(69, &[]);
    assert!(
        nobody.stderr.contains("No nodes replied"),
        "{}",
        nobody.stderr
    );
}

#[test]
fn python_celery_revoke_discards_a_queued_task_and_terminate_kills_a_running_one() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let w = single_slot_late_ack_worker(&url);
    let node = w.node.as_str();
    let mut c = redis.client(0);
    let running = submit(&mut c, "celery", "shared_tasks.sleep", vec![json!(30)]);
    wait_active(&url, node, &running);
    // The only slot is busy (late ack keeps its prefetch slot), so this one waits in the queue.
    let queued = submit(
        &mut c,
        "celery",
        "shared_tasks.add",
        vec![json!(2), json!(2)],
    );
    assert_eq!(queue_len(&mut c, "celery"), 1);

    let runs = celery_batch(
        &url,
        &[
            argv(&["control", "revoke", &queued, "-d", node]),
            argv(&["inspect", "revoked", "-d", node]),
            argv(&["control", "terminate", "SIGKILL", &running, "-d", node]),
        ],
    );
    runs[0].expect(0, &[&format!("tasks {{'{queued}'}} flagged as revoked")]);
    runs[1].expect(0, &[&format!("* {queued}")]);
    runs[2].expect(0, &[&format!("terminate: {running}")]);

    let out = py(
        &url,
        &url,
        &format!(
            r#"
from celery.exceptions import TaskRevokedError
for tid in ("{running}", "{queued}"):
    r = app.AsyncResult(tid)
    try:
        r.get(timeout=20)
        raise SystemExit(f"{{tid}} did not raise")
    except TaskRevokedError as e:
        print(tid, r.state, repr(e))
print("after", add.delay(3, 4).get(timeout=20))
"#
        ),
        T,
    );
    assert!(
        out.contains(&format!("{running} REVOKED TaskRevokedError('terminated')")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{queued} REVOKED TaskRevokedError('revoked')")),
        "{out}"
    );
    assert!(
        out.contains("after 7"),
        "worker serves after a terminate: {out}"
    );
    // The revoked message was taken off the queue and discarded, never run.
    wait_until(T, "the revoked task to be discarded", || {
        w.proc_
            .output()
            .contains(&format!(
                "Discarding revoked task: shared_tasks.add[{queued}]"
            ))
            .then_some(())
    });
    let log = w.proc_.output();
    assert!(
        lines_with(&log, &queued)
            .iter()
            .all(|l| !l.contains("succeeded")),
        "{log}"
    );
    assert!(
        log.contains(&format!("Terminating {running} (9)")),
        "terminate is logged as Python logs it:\n{log}"
    );
}

#[test]
fn python_celery_control_shutdown_stops_the_celeriac_worker_though_celery_exits_69() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mut w = CeleriacWorker::start(&url, &["-c1"]);
    let member = format!("\x06\x16\x06\x16{}.celery.pidbox", w.node);
    let mut c = redis.client(0);
    assert!(
        c.sismember::<_, _, bool>("_kombu.binding.celery.pidbox", &member)
            .unwrap()
    );

    let out = celery_cli(&url, &["control", "shutdown"], T);
    // As with a Python worker: shutdown sends no reply, so celery reports none and exits 69.
    assert_eq!(out.code, Some(69), "{out:?}");
    assert!(
        out.stderr
            .contains("No nodes replied within time constraint"),
        "{out:?}"
    );
    let status = w.proc_.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "warm shutdown exits 0: {status:?}");
    assert!(w.proc_.output().contains("Got shutdown from remote"));
    assert!(
        !c.sismember::<_, _, bool>("_kombu.binding.celery.pidbox", &member)
            .unwrap(),
        "the mailbox binding is removed on shutdown"
    );
}

#[test]
fn python_celery_purge_empties_the_queue_a_celeriac_worker_serves() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    // Late ack: the running task holds the only prefetch slot, so the rest stays queued for
    // as long as it runs (it is terminated below, not waited for).
    let w = single_slot_late_ack_worker(&url);
    let node = w.node.as_str();
    let mut c = redis.client(0);
    let busy = submit(&mut c, "celery", "shared_tasks.sleep", vec![json!(60)]);
    wait_active(&url, node, &busy);
    for i in 0..3 {
        submit(
            &mut c,
            "celery",
            "shared_tasks.add",
            vec![json!(i), json!(i)],
        );
    }
    assert_eq!(queue_len(&mut c, "celery"), 3);

    let out = celery_cli(&url, &["purge", "-f"], T);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("Purged 3 messages from 1 known task queue."),
        "{out:?}"
    );
    assert_eq!(queue_len(&mut c, "celery"), 0);
    // Free the slot; the worker goes back to waiting on the (now missing) queue.
    let term = cli(
        &url,
        &["control", "revoke", &busy, "--terminate", "-d", node],
    );
    expect_code(&term, 0, "terminate the busy task");
    let again = celery_cli(&url, &["purge", "-f"], T);
    assert!(
        again.stdout.contains("No messages purged from 1 queue."),
        "{again:?}"
    );
    let out = py(&url, &url, "print(add.delay(20, 22).get(timeout=20))", T);
    assert_eq!(out.trim(), "42", "the worker serves on after the purges");
    assert!(
        lines_with(&w.proc_.output(), "succeeded").len() == 1,
        "only the new task ran, none of the purged ones:\n{}",
        w.proc_.output()
    );
}

#[test]
fn python_celery_events_dump_shows_celeriac_worker_and_task_events() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let w = CeleriacWorker::start(&url, &["-E", "-c1"]);
    let mut cmd = python_cmd(&url);
    cmd.args(["-m", "celery", "-A", "shared_tasks", "events", "--dump"]);
    let dump = Proc::spawn(cmd);
    dump.wait_for_output("starting capture", T);
    // The dumper wakes workers with a `heartbeat` cast, so a heartbeat comes at once.
    dump.wait_for_output(&format!("{} [", w.node), Duration::from_secs(20));
    let mut c = redis.client(0);
    let id = submit(
        &mut c,
        "celery",
        "shared_tasks.add",
        vec![json!(2), json!(3)],
    );
    wait_until(T, "task events in celery events --dump", || {
        let o = dump.output();
        (o.contains(&format!("task succeeded: shared_tasks.add({id})"))).then_some(o)
    });
    let o = dump.output();
    for kind in ["task received", "task started", "task succeeded"] {
        let lines = lines_with(&o, kind);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&w.node) && l.contains(&id)),
            "no {kind:?} line for {id}:\n{o}"
        );
    }
    assert!(
        lines_with(&o, "task succeeded")
            .iter()
            .any(|l| l.contains("result=5")),
        "{o}"
    );
    assert!(
        lines_with(&o, " heartbeat: ")
            .iter()
            .any(|l| l.starts_with(&w.node) && l.contains("sw_ident=celeriac")),
        "{o}"
    );
}

// ---------------------------------------------------------------------------------------
// celeriac's CLI against celeriac and Python workers
// ---------------------------------------------------------------------------------------

#[test]
fn celeriac_cli_inspects_and_controls_a_celeriac_worker_with_exit_codes() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let w = CeleriacWorker::start(&url, &["-P", "prefork", "-c2"]);
    let node = w.node.as_str();
    let mut c = redis.client(0);
    let running = submit(&mut c, "celery", "shared_tasks.sleep", vec![json!(30)]);
    wait_active(&url, node, &running);
    let eta = py(
        &url,
        &url,
        "print(add.apply_async((1, 2), countdown=300).id)",
        T,
    );
    let eta = eta.trim();
    let inspect = |method: &str, extra: &[&str]| {
        let mut args = vec!["inspect", method];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-d", node, "--json"]);
        let o = cli(&url, &args);
        expect_code(&o, 0, &format!("inspect {method}"));
        json_of(&o, method)[node].clone()
    };

    // Table output, no destination: every node answers within the timeout.
    let ping = cli(&url, &["inspect", "ping"]);
    expect_code(&ping, 0, "inspect ping");
    assert!(
        ping.stdout.contains(&format!("->  {node}: OK pong")),
        "{ping:?}"
    );
    assert!(ping.stdout.contains("1 node online."), "{ping:?}");
    assert_eq!(inspect("ping", &[]), json!({"ok": "pong"}));
    assert_eq!(inspect("active", &[])[0]["id"], running);
    assert_eq!(inspect("reserved", &[]), json!([]));
    assert_eq!(inspect("scheduled", &[])[0]["request"]["id"], eta);
    assert!(
        inspect("registered", &[])
            .as_array()
            .unwrap()
            .contains(&json!("shared_tasks.add"))
    );
    let stats = inspect("stats", &[]);
    assert_eq!(stats["pid"], w.proc_.pid());
    assert_eq!(stats["pool"]["max-concurrency"], 2);
    assert_eq!(inspect("active_queues", &[])[0]["name"], "celery");
    let q = inspect("query_task", &[&running, eta]);
    assert_eq!(q[&running][0], "active");
    assert_eq!(q[eta][0], "scheduled");
    assert_eq!(inspect("conf", &[])["worker_concurrency"], 2);
    assert!(inspect("clock", &[])["clock"].as_u64().unwrap() > 0);
    assert!(
        inspect("report", &[])["ok"]
            .as_str()
            .unwrap()
            .contains("celeriac")
    );
    // Tables: queues and ok texts read as Celery's CLI prints them.
    let queues = cli(&url, &["inspect", "active_queues", "-d", node]);
    assert!(
        queues
            .stdout
            .contains("* celery exchange=celery(direct) key=celery"),
        "{queues:?}"
    );
    let active = cli(&url, &["inspect", "active", "-d", node]);
    assert!(
        active
            .stdout
            .contains(&format!("* shared_tasks.sleep[{running}] args=[30]")),
        "{active:?}"
    );

    // control: ok → 0; an error reply → 1; nobody answering → 69.
    let run = |args: &[&str], code: i32, needle: &str| {
        let mut a = vec!["control"];
        a.extend_from_slice(args);
        let o = cli(&url, &a);
        expect_code(&o, code, &a.join(" "));
        assert!(
            o.stdout.contains(needle) || o.stderr.contains(needle),
            "{a:?}: expected {needle:?}: {o:?}"
        );
    };
    run(
        &["rate-limit", "shared_tasks.add", "10/m", "-d", node],
        0,
        "new rate limit set successfully",
    );
    run(
        &["rate-limit", "shared_tasks.add", "fast", "-d", node],
        1,
        "Invalid rate limit string",
    );
    run(
        &["rate-limit", "shared_tasks.nope", "1/s", "-d", node],
        1,
        "unknown task",
    );
    run(
        &["time-limit", "shared_tasks.add", "5", "10", "-d", node],
        0,
        "time limits set successfully",
    );
    run(
        &["add-consumer", "extra", "-d", node],
        0,
        "add consumer extra",
    );
    let extra = submit(
        &mut c,
        "extra",
        "shared_tasks.add",
        vec![json!(5), json!(6)],
    );
    run(
        &["cancel-consumer", "extra", "-d", node],
        0,
        "no longer consuming from extra",
    );
    run(
        &["revoke", eta, "-d", node],
        0,
        &format!("tasks {{'{eta}'}} flagged as revoked"),
    );
    assert!(
        inspect("revoked", &[])
            .as_array()
            .unwrap()
            .contains(&json!(eta))
    );
    run(
        &[
            "revoke",
            &running,
            "--terminate",
            "--signal",
            "SIGKILL",
            "-d",
            node,
        ],
        0,
        &format!("terminate: {running}"),
    );
    run(
        &[
            "rate-limit",
            "shared_tasks.add",
            "1/s",
            "-d",
            "nobody@nowhere",
        ],
        69,
        "No nodes replied",
    );
    let nobody = cli(
        &url,
        &["inspect", "ping", "-d", "nobody@nowhere", "-t", "0.3"],
    );
    expect_code(&nobody, 69, "inspect ping -d nobody");

    wait_until(T, "the task sent to the added queue", || {
        meta(&mut c, &extra).filter(|m| m["status"] == "SUCCESS")
    });
    let m = wait_until(T, "the terminated task's result", || {
        meta(&mut c, &running).filter(|m| m["status"] == "REVOKED")
    });
    assert_eq!(m["result"]["exc_message"], json!(["terminated"]));
}

#[test]
fn celeriac_cli_inspects_controls_and_stops_a_python_worker() {
    // Build (or find) the binary before anything is timed.
    tests::celeriac_bin();
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mut w = PythonWorker::start(&url, &[("CELERY_RESULT_BACKEND", &url)], &["-E", "-c1"]);
    let node = w.node.clone();
    let node = node.as_str();
    let mut c = redis.client(0);
    let long = submit(&mut c, "celery", "shared_tasks.sleep", vec![json!(30)]);
    wait_active(&url, node, &long);

    let ping = cli(&url, &["inspect", "ping"]);
    expect_code(&ping, 0, "inspect ping");
    assert!(ping.stdout.contains(&format!("->  {node}: OK pong")));
    let j = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(&["-d", node, "--json"]);
        let o = cli(&url, &a);
        expect_code(&o, 0, &a.join(" "));
        json_of(&o, &a.join(" "))[node].clone()
    };
    assert_eq!(
        j(&["inspect", "stats"])["pool"]["implementation"],
        "celery.concurrency.prefork:TaskPool"
    );
    assert!(
        j(&["inspect", "registered"])
            .as_array()
            .unwrap()
            .contains(&json!("shared_tasks.nope"))
    );
    assert_eq!(j(&["inspect", "active"])[0]["id"], long);
    assert_eq!(j(&["inspect", "query_task", &long])[&long][0], "active");
    assert_eq!(j(&["inspect", "active_queues"])[0]["name"], "celery");
    assert!(j(&["inspect", "conf"])["broker_url"].is_string());
    assert!(j(&["inspect", "clock"])["clock"].is_u64());
    let report = cli(&url, &["inspect", "report", "-d", node]);
    assert!(
        report.stdout.contains("software -> celery:5.7"),
        "{report:?}"
    );
    assert_eq!(
        j(&["control", "rate-limit", "shared_tasks.add", "10/m"])["ok"],
        "new rate limit set successfully"
    );
    assert_eq!(
        j(&["control", "time-limit", "shared_tasks.add", "5", "10"])["ok"],
        "time limits set successfully"
    );
    assert_eq!(
        j(&["control", "add-consumer", "extra"])["ok"],
        "add consumer extra"
    );
    assert_eq!(
        j(&["control", "cancel-consumer", "extra"])["ok"],
        "no longer consuming from extra"
    );
    let unknown = cli(
        &url,
        &[
            "control",
            "rate-limit",
            "shared_tasks.none",
            "1/s",
            "-d",
            node,
        ],
    );
    expect_code(&unknown, 1, "rate-limit of an unknown task");
    let revoke = cli(&url, &["control", "revoke", "r-1", "r-2", "-d", node]);
    expect_code(&revoke, 0, "control revoke");
    assert!(revoke.stdout.contains("flagged as revoked"), "{revoke:?}");
    assert!(
        j(&["inspect", "revoked"])
            .as_array()
            .unwrap()
            .contains(&json!("r-1"))
    );

    // Operator views see the Python worker too.
    let status = cli(&url, &["status", "--json"]);
    expect_code(&status, 0, "status");
    let rows = json_of(&status, "status");
    assert_eq!(rows[0]["node"], node);
    assert!(
        rows[0]["sw"].as_str().unwrap().starts_with("py-celery"),
        "{rows}"
    );
    let jobs = json_of(&cli(&url, &["jobs", "--state", "active", "--json"]), "jobs");
    assert_eq!(jobs[0]["id"], long);
    assert_eq!(jobs[0]["worker"], node);
    let job = json_of(&cli(&url, &["job", &long, "--json"]), "job");
    assert_eq!(job["worker"], node);
    assert_eq!(job["worker_state"], "active");

    let term = cli(
        &url,
        &[
            "control",
            "revoke",
            &long,
            "--terminate",
            "--signal",
            "SIGKILL",
            "-d",
            node,
        ],
    );
    expect_code(&term, 0, "revoke --terminate");
    assert!(
        term.stdout.contains(&format!("terminate: {long}")),
        "{term:?}"
    );
    let m = wait_until(T, "REVOKED terminated from the Python worker", || {
        meta(&mut c, &long).filter(|m| m["status"] == "REVOKED")
    });
    assert_eq!(m["result"]["exc_message"], json!(["terminated"]));

    // A Python worker announces worker-offline *before* its running task ends; celeriac's
    // shutdown waits for the task's own event before it says "stopped".
    let short = submit(&mut c, "celery", "shared_tasks.sleep", vec![json!(5)]);
    wait_active(&url, node, &short);
    let down = cli(&url, &["control", "shutdown", "--wait", "30"]);
    expect_code(&down, 0, "control shutdown of a Python worker");
    let lines: Vec<&str> = down.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("{node}: busy: shared_tasks.sleep[{short}]").as_str()),
        "{down:?}"
    );
    assert_eq!(
        lines.last().copied(),
        Some(format!("{node}: stopped").as_str()),
        "{down:?}"
    );
    assert_eq!(
        meta(&mut c, &short).map(|m| m["status"].clone()),
        Some(json!("SUCCESS")),
        "the task had finished when shutdown said stopped"
    );
    w.proc_.wait_exit(Duration::from_secs(20));
    let none = cli(&url, &["status", "-t", "1"]);
    assert_eq!(none.code, Some(69), "{none:?}");
}

#[test]
fn celeriac_purge_wakes_a_python_monitor_blocked_in_get_within_two_seconds() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    // Early ack, one slot, prefetch 1: one task runs, one more is reserved (held unacked in
    // the worker, as Celery holds it), the rest waits in the queue.
    let w = CeleriacWorker::start(&url, &["-c1", "--prefetch-multiplier", "1"]);
    let node = w.node.as_str();
    let mut c = redis.client(0);
    let running = submit(&mut c, "celery", "shared_tasks.sleep", vec![json!(3)]);
    wait_active(&url, node, &running);
    let reserved = submit(
        &mut c,
        "celery",
        "shared_tasks.add",
        vec![json!(5), json!(5)],
    );
    wait_until(T, "the second task to be reserved", || {
        let o = cli(&url, &["inspect", "reserved", "-d", node, "--json"]);
        o.stdout.contains(&reserved).then_some(())
    });

    let mut cmd = python_cmd(&url);
    cmd.args([
        "-c",
        r#"
import json, time
from shared_tasks import *
from celery.exceptions import TaskRevokedError
r = add.delay(1, 2)
print("waiting", r.id, flush=True)
try:
    r.get(timeout=30)
    print("RESULT no error")
except TaskRevokedError as e:
    print("RESULT", json.dumps({"t": time.time(), "exc": repr(e), "state": r.state}))
"#,
    ]);
    let mut monitor = Proc::spawn(cmd);
    monitor.wait_for_output("waiting ", T);
    let out = monitor.output();
    let queued = out
        .lines()
        .find_map(|l| l.strip_prefix("waiting "))
        .unwrap()
        .trim()
        .to_string();
    // Blocked in get(): subscribed to the task's meta channel (AsyncResult's wait).
    wait_until(T, "the monitor to subscribe to its result", || {
        let subs: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("celery-task-meta-{queued}"))
            .query(&mut c)
            .unwrap();
        (subs[0].1 > 0).then_some(())
    });
    assert_eq!(
        queue_len(&mut c, "celery"),
        1,
        "the task waits in the queue"
    );

    let t0 = now();
    let purge = cli(&url, &["purge", "-f", "--json"]);
    expect_code(&purge, 0, "celeriac purge -f");
    let report = json_of(&purge, "purge");
    assert_eq!(
        report["purged"]["celery"], 2,
        "one from the list, one reserved: {report}"
    );
    assert_eq!(report["unacked_removed"], 1, "{report}");
    assert_eq!(queue_len(&mut c, "celery"), 0);

    monitor.wait_exit(Duration::from_secs(10));
    let out = monitor.output();
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("monitor output: {out}"));
    let r: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(r["exc"], "TaskRevokedError('purged')");
    assert_eq!(r["state"], "REVOKED");
    let waited = r["t"].as_f64().unwrap() - t0;
    assert!(
        waited < 2.0,
        "monitor woke {waited:.2}s after purge started"
    );

    // The reserved task: REVOKED for its waiters too, its unacked entry gone, and the
    // worker discards it instead of running it.
    let m = meta(&mut c, &reserved).expect("REVOKED stored for the reserved task");
    assert_eq!(m["status"], "REVOKED");
    let unacked: Vec<String> = c.hvals("unacked").unwrap();
    assert!(
        unacked.iter().all(|v| !v.contains(&reserved)),
        "{unacked:?}"
    );
    // The running task was not touched: it finishes and stores its result.
    let m = wait_until(T, "the running task's result", || {
        meta(&mut c, &running).filter(|m| m["status"] == "SUCCESS")
    });
    assert_eq!(m["result"], json!(3));
    wait_until(T, "the reserved task to be discarded", || {
        w.proc_
            .output()
            .contains(&format!(
                "Discarding revoked task: shared_tasks.add[{reserved}]"
            ))
            .then_some(())
    });
    assert!(
        lines_with(&w.proc_.output(), &reserved)
            .iter()
            .all(|l| !l.contains("succeeded")),
        "{}",
        w.proc_.output()
    );
}

#[test]
fn celeriac_control_shutdown_reports_busy_then_stopped_and_the_task_result_is_stored() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mut w = CeleriacWorker::start(&url, &["-c1"]);
    let node = w.node.clone();
    let mut c = redis.client(0);
    let id = submit(&mut c, "celery", "shared_tasks.sleep", vec![json!(5)]);
    wait_active(&url, &node, &id);

    let out = cli(&url, &["control", "shutdown", "-d", &node, "--wait", "30"]);
    expect_code(&out, 0, "control shutdown");
    // busy, then (perhaps "stopping" between the task's end and the offline event) stopped.
    let lines: Vec<&str> = out.stdout.lines().collect();
    let busy = format!("{node}: busy: shared_tasks.sleep[{id}]");
    let stopped = format!("{node}: stopped");
    let stopping = format!("{node}: stopping");
    assert!(
        lines.len() >= 2
            && lines[0] == busy
            && lines[lines.len() - 1] == stopped
            && lines[1..lines.len() - 1].iter().all(|l| *l == stopping),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    // Stored by the time the command said "stopped": no waiting here.
    let m = meta(&mut c, &id).expect("result stored when shutdown returns");
    assert_eq!(m["status"], "SUCCESS");
    assert_eq!(m["result"], json!(5));
    assert!(w.proc_.wait_exit(Duration::from_secs(10)).success());

    // Nobody left: the same command says so and exits 69, as Celery's does.
    let again = cli(&url, &["control", "shutdown", "-t", "0.3"]);
    expect_code(&again, 69, "shutdown with no node up");
    assert!(again.stderr.contains("No nodes replied"), "{again:?}");
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

/// Bad requests sent to `node`; prints each reply list as JSON, then a task's result.
const BAD_INPUT_PROBE: &str = r#"
import base64, json, sys, uuid
import redis
node, queue = sys.argv[1], sys.argv[2]
r = redis.Redis.from_url(BROKER)
db = r.connection_pool.connection_kwargs.get("db", 0)
channel = f"/{db}.celery.pidbox"
r.publish(channel, b"this is not json \xff")
env = {"body": base64.b64encode(b"{not json").decode(), "content-encoding": "utf-8",
       "content-type": "application/json", "headers": {"clock": 1},
       "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""},
                      "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}}
r.publish(channel, json.dumps(env))
env["body"] = base64.b64encode(json.dumps([1, 2, 3]).encode()).decode()
r.publish(channel, json.dumps(env))
ask = lambda method, **args: app.control.broadcast(method, arguments=args, reply=True, destination=[node], timeout=3)
out = {
    "unknown": ask("no_such_cmd"),
    "revoke_int": ask("revoke", task_id=12345),
    "revoke_dict": ask("revoke", task_id={"x": 1}),
    "revoke_nested": ask("revoke", task_id=["ok-id", ["x"]]),
    "revoke_null": ask("revoke", task_id=None),
    "revoke_missing": ask("revoke"),
    "revoke_not_uuid": ask("revoke", task_id="not a uuid!"),
    "nobody": app.control.ping(destination=["nobody@nowhere"], timeout=1),
}
out = {k: [v for reply in replies for v in reply.values()] for k, replies in out.items()}
# pattern + matcher (kombu's glob): both workers hear it, only the matching one answers.
roles = lambda replies: sorted(["self" if n == node else "other", v] for reply in replies for n, v in reply.items())
glob = lambda pattern, **kw: roles(app.control.broadcast("ping", reply=True, pattern=pattern, matcher="glob", timeout=1, **kw))
out["glob"] = glob(node.split("@")[0] + "@*", limit=1)
out["glob_miss"] = glob("nobody@*")
out["add"] = add.apply_async((2, 3), queue=queue).get(timeout=20)
print(json.dumps(out, sort_keys=True))
"#;

fn bad_input_replies(url: &str, node: &str, queue: &str) -> Value {
    let mut cmd = python_cmd(url);
    cmd.args([
        "-c",
        &format!("from shared_tasks import *\n{BAD_INPUT_PROBE}"),
        node,
        queue,
    ]);
    let out = run_with_timeout(cmd, T);
    assert!(out.success, "bad-input probe failed: {out:?}");
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|_| panic!("{out:?}"))
}

#[test]
fn bad_pidbox_input_is_logged_answered_as_python_answers_and_the_worker_keeps_serving() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let w = CeleriacWorker::start(&url, &["-c1", "-Q", "rust"]);
    let p = PythonWorker::start(
        &url,
        &[("CELERY_RESULT_BACKEND", &url)],
        &["-c1", "-Q", "py"],
    );
    let ours = bad_input_replies(&url, &w.node, "rust");
    let theirs = bad_input_replies(&url, &p.node, "py");
    assert_eq!(
        ours,
        theirs,
        "celeriac's replies (left) differ from Python's (right):\n{}\n{}",
        serde_json::to_string_pretty(&ours).unwrap(),
        serde_json::to_string_pretty(&theirs).unwrap()
    );
    assert_eq!(ours["add"], 5, "the worker serves after the bad input");
    assert_eq!(
        ours["unknown"],
        json!([{"error": "KeyError('no_such_cmd')"}])
    );
    assert_eq!(ours["nobody"], json!([]));
    assert_eq!(ours["glob"], json!([["self", {"ok": "pong"}]]));
    assert_eq!(ours["glob_miss"], json!([]));
    let log = w.proc_.output();
    for needle in [
        "pidbox: ignoring a message that is not a kombu envelope",
        "pidbox: ignoring a request with an unreadable body",
        "pidbox: ignoring a malformed control request",
        "pidbox: revoke with a malformed task id",
    ] {
        assert!(log.contains(needle), "worker log lacks {needle:?}:\n{log}");
    }
    // Still answering control commands, too.
    let ping = cli(&url, &["inspect", "ping", "-d", &w.node]);
    expect_code(&ping, 0, "ping after bad input");
}

// ---------------------------------------------------------------------------------------
// Operator views
// ---------------------------------------------------------------------------------------

#[test]
fn status_lists_live_nodes_and_exits_nonzero_when_none_is_up() {
    tests::celeriac_bin();
    let redis = RedisServer::start();
    let url = redis.url(0);
    let none = cli(&url, &["status", "-t", "1"]);
    assert_eq!(none.code, Some(69), "{none:?}");
    assert!(none.stderr.contains("no worker is up"), "{none:?}");

    let w = CeleriacWorker::start(&url, &["-c1"]);
    let mut c = redis.client(0);
    let id = submit(
        &mut c,
        "celery",
        "shared_tasks.add",
        vec![json!(1), json!(1)],
    );
    wait_until(T, "the task to finish", || meta(&mut c, &id));
    let table = cli(&url, &["status", "-t", "1"]);
    expect_code(&table, 0, "status");
    assert!(table.stdout.contains(&w.node), "{table:?}");
    assert!(table.stdout.contains("1 node online."), "{table:?}");
    let rows = json_of(&cli(&url, &["status", "-t", "1", "--json"]), "status");
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["node"], w.node);
    assert_eq!(rows[0]["processed"], 1);
    assert_eq!(rows[0]["active"], json!([]));
    assert!(rows[0]["heartbeat_age"].as_f64().unwrap() < 4.0, "{rows}");

    assert!(w.stop().success());
    let gone = cli(&url, &["status", "-t", "1"]);
    assert_eq!(gone.code, Some(69), "{gone:?}");
}

#[test]
fn summary_jobs_job_and_dead_answer_the_operator_questions_in_json() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    // Late ack: the running task holds the only prefetch slot, so the rest stays queued.
    let w = CeleriacWorker::start(&url, &["-c1", "--prefetch-multiplier", "1", "--acks-late"]);
    let node = w.node.as_str();
    let mut c = redis.client(0);
    // A message no one can decode goes to the dead-letter list.
    let () = c.lpush("celery", "garbage, not a message").unwrap();
    wait_until(T, "the dead letter", || {
        (c.llen::<_, usize>("celeriac.dead").unwrap() == 1).then_some(())
    });
    let failed = submit(&mut c, "celery", "shared_tasks.fail", vec![json!("boom")]);
    wait_until(T, "the failure", || meta(&mut c, &failed));
    let running = submit(&mut c, "celery", "shared_tasks.sleep", vec![json!(30)]);
    wait_active(&url, node, &running);
    let first = submit(
        &mut c,
        "celery",
        "shared_tasks.add",
        vec![json!(1), json!(1)],
    );
    let second = submit(
        &mut c,
        "celery",
        "shared_tasks.add",
        vec![json!(2), json!(2)],
    );
    // Priority 9 is kombu's last list on Redis (lists are popped 0, 3, 6, 9).
    let mut msg = TaskMessage::new(
        "shared_tasks.add",
        vec![json!(9), json!(9)],
        Default::default(),
    );
    msg.properties.priority = 9;
    let low = msg.headers.id.clone();
    let () = c
        .lpush("celery\x06\x169", msg.to_envelope("celery", 9).encode())
        .unwrap();

    let summary = json_of(&cli(&url, &["summary", "--json"]), "summary");
    let q = summary["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "celery")
        .unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(q["total"], 3, "{summary}");
    assert_eq!(q["by_priority"]["0-2"], 2);
    assert_eq!(q["by_priority"]["9"], 1);
    assert_eq!(summary["dead_letters"], 1);
    assert_eq!(summary["workers"][0]["node"], node);
    // Only the running task is unacked, under a live celeriac lease (its score is the lease's
    // end, in the future): no stale entry, so no age to report.
    assert_eq!(summary["unacked"]["total"], 1, "{summary}");
    assert_eq!(summary["unacked"]["leased_by_celeriac"], 1, "{summary}");
    assert!(summary["unacked"]["oldest_age_s"].is_null(), "{summary}");

    let queued = json_of(
        &cli(&url, &["jobs", "--state", "queued", "--json"]),
        "jobs queued",
    );
    let ids: Vec<&str> = queued
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    // In pop order: `first` was pushed first, so it runs first; the priority-9 list last.
    let pos = |id: &str| {
        ids.iter()
            .position(|x| *x == id)
            .unwrap_or_else(|| panic!("{id} not in {queued}"))
    };
    assert!(pos(&first) < pos(&second), "{queued}");
    assert!(pos(&second) < pos(&low), "{queued}");
    let limited = json_of(
        &cli(
            &url,
            &["jobs", "--state", "queued", "--limit", "1", "--json"],
        ),
        "jobs --limit",
    );
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let active = json_of(
        &cli(&url, &["jobs", "--state", "active", "--json"]),
        "jobs active",
    );
    assert_eq!(active[0]["id"], running);
    assert_eq!(active[0]["worker"], node);
    let failures = json_of(
        &cli(&url, &["jobs", "--state", "failed", "--json"]),
        "jobs failed",
    );
    assert_eq!(failures[0]["id"], failed);
    assert!(
        failures[0]["exception"].as_str().unwrap().contains("boom"),
        "{failures}"
    );

    let job = |id: &str| json_of(&cli(&url, &["job", id, "--json"]), "job");
    let j = job(&second);
    assert_eq!(j["where"], "queued", "{j}");
    assert_eq!(j["queue"], "celery");
    assert_eq!(j["position"], 1, "second in line in its list: {j}");
    assert_eq!(j["state"], "PENDING");
    let j = job(&running);
    assert_eq!(j["worker"], node, "{j}");
    assert_eq!(j["worker_state"], "active");
    let j = job(&failed);
    assert_eq!(j["where"], "finished", "{j}");
    assert_eq!(j["state"], "FAILURE");
    assert_eq!(job("no-such-task")["where"], "unknown");

    let dead = json_of(&cli(&url, &["dead", "list", "--json"]), "dead list");
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    assert_eq!(dead[0]["queue"], "celery");
    assert!(dead[0]["reason"].is_string(), "{dead}");
    let show = json_of(&cli(&url, &["dead", "show", "0"]), "dead show");
    assert_eq!(show["payload"], "garbage, not a message");
    let missing = cli(&url, &["dead", "show", "7"]);
    assert_ne!(missing.code, Some(0), "{missing:?}");
    let purge = cli(&url, &["dead", "purge", "-f"]);
    expect_code(&purge, 0, "dead purge");
    assert!(purge.stdout.contains("deleted 1 dead letter"), "{purge:?}");
    assert_eq!(c.llen::<_, usize>("celeriac.dead").unwrap(), 0);
}

#[test]
fn celeriac_events_prints_one_line_per_worker_and_task_event() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let w = CeleriacWorker::start(&url, &["-E", "-c1"]);
    let mut cmd = Command::new(tests::celeriac_bin());
    cmd.args(["events", "--json", "--timeout", "30"])
        .env("CELERY_BROKER_URL", &url);
    let mut events = Proc::spawn(cmd);
    // The heartbeat cast makes the worker announce itself at once.
    events.wait_for_output("worker-heartbeat", T);
    let mut c = redis.client(0);
    let ok = submit(
        &mut c,
        "celery",
        "shared_tasks.add",
        vec![json!(2), json!(3)],
    );
    wait_until(T, "the task", || meta(&mut c, &ok));
    let bad = submit(&mut c, "celery", "shared_tasks.fail", vec![json!("x")]);
    wait_until(T, "task-failed in celeriac events", || {
        events.output().contains("task-failed").then_some(())
    });
    // Ctrl-C ends the stream cleanly.
    events.signal(libc::SIGINT);
    assert!(events.wait_exit(Duration::from_secs(10)).success());
    let out = events.output();
    let evs: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let kinds = |id: &str| -> Vec<&str> {
        evs.iter()
            .filter(|e| e["uuid"] == id)
            .filter_map(|e| e["type"].as_str())
            .collect()
    };
    assert_eq!(
        kinds(&ok),
        ["task-received", "task-started", "task-succeeded"],
        "{out}"
    );
    assert!(kinds(&bad).contains(&"task-failed"), "{out}");
    for e in &evs {
        assert_eq!(e["hostname"], w.node.as_str());
        assert!(e["timestamp"].is_f64() && e["clock"].is_u64(), "{e}");
    }
    // The table view: one line per event, `host [time] type: fields`.
    let mut cmd = Command::new(tests::celeriac_bin());
    cmd.args(["events", "--dump", "--timeout", "10", "--count", "1"])
        .env("CELERY_BROKER_URL", &url);
    let one = run_with_timeout(cmd, T);
    assert!(one.success, "{one:?}");
    let line = one.stdout.trim();
    assert!(
        line.starts_with(&format!("{} [", w.node)) && line.contains("worker-heartbeat: "),
        "{line}"
    );
}
