//! Counting executions and results, for the tests that kill workers or Redis mid-run.
//!
//! `shared_tasks.append_line(path, id, seconds)` appends its task id to a file as its last
//! act, so the file says how often each task ran; its stored result says whether it ended.
//! Messages are built with celeriac's encoder (byte-identical to Python's) and pushed
//! straight onto the `celery` queue, so thousands cost one round trip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use celeriac::protocol::TaskMessage;

use crate::{CeleriacWorker, RedisServer};

/// Flags of the two-worker fleets that must ride out Redis going away (a restart, a Sentinel
/// failover): threads, two slots, late ack, and a 3 s lease so a lost worker's tasks come
/// back soon.
pub const RESILIENT_FLEET: &[&str] = &["-P", "threads", "-c2", "--acks-late", "--lease", "3"];

/// A file that `append_line` tasks write their ids to, in a temp dir removed on drop.
#[derive(Debug)]
pub struct RunLog {
    path: PathBuf,
    // Held so the directory (and the log in it) lives as long as this value.
    _dir: tempfile::TempDir,
}

impl RunLog {
    /// A fresh, empty (not yet created) run log.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the run log");
        RunLog {
            path: dir.path().join("runs.log"),
            _dir: dir,
        }
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log file's path as a task argument.
    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }

    /// Push `n` `append_line(<this log>, <task id>, seconds)` messages onto the `celery`
    /// queue in one pipeline; returns their task ids in submission order.
    pub fn submit(&self, c: &mut redis::Connection, n: usize, seconds: f64) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        let mut pipe = redis::pipe();
        for _ in 0..n {
            let mut msg = TaskMessage::new("shared_tasks.append_line", vec![], Default::default());
            let id = msg.headers.id.clone();
            msg.args = vec![self.path_str().into(), id.clone().into(), seconds.into()];
            pipe.lpush("celery", msg.to_envelope("celery", 0).encode())
                .ignore();
            ids.push(id);
        }
        pipe.query::<()>(c).expect("push the append_line messages");
        ids
    }

    /// How many times each task id was executed so far (empty before the first run).
    pub fn executions(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for line in std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
        {
            *m.entry(line.to_string()).or_insert(0) += 1;
        }
        m
    }
}

impl Default for RunLog {
    fn default() -> Self {
        Self::new()
    }
}

/// How many of `ids` have a stored `SUCCESS` result on `c` (read with MGET, 500 keys a call).
pub fn count_succeeded(c: &mut redis::Connection, ids: &[String]) -> usize {
    let keys: Vec<String> = ids
        .iter()
        .map(|i| format!("celery-task-meta-{i}"))
        .collect();
    let mut done = 0;
    for chunk in keys.chunks(500) {
        let metas: Vec<Option<String>> = redis::cmd("MGET")
            .arg(chunk)
            .query(c)
            .expect("MGET task results");
        done += metas
            .iter()
            .filter(|m| m.as_deref().is_some_and(|m| m.contains("\"SUCCESS\"")))
            .count();
    }
    done
}

/// A celeriac worker started with `flags` on db 0 of `redis`, already running one
/// `append_line` task of `seconds` that logs to `runs`; returns the worker and the task id.
/// The worker is started first and the task pushed after, so it is the one to receive it;
/// waits up to 5 s for it to say so.
pub fn worker_running_one_task(
    redis: &RedisServer,
    runs: &RunLog,
    flags: &[&str],
    seconds: f64,
) -> (CeleriacWorker, String) {
    let worker = redis.start_worker(flags);
    let mut ids = runs.submit(&mut redis.client(0), 1, seconds);
    worker
        .proc_
        .wait_for_output("received", Duration::from_secs(5));
    (worker, ids.remove(0))
}
