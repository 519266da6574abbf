//! Task functions and the registry a worker serves.
//!
//! A task is a plain synchronous function of its call (args, kwargs and the request
//! context) returning a JSON value or a [`TaskError`]. It runs in a child process in the
//! JWQL mode, so it may block, leak or crash without harming the worker. Errors carry the
//! Python exception type and module, so `AsyncResult.get()` in Python re-raises exactly
//! what a Python task would have raised.
//!
//! `#[celeriac::task]` writes such a function for a plain typed one; the [`Context`] of a
//! `bind = true` task and the binding of arguments to parameters live in `typed`.

pub(crate) mod typed;
pub use typed::{Context, Retry};

use crate::protocol::ExceptionInfo;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What a task body receives.
#[derive(Debug, Clone, Default)]
pub struct TaskCall {
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Task id.
    pub id: String,
    /// Retry count so far.
    pub retries: i64,
    /// Node name of the worker.
    pub hostname: String,
    /// Where the message came from (`exchange`, `routing_key`, `priority`, `redelivered`),
    /// as Celery's `self.request.delivery_info`.
    pub delivery_info: Value,
    /// Where [`TaskCall::update_state`] sends the task's progress (set by the process that
    /// runs the task).
    pub updates: StateSink,
}

/// Where a running task's `update_state` goes: the worker stores each update as the task's
/// state (a `PROGRESS` meta, say) before its final result, as Celery's `update_state` does.
#[derive(Clone, Default)]
pub struct StateSink(Option<Arc<UpdateFn>>);

/// What a [`StateSink`] calls with each update: `(state, meta)`.
type UpdateFn = dyn Fn(&str, &Value) + Send + Sync;

impl StateSink {
    /// A sink calling `f(state, meta)` for each update.
    pub fn new(f: impl Fn(&str, &Value) + Send + Sync + 'static) -> Self {
        StateSink(Some(Arc::new(f)))
    }

    /// Whether updates go anywhere.
    pub fn is_connected(&self) -> bool {
        self.0.is_some()
    }

    /// Send one update; false when nothing listens.
    pub fn send(&self, state: &str, meta: &Value) -> bool {
        match &self.0 {
            Some(sink) => {
                sink(state, meta);
                true
            }
            None => false,
        }
    }
}

impl std::fmt::Debug for StateSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_connected() {
            "StateSink(connected)"
        } else {
            "StateSink(none)"
        })
    }
}

impl TaskCall {
    /// Celery's `self.update_state(state=..., meta=...)`: store `state` (e.g. `"PROGRESS"`)
    /// with `meta` as the task's result until it ends; a client's `AsyncResult.state` and
    /// `.info` see it. The worker stores every update before the task's final result.
    pub fn update_state(&self, state: &str, meta: Value) -> Result<(), TaskError> {
        match self.updates.send(state, &meta) {
            true => Ok(()),
            false => Err(TaskError::exception(
                "builtins",
                "RuntimeError",
                "update_state: this task runs where no worker stores its state",
            )),
        }
    }

    /// Argument `i` by position, or by `name` in kwargs.
    pub fn arg(&self, i: usize, name: &str) -> Result<&Value, TaskError> {
        self.args
            .get(i)
            .or_else(|| self.kwargs.get(name))
            .ok_or_else(|| TaskError::type_error(format!("missing required argument: '{name}'")))
    }

    /// Argument as f64.
    pub fn f64_arg(&self, i: usize, name: &str) -> Result<f64, TaskError> {
        let v = self.arg(i, name)?;
        v.as_f64().ok_or_else(|| {
            TaskError::type_error(format!("argument '{name}' must be a number, got {v}"))
        })
    }

    /// Argument as a string.
    pub fn str_arg(&self, i: usize, name: &str) -> Result<&str, TaskError> {
        let v = self.arg(i, name)?;
        v.as_str().ok_or_else(|| {
            TaskError::type_error(format!("argument '{name}' must be a string, got {v}"))
        })
    }
}

/// How a task body fails.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskError {
    /// An exception, as Python sees it.
    Exception {
        /// Type, message and module.
        exc: ExceptionInfo,
        /// Traceback text (generated when absent).
        traceback: Option<String>,
    },
    /// Ask for a retry (`self.retry(countdown=..., max_retries=...)`).
    Retry {
        /// Delay before the next attempt (Celery's `default_retry_delay` is 180 s).
        countdown: Duration,
        /// Maximum retries (Celery's default is 3); `None` = unlimited.
        max_retries: Option<i64>,
        /// The exception that caused it (re-raised when retries are exhausted).
        exc: ExceptionInfo,
    },
}

impl TaskError {
    /// `ValueError(msg)`.
    pub fn value_error(msg: impl Into<String>) -> Self {
        TaskError::Exception {
            exc: ExceptionInfo::value_error(msg),
            traceback: None,
        }
    }

    /// `TypeError(msg)` — bad arguments, as Python raises for a wrong call.
    pub fn type_error(msg: impl Into<String>) -> Self {
        TaskError::Exception {
            exc: ExceptionInfo::new("builtins", "TypeError", msg.into()),
            traceback: None,
        }
    }

    /// Any exception by module and type.
    pub fn exception(module: &str, ty: &str, msg: impl Into<Value>) -> Self {
        TaskError::Exception {
            exc: ExceptionInfo::new(module, ty, msg),
            traceback: None,
        }
    }
}

/// An I/O error is Python's `OSError`, the class Python raises for the same failures, so a
/// task body can use `?` on file and process operations.
impl From<std::io::Error> for TaskError {
    fn from(e: std::io::Error) -> Self {
        TaskError::exception("builtins", "OSError", e.to_string())
    }
}

/// A task body.
pub type TaskFn = Arc<dyn Fn(&TaskCall) -> Result<Value, TaskError> + Send + Sync>;

/// Per-task options: Celery's task attributes, under Celery's names. `None` leaves the
/// worker's setting (or Celery's default) in force.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOptions {
    /// `acks_late`: ack after the task ran instead of as it starts.
    pub acks_late: Option<bool>,
    /// `queue`: where clients send the task by default (typed stubs use it).
    pub queue: Option<String>,
    /// `time_limit`, seconds: the process is killed after this long.
    pub time_limit: Option<f64>,
    /// `soft_time_limit`, seconds: the task is told to stop after this long.
    pub soft_time_limit: Option<f64>,
    /// `max_retries` (Celery's default is 3).
    pub max_retries: Option<u32>,
    /// `default_retry_delay`, seconds (Celery's default is 180).
    pub default_retry_delay: Option<f64>,
    /// `autoretry_for`: exception type names (`"ValueError"`, or with their module,
    /// `"builtins.ValueError"`) that retry the task instead of failing it.
    pub autoretry_for: Vec<String>,
    /// `retry_backoff`: with `autoretry_for`, wait `factor * 2^retries` seconds (capped at
    /// Celery's `retry_backoff_max`, 600 s, with full jitter) instead of
    /// `default_retry_delay`.
    pub retry_backoff: Option<u32>,
    /// `rate_limit` (`"10/m"`, `"2/s"`, `"100/h"`): per worker, as in Celery.
    pub rate_limit: Option<String>,
    /// `ignore_result`: store nothing when the task ends.
    pub ignore_result: Option<bool>,
}

/// A registered task.
#[derive(Clone)]
pub struct TaskDef {
    /// Celery name, e.g. `shared_tasks.add`.
    pub name: String,
    /// The function that runs the task body.
    pub func: TaskFn,
    /// Celery task options this registration carries (queue, time limits, …).
    pub options: TaskOptions,
}

impl TaskDef {
    /// A task named `name` (its Celery name) running `func`, with no options of its own.
    pub fn new<F>(name: &str, func: F) -> Self
    where
        F: Fn(&TaskCall) -> Result<Value, TaskError> + Send + Sync + 'static,
    {
        TaskDef {
            name: name.to_string(),
            func: Arc::new(func),
            options: TaskOptions::default(),
        }
    }

    /// The same task with `options`.
    pub fn with_options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }
}

impl std::fmt::Debug for TaskDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskDef").field("name", &self.name).finish()
    }
}

/// Task names → bodies.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    tasks: BTreeMap<String, TaskDef>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `func` under `name` (one line per task).
    pub fn register<F>(&mut self, name: &str, func: F) -> &mut Self
    where
        F: Fn(&TaskCall) -> Result<Value, TaskError> + Send + Sync + 'static,
    {
        self.add(TaskDef::new(name, func))
    }

    /// Register a task definition (what `#[celeriac::task]` builds), replacing any task of
    /// the same name.
    pub fn add(&mut self, def: TaskDef) -> &mut Self {
        self.tasks.insert(def.name.clone(), def);
        self
    }

    /// Every registered task, sorted by name.
    pub fn defs(&self) -> impl Iterator<Item = &TaskDef> {
        self.tasks.values()
    }

    /// Look a task up.
    pub fn get(&self, name: &str) -> Option<&TaskDef> {
        self.tasks.get(name)
    }

    /// Registered names, sorted (what `inspect registered` lists).
    pub fn names(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }

    /// Run `name` with `call`, turning a panic into an exception the client can see.
    pub fn run(&self, name: &str, call: &TaskCall) -> Result<Value, TaskError> {
        let Some(def) = self.get(name) else {
            return Err(TaskError::Exception {
                exc: ExceptionInfo::not_registered(name),
                traceback: None,
            });
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (def.func)(call))) {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "task panicked".into());
                Err(TaskError::exception(
                    "builtins",
                    "RuntimeError",
                    format!("task panicked: {msg}"),
                ))
            }
        }
    }
}

static SOFT_LIMIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the running task's soft time limit has passed. A long task may check this and
/// return early (Celery raises `SoftTimeLimitExceeded` inside the task instead); a task that
/// does not return within a short grace ends as FAILURE `SoftTimeLimitExceeded`.
pub fn soft_time_limit_exceeded() -> bool {
    SOFT_LIMIT.load(std::sync::atomic::Ordering::SeqCst)
}

/// Set by the process running the task when the soft limit passes.
#[doc(hidden)]
pub fn set_soft_time_limit_exceeded(on: bool) {
    SOFT_LIMIT.store(on, std::sync::atomic::Ordering::SeqCst);
}

/// A [`Registry`] of `#[celeriac::task]` functions, by path:
/// `celeriac::tasks![add, calibrate, jobs::cleanup]`.
#[macro_export]
macro_rules! tasks {
    ($($($seg:ident)::+),* $(,)?) => {{
        let mut registry = $crate::task::Registry::new();
        $( registry.add($($seg)::+ :: task()); )*
        registry
    }};
}
