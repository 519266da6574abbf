//! What a running worker knows about itself, shared by the consumer, the pool, the
//! pidbox server and the heartbeat: requests it holds (reserved, scheduled, active), the
//! revoked set, counters and the Lamport clock. Answers `inspect active/reserved/...`.

use celeriac::protocol::{TaskMessage, pyrepr};
use celeriac::transport::Delivery;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// Where a held request is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Phase {
    /// Waiting for a free slot.
    Reserved,
    /// Held until its ETA (a Unix timestamp).
    Scheduled {
        /// ISO ETA.
        eta: String,
    },
    /// Running in a slot.
    Active {
        /// Unix start time.
        time_start: f64,
        /// Pid of the process running it (the child, or the worker itself in-process).
        worker_pid: Option<u32>,
        /// Whether its message was acked already (early ack).
        acknowledged: bool,
    },
}

/// A held request (one message).
#[derive(Debug)]
pub(crate) struct Held {
    /// The decoded message (shared: the running request reads it without a deep copy).
    pub msg: Arc<TaskMessage>,
    /// The delivery (tag, raw bytes, unacked entry), shared likewise.
    pub delivery: Arc<Delivery>,
    /// Where it is now: reserved, scheduled or running.
    pub phase: Phase,
    /// Whether the message is still in `unacked` (needs lease refresh and requeue on shutdown).
    pub unacked: bool,
    /// Send a signal number here to terminate the running task (revoke terminate).
    pub terminate: Option<mpsc::UnboundedSender<i32>>,
}

impl Held {
    /// `Request.info()` as `inspect active` shows it.
    pub(crate) fn info(&self, hostname: &str) -> Value {
        let (time_start, acknowledged, worker_pid) = match &self.phase {
            Phase::Active {
                time_start,
                worker_pid,
                acknowledged,
            } => (json!(time_start), *acknowledged, json!(worker_pid)),
            _ => (Value::Null, false, Value::Null),
        };
        json!({
            "id": self.msg.headers.id,
            "name": self.msg.headers.task,
            "args": self.msg.args,
            "kwargs": self.msg.kwargs,
            "type": self.msg.headers.task,
            "hostname": hostname,
            "time_start": time_start,
            "acknowledged": acknowledged,
            "delivery_info": delivery_info(&self.msg),
            "worker_pid": worker_pid,
        })
    }
}

/// A request's `delivery_info` as Celery shows it (`inspect active`, `self.request`).
pub(crate) fn delivery_info(msg: &TaskMessage) -> Value {
    let di = &msg.properties.delivery_info;
    json!({
        "exchange": di.exchange,
        "routing_key": di.routing_key,
        "priority": msg.properties.priority,
        "redelivered": di.extra.get("redelivered").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Celery's `LimitedSet` for revoked ids: bounded size, entries expire.
#[derive(Debug)]
pub(crate) struct Revoked {
    ids: HashMap<String, Instant>,
    order: VecDeque<String>,
    max: usize,
    ttl: Duration,
}

impl Revoked {
    fn new() -> Self {
        // CELERY_WORKER_REVOKES_MAX=50000, REVOKE_EXPIRES=10800 s.
        Revoked {
            ids: HashMap::new(),
            order: VecDeque::new(),
            max: 50_000,
            ttl: Duration::from_secs(10_800),
        }
    }

    /// Add an id.
    pub(crate) fn add(&mut self, id: &str) {
        if self.ids.insert(id.to_string(), Instant::now()).is_none() {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    /// Whether `id` is revoked (and not expired).
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.ids.get(id).is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// All live ids.
    pub(crate) fn list(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|id| self.contains(id))
            .cloned()
            .collect()
    }
}

/// The shared state.
#[derive(Debug)]
pub(crate) struct State {
    /// Node name.
    pub node: String,
    /// Main process pid.
    pub pid: u32,
    /// Lamport clock.
    clock: AtomicU64,
    /// Tasks finished.
    pub processed: AtomicU64,
    /// Per-task-name totals (`stats.total`).
    pub totals: Mutex<BTreeMap<String, u64>>,
    /// Held requests by delivery tag. Not by task id: Celery's `self.retry()` publishes the
    /// retry (same task id) while the original still runs, and both must be held at once.
    pub held: Mutex<HashMap<String, Held>>,
    /// Signalled whenever a held message is released or changes phase.
    pub released: Notify,
    /// Revoked ids.
    pub revoked: Mutex<Revoked>,
    /// Start time (for `stats.uptime`).
    pub started: Instant,
    /// Per-task rate limits set by `rate_limit`.
    pub rate_limits: Mutex<HashMap<String, RateLimit>>,
    /// Per-task `(hard, soft)` time limits set by `time_limit`.
    pub time_limits: Mutex<HashMap<String, TimeLimits>>,
}

/// `(hard, soft)` seconds set by `control time_limit` for one task name.
pub(crate) type TimeLimits = (Option<f64>, Option<f64>);

/// A per-worker token bucket for one task name (Celery's `rate_limit`, e.g. `10/m`).
#[derive(Debug, Clone)]
pub(crate) struct RateLimit {
    /// The spec as given.
    pub spec: String,
    /// Tasks per second (0 = no limit).
    pub per_second: f64,
    /// Earliest time the next task may start.
    pub next: Option<Instant>,
}

impl RateLimit {
    /// Parse `10`, `10/s`, `10/m`, `10/h`.
    pub(crate) fn parse(spec: &str) -> Option<Self> {
        let (n, unit) = spec.trim().split_once('/').unwrap_or((spec.trim(), "s"));
        let n: f64 = n.trim().parse().ok()?;
        let per = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        (n >= 0.0).then(|| RateLimit {
            spec: spec.to_string(),
            per_second: n / per,
            next: None,
        })
    }

    /// How long to wait before the next task may start, and book that slot.
    pub(crate) fn book(&mut self) -> Duration {
        if self.per_second <= 0.0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let at = self.next.filter(|t| *t > now).unwrap_or(now);
        self.next = Some(at + Duration::from_secs_f64(1.0 / self.per_second));
        at - now
    }
}

impl State {
    /// New state for `node`.
    pub(crate) fn new(node: String) -> Self {
        State {
            node,
            pid: std::process::id(),
            clock: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            totals: Mutex::new(BTreeMap::new()),
            held: Mutex::new(HashMap::new()),
            released: Notify::new(),
            revoked: Mutex::new(Revoked::new()),
            started: Instant::now(),
            rate_limits: Mutex::new(HashMap::new()),
            time_limits: Mutex::new(HashMap::new()),
        }
    }

    /// Advance the clock for an event we send.
    pub(crate) fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Merge a clock value received from a peer (`clock.adjust`).
    pub(crate) fn adjust(&self, other: u64) {
        self.clock.fetch_max(other + 1, Ordering::SeqCst);
    }

    /// Current clock.
    pub(crate) fn clock(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Hold a new request, under its delivery tag.
    pub(crate) fn hold(&self, held: Held) {
        self.held
            .lock()
            .expect("held")
            .insert(held.delivery.tag.clone(), held);
    }

    /// Move the request held under `tag` to another phase.
    pub(crate) fn set_phase(&self, tag: &str, phase: Phase) {
        let mut held = self.held.lock().expect("held");
        if let Some(h) = held.get_mut(tag) {
            h.phase = phase;
        }
    }

    /// The request held under `tag` starts running: record how to terminate it, its start
    /// time and whether its message is acked already (early ack, as Celery acks when the
    /// pool accepts the job: no more lease refresh, and it no longer counts against prefetch).
    pub(crate) fn start(
        &self,
        tag: &str,
        terminate: mpsc::UnboundedSender<i32>,
        time_start: f64,
        acked: bool,
    ) {
        if let Some(h) = self.held.lock().expect("held").get_mut(tag) {
            h.terminate = Some(terminate);
            h.phase = Phase::Active {
                time_start,
                worker_pid: None,
                acknowledged: acked,
            };
            if acked {
                h.unacked = false;
            }
        }
        if acked {
            self.released.notify_waiters();
        }
    }

    /// Record the pid of the process running the request held under `tag`.
    pub(crate) fn set_worker_pid(&self, tag: &str, pid: u32) {
        if let Some(h) = self.held.lock().expect("held").get_mut(tag)
            && let Phase::Active { worker_pid, .. } = &mut h.phase
        {
            *worker_pid = Some(pid);
        }
    }

    /// Stop holding the request held under `tag`.
    pub(crate) fn release(&self, tag: &str) -> Option<Held> {
        let h = self.held.lock().expect("held").remove(tag);
        self.released.notify_waiters();
        h
    }

    /// Whether the request of delivery `tag` is still held here.
    pub(crate) fn is_held(&self, tag: &str) -> bool {
        self.held.lock().expect("held").contains_key(tag)
    }

    /// Whether a request with task id `id` is running here (any of its messages).
    pub(crate) fn is_active(&self, id: &str) -> bool {
        self.held
            .lock()
            .expect("held")
            .values()
            .any(|h| h.msg.headers.id == id && matches!(h.phase, Phase::Active { .. }))
    }

    /// Messages held against prefetch that are still unacked (Celery's
    /// `len(delivered) - len(acked)`, minus ETA tasks which raise prefetch by one each).
    pub(crate) fn unacked_against_prefetch(&self) -> usize {
        self.held
            .lock()
            .expect("held")
            .values()
            .filter(|h| h.unacked && !matches!(h.phase, Phase::Scheduled { .. }))
            .count()
    }

    /// Tags of every message still in `unacked` that we hold (for lease refresh).
    pub(crate) fn unacked_tags(&self) -> Vec<String> {
        self.held
            .lock()
            .expect("held")
            .values()
            .filter(|h| h.unacked)
            .map(|h| h.delivery.tag.clone())
            .collect()
    }

    /// Number of running tasks.
    pub(crate) fn active_count(&self) -> usize {
        self.held
            .lock()
            .expect("held")
            .values()
            .filter(|h| matches!(h.phase, Phase::Active { .. }))
            .count()
    }

    /// `inspect active`/`reserved` lists.
    pub(crate) fn infos(&self, pick: impl Fn(&Phase) -> bool) -> Vec<Value> {
        self.held
            .lock()
            .expect("held")
            .values()
            .filter(|h| pick(&h.phase))
            .map(|h| h.info(&self.node))
            .collect()
    }

    /// `inspect scheduled` entries.
    pub(crate) fn scheduled(&self) -> Vec<Value> {
        self.held
            .lock()
            .expect("held")
            .values()
            .filter_map(|h| match &h.phase {
                Phase::Scheduled { eta } => {
                    Some(json!({"eta": eta, "priority": 6, "request": h.info(&self.node)}))
                }
                _ => None,
            })
            .collect()
    }

    /// Count a finished task.
    pub(crate) fn count_done(&self, name: &str) {
        self.processed.fetch_add(1, Ordering::SeqCst);
        *self
            .totals
            .lock()
            .expect("totals")
            .entry(name.to_string())
            .or_default() += 1;
    }
}

/// The `task-received` event fields for a message.
pub(crate) fn received_fields(msg: &TaskMessage) -> serde_json::Map<String, Value> {
    let h = &msg.headers;
    let mut m = serde_json::Map::new();
    m.insert("uuid".into(), json!(h.id));
    m.insert("name".into(), json!(h.task));
    m.insert(
        "args".into(),
        json!(
            h.argsrepr
                .clone()
                .unwrap_or_else(|| pyrepr::repr_args(&msg.args))
        ),
    );
    m.insert(
        "kwargs".into(),
        json!(
            h.kwargsrepr
                .clone()
                .unwrap_or_else(|| pyrepr::repr(&Value::Object(msg.kwargs.clone())))
        ),
    );
    m.insert("root_id".into(), json!(h.root_id));
    m.insert("parent_id".into(), json!(h.parent_id));
    m.insert("retries".into(), json!(h.retries));
    m.insert("eta".into(), json!(h.eta));
    m.insert("expires".into(), json!(h.expires));
    m
}
