//! Redis Sentinel: one master, one replica, three sentinels on loopback; the master is
//! killed mid-run and the fleet must carry on against the promoted replica. Losses that
//! asynchronous replication itself causes (writes acknowledged by the old master that never
//! reached the replica) are counted and reported.

use redis::Commands;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tests::runs::{RESILIENT_FLEET, RunLog, count_succeeded};
use tests::{CeleriacWorker, Proc, RedisServer, free_port, wait_for_pong, wait_until, which};

struct Sentinel {
    _proc: Proc,
    port: u16,
}

fn start_sentinel(dir: &std::path::Path, master_port: u16) -> Sentinel {
    let bin = which("redis-sentinel").unwrap_or_else(|| {
        panic!("redis-sentinel not found. Install it with `apt-get install -y redis-sentinel` or run scripts/test.sh.")
    });
    let port = free_port();
    let conf = dir.join(format!("sentinel-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n\
             sentinel parallel-syncs mymaster 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(&conf).stdin(Stdio::null());
    let proc_ = Proc::spawn(cmd);
    wait_for_pong("sentinel to answer", &["-p", &port.to_string()]);
    Sentinel { _proc: proc_, port }
}

fn master_port(sentinel_port: u16) -> Option<u16> {
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &sentinel_port.to_string(),
            "SENTINEL",
            "get-master-addr-by-name",
            "mymaster",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

#[test]
fn the_fleet_follows_a_sentinel_failover() {
    let mut master = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let sdir = tempfile::tempdir().unwrap();
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|_| start_sentinel(sdir.path(), master.port))
        .collect();
    wait_until(Duration::from_secs(15), "the replica to sync", || {
        let mut r = replica.client(0);
        let info: String = redis::cmd("INFO").arg("replication").query(&mut r).ok()?;
        info.contains("master_link_status:up").then_some(())
    });
    let url = format!(
        "{}/0?master_name=mymaster",
        sentinels
            .iter()
            .map(|s| format!("sentinel://127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(";")
    );
    let runs = RunLog::new();
    let mut c = master.client(0);
    let ids = runs.submit(&mut c, 300, 0.02);
    let _: i64 = redis::cmd("WAIT").arg(1).arg(2000).query(&mut c).unwrap();
    let w1 = CeleriacWorker::start(&url, RESILIENT_FLEET);
    let w2 = CeleriacWorker::start(&url, RESILIENT_FLEET);
    wait_until(Duration::from_secs(20), "some progress", || {
        (runs.executions().values().sum::<usize>() >= 60).then_some(())
    });
    let killed = Instant::now();
    master.kill();
    wait_until(
        Duration::from_secs(30),
        "the sentinels to promote the replica",
        || (master_port(sentinels[0].port) == Some(replica.port)).then_some(()),
    );
    eprintln!(
        "failover completed {:.1}s after the master was killed",
        killed.elapsed().as_secs_f64()
    );
    let mut r = replica.client(0);
    // Everything still queued or unacked on the new master gets done.
    wait_until(
        Duration::from_secs(90),
        "the queue to drain on the new master",
        || {
            let q: usize = r.llen("celery").unwrap();
            let u: usize = r.hlen("unacked").unwrap();
            (q == 0 && u == 0).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let done = count_succeeded(&mut r, &ids);
    let executed = runs.executions();
    let never_ran = ids.iter().filter(|i| !executed.contains_key(*i)).count();
    let result_lost = ids.len() - done;
    eprintln!(
        "sentinel failover: {} tasks, {done} results on the new master, {result_lost} results lost by replication, {never_ran} never ran, {} ran twice",
        ids.len(),
        executed.values().filter(|n| **n > 1).count()
    );
    assert_eq!(never_ran, 0, "tasks lost");
    // Only writes in flight at the kill can be lost by asynchronous replication.
    assert!(result_lost <= 8, "{result_lost} results lost");
    drop((w1, w2));
}
