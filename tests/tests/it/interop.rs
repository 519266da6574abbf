//! Python Celery 5.7 ↔ celeriac, over a real redis-server: Python monitors submitting to a
//! celeriac worker must not notice the difference, and celeriac's client must drive a Python
//! worker.

use redis::Commands;
use std::time::Duration;
use tests::{CeleriacWorker, PythonWorker, RedisServer, celeriac, py, wait_until};

const T: Duration = Duration::from_secs(60);

/// The first `args` element of each `echo` task in `ids`, in the order the tasks finished
/// (by `date_done`), read back through Python's `AsyncResult`.
fn echo_completion_order(url: &str, ids: &str) -> Vec<serde_json::Value> {
    let out = py(
        url,
        url,
        &format!(
            r#"
from celery.result import AsyncResult
done = []
for i in json.loads('{ids}'):
    r = AsyncResult(i, app=app)
    r.get(timeout=20)
    done.append((r.date_done, r.result["args"][0]))
print(json.dumps([a for _, a in sorted(done)]))
"#,
            ids = ids.trim()
        ),
        T,
    );
    serde_json::from_str(out.trim()).expect("completion order is JSON")
}

#[test]
fn python_client_gets_sum_and_reraised_value_error_from_celeriac_worker() {
    let redis = RedisServer::start();
    let _w = redis.start_worker(&["-c1"]);
    let out = redis.py(
        r#"
assert add.delay(2, 3).get(timeout=10) == 5
assert add.delay(2.5, 0.25).get(timeout=10) == 2.75
try:
    fail.delay("boom").get(timeout=10)
    raise SystemExit("no exception")
except ValueError as e:
    assert e.args == ("boom",), e.args
r = fail.delay("tb")
try:
    r.get(timeout=10)
except ValueError:
    pass
assert r.state == "FAILURE"
assert "ValueError" in r.traceback, r.traceback
print("ok")
"#,
        T,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn arguments_of_every_json_shape_survive_the_round_trip() {
    let redis = RedisServer::start();
    let _w = redis.start_worker(&["-c2"]);
    let out = redis.py(
        r#"
big = "x" * (1024 * 1024)
cases = [
    ((), {}),
    (("é", "日本語", "😀"), {}),
    ((None, True, False, 0, -1, 2**53, 1.5, 1e-7), {}),
    (([1, [2, [3, {"a": {"b": [None]}}]]],), {"k": {"nested": [1.25, "s"]}}),
    ((), {"only": "kwargs", "n": None}),
    ((big,), {}),
]
for args, kwargs in cases:
    got = echo.apply_async(args, kwargs).get(timeout=20)
    assert got == {"args": list(args), "kwargs": kwargs}, (args[:1], kwargs)
print("ok")
"#,
        T,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn unknown_task_reaches_python_as_not_registered_and_worker_goes_on() {
    let redis = RedisServer::start();
    let _w = redis.start_worker(&["-c1"]);
    let out = redis.py(
        r#"
from celery.exceptions import NotRegistered
try:
    nope.delay().get(timeout=10)
    raise SystemExit("no exception")
except NotRegistered as e:
    assert "shared_tasks.nope" in str(e), str(e)
assert add.delay(1, 1).get(timeout=10) == 2
print("ok")
"#,
        T,
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn lower_priority_number_runs_first() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    // Publish 9, 0, 5 while no worker runs, then start a single-slot worker.
    let ids = redis.py(
        r#"
ids = [echo.apply_async((p,), priority=p).id for p in (9, 0, 5)]
print(json.dumps(ids))
"#,
        T,
    );
    let _w = redis.start_worker(&["-P", "solo", "--prefetch-multiplier", "1"]);
    assert_eq!(echo_completion_order(&url, &ids), [0, 5, 9]);
}

#[test]
fn queues_given_with_dash_q_are_served_round_robin() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let ids = redis.py(
        r#"
ids = [echo.apply_async((q, i), queue=q).id for q in ("a", "b") for i in range(3)]
print(json.dumps(ids))
"#,
        T,
    );
    let _w = redis.start_worker(&["-P", "solo", "--prefetch-multiplier", "1", "-Q", "a,b"]);
    assert_eq!(
        echo_completion_order(&url, &ids),
        ["a", "b", "a", "b", "a", "b"]
    );
}

#[test]
fn broker_and_backend_on_different_databases() {
    let redis = RedisServer::start();
    let (broker, backend) = (redis.url(3), redis.url(4));
    let _w = CeleriacWorker::start_with_backend(&broker, &backend, &["-c1"]);
    let out = py(
        &broker,
        &backend,
        "r = add.delay(20, 22)\nprint(r.get(timeout=10), r.id)",
        T,
    );
    let mut it = out.split_whitespace();
    assert_eq!(it.next(), Some("42"));
    let id = it.next().unwrap();
    let mut db4 = redis.client(4);
    let stored: Option<String> = db4.get(format!("celery-task-meta-{id}")).unwrap();
    assert!(stored.unwrap().contains("\"status\": \"SUCCESS\""));
    let mut db3 = redis.client(3);
    let leaked: bool = db3.exists(format!("celery-task-meta-{id}")).unwrap();
    assert!(!leaked, "result written to the broker db");
}

#[test]
fn results_expire_after_a_day_and_unacked_is_empty_after_ack() {
    let redis = RedisServer::start();
    let _w = redis.start_worker(&["-c1"]);
    let id = redis.py("r = add.delay(1, 2); r.get(timeout=10); print(r.id)", T);
    let mut c = redis.client(0);
    let ttl: i64 = c.ttl(format!("celery-task-meta-{}", id.trim())).unwrap();
    assert!((86_000..=86_400).contains(&ttl), "ttl {ttl}");
    wait_until(Duration::from_secs(5), "unacked to be empty", || {
        let n: usize = c.hlen("unacked").unwrap();
        let z: usize = c.zcard("unacked_index").unwrap();
        (n == 0 && z == 0).then_some(())
    });
}

#[test]
fn python_worker_runs_what_celeriac_call_sends_and_celeriac_result_prints_it() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let w = PythonWorker::start(&url, &[], &["-P", "solo"]);
    let env = [("CELERY_BROKER_URL", url.as_str())];
    let sent = celeriac(&["call", "shared_tasks.add", "--args", "[2, 3]"], &env, T);
    assert!(sent.success, "{sent:?}");
    let id = sent.stdout.trim().to_string();
    assert_eq!(id.len(), 36, "call prints the task id: {id:?}");
    let got = celeriac(&["result", &id, "--timeout", "20"], &env, T);
    assert!(got.success, "{got:?}");
    assert_eq!(got.stdout.trim(), "5");

    let waited = celeriac(
        &[
            "call",
            "shared_tasks.add",
            "--args",
            "[20, 22]",
            "--wait",
            "--timeout",
            "20",
        ],
        &env,
        T,
    );
    assert_eq!(waited.stdout.trim(), "42", "{waited:?}");

    let failed = celeriac(
        &[
            "call",
            "shared_tasks.fail",
            "--args",
            "[\"boom\"]",
            "--wait",
            "--timeout",
            "20",
        ],
        &env,
        T,
    );
    assert_eq!(failed.code, Some(1), "{failed:?}");
    assert!(
        failed.stderr.contains("ValueError: boom"),
        "{}",
        failed.stderr
    );

    // The worker accepted our messages without complaint.
    let log = w.proc_.output();
    assert!(!log.contains("WARNING"), "python worker warned:\n{log}");
}

#[test]
fn python_worker_honours_countdown_and_priority_from_celeriac_client() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let env = [("CELERY_BROKER_URL", url.as_str())];
    // Priorities first, with no worker running: 9, 0, 5.
    let mut ids = Vec::new();
    for p in ["9", "0", "5"] {
        let out = celeriac(
            &[
                "call",
                "shared_tasks.echo",
                "--args",
                &format!("[{p}]"),
                "--priority",
                p,
            ],
            &env,
            T,
        );
        assert!(out.success, "{out:?}");
        ids.push(out.stdout.trim().to_string());
    }
    let _w = PythonWorker::start(&url, &[], &["-P", "solo", "--prefetch-multiplier", "1"]);
    let ids = serde_json::to_string(&ids).expect("ids serialize");
    assert_eq!(echo_completion_order(&url, &ids), [0, 5, 9]);
    let start = std::time::Instant::now();
    let out = celeriac(
        &[
            "call",
            "shared_tasks.add",
            "--args",
            "[1, 1]",
            "--countdown",
            "2",
            "--wait",
            "--timeout",
            "30",
        ],
        &env,
        T,
    );
    assert_eq!(out.stdout.trim(), "2", "{out:?}");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "ran before its countdown"
    );
}

#[test]
fn malformed_messages_go_to_the_dead_letter_list_and_the_worker_keeps_serving() {
    let redis = RedisServer::start();
    let _w = redis.start_worker(&["-c1"]);
    let mut c = redis.client(0);
    let good = r#"{"body": "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "shared_tasks.add", "id": "ID", "retries": 0, "timelimit": [null, null]}, "properties": {"correlation_id": "ID", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "TAG"}}"#;
    let bad: Vec<(String, &str)> = vec![
        ("this is not json {".into(), "not JSON"),
        (good.replace("W1sxLCAy", "!!!not base64").replace("TAG", "t1").replace("ID", "b1"), "base64"),
        // base64 of `{"a": 1}`: valid JSON, but not [args, kwargs, embed]
        (good.replace(
            "W1sxLCAyXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d",
            "eyJhIjogMX0=",
        ).replace("TAG", "t2").replace("ID", "b2"), "[args, kwargs, embed]"),
        (good.replace("application/json", "application/x-python-serialize").replace("TAG", "t3").replace("ID", "b3"), "application/x-python-serialize"),
        (good.replace(", \"delivery_tag\": \"TAG\"", "").replace("ID", "b4"), "delivery_tag"),
    ];
    for (raw, _) in &bad {
        let _: i64 = c.lpush("celery", raw).unwrap();
    }
    for i in 0..5 {
        let _: i64 = c
            .lpush(
                "celery",
                good.replace("TAG", &format!("g{i}"))
                    .replace("ID", &format!("good-{i}")),
            )
            .unwrap();
    }
    for i in 0..5 {
        let meta: String = wait_until(Duration::from_secs(15), "good task result", || {
            c.get::<_, Option<String>>(format!("celery-task-meta-good-{i}"))
                .unwrap()
        });
        assert!(meta.contains("\"result\": 3"), "{meta}");
    }
    let dead: Vec<String> = wait_until(Duration::from_secs(10), "five dead letters", || {
        let d: Vec<String> = c.lrange("celeriac.dead", 0, -1).unwrap();
        (d.len() == bad.len()).then_some(d)
    });
    for (raw, reason_part) in &bad {
        let entry = dead
            .iter()
            .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
            .find(|d| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(d["payload_b64"].as_str().unwrap())
                    .unwrap()
                    == raw.as_bytes()
            })
            .unwrap_or_else(|| panic!("no dead letter keeps the original bytes of {raw:.40}"));
        let reason = entry["reason"].as_str().unwrap();
        assert!(
            reason.contains(reason_part),
            "reason {reason:?} should mention {reason_part:?}"
        );
    }
    let n: usize = c.hlen("unacked").unwrap();
    assert_eq!(n, 0, "nothing left half-processed");
    // Clients waiting on the bad tasks that still name an id are woken with a failure.
    for (id, exc) in [
        ("b1", "InvalidTaskError"),
        ("b2", "InvalidTaskError"),
        ("b3", "ContentDisallowed"),
    ] {
        let meta: String = wait_until(Duration::from_secs(5), "a failure for the bad task", || {
            c.get::<_, Option<String>>(format!("celery-task-meta-{id}"))
                .unwrap()
        });
        assert!(
            meta.contains("\"FAILURE\"") && meta.contains(exc),
            "{id}: {meta}"
        );
    }
    let q: usize = c.llen("celery").unwrap();
    assert_eq!(q, 0);
}

#[test]
fn a_celery_5_5_worker_accepts_celeriac_messages_without_warnings() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let py55 = tests::python_celery55();
    let w = PythonWorker::start_with(&py55, &url, &[], &["-P", "solo"]);
    let env = [("CELERY_BROKER_URL", url.as_str())];
    for (task, args, want) in [
        ("shared_tasks.add", "[2, 3]", "5"),
        (
            "shared_tasks.echo",
            "[\"é\", null, 1.5]",
            "{\"args\":[\"é\",null,1.5],\"kwargs\":{}}",
        ),
    ] {
        let out = celeriac(
            &["call", task, "--args", args, "--wait", "--timeout", "20"],
            &env,
            T,
        );
        assert_eq!(out.stdout.trim(), want, "{out:?}");
    }
    let out = celeriac(
        &[
            "call",
            "shared_tasks.add",
            "--args",
            "[1, 1]",
            "--countdown",
            "1",
            "--priority",
            "7",
            "--wait",
            "--timeout",
            "20",
        ],
        &env,
        T,
    );
    assert_eq!(out.stdout.trim(), "2", "{out:?}");
    let log = w.proc_.output();
    assert!(
        !log.contains("WARNING") && !log.contains("Traceback"),
        "celery 5.5 complained:\n{log}"
    );
}
