//! The running worker's shared parts ([`Worker`]): configuration, broker and backend
//! connections, the task registry, the held-request state, events, the executor, the
//! shutdown phase and the slots. One `Arc<Worker>` is shared by the consumer, dispatch,
//! requests, the pidbox server and the background loops. Also how the worker ends
//! ([`Exit`]), what stops it from starting ([`WorkerError`]), and the start-up connection
//! wait Celery does (`broker_connection_retry_on_startup`).

use super::config::WorkerConfig;
use super::events::Events;
use super::executor::Executor;
use super::request::Request;
use super::shutdown::{Phase, Shutdown};
use super::state::State;
use celeriac::backend::Backend;
use celeriac::retry::Retryable;
use celeriac::task::Registry;
use celeriac::transport::Broker;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

/// Errors that stop a worker from starting.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    /// The broker refused or could not be reached.
    #[error("broker: {0}")]
    Transport(#[from] celeriac::transport::TransportError),
    /// The result backend refused or could not be reached.
    #[error("result backend: {0}")]
    Backend(#[from] celeriac::backend::BackendError),
    /// Spawning or I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How the worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Warm shutdown completed.
    Warm,
    /// Cold shutdown.
    Cold,
}

/// The running worker (shared by its tasks).
#[derive(Debug)]
pub(crate) struct Worker {
    /// The validated configuration.
    pub cfg: WorkerConfig,
    /// The broker connection (claims, acks, pidbox, events).
    pub broker: Broker,
    /// The result backend connection.
    pub backend: Backend,
    /// Tasks served.
    pub registry: Arc<Registry>,
    /// Shared state.
    pub state: Arc<State>,
    /// The event publisher (`-E` task events, worker heartbeats).
    pub events: Events,
    /// Where task bodies run.
    pub executor: Box<dyn Executor>,
    /// The Python app's zygotes, when `-A` names one (for `pool_restart`).
    pub python: Option<Arc<super::zygote::PythonPool>>,
    /// The shutdown phase, shared with the signal handlers.
    pub shutdown: Shutdown,
    /// Runnable requests waiting for a slot, in order.
    pub(super) ready_tx: mpsc::UnboundedSender<Request>,
    /// One permit per task slot (`-c`).
    pub(super) slots: Arc<Semaphore>,
    /// Requests queued for a slot (so a new one never overtakes them).
    pub(super) waiting: AtomicUsize,
    /// Job counter (billiard's "Job: N").
    pub(super) jobs: AtomicU64,
    /// Queues currently consumed (add_consumer/cancel_consumer change it).
    pub queues: std::sync::Mutex<Vec<String>>,
    /// Signalled when the queue set changes.
    pub queues_changed: tokio::sync::Notify,
    /// Broker and backend are the same database: a late ack can ride with the result.
    pub(super) same_database: bool,
    /// The main runtime, where requests run (the consumer has a thread of its own).
    pub(super) main: tokio::runtime::Handle,
}

impl Worker {
    /// Whether this worker serves `task`: a built-in or command task, or one of the Python
    /// app's.
    pub(crate) fn serves(&self, task: &str) -> bool {
        self.registry.get(task).is_some() || self.cfg.python_tasks.contains_key(task)
    }

    /// The options a Rust task was registered with (`#[celeriac::task(...)]`), if it is one.
    pub(crate) fn rust_options(&self, task: &str) -> Option<&celeriac::task::TaskOptions> {
        self.registry.get(task).map(|d| &d.options)
    }

    /// Whether `task` stores nothing when it ends (`ignore_result`): Celery stores neither
    /// its value nor, without `store_errors_even_if_ignored`, its failure.
    pub(crate) fn ignores_result(&self, task: &str) -> bool {
        self.rust_options(task)
            .and_then(|o| o.ignore_result)
            .unwrap_or(false)
    }

    /// Every task name served, sorted (`inspect registered`).
    pub(crate) fn task_names(&self) -> Vec<String> {
        let mut names = self.registry.names();
        names.extend(self.cfg.python_tasks.keys().cloned());
        names.sort();
        names.dedup();
        names
    }
}

/// Connect at start-up the way Celery's consumer does (`broker_connection_retry_on_startup`,
/// kombu's `ensure_connection`): while the server is unreachable, log and try again after
/// 2 s, 4 s, 6 s … up to 30 s between attempts, at most `connection_max_retries` times. A
/// fleet started by systemd before its Redis waits for it instead of dying. Errors that
/// waiting cannot mend (a wrong password, a bad URL) fail at once. `None` when a shutdown
/// was asked for while waiting.
pub(super) async fn connect_at_startup<T, E, F, Fut>(
    cfg: &WorkerConfig,
    shutdown: &Shutdown,
    url: &str,
    mut connect: F,
) -> Result<Option<T>, WorkerError>
where
    E: Retryable + std::fmt::Display + Into<WorkerError>,
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
        if !e.is_retryable() || !cfg.connection_retry_on_startup || gave_up {
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
