//! Helper binary for the lock benchmark and the multi-process tests. Synchronous on
//! purpose where a task body would be (`contend`, `hold`, `locked-sleep` use the blocking
//! API with no runtime of their own).
//!
//! ```text
//! lockbench bench URL SECONDS [blocking|async] [release|drop]
//!                                      uncontended acquire+release cycles on one connection
//!                                      (blocking API by default, like redis-py's); `release`
//!                                      (default) waits for each release's reply, `drop` ends
//!                                      each cycle by dropping the guard (the release's reply
//!                                      is read with the next acquire's); prints one JSON
//!                                      line {"cycles":..,"secs":..,"per_sec":..}
//! lockbench floor URL SECONDS          the same cycle with nothing but redis-py's two commands
//!                                      (SET NX PX, compare-and-delete EVALSHA) on a bare
//!                                      synchronous redis-rs connection: a client-side two-
//!                                      round-trip limit, for comparison with redis-benchmark's
//! lockbench handoff URL N              contended handoff latency: one thread holds the lock
//!                                      while another waits in a blocking acquire (its own
//!                                      connection) for 20-120 ms; time from the holder's
//!                                      release() call
//!                                      to the waiter's acquire returning; prints one JSON
//!                                      line {"n":..,"p50_ms":..,"p99_ms":..}
//! lockbench contend URL NAME N         N acquisitions of NAME, each doing a non-atomic
//!                                      read-modify-write of NAME:counter and counting overlaps
//! lockbench hold URL NAME              take NAME (no TTL), print "held <token>", sleep for ever
//! lockbench locked-sleep KEY SECS      run locks::demo::locked_sleep (client from the env)
//! ```

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    match a(0) {
        "bench" => {
            let secs = a(2).parse().unwrap_or_else(|_| usage());
            let by_drop = match args.get(4).map(String::as_str).unwrap_or("release") {
                "release" => false,
                "drop" => true,
                _ => usage(),
            };
            match args.get(3).map(String::as_str).unwrap_or("blocking") {
                "blocking" => bench_blocking(a(1), secs, by_drop),
                "async" => bench(a(1), secs, by_drop),
                _ => usage(),
            }
        }
        "handoff" => handoff(a(1), a(2).parse().unwrap_or_else(|_| usage())),
        "floor" => floor(a(1), a(2).parse().unwrap_or_else(|_| usage())),
        "contend" => contend(a(1), a(2), a(3).parse().unwrap_or_else(|_| usage())),
        "hold" => hold(a(1), a(2)),
        "locked-sleep" => {
            let out =
                locks::demo::locked_sleep_outcome(a(1), a(2).parse().unwrap_or_else(|_| usage()));
            match out {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1)
                }
            }
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: lockbench bench URL SECS [blocking|async] [release|drop] | contend URL NAME N | hold URL NAME | locked-sleep KEY SECS"
    );
    std::process::exit(2)
}

/// Blocking API: acquire+release as fast as one connection allows, with the library's
/// defaults for a lock with a TTL (holder hash and fence written, watchdog registered).
fn bench_blocking(url: &str, secs: f64, by_drop: bool) {
    let client = locks::blocking::Client::open(url).expect("url");
    let lock = client
        .lock("lockbench")
        .timeout(Duration::from_secs(30))
        .blocking(false);
    for _ in 0..200 {
        lock.acquire().expect("acquire").release().expect("release");
    }
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut cycles = 0u64;
    while Instant::now() < until {
        for _ in 0..100 {
            let g = lock.acquire().expect("uncontended acquire");
            if by_drop {
                drop(g);
            } else {
                g.release().expect("release");
            }
        }
        cycles += 100;
    }
    report(cycles, start.elapsed().as_secs_f64());
}

/// Two round trips per cycle and nothing else: what any lock client on this machine and
/// this Redis client library can at best do.
fn floor(url: &str, secs: f64) {
    let release = redis::Script::new(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
    );
    let mut c = redis::Client::open(url)
        .expect("url")
        .get_connection()
        .expect("connect");
    let cycle = |c: &mut redis::Connection| {
        let ok: Option<String> = redis::cmd("SET")
            .arg("lockbench-floor")
            .arg("tok")
            .arg("PX")
            .arg(30000)
            .arg("NX")
            .query(c)
            .expect("SET");
        assert!(ok.is_some(), "uncontended SET NX failed");
        let n: i64 = release
            .key("lockbench-floor")
            .arg("tok")
            .invoke(c)
            .expect("release");
        assert_eq!(n, 1);
    };
    for _ in 0..200 {
        cycle(&mut c);
    }
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut cycles = 0u64;
    while Instant::now() < until {
        for _ in 0..100 {
            cycle(&mut c);
        }
        cycles += 100;
    }
    report(cycles, start.elapsed().as_secs_f64());
}

fn report(cycles: u64, el: f64) {
    println!(
        "{{\"cycles\":{cycles},\"secs\":{el:.3},\"per_sec\":{:.1}}}",
        cycles as f64 / el
    );
}

/// The same through the async API on a current-thread runtime.
fn bench(url: &str, secs: f64, by_drop: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = locks::Client::open(url).expect("url");
        let lock = client
            .lock("lockbench")
            .timeout(Duration::from_secs(30))
            .blocking(false);
        // Warm up: connect and load the scripts.
        for _ in 0..200 {
            lock.acquire()
                .await
                .expect("acquire")
                .release()
                .await
                .expect("release");
        }
        let until = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut cycles = 0u64;
        while Instant::now() < until {
            for _ in 0..100 {
                let g = lock.acquire().await.expect("uncontended acquire");
                if by_drop {
                    drop(g);
                } else {
                    g.release().await.expect("release");
                }
            }
            cycles += 100;
        }
        // A dropped guard's release is queued on the connection whose driver is a task of
        // this runtime: one more command makes sure the last one is done before it ends.
        lock.locked().await.expect("locked");
        report(cycles, start.elapsed().as_secs_f64());
    });
}

/// Handoff latency between two holders in one process, each with its own client (so its
/// own connections), like two workers on one host.
fn handoff(url: &str, n: usize) {
    use std::sync::mpsc;
    let name = "lockbench-handoff";
    let opts = move |c: &locks::blocking::Client| {
        c.lock(name)
            .timeout(Duration::from_secs(30))
            .blocking_timeout(Duration::from_secs(10))
    };
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (got_tx, got_rx) = mpsc::channel::<Instant>();
    let waiter_client = locks::blocking::Client::open(url).expect("url");
    let waiter = std::thread::spawn(move || {
        let lock = opts(&waiter_client);
        while go_rx.recv().is_ok() {
            let g = lock.acquire().expect("handed over within 10 s");
            got_tx.send(Instant::now()).expect("holder thread alive");
            g.release().expect("release");
        }
    });
    let client = locks::blocking::Client::open(url).expect("url");
    let lock = opts(&client);
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let g = lock.acquire().expect("acquire");
        go_tx.send(()).expect("waiter thread alive");
        // Let the waiter make its first attempt and start waiting; hold 20-120 ms, varied
        // so a polling waiter (redis-py, 0.1 s) is caught at every phase of its cycle.
        std::thread::sleep(Duration::from_millis(20 + (i as u64 * 37) % 100));
        let released = Instant::now();
        g.release().expect("release");
        let got = got_rx.recv().expect("waiter thread alive");
        if i >= 5 {
            lat.push(got.duration_since(released).as_secs_f64() * 1000.0);
        }
    }
    drop(go_tx);
    waiter.join().expect("waiter thread");
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    println!(
        "{{\"n\":{n},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        q(0.5),
        q(0.99)
    );
}

/// The contention worker: a deliberately non-atomic GET / SET increment under the lock,
/// plus an `inside` counter whose value on entry must be 1 (else two holders overlapped).
fn contend(url: &str, name: &str, n: u64) {
    let client = locks::blocking::Client::open(url).expect("url");
    let mut raw = redis::Client::open(url)
        .expect("url")
        .get_connection()
        .expect("connect");
    let lock = client
        .lock(name)
        .timeout(Duration::from_secs(10))
        .sleep(Duration::from_millis(1))
        .blocking_timeout(Duration::from_secs(120));
    let (counter, inside, overlaps) = (
        format!("{name}:counter"),
        format!("{name}:inside"),
        format!("{name}:overlaps"),
    );
    for _ in 0..n {
        let g = lock.acquire().expect("acquire within 120 s");
        let entered: i64 = redis::cmd("INCR").arg(&inside).query(&mut raw).unwrap();
        if entered != 1 {
            let _: i64 = redis::cmd("INCR").arg(&overlaps).query(&mut raw).unwrap();
        }
        let v: Option<i64> = redis::cmd("GET").arg(&counter).query(&mut raw).unwrap();
        std::thread::yield_now();
        let _: () = redis::cmd("SET")
            .arg(&counter)
            .arg(v.unwrap_or(0) + 1)
            .query(&mut raw)
            .unwrap();
        let _: i64 = redis::cmd("DECR").arg(&inside).query(&mut raw).unwrap();
        g.release().expect("release an owned lock");
    }
    println!("done {n}");
}

fn hold(url: &str, name: &str) {
    let client = locks::blocking::Client::open(url).expect("url");
    let g = client
        .lock(name)
        .purpose("lockbench hold")
        .try_acquire()
        .expect("lock free");
    println!("held {}", String::from_utf8_lossy(g.token()));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
