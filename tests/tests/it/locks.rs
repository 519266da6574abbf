//! Global Redis locks (`locks` crate) against a real redis-server and real redis-py:
//! mutual exclusion with Python in both directions, ownership errors, watchdog, fencing,
//! `#[only_one]` policies and exit paths, multi-lock deadlock freedom, FIFO order, the
//! operator functions behind `celeriac locks`, and an 8-process contention run.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use locks::{Client, LockError, NotOwnedReason, NotRun};
use redis::Commands;
use tests::{
    Proc, RedisServer, killed_lock_holder, lockbench, run_python, run_with_timeout, wait_until,
};

const PY_TIMEOUT: Duration = Duration::from_secs(30);

fn client(server: &RedisServer) -> Client {
    Client::open(&server.url(0)).expect("redis url")
}

/// Run redis-py code with `r` connected to the test server; returns stdout (trimmed).
fn py(server: &RedisServer, body: &str) -> String {
    let code = format!(
        "import redis\nr = redis.Redis.from_url({url:?})\n{body}",
        url = server.url(0)
    );
    let out = run_python(&code, &[], PY_TIMEOUT);
    assert!(
        out.success,
        "python failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out.stdout.trim().to_string()
}

fn get(server: &RedisServer, key: &str) -> Option<String> {
    let mut c = server.client(0);
    c.get(key).expect("GET")
}

// ---------------------------------------------------------------------------------------
// Interop with redis-py

#[tokio::test(flavor = "multi_thread")]
async fn python_holder_makes_rust_try_acquire_fail_and_rust_holder_makes_python_fail() {
    let server = RedisServer::start();
    let c = client(&server);

    // Python takes "x" (no TTL, JWQL style) and exits without releasing.
    let token = py(
        &server,
        "l = r.lock('x')\nassert l.acquire(blocking=False)\nprint(l.local.token.decode())",
    );
    let err = c.lock("x").try_acquire().await.expect_err("python holds x");
    match &err {
        LockError::NotAcquired { holder, .. } => {
            let h = holder.as_ref().expect("holder reported");
            assert_eq!(h.token_str(), token);
            assert!(
                h.info.is_none(),
                "a python holder has no celeriac holder hash"
            );
            assert!(h.uuid1().is_some(), "redis-py token decodes as uuid1");
            assert_eq!(h.ttl, None, "no expiry");
        }
        other => panic!("expected NotAcquired, got {other:?}"),
    }
    // Python releases with its own token; now Rust gets it.
    py(
        &server,
        &format!("l = r.lock('x')\nl.local.token = {token:?}.encode()\nl.release()"),
    );
    let g = c
        .lock("x")
        .try_acquire()
        .await
        .expect("free after python release");

    // The reverse: Python cannot take what Rust holds, blocking or not.
    let out = py(
        &server,
        "l = r.lock('x', blocking_timeout=0.3)\nprint(l.acquire(blocking=False), l.acquire(), l.locked(), l.owned())",
    );
    assert_eq!(out, "False False True False");
    g.release().await.expect("release");
    let out = py(
        &server,
        "l = r.lock('x')\nprint(l.acquire(blocking=False))\nl.release()",
    );
    assert_eq!(out, "True");
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_waiter_gets_lock_soon_after_python_releases_it() {
    let server = RedisServer::start();
    let c = client(&server);
    let url = server.url(0);
    // Python holds for 0.5 s then releases.
    let py_thread = std::thread::spawn(move || {
        run_python(
            &format!(
                "import redis, time\nr = redis.Redis.from_url({url:?})\nl = r.lock('y', timeout=10)\nassert l.acquire()\nprint('held', flush=True)\ntime.sleep(0.5)\nl.release()"
            ),
            &[],
            PY_TIMEOUT,
        )
    });
    server.wait_for_key("y", Duration::from_secs(10), "python to hold y");
    let started = Instant::now();
    let g = c
        .lock("y")
        .blocking_timeout(Duration::from_secs(5))
        .acquire()
        .await
        .expect("acquired after python released");
    assert!(started.elapsed() < Duration::from_secs(3));
    g.release().await.unwrap();
    assert!(py_thread.join().unwrap().success);
}

#[tokio::test(flavor = "multi_thread")]
async fn wire_format_is_redis_py_set_nx_px_on_the_bare_name() {
    let server = RedisServer::start();
    let c = client(&server);
    let g = c
        .lock("dark_monitor")
        .timeout(Duration::from_secs(5))
        .watchdog(false)
        .acquire()
        .await
        .unwrap();
    let mut r = server.client(0);
    let v: Vec<u8> = r.get("dark_monitor").unwrap();
    assert_eq!(v, g.token());
    assert_eq!(v.len(), 32, "32 hex digits like uuid1().hex");
    let pttl: i64 = r.pttl("dark_monitor").unwrap();
    assert!((4000..=5000).contains(&pttl), "PX 5000, got pttl {pttl}");
    // Python's owned() with our token says yes: the value is compared byte for byte.
    let out = py(
        &server,
        &format!(
            "l = r.lock('dark_monitor', timeout=5)\nl.local.token = {:?}.encode()\nprint(l.owned())\nl.extend(3)\nprint(r.pttl('dark_monitor') > 6000)",
            String::from_utf8_lossy(g.token())
        ),
    );
    assert_eq!(out, "True\nTrue");
    g.release().await.unwrap();
    assert_eq!(get(&server, "dark_monitor"), None);
}

// ---------------------------------------------------------------------------------------
// Ownership errors

#[tokio::test(flavor = "multi_thread")]
async fn release_by_a_non_owner_fails_without_deleting() {
    let server = RedisServer::start();
    let c = client(&server);
    let g = c.lock("n").acquire().await.unwrap();
    let err = c
        .lock("n")
        .release_token(b"0123456789abcdef0123456789abcdef")
        .await
        .expect_err("not ours");
    assert!(
        matches!(
            err,
            LockError::NotOwned {
                reason: NotOwnedReason::HeldByOther,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        get(&server, "n").as_deref().map(str::as_bytes),
        Some(g.token())
    );
    // A Python non-owner cannot delete it either.
    let out = py(
        &server,
        "from redis.exceptions import LockNotOwnedError\nl = r.lock('n')\nl.local.token = b'wrong'\ntry:\n    l.release()\nexcept LockNotOwnedError:\n    print('not owned')",
    );
    assert_eq!(out, "not owned");
    assert!(g.owned().await.unwrap());
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn release_after_expiry_reports_not_owned_and_spares_the_new_holder() {
    let server = RedisServer::start();
    let c = client(&server);
    let lock = c
        .lock("e")
        .timeout(Duration::from_millis(300))
        .watchdog(false);
    let g = lock.acquire().await.unwrap();
    server.wait_for_key_gone("e", Duration::from_secs(5), "the TTL to run out");
    assert!(!g.owned().await.unwrap());
    let err = g.release().await.expect_err("expired");
    assert!(
        matches!(
            err,
            LockError::NotOwned {
                reason: NotOwnedReason::Expired,
                ..
            }
        ),
        "{err:?}"
    );

    // Expired, then stolen: the old holder's release must not delete the new holder's key.
    let old = lock.acquire().await.unwrap();
    server.wait_for_key_gone("e", Duration::from_secs(5), "the TTL to run out");
    let new = c.lock("e").acquire().await.unwrap();
    let err = old.release().await.expect_err("stolen");
    assert!(
        matches!(
            err,
            LockError::NotOwned {
                reason: NotOwnedReason::HeldByOther,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(new.owned().await.unwrap());
    new.release().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Release on drop: sent before `drop` returns, confirmed with the next command

#[test]
fn a_dropped_blocking_guard_frees_the_lock_for_the_next_acquire_and_for_other_clients() {
    let server = RedisServer::start();
    let c = locks::blocking::Client::open(&server.url(0)).unwrap();
    let lock = c.lock("d").timeout(Duration::from_secs(30));
    // Non-blocking attempts: each one must find the previous guard's release already done.
    let mut fences = Vec::new();
    for _ in 0..300 {
        let g = lock.try_acquire().expect("free again right after the drop");
        fences.push(g.fence());
        drop(g);
    }
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
    // No further command from this client: the release was written before `drop` returned,
    // so another client sees the lock free (and redis-py can take it) without our help.
    let g = lock.try_acquire().unwrap();
    drop(g);
    server.wait_for_key_gone("d", Duration::from_secs(2), "the dropped guard's key to go");
    assert_eq!(
        py(
            &server,
            "l = r.lock('d')\nprint(l.acquire(blocking=False))\nl.release()"
        ),
        "True"
    );
    // The unread replies were read: the connection still answers in step.
    assert!(!lock.locked().unwrap());
    assert!(lock.holder().unwrap().is_none());
}

#[tokio::test]
async fn a_dropped_async_guard_frees_the_lock_for_this_clients_next_acquire() {
    // Single-threaded runtime: a release left to a spawned task would run only after the
    // next acquire had been sent, and that acquire would find the lock still held.
    let server = RedisServer::start();
    let c = client(&server);
    let lock = c.lock("da").timeout(Duration::from_secs(30));
    for i in 0..300 {
        let g = lock
            .try_acquire()
            .await
            .unwrap_or_else(|e| panic!("attempt {i}: {e}"));
        drop(g);
    }
    let g = lock.try_acquire().await.unwrap();
    drop(g);
    assert!(!lock.locked().await.unwrap());
}

#[test]
fn a_dropped_guard_whose_lock_expired_leaves_the_new_holders_lock_alone() {
    let server = RedisServer::start();
    let c = locks::blocking::Client::open(&server.url(0)).unwrap();
    let lock = c
        .lock("dx")
        .timeout(Duration::from_millis(200))
        .watchdog(false);
    let old = lock.try_acquire().unwrap();
    server.wait_for_key_gone("dx", Duration::from_secs(5), "the TTL to run out");
    let mut raw = server.client(0);
    let _: () = raw.set("dx", "python-token").unwrap();
    drop(old); // compare-and-delete finds another token: deletes nothing
    assert!(lock.locked().unwrap()); // the next command reads the release's reply
    let v: Option<String> = raw.get("dx").unwrap();
    assert_eq!(v.as_deref(), Some("python-token"));
}

#[test]
fn a_dropped_guards_release_lost_with_its_connection_is_sent_again() {
    let server = RedisServer::start();
    let c = locks::blocking::Client::open(&server.url(0)).unwrap();
    let lock = c.lock("dk"); // no TTL: a lost release would leave it held for ever
    let g = lock.try_acquire().unwrap();
    let mut raw = server.client(0);
    // Hold every write on the server, so the release arrives but does not run ...
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10000)
        .arg("WRITE")
        .query(&mut raw)
        .unwrap();
    drop(g);
    let id = wait_until(Duration::from_secs(5), "the release to reach Redis", || {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut raw).unwrap();
        list.lines()
            .find(|l| l.contains(" cmd=eval "))
            .and_then(|l| l.strip_prefix("id="))
            .and_then(|l| l.split(' ').next())
            .map(str::to_string)
    });
    // ... then cut that connection: the release is gone with it.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query(&mut raw)
        .unwrap();
    assert_eq!(killed, 1);
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut raw).unwrap();
    assert!(raw.exists::<_, bool>("dk").unwrap(), "the first send ran");
    // The client's next command finds the connection broken, and the release it had not
    // confirmed is sent again.
    let _ = lock.locked();
    server.wait_for_key_gone("dk", Duration::from_secs(5), "the release to be sent again");
    let g = lock.try_acquire().expect("the client reconnects");
    g.release().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn extend_adds_or_replaces_ttl_and_refuses_a_lock_without_ttl() {
    let server = RedisServer::start();
    let c = client(&server);
    let g = c
        .lock("t")
        .timeout(Duration::from_secs(2))
        .watchdog(false)
        .acquire()
        .await
        .unwrap();
    g.extend(Duration::from_secs(3), false).await.unwrap();
    let pttl: i64 = server.client(0).pttl("t").unwrap();
    assert!((4000..=5000).contains(&pttl), "additive: {pttl}");
    g.extend(Duration::from_secs(10), true).await.unwrap();
    let pttl: i64 = server.client(0).pttl("t").unwrap();
    assert!((9000..=10000).contains(&pttl), "replace: {pttl}");
    g.reacquire().await.unwrap();
    let pttl: i64 = server.client(0).pttl("t").unwrap();
    assert!((1000..=2000).contains(&pttl), "reacquire: {pttl}");
    g.release().await.unwrap();

    let g = c.lock("t").acquire().await.unwrap();
    assert!(matches!(
        g.extend(Duration::from_secs(1), false).await,
        Err(LockError::NoTimeout { .. })
    ));
    g.release().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Watchdog, fencing, holder identity

#[tokio::test(flavor = "multi_thread")]
async fn watchdog_keeps_a_one_second_lock_through_five_seconds_and_reports_loss_within_a_ttl() {
    let server = RedisServer::start();
    let c = client(&server);
    let g = c
        .lock("wd")
        .timeout(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(
            g.owned().await.unwrap(),
            "lock lost during the critical section"
        );
        assert_eq!(g.is_lost(), None);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Delete it behind the holder's back; the holder must hear about it within one TTL.
    let deleted_at = Instant::now();
    let _: () = server.client(0).del("wd").unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(3), g.lost())
        .await
        .expect("loss reported");
    let took = deleted_at.elapsed();
    assert_eq!(reason, locks::LostReason::Expired);
    assert!(
        took <= Duration::from_secs(1),
        "loss reported after {took:?}"
    );
    assert!(g.release().await.unwrap_err().is_not_owned());
}

#[tokio::test(flavor = "multi_thread")]
async fn fencing_numbers_strictly_increase_across_holders() {
    let server = RedisServer::start();
    let a = client(&server);
    let b = client(&server);
    let mut last = 0;
    for i in 0..20 {
        let c = if i % 2 == 0 { &a } else { &b };
        let g = c.lock("fenced").acquire().await.unwrap();
        assert!(g.fence() > last, "fence {} after {last}", g.fence());
        last = g.fence();
        g.release().await.unwrap();
        if i % 5 == 0 {
            // A Python holder in between does not disturb the sequence.
            py(
                &server,
                "l = r.lock('fenced')\nassert l.acquire()\nl.release()",
            );
        }
    }
    // The fence is visible to tools in the holder record.
    let g = a.lock("fenced").acquire().await.unwrap();
    let h = a.lock("fenced").holder().await.unwrap().unwrap();
    assert_eq!(h.info.unwrap().fence, g.fence());
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn holder_identity_names_host_pid_start_time_and_purpose() {
    let server = RedisServer::start();
    let c = client(&server);
    let g = c
        .lock("who")
        .timeout(Duration::from_secs(30))
        .purpose("calibrate jw01")
        .task_id("task-1")
        .acquire()
        .await
        .unwrap();
    let h = c.lock("who").holder().await.unwrap().expect("held");
    let info = h.info.clone().expect("celeriac holder info");
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.host, locks::hostname());
    assert!(info.pid_start.is_some());
    assert_eq!(info.purpose.as_deref(), Some("calibrate jw01"));
    assert_eq!(info.task_id.as_deref(), Some("task-1"));
    assert_eq!(info.liveness(), locks::Liveness::Alive);
    assert!(h.ttl.unwrap() <= Duration::from_secs(30));
    let shown = h.to_string();
    assert!(
        shown.contains(&format!("pid {}", std::process::id())),
        "{shown}"
    );
    g.release().await.unwrap();
    assert!(c.lock("who").holder().await.unwrap().is_none());
    // The holder hash goes with the lock.
    assert!(
        !server
            .client(0)
            .exists::<_, bool>(locks::keys::holder_key("who"))
            .unwrap()
    );
}

// ---------------------------------------------------------------------------------------
// Waiting

#[tokio::test(flavor = "multi_thread")]
async fn waiter_wakes_on_celeriac_release_without_polling_delay() {
    let server = RedisServer::start();
    let c = client(&server);
    let g = c
        .lock("w")
        .timeout(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    let c2 = client(&server);
    let waiter = tokio::spawn(async move {
        let g = c2
            .lock("w")
            .blocking_timeout(Duration::from_secs(10))
            .acquire()
            .await
            .unwrap();
        let at = Instant::now();
        g.release().await.unwrap();
        at
    });
    // Let the waiter subscribe and settle into its wait, which without a wake-up would
    // only end ~1 s after it began (~600 ms after the release below).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let released = Instant::now();
    g.release().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    let delay = got - released;
    assert!(
        delay < Duration::from_millis(400),
        "woken {delay:?} after release"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_timeout_gives_up_with_the_holder_named() {
    let server = RedisServer::start();
    let c = client(&server);
    let g = c.lock("bt").acquire().await.unwrap();
    let started = Instant::now();
    let err = c
        .lock("bt")
        .blocking_timeout(Duration::from_millis(400))
        .acquire()
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    match err {
        LockError::NotAcquired { holder, .. } => {
            assert_eq!(holder.unwrap().token, g.token())
        }
        other => panic!("{other:?}"),
    }
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn fair_waiters_get_the_lock_in_arrival_order() {
    let server = RedisServer::start();
    let c = client(&server);
    let g = c.lock("fifo").acquire().await.unwrap();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for i in 0..4 {
        let c = client(&server);
        let order = order.clone();
        handles.push(tokio::spawn(async move {
            let g = c
                .lock("fifo")
                .fair(true)
                .blocking_timeout(Duration::from_secs(20))
                .acquire()
                .await
                .unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(20)).await;
            g.release().await.unwrap();
        }));
        // Wait until waiter i is queued before starting the next one.
        let queue = locks::keys::queue_key("fifo");
        wait_until(Duration::from_secs(5), "waiter to queue", || {
            let n: usize = server.client(0).zcard(&queue).unwrap();
            (n == i + 1).then_some(())
        });
    }
    g.release().await.unwrap();
    for h in handles {
        tokio::time::timeout(Duration::from_secs(20), h)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
}

// ---------------------------------------------------------------------------------------
// Multi-lock

#[tokio::test(flavor = "multi_thread")]
async fn multi_lock_overlapping_sets_in_opposite_order_both_finish() {
    let server = RedisServer::start();
    let sets = [vec!["a", "b", "c", "d"], vec!["d", "c", "b", "a", "a"]];
    let mut handles = Vec::new();
    for set in sets {
        let c = client(&server);
        handles.push(tokio::spawn(async move {
            for _ in 0..30 {
                let g = c
                    .multi_lock(set.clone())
                    .timeout(Duration::from_secs(10))
                    .blocking_timeout(Duration::from_secs(20))
                    .acquire()
                    .await
                    .expect("all or nothing, never deadlocked");
                assert_eq!(g.guards().len(), 4, "duplicates are taken once");
                tokio::time::sleep(Duration::from_millis(2)).await;
                g.release().await.unwrap();
            }
        }));
    }
    for h in handles {
        tokio::time::timeout(Duration::from_secs(60), h)
            .await
            .expect("both callers finish")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_lock_takes_nothing_when_one_name_is_held_by_python() {
    let server = RedisServer::start();
    let c = client(&server);
    py(&server, "assert r.lock('m2').acquire()");
    let err = c
        .multi_lock(["m1", "m2", "m3"])
        .blocking(false)
        .acquire()
        .await
        .unwrap_err();
    match err {
        LockError::NotAcquired { name, .. } => assert_eq!(name, "m2"),
        other => panic!("{other:?}"),
    }
    let mut r = server.client(0);
    assert!(!r.exists::<_, bool>("m1").unwrap());
    assert!(!r.exists::<_, bool>("m3").unwrap());
}

// ---------------------------------------------------------------------------------------
// #[only_one]

static RUNS: AtomicU32 = AtomicU32::new(0);

#[locks::only_one(key = "oo:{name}", client = Client::open(url).unwrap())]
fn guarded_sync(url: &str, name: &str) -> u32 {
    RUNS.fetch_add(1, Ordering::SeqCst);
    7
}

#[locks::only_one(key = "oo-err:{name}", policy = error, client = c)]
async fn guarded_error(c: &Client, name: &str) -> u32 {
    1
}

#[locks::only_one(key = "oo-wait:{name}", policy = wait, wait_timeout = 0.5, client = c)]
async fn guarded_wait(c: &Client, name: &str) -> Result<u32, std::io::Error> {
    let n: u32 = name.len().try_into().map_err(std::io::Error::other)?;
    Ok(n)
}

#[locks::only_one(key = "oo-panic", client = Client::open(url).unwrap())]
fn panics_while_holding(url: &str) {
    panic!("boom");
}

#[locks::only_one(key = "oo-apanic", client = c)]
async fn panics_while_holding_async(c: Client) {
    tokio::task::yield_now().await;
    panic!("boom");
}

#[locks::only_one(key = "oo-slow", client = c)]
async fn slow(c: &Client) {
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[locks::only_one(key = "oo-lost", timeout = 0.6, client = c)]
async fn runs_until_lost(c: &Client) -> &'static str {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "finished"
}

#[tokio::test(flavor = "multi_thread")]
async fn only_one_skip_returns_skipped_with_the_holder_and_does_not_run_the_body() {
    let server = RedisServer::start();
    let url = server.url(0);
    let u = url.clone();
    let ran = tokio::task::spawn_blocking(move || guarded_sync(&u, "k"))
        .await
        .unwrap();
    assert_eq!(ran.unwrap(), 7);
    assert_eq!(get(&server, "oo:k"), None, "released after the body");

    let before = RUNS.load(Ordering::SeqCst);
    let g = client(&server).lock("oo:k").acquire().await.unwrap();
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || guarded_sync(&u, "k"))
        .await
        .unwrap();
    match out {
        Err(NotRun::Skipped { key, holder }) => {
            assert_eq!(key, "oo:k");
            assert_eq!(holder.unwrap().token, g.token());
        }
        other => panic!("expected Skipped, got {other:?}"),
    }
    assert_eq!(RUNS.load(Ordering::SeqCst), before, "body did not run");
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn only_one_error_policy_reports_busy_and_wait_policy_waits_then_times_out() {
    let server = RedisServer::start();
    let c = client(&server);
    assert_eq!(guarded_error(&c, "a").await.unwrap(), 1);
    let g = c.lock("oo-err:a").acquire().await.unwrap();
    assert!(matches!(
        guarded_error(&c, "a").await,
        Err(NotRun::Busy { .. })
    ));
    g.release().await.unwrap();

    // wait: a holder releasing within the deadline lets the body run.
    let g = c.lock("oo-wait:abc").acquire().await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        g.release().await.unwrap();
    });
    assert_eq!(guarded_wait(&c, "abc").await.unwrap().unwrap(), 3);
    release.await.unwrap();

    // wait: a holder that stays past the deadline gives TimedOut.
    let g = c.lock("oo-wait:abc").acquire().await.unwrap();
    let started = Instant::now();
    match guarded_wait(&c, "abc").await {
        Err(NotRun::TimedOut { waited, .. }) => {
            assert!(waited >= Duration::from_millis(450), "{waited:?}");
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn only_one_releases_the_lock_when_the_body_panics() {
    let server = RedisServer::start();
    let url = server.url(0);
    let u = url.clone();
    let r =
        tokio::task::spawn_blocking(move || std::panic::catch_unwind(|| panics_while_holding(&u)))
            .await
            .unwrap();
    assert!(r.is_err(), "the panic propagates");
    // A plain fn releases before the panic leaves it: free at once.
    assert_eq!(get(&server, "oo-panic"), None);

    let c = client(&server);
    let r = tokio::spawn(panics_while_holding_async(c.clone())).await;
    assert!(r.unwrap_err().is_panic());
    server.wait_for_key_gone(
        "oo-apanic",
        Duration::from_secs(5),
        "async panic to release",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_one_releases_the_lock_when_the_future_is_cancelled() {
    let server = RedisServer::start();
    let c = client(&server);
    let r = tokio::time::timeout(Duration::from_millis(300), slow(&c)).await;
    assert!(r.is_err(), "cancelled by the timeout");
    server.wait_for_key_gone(
        "oo-slow",
        Duration::from_secs(5),
        "cancelled body to release",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_one_cancels_an_async_body_when_the_lock_is_lost() {
    let server = RedisServer::start();
    let c = client(&server);
    let task = tokio::spawn({
        let c = c.clone();
        async move { runs_until_lost(&c).await }
    });
    server.wait_for_key("oo-lost", Duration::from_secs(5), "body to hold the lock");
    let _: () = server.client(0).del("oo-lost").unwrap();
    let out = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("body cancelled within a TTL")
        .unwrap();
    assert!(matches!(out, Err(NotRun::Lost { .. })), "{out:?}");
}

#[test]
fn locked_sleep_runs_in_a_process_without_a_runtime_and_skips_when_held() {
    let server = RedisServer::start();
    let url = server.url(0);
    let run = |secs: &str| {
        let mut cmd = Command::new(lockbench());
        cmd.args(["locked-sleep", "ls-key", secs])
            .env("CELERY_BROKER_URL", &url)
            .env_remove("CELERIAC_LOCK_URL");
        cmd
    };
    let out = run_with_timeout(run("0"), Duration::from_secs(30));
    assert!(out.success, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "ran");

    let holder = Proc::spawn(run("20"));
    server.wait_for_key(
        "ls-key",
        Duration::from_secs(10),
        "first task to hold ls-key",
    );
    let out = run_with_timeout(run("0"), Duration::from_secs(30));
    assert_eq!(out.stdout.trim(), "skipped", "{}", out.stderr);
    drop(holder);
}

// ---------------------------------------------------------------------------------------
// Operator functions (behind `celeriac locks`)

#[tokio::test(flavor = "multi_thread")]
async fn admin_lists_python_and_rust_locks_with_holders_using_scan() {
    let server = RedisServer::start();
    let c = client(&server);
    py(
        &server,
        "assert r.lock('jw01_nrca1').acquire()\nr.set('celery-task-meta-1', '{\"status\": \"SUCCESS\"}')",
    );
    let g = c
        .lock("bias_monitor")
        .timeout(Duration::from_secs(60))
        .purpose("monitor")
        .acquire()
        .await
        .unwrap();
    let all = locks::admin::list(&c, None).await.unwrap();
    let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["bias_monitor", "jw01_nrca1"],
        "task meta is not a lock"
    );
    assert_eq!(all[0].kind, locks::admin::LockKind::Celeriac);
    assert_eq!(all[1].kind, locks::admin::LockKind::RedisPy);
    assert!(all[1].age.unwrap() < Duration::from_secs(60));
    assert_eq!(all[1].holder.ttl, None);
    let only_jw = locks::admin::list(&c, Some("jw*")).await.unwrap();
    assert_eq!(only_jw.len(), 1);
    let shown = locks::admin::show(&c, "bias_monitor")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        shown.holder.info.unwrap().purpose.as_deref(),
        Some("monitor")
    );
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_release_refuses_a_live_or_unknown_holder_and_breaks_a_dead_ones_lock() {
    let server = RedisServer::start();
    let c = client(&server);
    // A live holder (this process): refused without force.
    let g = c.lock("live").acquire().await.unwrap();
    match locks::admin::release(&c, "live", false).await.unwrap() {
        locks::admin::ReleaseOutcome::Refused(_, why) => assert!(why.contains("alive"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A Python holder: unknown, refused; force breaks it.
    py(&server, "assert r.lock('pyheld').acquire()");
    assert!(matches!(
        locks::admin::release(&c, "pyheld", false).await.unwrap(),
        locks::admin::ReleaseOutcome::Refused(..)
    ));
    assert!(matches!(
        locks::admin::release(&c, "pyheld", true).await.unwrap(),
        locks::admin::ReleaseOutcome::Released(_)
    ));
    assert_eq!(get(&server, "pyheld"), None);

    // A killed celeriac holder (TTL-less lock, kill -9): provably dead, so released.
    let holder = killed_lock_holder(&server.url(0), "dead");
    let entry = locks::admin::show(&c, "dead").await.unwrap().unwrap();
    assert!(matches!(entry.liveness, Some(locks::Liveness::Dead(_))));
    match locks::admin::release(&c, "dead", false).await.unwrap() {
        locks::admin::ReleaseOutcome::Released(e) => {
            assert_eq!(e.holder.info.unwrap().pid, holder.pid())
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(get(&server, "dead"), None);
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_of_a_dead_task_process_are_released_by_pid() {
    let server = RedisServer::start();
    let c = client(&server);
    let holder = killed_lock_holder(&server.url(0), "child-lock");
    let other = c.lock("someone-else").acquire().await.unwrap();
    let released = locks::admin::release_held_by_pid(&c, holder.pid())
        .await
        .unwrap();
    assert_eq!(released, vec!["child-lock".to_string()]);
    assert!(other.owned().await.unwrap());
    other.release().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Contention across processes

#[test]
fn eight_processes_rust_and_python_mixed_exclude_each_other_exactly() {
    const PER_PROCESS: u32 = 500;
    let server = RedisServer::start();
    let url = server.url(0);
    let mut procs = Vec::new();
    for i in 0..8 {
        let cmd = if i % 2 == 0 {
            let mut cmd = Command::new(lockbench());
            cmd.args(["contend", &url, "shared", &PER_PROCESS.to_string()]);
            cmd
        } else {
            let mut cmd = Command::new(tests::python());
            cmd.args([
                "-m",
                "locks_contend",
                &url,
                "shared",
                &PER_PROCESS.to_string(),
            ])
            .env("PYTHONPATH", tests::py_dir());
            cmd
        };
        procs.push(Proc::spawn(cmd));
    }
    for p in &mut procs {
        let st = p.wait_exit(Duration::from_secs(240));
        assert!(st.success(), "contender failed:\n{}", p.output());
    }
    let mut r = server.client(0);
    let count: u32 = r.get("shared:counter").unwrap();
    let overlaps: Option<u32> = r.get("shared:overlaps").unwrap();
    assert_eq!(count, 8 * PER_PROCESS, "lost updates: the lock let two in");
    assert_eq!(overlaps, None, "two holders were inside at once");
}

// ---------------------------------------------------------------------------------------
// `celeriac locks` (the binary)

fn celeriac_locks(server: &RedisServer, args: &[&str]) -> tests::PyOutput {
    let mut cmd = Command::new(tests::celeriac_bin());
    cmd.arg("-b")
        .arg(server.url(0))
        .arg("locks")
        .args(args)
        .env_remove("CELERIAC_LOCK_URL");
    run_with_timeout(cmd, Duration::from_secs(60))
}

#[test]
fn celeriac_locks_list_show_and_release_refuse_a_live_holder_and_force_a_python_one() {
    let server = RedisServer::start();
    py(&server, "assert r.lock('jw01_nrca1').acquire()");
    let c = locks::blocking::Client::open(&server.url(0)).unwrap();
    let g = c
        .lock("bias_monitor")
        .timeout(Duration::from_secs(60))
        .purpose("monitor")
        .acquire()
        .unwrap();

    let out = celeriac_locks(&server, &["list"]);
    assert!(out.success, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{}", out.stdout);
    assert!(
        lines[1].starts_with("bias_monitor") && lines[1].contains("alive"),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].starts_with("jw01_nrca1") && lines[2].contains("no expiry"),
        "{}",
        out.stdout
    );

    let out = celeriac_locks(&server, &["list", "--pattern", "jw*", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v[0]["name"], "jw01_nrca1");
    assert_eq!(v[0]["kind"], "redis-py");
    assert_eq!(v.as_array().unwrap().len(), 1);

    let out = celeriac_locks(&server, &["show", "bias_monitor", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["holder"]["pid"], std::process::id());
    assert_eq!(v["holder"]["fence"], g.fence());
    assert_eq!(v["alive"], true);

    let out = celeriac_locks(&server, &["release", "bias_monitor"]);
    assert_eq!(out.code, Some(3), "live holder refused: {}", out.stderr);
    assert!(g.owned().unwrap());
    let out = celeriac_locks(&server, &["release", "jw01_nrca1"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let out = celeriac_locks(&server, &["release", "jw01_nrca1", "--force"]);
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains("redis-py token"), "{}", out.stdout);
    assert!(!c.lock("jw01_nrca1").locked().unwrap());
    let out = celeriac_locks(&server, &["show", "jw01_nrca1"]);
    assert_eq!(out.code, Some(1));
    g.release().unwrap();
}

#[test]
fn celeriac_locks_acquire_runs_the_command_under_the_lock_and_fails_fast_when_busy() {
    let server = RedisServer::start();
    let out = celeriac_locks(
        &server,
        &[
            "acquire",
            "job",
            "--",
            "sh",
            "-c",
            "echo fence=$CELERIAC_LOCK_FENCE; exit 7",
        ],
    );
    assert_eq!(out.code, Some(7), "the command's exit code: {}", out.stderr);
    assert!(out.stdout.contains("fence="), "{}", out.stdout);
    let c = locks::blocking::Client::open(&server.url(0)).unwrap();
    assert!(
        !c.lock("job").locked().unwrap(),
        "released after the command"
    );

    // Busy: Python holds it; without --wait the command does not run.
    py(&server, "assert r.lock('job', timeout=1).acquire()");
    let out = celeriac_locks(&server, &["acquire", "job", "--", "sh", "-c", "echo ran"]);
    assert_eq!(out.code, Some(75), "{}", out.stderr);
    assert!(!out.stdout.contains("ran"));
    // With --wait longer than the Python lock's TTL it runs.
    let out = celeriac_locks(
        &server,
        &[
            "acquire", "job", "--wait", "5", "--", "sh", "-c", "echo ran",
        ],
    );
    assert!(out.success, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "ran");
}

// ---------------------------------------------------------------------------------------
// Tasks that take locks, run by a celeriac worker

#[test]
fn locked_sleep_task_runs_once_and_skips_while_python_or_another_task_holds_the_key() {
    let server = RedisServer::start();
    let _w = server.start_worker(&["-c2", "--max-tasks-per-child=1"]);
    let out = server.py(
        r#"
import redis
a = locked_sleep.delay("calibrate:jw01", 1.5)
time.sleep(0.5)
b = locked_sleep.delay("calibrate:jw01", 0.1)
print(a.get(timeout=20), b.get(timeout=20))
r = redis.Redis.from_url(app.conf.broker_url)
l = r.lock("calibrate:jw02")
assert l.acquire()
print(locked_sleep.delay("calibrate:jw02", 0.1).get(timeout=20))
l.release()
print(locked_sleep.delay("calibrate:jw02", 0.1).get(timeout=20))
"#,
        PY_TIMEOUT,
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["ran", "skipped", "skipped", "ran"]
    );
}

#[test]
fn a_killed_task_frees_its_lock_at_once_not_after_the_ttl() {
    let server = RedisServer::start();
    let _w = server.start_worker(&["-c1", "--max-tasks-per-child=1"]);
    let out = server.py(
        r#"
from billiard.exceptions import TimeLimitExceeded
r = app.send_task("shared_tasks.locked_sleep", args=["dark:jw03", 30], time_limit=1)
try:
    r.get(timeout=20)
except TimeLimitExceeded:
    print("killed")
"#,
        PY_TIMEOUT,
    );
    assert_eq!(out.trim(), "killed");
    // The lock's TTL is 30 s; the worker frees it as soon as the child is gone.
    server.wait_for_key_gone(
        "dark:jw03",
        Duration::from_secs(3),
        "the dead task's lock to be released",
    );
}
