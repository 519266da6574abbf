//! What a worker is told: [`WorkerConfig`], validated by the CLI (flags, Celery's names
//! first) before the runtime starts, and [`PoolMode`], how task bodies are executed.

use std::path::PathBuf;
use std::time::Duration;

/// How tasks are executed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PoolMode {
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
pub(crate) struct WorkerConfig {
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
    /// How task bodies run: in the worker process or in child processes.
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
    /// The Python app's tasks (`-A` naming a Python app), with the Celery task attributes
    /// the parent side applies: ack plan, time and rate limits.
    pub python_tasks: std::collections::BTreeMap<String, super::zygote::PyTask>,
}

impl WorkerConfig {
    /// Defaults for `broker_url`, like `celery worker` with no options.
    pub(crate) fn new(broker_url: &str) -> Self {
        WorkerConfig {
            broker_url: broker_url.into(),
            backend_url: broker_url.into(),
            node: format!("celery@{}", celeriac::client::hostname()),
            queues: vec![celeriac::transport::DEFAULT_QUEUE.into()],
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
            python_tasks: Default::default(),
        }
    }
}
