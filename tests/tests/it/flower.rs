//! Flower 2.2 watching a celeriac worker: the worker is listed online, its tasks' lifecycle
//! shows up, Flower's own control (revoke with terminate) reaches it, and the workers page and
//! the worker's page render in headless Chromium (screenshots saved under `target/`).
//!
//! Flower listens on a free loopback port; Chromium runs with a fresh profile directory and
//! no network services of its own. A missing Chromium fails the test with an install hint.

use celeriac::protocol::TaskMessage;
use redis::Commands;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use tests::{
    CeleriacWorker, Proc, PyOutput, RedisServer, free_port, py_dir, python, run_with_timeout,
    wait_until, which, workspace_root,
};

const T: Duration = Duration::from_secs(60);

/// Debian's `chromium` (or a `chromium-browser`), or a failure saying how to install it.
fn chromium() -> PathBuf {
    which("chromium")
        .or_else(|| which("chromium-browser"))
        .unwrap_or_else(|| {
            panic!(
                "chromium not found on PATH. Install it with `apt-get install -y chromium \
                 chromium-driver` (scripts/test.sh does it through scripts/lib.sh \
                 ensure_chromium)."
            )
        })
}

/// The workspace's target directory, where screenshots are kept for people to look at.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Load `url` in headless Chromium with a fresh profile, giving the page's scripts `budget_ms`
/// of virtual time (Flower fills its tables by AJAX), with extra output flags.
fn chromium_run(url: &str, budget_ms: u32, output: &[&str]) -> PyOutput {
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--virtual-time-budget={budget_ms}"))
    .args(output)
    .arg(url);
    let out = run_with_timeout(cmd, T);
    assert!(out.success, "chromium failed on {url}: {out:?}");
    out
}

/// Render `url`'s DOM after its scripts ran, and save a screenshot of it as `target/<png>`.
fn render(url: &str, png: &str) -> String {
    let shot = target_dir().join(png);
    chromium_run(url, 4000, &[&format!("--screenshot={}", shot.display())]);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "no real screenshot at {}", shot.display());
    chromium_run(url, 4000, &["--dump-dom"]).stdout
}

/// A minimal HTTP/1.0 request to Flower on 127.0.0.1: (status, body).
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// GET a Flower API path and parse its JSON (None until Flower answers 200).
fn api(port: u16, path: &str) -> Option<Value> {
    let (status, body) = http(port, "GET", path)?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn submit(c: &mut redis::Connection, task: &str, args: Vec<Value>) -> String {
    let msg = TaskMessage::new(task, args, Default::default());
    let () = c
        .lpush("celery", msg.to_envelope("celery", 0).encode())
        .expect("LPUSH task");
    msg.headers.id
}

/// Flower's record of a task, once it reached `state`.
fn flower_task(port: u16, id: &str, state: &str) -> Value {
    wait_until(T, &format!("Flower to show {id} as {state}"), || {
        api(port, &format!("/api/task/info/{id}")).filter(|t| t["state"] == state)
    })
}

#[test]
fn flower_lists_the_celeriac_worker_online_shows_its_tasks_and_renders_its_pages() {
    chromium();
    let redis = RedisServer::start();
    let url = redis.url(0);
    let w = CeleriacWorker::start(&url, &["-E", "-P", "prefork", "-c2"]);
    let node = w.node.clone();
    let port = free_port();
    let mut cmd = Command::new(python());
    cmd.args([
        "-m",
        "celery",
        "-A",
        "shared_tasks",
        "flower",
        "--address=127.0.0.1",
        &format!("--port={port}"),
    ])
    .current_dir(py_dir())
    .env("PYTHONPATH", py_dir())
    .env("CELERY_BROKER_URL", &url)
    .env("CELERY_RESULT_BACKEND", &url)
    // Flower 2.x refuses its JSON API without authentication unless told otherwise.
    .env("FLOWER_UNAUTHENTICATED_API", "1");
    let flower = Proc::spawn(cmd);

    // Online: built from the worker's own events (worker-online/heartbeat).
    let workers = wait_until(T, "Flower to list the celeriac worker online", || {
        api(port, "/api/workers?status=true").filter(|v| v[&node] == true)
    });
    assert_eq!(
        workers,
        json!({ node.clone(): true }),
        "flower log:\n{}",
        flower.output()
    );

    // Lifecycle from task events: received → started → succeeded / failed / revoked.
    let mut c = redis.client(0);
    let ok = submit(&mut c, "shared_tasks.add", vec![json!(2), json!(3)]);
    let bad = submit(&mut c, "shared_tasks.fail", vec![json!("boom")]);
    let long = submit(&mut c, "shared_tasks.sleep", vec![json!(30)]);
    let t = flower_task(port, &ok, "SUCCESS");
    assert_eq!(t["name"], "shared_tasks.add");
    assert_eq!(t["args"], "(2, 3)");
    assert_eq!(t["result"], "5");
    assert_eq!(t["worker"], node.as_str());
    for stamp in ["received", "started", "succeeded"] {
        assert!(t[stamp].is_f64(), "{stamp} missing in {t}");
    }
    let t = flower_task(port, &bad, "FAILURE");
    assert!(
        t["exception"].as_str().unwrap_or("").contains("boom"),
        "{t}"
    );
    assert!(t["traceback"].as_str().unwrap_or("").contains("ValueError"));
    flower_task(port, &long, "STARTED");
    // Flower's own control: revoke with terminate, as its Terminate button does.
    let (status, body) = http(
        port,
        "POST",
        &format!("/api/task/revoke/{long}?terminate=true&signal=SIGKILL"),
    )
    .expect("Flower answers the revoke");
    assert_eq!(status, 200, "{body}");
    let t = flower_task(port, &long, "REVOKED");
    assert!(t["revoked"].is_f64(), "{t}");
    let listed = api(port, "/api/tasks").expect("/api/tasks");
    for id in [&ok, &bad, &long] {
        assert!(listed.get(id).is_some(), "{id} not in /api/tasks: {listed}");
    }

    // The worker page's data: stats, conf, registered, active_queues replies.
    let info = wait_until(T, "Flower's worker details", || {
        api(port, "/api/workers?refresh=1").filter(|v| v[&node]["stats"].is_object())
    });
    let me = &info[&node];
    assert_eq!(me["stats"]["pool"]["max-concurrency"], 2, "{me}");
    assert!(
        me["registered"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("shared_tasks.add"))),
        "{me}"
    );
    assert_eq!(me["active_queues"][0]["name"], "celery", "{me}");
    assert!(me["conf"]["broker_url"].is_string(), "{me}");

    // The pages, in a real browser.
    let base = format!("http://127.0.0.1:{port}");
    let dom = render(&format!("{base}/workers"), "flower-workers.png");
    let row = dom
        .split("<tr")
        .find(|r| r.contains(&format!("title=\"{node}\"")))
        .unwrap_or_else(|| panic!("{node} is not in Flower's workers table:\n{dom}"));
    assert!(
        row.contains(">Online<"),
        "{node} is not shown online:\n{row}"
    );
    let page = format!("{base}/worker/{}", node.replace('@', "%40"));
    let dom = render(&page, "flower-worker.png");
    assert!(dom.contains(&node), "worker page lacks the node name");
    assert!(
        dom.to_lowercase().contains("celeriac.pool"),
        "worker page lacks the pool from stats:\n{dom}"
    );
    let dom = render(&format!("{base}/tasks"), "flower-tasks.png");
    assert!(dom.contains(&ok), "tasks page lacks {ok}");

    // Offline as soon as the worker says goodbye (worker-offline), not 4 s of silence later.
    assert!(w.stop().success());
    wait_until(
        Duration::from_secs(10),
        "Flower to show the worker offline",
        || api(port, "/api/workers?status=true").filter(|v| v[&node] == false),
    );
}
