//! Celery canvas through celeriac workers: link/link_error callbacks, chains, groups and
//! chords — including a chord whose header tasks are shared by a celeriac and a Python
//! worker, whose callback must run exactly once.

use std::time::Duration;
use tests::{PythonWorker, RedisServer};

const T: Duration = Duration::from_secs(90);

#[test]
fn links_chains_and_groups_behave_as_with_a_python_worker() {
    let redis = RedisServer::start();
    let w = redis.start_worker(&["-c2"]);
    let out = redis.py(
        r#"
from celery import chain, group
assert chain(add.s(1, 2), add.s(3), add.s(4)).apply_async().get(timeout=10) == 10
assert group(add.s(i, i) for i in range(6)).apply_async().get(timeout=10) == [0, 2, 4, 6, 8, 10]
r = add.apply_async((1, 2), link=add.s(10))
assert r.get(timeout=10) == 3
child = r.children[0]
assert child.get(timeout=10) == 13
e = fail.apply_async(("boom",), link_error=echo.si("errback ran"))
try:
    e.get(timeout=10)
except ValueError:
    pass
print("ok")
"#,
        T,
    );
    assert_eq!(out.trim(), "ok");
    tests::wait_until(Duration::from_secs(5), "the errback to run", || {
        w.proc_
            .output()
            .lines()
            .any(|l| l.contains("succeeded") && l.contains("errback ran"))
            .then_some(())
    });
}

#[test]
fn chord_shared_by_celeriac_and_python_workers_calls_back_exactly_once() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let rust = redis.start_worker(&["-c2"]);
    let python = PythonWorker::start(&url, &[], &["-P", "threads", "-c", "2"]);
    let out = redis.py(
        r#"
from celery import chord
results = []
for n in range(5):
    r = chord(add.s(i, i) for i in range(12))(echo.s("done"))
    results.append((r.id, r.get(timeout=20)))
for _, v in results:
    assert v == {"args": [[2 * i for i in range(12)], "done"], "kwargs": {}}, v
print(json.dumps([i for i, _ in results]))
"#,
        T,
    );
    let ids: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let logs = format!("{}\n{}", rust.proc_.output(), python.proc_.output());
    for id in ids {
        let runs = logs
            .lines()
            .filter(|l| l.contains(&id) && l.contains("succeeded"))
            .count();
        assert_eq!(runs, 1, "chord callback {id} ran {runs} times");
    }
    // Both kinds of worker really took part.
    assert!(
        rust.proc_.output().contains("shared_tasks.add"),
        "celeriac ran no header task"
    );
    assert!(
        python.proc_.output().contains("shared_tasks.add"),
        "python ran no header task"
    );
}
