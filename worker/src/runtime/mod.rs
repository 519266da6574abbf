//! The worker runtime: consume → run → store → ack, with Celery's semantics.
//!
//! - [`WorkerConfig`] is the validated configuration the CLI builds.
//! - The consumer loop claims messages (atomically recorded in `unacked`) only while the
//!   worker holds fewer unacked messages than its prefetch, so a busy single-slot worker
//!   takes nothing it cannot run and a second host picks the next task up at once. It runs
//!   on a thread of its own (`Consumer`), so an idle worker's wake-up, claim and hand-off
//!   do not bounce between the main runtime's threads.
//! - Each message is decoded; anything undecodable goes to the dead-letter list with the
//!   reason and the worker goes on. Unknown tasks get FAILURE `NotRegistered`, revoked and
//!   expired ones REVOKED, ETA ones are held (not counted against prefetch, as in Celery).
//! - Runnable requests wait in one FIFO for a free slot (`-O fair`: never a busy slot) and run
//!   in the [`pool::Executor`]; outcomes become result metas, events, callbacks, retries,
//!   acks or requeues.
//! - Background: heartbeats, lease refresh of held messages, the stale-unacked sweeper, the
//!   pidbox server. Shutdown is [`shutdown::Shutdown`].

pub mod child;
pub mod events;
pub mod pidbox;
pub mod pool;
pub mod shutdown;
pub mod state;

use celeriac::backend::Backend;
use celeriac::protocol::result::ExtendedFields;
use celeriac::protocol::{
    Envelope, ExceptionInfo, ResultMeta, State as TaskState, TaskMessage, time,
};
use celeriac::task::Registry;
use celeriac::transport::{Broker, Delivery, keys, wait::IdleWaiter};
use child::{ChildOutcome, ChildRequest};
use events::Events;
use pool::{ExecOutcome, Executor};
use serde_json::{Map, Value, json};
use shutdown::{Phase, Shutdown};
use state::{Held, Phase as HeldPhase, State};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};

/// How tasks are executed.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolMode {
    /// In the worker process.
    InProcess,
    /// In child processes, each replaced after `max_tasks_per_child` tasks (0 = never).
    Children {
        /// Tasks per child.
        max_tasks_per_child: u64,
    },
}

/// Everything a worker needs to know, validated.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Broker URL.
    pub broker_url: String,
    /// Result backend URL.
    pub backend_url: String,
    /// Node name (`celery@host`).
    pub node: String,
    /// Queues consumed.
    pub queues: Vec<String>,
    /// Task slots.
    pub concurrency: usize,
    /// Pool.
    pub pool: PoolMode,
    /// Maximum unacked messages held (0 = unlimited).
    pub prefetch: usize,
    /// Ack after the task instead of before.
    pub acks_late: bool,
    /// With late ack: requeue when the child died.
    pub reject_on_worker_lost: bool,
    /// With late ack: ack failed/timed-out tasks (Celery default true).
    pub acks_on_failure_or_timeout: bool,
    /// Send task events.
    pub task_events: bool,
    /// Default hard time limit.
    pub time_limit: Option<Duration>,
    /// Default soft time limit.
    pub soft_time_limit: Option<Duration>,
    /// kombu's visibility timeout (for messages of non-celeriac holders).
    pub visibility_timeout: Duration,
    /// Lease of celeriac-held messages.
    pub lease: Duration,
    /// Result expiry (zero = none).
    pub result_expires: Duration,
    /// `result_extended`.
    pub result_extended: bool,
    /// `task_track_started`.
    pub track_started: bool,
    /// Largest message accepted.
    pub max_message_size: usize,
    /// Heartbeat interval (None = no heartbeats).
    pub heartbeat: Option<Duration>,
    /// Skip a redelivered task whose id already has a SUCCESS.
    pub skip_succeeded: bool,
    /// Command-task config file.
    pub command_tasks: Option<PathBuf>,
    /// Executable spawned for children (this binary).
    pub exe: PathBuf,
    /// Wait for an unreachable broker/backend at start-up instead of failing
    /// (`broker_connection_retry_on_startup`, default true).
    pub connection_retry_on_startup: bool,
    /// Attempts before giving up at start-up (`broker_connection_max_retries`, default 100;
    /// `None` = forever).
    pub connection_max_retries: Option<u32>,
}

impl WorkerConfig {
    /// Defaults for `broker_url`, like `celery worker` with no options.
    pub fn new(broker_url: &str) -> Self {
        WorkerConfig {
            broker_url: broker_url.into(),
            backend_url: broker_url.into(),
            node: format!("celery@{}", celeriac::client::hostname()),
            queues: vec![keys::DEFAULT_QUEUE.into()],
            concurrency: 1,
            pool: PoolMode::InProcess,
            prefetch: 4,
            acks_late: false,
            reject_on_worker_lost: false,
            acks_on_failure_or_timeout: true,
            task_events: false,
            time_limit: None,
            soft_time_limit: None,
            visibility_timeout: Duration::from_secs(3600),
            lease: Duration::from_secs(30),
            result_expires: celeriac::backend::DEFAULT_RESULT_EXPIRES,
            result_extended: false,
            track_started: false,
            max_message_size: 64 * 1024 * 1024,
            heartbeat: Some(Duration::from_secs(2)),
            skip_succeeded: true,
            command_tasks: None,
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("celeriac")),
            connection_retry_on_startup: true,
            connection_max_retries: Some(100),
        }
    }
}

/// Errors that stop a worker from starting.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Broker.
    #[error("broker: {0}")]
    Transport(#[from] celeriac::transport::TransportError),
    /// Backend.
    #[error("result backend: {0}")]
    Backend(#[from] celeriac::backend::BackendError),
    /// Spawning or I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How the worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Warm shutdown completed.
    Warm,
    /// Cold shutdown.
    Cold,
}

/// The running worker (shared by its tasks).
#[derive(Debug)]
pub struct Inner {
    /// Config.
    pub cfg: WorkerConfig,
    /// Broker.
    pub broker: Broker,
    /// Backend.
    pub backend: Backend,
    /// Tasks served.
    pub registry: Arc<Registry>,
    /// Shared state.
    pub state: Arc<State>,
    /// Events.
    pub events: Events,
    /// Executor.
    pub executor: Executor,
    /// Shutdown.
    pub shutdown: Shutdown,
    /// Runnable requests (delivery tags), in order.
    ready_tx: mpsc::UnboundedSender<String>,
    /// Slots.
    slots: Arc<Semaphore>,
    /// Requests queued for a slot (so a new one never overtakes them).
    waiting: std::sync::atomic::AtomicUsize,
    /// Job counter (billiard's "Job: N").
    jobs: AtomicU64,
    /// Queues currently consumed (add_consumer/cancel_consumer change it).
    pub queues: std::sync::Mutex<Vec<String>>,
    /// Signalled when the queue set changes.
    pub queues_changed: tokio::sync::Notify,
    /// Broker and backend are the same database: a late ack can ride with the result.
    same_database: bool,
    /// The main runtime, where requests run (the consumer has a thread of its own).
    main: tokio::runtime::Handle,
}

/// Run a worker until it is shut down.
pub async fn run(
    cfg: WorkerConfig,
    registry: Registry,
    shutdown: Shutdown,
) -> Result<Exit, WorkerError> {
    let Some(broker) = connect_at_startup(&cfg, &shutdown, &cfg.broker_url, || {
        Broker::connect(&cfg.broker_url)
    })
    .await?
    else {
        return Ok(Exit::Warm);
    };
    let Some(backend) = connect_at_startup(&cfg, &shutdown, &cfg.backend_url, || {
        Backend::connect(&cfg.backend_url)
    })
    .await?
    else {
        return Ok(Exit::Warm);
    };
    let backend = backend.with_expires(cfg.result_expires);
    let registry = Arc::new(registry);
    let state = Arc::new(State::new(cfg.node.clone()));
    let events = Events::start(broker.clone(), state.clone(), cfg.task_events);
    let executor = match cfg.pool {
        PoolMode::InProcess => Executor::InProcess(registry.clone()),
        PoolMode::Children {
            max_tasks_per_child,
        } => {
            let pool = pool::ChildPool::new(
                cfg.exe.clone(),
                max_tasks_per_child,
                cfg.command_tasks.clone(),
                cfg.concurrency,
            );
            pool.warm_up().await?;
            Executor::Children(pool)
        }
    };
    let (ready_tx, ready_rx) = mpsc::unbounded_channel();
    let inner = Arc::new(Inner {
        slots: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
        waiting: std::sync::atomic::AtomicUsize::new(0),
        queues: std::sync::Mutex::new(cfg.queues.clone()),
        queues_changed: tokio::sync::Notify::new(),
        same_database: cfg.broker_url == cfg.backend_url,
        cfg,
        broker,
        backend,
        registry,
        state,
        events,
        executor,
        shutdown,
        ready_tx,
        jobs: AtomicU64::new(0),
        main: tokio::runtime::Handle::current(),
    });

    // Start-up, in Celery's order: restore stale unacked, declare queues, online, pidbox.
    match inner
        .broker
        .restore_visible(inner.cfg.visibility_timeout)
        .await
    {
        Ok(Some(n)) if n > 0 => tracing::warn!(
            restored = n,
            "restored unacknowledged messages of dead consumers"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "restore of stale unacked messages failed"),
    }
    for q in inner.cfg.queues.clone() {
        inner.broker.declare_queue(&q).await?;
    }
    let pidbox = pidbox::start(inner.clone()).await?;

    let freq = inner.cfg.heartbeat.map_or(2.0, |d| d.as_secs_f64());
    inner
        .events
        .send("worker-online", inner.events.worker_fields(freq));
    tracing::info!(node = %inner.cfg.node, queues = ?inner.cfg.queues, concurrency = inner.cfg.concurrency, "celeriac worker ready");
    // Ready line on stderr for tools and tests waiting for start-up.
    eprintln!("celeriac worker {} ready.", inner.cfg.node);

    let background = vec![
        tokio::spawn(heartbeat_loop(inner.clone())),
        tokio::spawn(lease_loop(inner.clone())),
    ];
    let dispatcher = tokio::spawn(dispatch_loop(inner.clone(), ready_rx));

    let mut consumer = Consumer::start(inner.clone())?;
    let consumer_died = !consumer.finished().await;
    if consumer_died {
        // Not a shutdown anyone asked for: stop as a warm shutdown would, then fail loudly.
        tracing::error!("the consumer thread died; stopping the worker");
        inner.shutdown.escalate(Phase::Warm);
    }

    // Stopping: no new task starts; warm waits for running ones, cold kills them.
    let exit = stop(&inner).await;
    dispatcher.abort();
    for b in background {
        b.abort();
    }
    inner
        .events
        .send("worker-offline", inner.events.worker_fields(freq));
    pidbox.stop().await;
    inner.events.flush(Duration::from_secs(2)).await;
    drop(consumer);
    tracing::info!(?exit, "worker stopped");
    if consumer_died {
        return Err(WorkerError::Io(std::io::Error::other(
            "the consumer thread died (see the log above)",
        )));
    }
    Ok(exit)
}

/// An error [`connect_at_startup`] may wait out.
trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for celeriac::transport::TransportError {
    fn is_transient(&self) -> bool {
        celeriac::transport::TransportError::is_transient(self)
    }
}

impl Transient for celeriac::backend::BackendError {
    fn is_transient(&self) -> bool {
        celeriac::backend::BackendError::is_transient(self)
    }
}

/// Connect at start-up the way Celery's consumer does (`broker_connection_retry_on_startup`,
/// kombu's `ensure_connection`): while the server is unreachable, log and try again after
/// 2 s, 4 s, 6 s … up to 30 s between attempts, at most `connection_max_retries` times. A
/// fleet started by systemd before its Redis waits for it instead of dying. Errors that
/// waiting cannot mend (a wrong password, a bad URL) fail at once. `None` when a shutdown
/// was asked for while waiting.
async fn connect_at_startup<T, E, F, Fut>(
    cfg: &WorkerConfig,
    shutdown: &Shutdown,
    url: &str,
    mut connect: F,
) -> Result<Option<T>, WorkerError>
where
    E: Transient + std::fmt::Display + Into<WorkerError>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt: u32 = 0;
    loop {
        let e = match connect().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) => e,
        };
        attempt += 1;
        let gave_up = cfg.connection_max_retries.is_some_and(|max| attempt > max);
        if !e.is_transient() || !cfg.connection_retry_on_startup || gave_up {
            return Err(e.into());
        }
        let wait = Duration::from_secs(u64::from(attempt.min(15)) * 2);
        let of = cfg
            .connection_max_retries
            .map_or_else(|| "no limit".to_string(), |m| m.to_string());
        tracing::error!(
            "consumer: Cannot connect to {}: {e}.\nTrying again in {:.2} seconds... ({attempt}/{of})",
            celeriac::url::redact(url),
            wait.as_secs_f64()
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.reached(Phase::Warm) => return Ok(None),
        }
    }
}

/// The consumer — waiting for work, claiming it, deciding what may run — on a thread of its
/// own with a single-threaded runtime, together with the connections it claims and peeks
/// on. An idle worker's path from "a message arrived" to "its request starts" is then a
/// few hand-offs between tasks of one thread and a single hop to the main runtime, instead
/// of bouncing between the main runtime's threads at every step (a cross-thread wake-up
/// costs 40–60 µs on a small VM; the path had four). Requests, acks and results stay on
/// the main runtime.
///
/// The thread's runtime lives until the worker has stopped (dropping this), not just until
/// the loop ends: a connection the consumer re-established while serving a message may be
/// driven from it, and the stopping worker still acks and stores through those.
struct Consumer {
    finished: Option<tokio::sync::oneshot::Receiver<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Consumer {
    fn start(inner: Arc<Inner>) -> Result<Consumer, WorkerError> {
        let (finished_tx, finished_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("celeriac-consumer".into())
            .spawn(move || {
                rt.block_on(async move {
                    consume_loop(inner).await;
                    let _ = finished_tx.send(());
                    let _ = stop_rx.await;
                });
            })?;
        Ok(Consumer {
            finished: Some(finished_rx),
            stop: Some(stop_tx),
        })
    }

    /// Resolves when the consume loop has returned: `true` when it did so itself (shutdown
    /// reached), `false` when its thread died (a panic).
    async fn finished(&mut self) -> bool {
        match self.finished.take() {
            Some(rx) => rx.await.is_ok(),
            None => true,
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn stop(inner: &Arc<Inner>) -> Exit {
    // Wait for running tasks (warm), or kill them (cold, now or when escalated).
    loop {
        if inner.shutdown.phase() >= Phase::Cold {
            inner.executor.kill_all();
        }
        if inner.state.active_count() == 0 {
            break;
        }
        tokio::select! {
            _ = inner.state.released.notified() => {}
            _ = inner.shutdown.reached(Phase::Cold) => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // Give back everything held but not started (reserved, scheduled): RPUSH, redelivered.
    let held: Vec<Held> = {
        let mut map = inner.state.held.lock().expect("held");
        map.drain().map(|(_, h)| h).collect()
    };
    let mut requeued = 0;
    for h in held {
        if h.unacked {
            match inner.broker.requeue(&h.delivery, false).await {
                Ok(_) => requeued += 1,
                Err(e) => {
                    tracing::error!(task_id = %h.msg.headers.id, error = %e, "could not requeue; it stays in unacked for the sweeper")
                }
            }
        }
    }
    if requeued > 0 {
        tracing::warn!(
            count = requeued,
            "Restoring {requeued} unacknowledged message(s)"
        );
    }
    if inner.shutdown.phase() >= Phase::Cold {
        Exit::Cold
    } else {
        Exit::Warm
    }
}

async fn consume_loop(inner: Arc<Inner>) {
    // Claims go over a connection of this thread's own (see `Consumer`).
    let claimer = loop {
        match Broker::connect(&inner.cfg.broker_url).await {
            Ok(b) => break b,
            Err(e) => {
                tracing::warn!(error = %e, "consumer cannot connect; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = inner.shutdown.reached(Phase::Warm) => return,
                }
            }
        }
    };
    let waiter_keys = |qs: &[String]| keys::consume_keys(qs);
    let mut queues = inner.queues.lock().expect("queues").clone();
    let mut waiter = IdleWaiter::start(inner.broker.url().clone(), waiter_keys(&queues));
    let mut backoff = Duration::from_millis(50);
    loop {
        if inner.shutdown.phase() != Phase::Running {
            return;
        }
        {
            let current = inner.queues.lock().expect("queues").clone();
            // Compare as sets: our local order is rotated for round robin.
            let (mut a, mut b) = (current.clone(), queues.clone());
            a.sort();
            b.sort();
            if a != b {
                queues = current;
                waiter = IdleWaiter::start(inner.broker.url().clone(), waiter_keys(&queues));
            }
        }
        let released = inner.state.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let held = inner.state.unacked_against_prefetch();
        let limit = match inner.cfg.prefetch {
            0 => 256,
            p => p.saturating_sub(held).min(256),
        };
        if limit == 0 || queues.is_empty() {
            // Full: take nothing we cannot run (no claim while the only slot is busy).
            tokio::select! {
                _ = released => {}
                _ = inner.queues_changed.notified() => {}
                _ = inner.shutdown.reached(Phase::Warm) => {}
            }
            continue;
        }
        match claimer
            .claim(
                &queues,
                limit,
                &inner.cfg.node,
                inner.cfg.max_message_size,
                inner.cfg.lease,
            )
            .await
        {
            Ok(claimed) if !claimed.is_empty() => {
                backoff = Duration::from_millis(50);
                // kombu's round robin: the queue that delivered goes to the end.
                if queues.len() > 1
                    && let Some(pos) = queues.iter().position(|q| q == claimed[0].queue())
                {
                    let q = queues.remove(pos);
                    queues.push(q);
                }
                for c in claimed {
                    match c {
                        celeriac::transport::Claimed::Delivery(d) => on_delivery(&inner, d).await,
                        celeriac::transport::Claimed::DeadLettered {
                            queue,
                            task_id,
                            reason,
                        } => {
                            tracing::error!(
                                %queue,
                                task_id = task_id.as_deref().unwrap_or("-"),
                                %reason,
                                "message moved to the dead-letter list"
                            );
                            if let Some(id) = task_id {
                                let exc = ExceptionInfo::new(
                                    "celery.exceptions",
                                    "InvalidTaskError",
                                    reason,
                                );
                                store_dead_letter_failure(&inner, &id, &exc).await;
                            }
                        }
                    }
                }
            }
            Ok(_) => {
                waiter.rearm();
                tokio::select! {
                    _ = waiter.notified() => {}
                    _ = inner.queues_changed.notified() => {}
                    _ = inner.shutdown.reached(Phase::Warm) => {}
                    // A safety net only; wake-ups come from the waiter.
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = inner.shutdown.reached(Phase::Warm) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Put an undecodable or unrunnable message on the dead-letter list (acking it atomically).
///
/// Beyond Celery (which rejects such a message silently, leaving its caller waiting forever):
/// when the message still names a task id, a FAILURE is stored for it, so a client blocked in
/// `get()` wakes with `ContentDisallowed` (a refused serializer) or `InvalidTaskError`.
async fn dead_letter(inner: &Inner, d: &Delivery, err: &celeriac::protocol::ProtocolError) {
    let reason = err.to_string();
    tracing::error!(tag = %d.tag, queue = %d.queue(), %reason, "message moved to the dead-letter list");
    if let Err(e) = inner.broker.ack_dead(d, &reason).await {
        tracing::error!(error = %e, "could not dead-letter the message; it stays in unacked");
        return;
    }
    if let Some(id) = celeriac::transport::task_id_of(&d.raw) {
        let exc = match err {
            celeriac::protocol::ProtocolError::UnsupportedContentType(_) => {
                ExceptionInfo::new("kombu.exceptions", "ContentDisallowed", reason.clone())
            }
            _ => ExceptionInfo::new("celery.exceptions", "InvalidTaskError", reason.clone()),
        };
        store_dead_letter_failure(inner, &id, &exc).await;
    }
}

/// Store the FAILURE that wakes a client waiting in `get()` on a dead-lettered message
/// (whether the claim refused it or the worker could not decode it).
async fn store_dead_letter_failure(inner: &Inner, id: &str, exc: &ExceptionInfo) {
    let mut meta = ResultMeta::exception(id, TaskState::Failure, exc, None);
    meta.children = Value::Null;
    store(inner, &meta).await;
}

async fn on_delivery(inner: &Arc<Inner>, d: Delivery) {
    let msg = match TaskMessage::decode(&d.raw) {
        Ok(m) => m,
        Err(e) => return dead_letter(inner, &d, &e).await,
    };
    let id = msg.headers.id.clone();
    tracing::info!(task_id = %id, task = %msg.headers.task, "Task {}[{}] received", msg.headers.task, id);
    inner
        .events
        .task("task-received", state::received_fields(&msg));
    if inner.registry.get(&msg.headers.task).is_none() {
        tracing::error!(task = %msg.headers.task, "Received unregistered task of type {:?}", msg.headers.task);
        let exc = ExceptionInfo::not_registered(&msg.headers.task);
        let tb = exc.traceback(&msg.headers.task);
        let meta = meta_for(
            inner,
            &msg,
            ResultMeta::exception(&id, TaskState::Failure, &exc, Some(tb.clone())),
        );
        store(inner, &meta).await;
        inner.events.task(
            "task-failed",
            fields(&[
                ("uuid", json!(id)),
                ("exception", json!(exc.repr())),
                ("traceback", json!(tb)),
            ]),
        );
        ack(inner, &d).await;
        return;
    }
    if let Some(reason) = revoked_reason(inner, &msg) {
        revoke_message(inner, &msg, &d, reason).await;
        return;
    }
    let eta = msg.headers.eta_time().ok().flatten();
    let scheduled = eta.filter(|t| *t > chrono::Utc::now());
    let phase = match &scheduled {
        Some(_) => HeldPhase::Scheduled {
            eta: msg.headers.eta.clone().unwrap_or_default(),
        },
        None => HeldPhase::Reserved,
    };
    // From here on the request is its delivery tag: a message with the id of a task still
    // running here (Celery's `self.retry()` publishes the retry before the original returns)
    // is a request of its own.
    let tag = d.tag.clone();
    inner.state.hold(Held {
        msg: Arc::new(msg),
        delivery: Arc::new(d),
        phase,
        unacked: true,
        terminate: None,
    });
    match scheduled {
        None => make_ready(inner, tag),
        Some(at) => {
            let task = inner.clone();
            inner.main.spawn(async move {
                let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {
                        task.state.set_phase(&tag, HeldPhase::Reserved);
                        make_ready(&task, tag);
                    }
                    // Warm shutdown gives scheduled messages back (see `stop`).
                    _ = task.shutdown.reached(Phase::Warm) => {}
                }
            });
        }
    }
}

/// `revoked` (in the revoked set) or `expired` (past its `expires`), if either applies.
fn revoked_reason(inner: &Inner, msg: &TaskMessage) -> Option<&'static str> {
    if inner
        .state
        .revoked
        .lock()
        .expect("revoked")
        .contains(&msg.headers.id)
    {
        return Some("revoked");
    }
    if let Ok(Some(exp)) = msg.headers.expires_time()
        && exp <= chrono::Utc::now()
    {
        return Some("expired");
    }
    None
}

/// Discard a revoked/expired message: REVOKED stored, `task-revoked`, ack
/// (`Request._announce_revoked`).
async fn revoke_message(inner: &Inner, msg: &TaskMessage, d: &Delivery, reason: &str) {
    let id = &msg.headers.id;
    tracing::info!(task_id = %id, %reason, "Discarding revoked task: {}[{}]", msg.headers.task, id);
    let exc = ExceptionInfo::revoked(reason);
    let meta = meta_for(
        inner,
        msg,
        ResultMeta::exception(id, TaskState::Revoked, &exc, None),
    );
    store(inner, &meta).await;
    inner.events.task(
        "task-revoked",
        fields(&[
            ("uuid", json!(id)),
            ("terminated", json!(false)),
            ("signum", Value::Null),
            ("expired", json!(reason == "expired")),
        ]),
    );
    ack(inner, d).await;
}

/// A request may run: start it now when a slot is free and nothing is queued before it,
/// else queue it for the dispatcher (FIFO, `-O fair`: it waits for a free slot). Starting
/// directly saves an idle worker a hand-off between tasks on the way to running the task.
fn make_ready(inner: &Arc<Inner>, tag: String) {
    if inner.waiting.load(Ordering::SeqCst) == 0
        && inner.shutdown.phase() == Phase::Running
        && let Ok(permit) = inner.slots.clone().try_acquire_owned()
    {
        start(inner, tag, permit);
        return;
    }
    inner.waiting.fetch_add(1, Ordering::SeqCst);
    let _ = inner.ready_tx.send(tag);
}

fn start(inner: &Arc<Inner>, tag: String, permit: tokio::sync::OwnedSemaphorePermit) {
    let task = inner.clone();
    inner.main.spawn(async move {
        rate_limit_wait(&task, &tag).await;
        run_request(&task, &tag).await;
        drop(permit);
    });
}

async fn dispatch_loop(inner: Arc<Inner>, mut ready: mpsc::UnboundedReceiver<String>) {
    while let Some(tag) = ready.recv().await {
        let permit = tokio::select! {
            p = inner.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = inner.shutdown.reached(Phase::Warm) => return,
        };
        if inner.shutdown.phase() != Phase::Running {
            return;
        }
        inner.waiting.fetch_sub(1, Ordering::SeqCst);
        start(&inner, tag, permit);
    }
}

/// Honour a `rate_limit` set for this task's name (a per-worker token bucket, like Celery's).
async fn rate_limit_wait(inner: &Inner, tag: &str) {
    let name = match inner.state.held.lock().expect("held").get(tag) {
        Some(h) => h.msg.headers.task.clone(),
        None => return,
    };
    let wait = inner
        .state
        .rate_limits
        .lock()
        .expect("rate limits")
        .get_mut(&name)
        .map(|r| r.book());
    if let Some(w) = wait.filter(|w| !w.is_zero()) {
        tokio::time::sleep(w).await;
    }
}

/// Run `op` until it succeeds, with capped exponential backoff (100 ms doubling to 2 s), at
/// most `attempts` times. A Redis restart or failover must cost retries, not results or acks.
async fn retrying<T, E, F, Fut>(what: &str, key: &str, attempts: u32, mut op: F) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 0..attempts {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) => {
                tracing::warn!(%key, attempt, error = %e, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    tracing::error!(%key, "giving up: {what}");
    None
}

async fn ack(inner: &Inner, d: &Delivery) {
    // If the ack is given up, the message stays in unacked for the sweeper, and the
    // idempotency guard sees its SUCCESS when it comes back.
    retrying("ack", &d.tag, 40, || inner.broker.ack(&d.tag)).await;
}

/// Store `meta`; when `ack_tag` is given and the broker is the backend's database, ack that
/// message in the same atomic step. Returns whether the message was acked.
async fn store_acking(inner: &Inner, meta: &ResultMeta, ack_tag: Option<&str>) -> bool {
    let Some(tag) = ack_tag.filter(|_| inner.same_database) else {
        store(inner, meta).await;
        return false;
    };
    retrying("storing the result", &meta.task_id, 60, || {
        inner.backend.store_and_ack(meta, tag)
    })
    .await
    .is_some()
}

async fn store(inner: &Inner, meta: &ResultMeta) {
    retrying("storing the result", &meta.task_id, 60, || {
        inner.backend.store(meta)
    })
    .await;
}

fn fields(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Add group/parent/extended fields to a meta, as `_get_result_meta` does.
fn meta_for(inner: &Inner, msg: &TaskMessage, mut meta: ResultMeta) -> ResultMeta {
    meta.group_id = msg.headers.group.clone();
    meta.parent_id = msg.headers.parent_id.clone();
    if inner.cfg.result_extended {
        meta.extended = Some(ExtendedFields {
            name: msg.headers.task.clone(),
            args: msg.args.clone(),
            kwargs: msg.kwargs.clone(),
            worker: inner.cfg.node.clone(),
            retries: msg.headers.retries,
            queue: msg.queue().to_string(),
        });
    }
    meta
}

/// What to do with the message once the outcome is stored.
enum AckAction {
    Ack,
    Requeue,
    Nothing,
}

async fn run_request(inner: &Arc<Inner>, tag: &str) {
    let (msg, delivery) = {
        let held = inner.state.held.lock().expect("held");
        match held.get(tag) {
            Some(h) => (h.msg.clone(), h.delivery.clone()),
            None => return,
        }
    };
    let id = msg.headers.id.as_str();
    if let Some(reason) = revoked_reason(inner, &msg) {
        revoke_message(inner, &msg, &delivery, reason).await;
        inner.state.release(tag);
        return;
    }
    // Idempotency guard: a redelivered message whose task already succeeded is acked, not re-run.
    let redelivered = msg
        .headers
        .extra
        .get("redelivered")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if inner.cfg.skip_succeeded
        && redelivered
        && let Ok(Some(done)) = inner.backend.get(id).await
        && done.status == TaskState::Success
    {
        tracing::warn!(task_id = %id, "redelivered task already succeeded; acking without running it again");
        // A crash may have fallen between storing the result and the chord join: join again
        // (the join counts each header task once, so a second call cannot count twice).
        callbacks::chord_part(inner, &msg, &TaskState::Success, &done.result).await;
        ack(inner, &delivery).await;
        inner.state.release(tag);
        return;
    }
    let (term_tx, term_rx) = mpsc::unbounded_channel();
    {
        let mut held = inner.state.held.lock().expect("held");
        if let Some(h) = held.get_mut(tag) {
            h.terminate = Some(term_tx);
        }
    }
    let early_ack = !inner.cfg.acks_late;
    inner.state.set_phase(
        tag,
        HeldPhase::Active {
            time_start: time::unix_now(),
            worker_pid: None,
            acknowledged: early_ack,
        },
    );
    if early_ack {
        // Celery acks when the pool accepts the job; the ack's round trip overlaps the run.
        inner.state.mark_acked(tag);
        let inner2 = inner.clone();
        let d2 = delivery.clone();
        tokio::spawn(async move { ack(&inner2, &d2).await });
    }
    inner
        .events
        .task("task-started", fields(&[("uuid", json!(id))]));
    if inner.cfg.track_started {
        let mut m = ResultMeta::new(
            id,
            TaskState::Started,
            json!({"pid": std::process::id(), "hostname": inner.cfg.node}),
        );
        m.children = Value::Null;
        store(inner, &meta_for(inner, &msg, m)).await;
    }
    let (hard, soft) = effective_time_limits(
        msg.headers.time_limits(),
        inner
            .state
            .time_limits
            .lock()
            .expect("time limits")
            .get(&msg.headers.task)
            .copied(),
        (inner.cfg.time_limit, inner.cfg.soft_time_limit),
    );
    let req = ChildRequest {
        task: msg.headers.task.clone(),
        id: id.to_string(),
        args: msg.args.clone(),
        kwargs: msg.kwargs.clone(),
        retries: msg.headers.retries,
        hostname: inner.cfg.node.clone(),
        soft_time_limit: soft.map(|d| d.as_secs_f64()),
    };
    let job = inner.jobs.fetch_add(1, Ordering::Relaxed);
    let t0 = Instant::now();
    let state = inner.state.clone();
    let tag_owned = tag.to_string();
    let outcome = inner
        .executor
        .run(
            req,
            hard,
            move |pid| {
                if let Some(h) = state.held.lock().expect("held").get_mut(&tag_owned)
                    && let HeldPhase::Active { worker_pid, .. } = &mut h.phase
                {
                    *worker_pid = Some(pid);
                }
            },
            term_rx,
        )
        .await;
    let runtime = t0.elapsed().as_secs_f64();
    if !matches!(outcome, ExecOutcome::Done(_)) {
        release_locks_of_dead_child(inner, tag);
    }
    let late_tag = (!early_ack).then_some(delivery.tag.as_str());
    let action = finish(inner, &msg, outcome, runtime, job, late_tag).await;
    match action {
        AckAction::Ack if !early_ack => ack(inner, &delivery).await,
        AckAction::Requeue => {
            if early_ack {
                // Already acked: give the message back by publishing it again, front of the queue.
                republish_front(inner, &delivery).await;
            } else if let Err(e) = inner
                .broker
                .requeue(&delivery, inner.shutdown.phase() < Phase::Cold)
                .await
            {
                tracing::error!(task_id = %id, error = %e, "requeue failed; the message stays in unacked");
            }
        }
        _ => {}
    }
    inner.state.count_done(&msg.headers.task);
    inner.state.release(tag);
}

/// The `(hard, soft)` limits a request runs under. Each limit is taken, in Celery's order
/// (`Request.execute_using_pool`: `soft_time_limit or task.soft_time_limit`, the task's
/// attribute being what `control time_limit` changes, then the pool's defaults), from the
/// message, then a `control time_limit` for the task's name, then the worker's flags. A
/// zero or negative value counts as unset, as Python's `or` treats `0`.
fn effective_time_limits(
    message: (Option<f64>, Option<f64>),
    control: Option<state::TimeLimits>,
    worker: (Option<Duration>, Option<Duration>),
) -> (Option<Duration>, Option<Duration>) {
    let pick = |m: Option<f64>, c: Option<f64>, w: Option<Duration>| {
        m.filter(|s| *s > 0.0)
            .or(c.filter(|s| *s > 0.0))
            .map(Duration::from_secs_f64)
            .or(w)
    };
    let (ch, cs) = control.unwrap_or((None, None));
    (pick(message.0, ch, worker.0), pick(message.1, cs, worker.1))
}

/// A task's process died or was killed: free the global locks it held at once (instead of
/// after their TTL), as the lock library records the holder's pid beside each lock.
fn release_locks_of_dead_child(inner: &Inner, tag: &str) {
    let (pid, task_id) = match inner
        .state
        .held
        .lock()
        .expect("held")
        .get(tag)
        .map(|h| (h.phase.clone(), h.msg.headers.id.clone()))
    {
        Some((
            HeldPhase::Active {
                worker_pid: Some(pid),
                ..
            },
            task_id,
        )) if pid != std::process::id() => (pid, task_id),
        _ => return,
    };
    tokio::spawn(async move {
        let url = locks::Client::url_from_env();
        let released = match locks::Client::open(&url) {
            Ok(client) => locks::admin::release_held_by_pid(&client, pid).await,
            Err(e) => Err(e),
        };
        match released {
            Ok(names) if !names.is_empty() => {
                tracing::warn!(%task_id, pid, locks = ?names, "released the locks of a task whose process died")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%task_id, pid, error = %e, "could not release the locks of a dead task process")
            }
        }
    });
}

async fn republish_front(inner: &Inner, d: &Delivery) {
    let Ok(mut env) = Envelope::decode(&d.raw) else {
        return;
    };
    env.mark_redelivered();
    let key = keys::queue_key(d.queue(), env.properties.priority);
    let r: redis::RedisResult<i64> = redis::cmd("RPUSH")
        .arg(key)
        .arg(env.encode())
        .query_async(&mut inner.broker.conn())
        .await;
    if let Err(e) = r {
        tracing::error!(tag = %d.tag, error = %e, "could not put the message back");
    }
}

/// Turn an outcome into stored state, events, callbacks and the ack decision
/// (`celery/app/trace.py` and `Request.on_failure`).
async fn finish(
    inner: &Arc<Inner>,
    msg: &TaskMessage,
    outcome: ExecOutcome,
    runtime: f64,
    job: u64,
    late_tag: Option<&str>,
) -> AckAction {
    let id = &msg.headers.id;
    let name = &msg.headers.task;
    let cold = inner.shutdown.phase() >= Phase::Cold;
    match outcome {
        ExecOutcome::Done(ChildOutcome::Ok(value)) => {
            let children = callbacks::on_success(inner, msg, &value).await;
            let mut acked = false;
            if msg.headers.ignore_result != Some(true) {
                let mut meta = meta_for(
                    inner,
                    msg,
                    ResultMeta::new(id, TaskState::Success, value.clone()),
                );
                meta.children = children;
                // A chord member acks only after its join step, below.
                let tag = late_tag.filter(|_| msg.embed.chord.is_none());
                acked = store_acking(inner, &meta, tag).await;
            }
            callbacks::chord_part(inner, msg, &TaskState::Success, &value).await;
            tracing::info!(task_id = %id, task = %name, runtime, "Task {name}[{id}] succeeded in {runtime:.6}s: {}", celeriac::protocol::pyrepr::repr(&value));
            inner.events.task(
                "task-succeeded",
                fields(&[
                    ("uuid", json!(id)),
                    ("result", json!(celeriac::protocol::pyrepr::repr(&value))),
                    ("runtime", json!(runtime)),
                ]),
            );
            if acked {
                AckAction::Nothing
            } else {
                AckAction::Ack
            }
        }
        ExecOutcome::Done(ChildOutcome::Err { exc, traceback }) => {
            let tb = traceback.unwrap_or_else(|| exc.traceback(name));
            let action = failure_ack(inner);
            let tag = late_tag.filter(|_| matches!(action, AckAction::Ack));
            if fail(inner, msg, &exc, Some(tb), tag).await {
                AckAction::Nothing
            } else {
                action
            }
        }
        ExecOutcome::Done(ChildOutcome::Retry {
            countdown,
            max_retries,
            exc,
        }) => {
            if max_retries.is_some_and(|m| msg.headers.retries >= m) {
                let tb = exc.traceback(name);
                fail(inner, msg, &exc, Some(tb), None).await;
                return failure_ack(inner);
            }
            callbacks::retry(inner, msg, countdown, &exc).await;
            AckAction::Ack
        }
        ExecOutcome::TimeLimit(secs) => {
            tracing::error!(task_id = %id, "Hard time limit ({secs}s) exceeded for {name}[{id}]");
            if inner.cfg.acks_late && !inner.cfg.acks_on_failure_or_timeout {
                return AckAction::Requeue;
            }
            // `TimeLimitExceeded(job._timeout)`: the limit as Celery holds it, the message's
            // number as sent (`1` stays an int), else a float (the worker's `--time-limit`
            // and `control time_limit` are parsed as floats: `1.0`).
            let limit = msg.headers.timelimit[0]
                .clone()
                .filter(|n| n.as_f64().is_some_and(|s| s > 0.0))
                .map(Value::Number)
                .unwrap_or_else(|| json!(secs));
            let exc = ExceptionInfo {
                exc_message: vec![limit],
                ..ExceptionInfo::time_limit(secs)
            };
            fail(inner, msg, &exc, None, None).await;
            AckAction::Ack
        }
        ExecOutcome::Terminated(sig) => {
            let exc = ExceptionInfo::revoked("terminated");
            let meta = meta_for(
                inner,
                msg,
                ResultMeta::exception(id, TaskState::Revoked, &exc, None),
            );
            store(inner, &meta).await;
            inner.events.task(
                "task-revoked",
                fields(&[
                    ("uuid", json!(id)),
                    ("terminated", json!(true)),
                    ("signum", json!(sig)),
                    ("expired", json!(false)),
                ]),
            );
            AckAction::Ack
        }
        ExecOutcome::WorkerLost(detail) => {
            if cold {
                // Killed by our own cold shutdown: give the message back, store nothing.
                return AckAction::Requeue;
            }
            let detail = format!("{detail} Job: {job}.").replace(". Job:", " Job:");
            tracing::error!(task_id = %id, "Process running {name}[{id}] lost: {detail}");
            if inner.cfg.acks_late && inner.cfg.reject_on_worker_lost {
                return AckAction::Requeue;
            }
            let exc = ExceptionInfo::worker_lost(detail.clone());
            let tb = format!(
                "Traceback (most recent call last):\nbilliard.exceptions.WorkerLostError: {detail}\n"
            );
            fail(inner, msg, &exc, Some(tb), None).await;
            AckAction::Ack
        }
    }
}

fn failure_ack(inner: &Inner) -> AckAction {
    if inner.cfg.acks_late && !inner.cfg.acks_on_failure_or_timeout {
        AckAction::Nothing
    } else {
        AckAction::Ack
    }
}

/// Store FAILURE (acking with it when `ack_tag` is given and possible); returns whether acked.
async fn fail(
    inner: &Arc<Inner>,
    msg: &TaskMessage,
    exc: &ExceptionInfo,
    tb: Option<String>,
    ack_tag: Option<&str>,
) -> bool {
    let id = &msg.headers.id;
    tracing::error!(task_id = %id, task = %msg.headers.task, "Task {}[{}] raised unexpected: {}", msg.headers.task, id, exc.repr());
    callbacks::on_failure(inner, msg).await;
    let meta = meta_for(
        inner,
        msg,
        ResultMeta::exception(id, TaskState::Failure, exc, tb.clone()),
    );
    let acked = store_acking(inner, &meta, ack_tag.filter(|_| msg.embed.chord.is_none())).await;
    callbacks::chord_part(inner, msg, &TaskState::Failure, &meta.result).await;
    inner.events.task(
        "task-failed",
        fields(&[
            ("uuid", json!(id)),
            ("exception", json!(exc.repr())),
            ("traceback", json!(tb.unwrap_or_default())),
        ]),
    );
    acked
}

mod callbacks;

async fn heartbeat_loop(inner: Arc<Inner>) {
    let Some(every) = inner.cfg.heartbeat else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        inner.events.send(
            "worker-heartbeat",
            inner.events.worker_fields(every.as_secs_f64()),
        );
    }
}

/// How often the stale-unacked sweeper looks (a single cheap `ZRANGE` when nothing is due):
/// a message whose holder died is back on its queue within this long after its lease ends.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Refresh the lease of every held message (every lease/3), and run the stale-unacked
/// sweeper (every [`SWEEP_EVERY`]).
async fn lease_loop(inner: Arc<Inner>) {
    let refresh_every = (inner.cfg.lease / 3).max(Duration::from_millis(200));
    let mut refresh = tokio::time::interval(refresh_every);
    let mut sweep = tokio::time::interval(SWEEP_EVERY.min(refresh_every));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                if let Err(e) = inner
                    .broker
                    .refresh_leases(&inner.state.unacked_tags(), inner.cfg.lease)
                    .await
                {
                    tracing::warn!(error = %e, "lease refresh failed");
                }
            }
            _ = sweep.tick() => {
                match inner
                    .broker
                    .restore_visible(inner.cfg.visibility_timeout)
                    .await
                {
                    Ok(Some(n)) if n > 0 => tracing::warn!(
                        restored = n,
                        "restored messages whose holder stopped renewing its lease"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweeper failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_time_limits_win_over_control_time_limit_and_worker_flags() {
        let secs = Duration::from_secs_f64;
        // `control time_limit sleep 1 5` then a message with soft 20 / hard 30: the message wins.
        assert_eq!(
            effective_time_limits(
                (Some(30.0), Some(20.0)),
                Some((Some(5.0), Some(1.0))),
                (None, None)
            ),
            (Some(secs(30.0)), Some(secs(20.0)))
        );
        // A message without limits gets the control-set ones, then the worker's.
        assert_eq!(
            effective_time_limits(
                (None, None),
                Some((Some(5.0), None)),
                (Some(secs(60.0)), Some(secs(50.0)))
            ),
            (Some(secs(5.0)), Some(secs(50.0)))
        );
        // Zero means unset, as Python's `or` reads it.
        assert_eq!(
            effective_time_limits((Some(0.0), None), None, (Some(secs(7.0)), None)),
            (Some(secs(7.0)), None)
        );
    }
}
