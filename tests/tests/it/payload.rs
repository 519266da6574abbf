//! Large payloads must not stall Redis for everyone else.
//!
//! Redis runs a Lua script atomically: while it runs, no other client is served. Work in a
//! script that grows with a message's size (parsing it, encoding it) therefore turns one big
//! message into a pause for every worker, producer and lock client on the server. This test
//! pushes multi-megabyte messages and results through a celeriac worker while a separate
//! client PINGs Redis without pause, and asserts that no PING waited more than
//! [`PING_BOUND`]. It also checks what the sender of a refused message sees: a dead letter
//! stamped with the real time and, for a task id, a FAILURE its `get()` wakes on.

use base64::Engine;
use redis::Commands;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tests::{CeleriacWorker, PY_PRELUDE, PyOutput, RedisServer, run_python};

/// The longest a PING may wait. Recording a message in `unacked` copies its bytes a few times
/// inside Redis (out of the list into Lua, into the `unacked` value): 5-9 ms per MB measured
/// on a loaded two-core VM, so the 7 MB messages here hold Redis for 40-70 ms, and a busy
/// machine adds its own scheduling delays. The claim script this guards against parsed and
/// base64-encoded in interpreted Lua: 0.46 s at 200 kB, and for the oversized message here
/// about 21 s, during which every other client was answered `BUSY`.
const PING_BOUND: Duration = Duration::from_millis(200);

/// Worker's `--max-message-size`: above the 5 MiB-argument message (about 7.0 MB once
/// base64-encoded in its envelope), below the oversized one (about 7.7 MB).
const MAX_MESSAGE: usize = 7 * 1024 * 1024;

/// Seconds since the epoch, as the dead-letter entries stamp them.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// A client that PINGs Redis in a loop on its own connection and keeps the slowest reply
/// (an error reply, such as `BUSY` while a script runs too long, counts as a failure).
struct Pinger {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Duration, u64, Vec<String>)>,
}

impl Pinger {
    fn start(redis: &RedisServer) -> Self {
        let mut conn = redis.client(0);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut max, mut n, mut errors) = (Duration::ZERO, 0u64, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r: redis::RedisResult<String> = redis::cmd("PING").query(&mut conn);
                max = max.max(t.elapsed());
                n += 1;
                if let Err(e) = r
                    && errors.len() < 3
                {
                    errors.push(e.to_string());
                }
            }
            (max, n, errors)
        });
        Pinger { stop, handle }
    }

    /// Stop and return (slowest PING, number of PINGs, errors).
    fn finish(self) -> (Duration, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("pinger thread")
    }
}

/// The server's own record of commands slower than 10 ms (set by [`slowlog_on`]), as
/// `command duration_ms` lines: evidence of where a pause came from when the bound fails.
fn slowlog(c: &mut redis::Connection) -> Vec<String> {
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG").arg("GET").arg(100).query(c).unwrap();
    entries
        .iter()
        .filter_map(|e| {
            let redis::Value::Array(f) = e else {
                return None;
            };
            let micros: i64 = redis::from_redis_value_ref(f.get(2)?).ok()?;
            let redis::Value::Array(argv) = f.get(3)? else {
                return None;
            };
            let cmd: String = redis::from_redis_value_ref(argv.first()?).ok()?;
            Some(format!("{cmd} {:.1}ms", micros as f64 / 1000.0))
        })
        .collect()
}

fn slowlog_on(c: &mut redis::Connection) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(10_000)
        .query(c)
        .unwrap();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(c).unwrap();
}

/// Run a Python client snippet; its last stdout line is JSON. Failures are returned, not
/// raised, so the PING figures are reported before any assertion.
fn client(url: &str, code: &str) -> Result<Value, String> {
    let out: PyOutput = run_python(
        &format!("{PY_PRELUDE}{code}"),
        &[("CELERY_BROKER_URL", url), ("CELERY_RESULT_BACKEND", url)],
        Duration::from_secs(120),
    );
    out.stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .filter(|_| out.success)
        .ok_or_else(|| format!("python client failed:\n{}\n{}", out.stdout, out.stderr))
}

/// Wait up to 30 s for `n` dead letters (counted with `LLEN`: reading megabyte entries over
/// and over would itself keep Redis busy while the PINGs are timed).
fn wait_dead_letters(c: &mut redis::Connection, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && c.llen::<_, usize>("celeriac.dead").unwrap_or(0) < n {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The dead-letter entry whose reason contains `needle`.
fn dead_letter_with(c: &mut redis::Connection, needle: &str) -> Option<Value> {
    let all: Vec<Vec<u8>> = c.lrange("celeriac.dead", 0, -1).unwrap_or_default();
    all.iter()
        .filter_map(|e| serde_json::from_slice::<Value>(e).ok())
        .find(|v| v["reason"].as_str().is_some_and(|r| r.contains(needle)))
}

/// Assert that a dead letter's `time` lies between `start` and now (the old claim script
/// stamped entries with the end of the worker's lease, a time in the future).
fn assert_stamped_now(entry: &Value, start: f64) {
    let t = entry["time"].as_f64().expect("numeric time");
    let now = unix_now();
    assert!(
        t >= start - 1.0 && t <= now + 1.0,
        "dead letter time {t} is not between the test start {start} and now {now}: {entry}"
    );
}

#[test]
fn multi_megabyte_messages_and_results_never_stall_other_redis_clients() {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mut c = redis.client(0);
    slowlog_on(&mut c);
    let max = MAX_MESSAGE.to_string();
    let w = CeleriacWorker::start(&url, &["-c2", "--max-message-size", &max]);
    let start = unix_now();

    // (a) + (c): a 5 MiB argument, echoed back as a 5 MiB result.
    let pinger = Pinger::start(&redis);
    let big = client(
        &url,
        "big = 'x' * (5 * 1024 * 1024)\n\
         r = app.send_task('shared_tasks.echo', args=[big])\n\
         v = r.get(timeout=60)\n\
         print(json.dumps({'intact': v == {'args': [big], 'kwargs': {}}, 'len': len(v['args'][0])}))\n",
    );
    let (ping_big, n_big, err_big) = pinger.finish();
    let slow_big = slowlog(&mut c);
    let _: redis::RedisResult<()> = redis::cmd("SLOWLOG").arg("RESET").query(&mut c);

    // (b): a message over --max-message-size, and one that is not JSON at all.
    let pinger = Pinger::start(&redis);
    let oversized = client(
        &url,
        "huge = 'y' * (5 * 1024 * 1024 + 512 * 1024)\n\
         r = app.send_task('shared_tasks.echo', args=[huge])\n\
         t = time.time()\n\
         try:\n    r.get(timeout=10)\n    raised = None\n\
         except Exception as e:\n    raised = type(e).__name__\n\
         print(json.dumps({'id': r.id, 'raised': raised, 'secs': time.time() - t, 'state': r.state}))\n",
    );
    let _: redis::RedisResult<i64> = c.lpush("celery", "this is not json {");
    wait_dead_letters(&mut c, 2);
    let (ping_huge, n_huge, err_huge) = pinger.finish();
    let dead_big = dead_letter_with(&mut c, "exceeds the maximum");
    let dead_junk = dead_letter_with(&mut c, "not JSON");
    let slow_huge = slowlog(&mut c);
    let now = unix_now();
    let times = [&dead_big, &dead_junk].map(|d| d.as_ref().map(|d| d["time"].clone()));

    eprintln!(
        "slowest PING: {ping_big:?} over {n_big} PINGs during the 5 MiB round trip, \
         {ping_huge:?} over {n_huge} during the oversized and non-JSON messages; \
         server slowlog (>10 ms): {slow_big:?} then {slow_huge:?}; dead-letter times \
         (oversized, not JSON) {times:?} at {now}"
    );
    assert!(
        err_big.is_empty() && err_huge.is_empty(),
        "PINGs failed (a script ran past lua-time-limit?): {err_big:?} {err_huge:?}"
    );
    assert!(
        ping_big <= PING_BOUND,
        "a PING waited {ping_big:?} (bound {PING_BOUND:?}) while a 5 MiB message and result \
         went through; server slowlog: {slow_big:?}"
    );
    assert!(
        ping_huge <= PING_BOUND,
        "a PING waited {ping_huge:?} (bound {PING_BOUND:?}) while an oversized message was \
         dead-lettered; server slowlog: {slow_huge:?}"
    );

    let big = big.unwrap();
    let oversized = oversized.unwrap();
    let dead_big = dead_big.expect("the oversized message is dead-lettered");
    let dead_junk = dead_junk.expect("the message that is not JSON is dead-lettered");
    assert_eq!(
        big["intact"], true,
        "the 5 MiB result came back intact: {big}"
    );
    assert_eq!(big["len"], 5 * 1024 * 1024);

    assert_eq!(
        oversized["raised"], "InvalidTaskError",
        "get() on the oversized message raises the stored failure: {oversized}"
    );
    assert_eq!(oversized["state"], "FAILURE", "{oversized}");
    assert!(
        oversized["secs"].as_f64().unwrap() < 5.0,
        "get() raised promptly: {oversized}"
    );
    let reason = dead_big["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("exceeds the maximum of {MAX_MESSAGE}")),
        "{reason}"
    );
    assert_eq!(dead_big["queue"], "celery");
    assert_stamped_now(&dead_big, start);
    let kept = base64::engine::general_purpose::STANDARD
        .decode(dead_big["payload_b64"].as_str().unwrap())
        .unwrap();
    let kept: Value = serde_json::from_slice(&kept).expect("the dead letter keeps the envelope");
    assert_eq!(kept["headers"]["id"], oversized["id"]);
    assert_stamped_now(&dead_junk, start);
    let kept = base64::engine::general_purpose::STANDARD
        .decode(dead_junk["payload_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(kept, b"this is not json {");

    let n: usize = c.hlen("unacked").unwrap();
    assert_eq!(n, 0, "nothing is left in unacked");
    drop(w);
}
