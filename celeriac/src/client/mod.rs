//! What a monitor uses: send a task the way `apply_async` does and wait for its result the
//! way `AsyncResult.get()` does. Messages carry every field a Python 5.5/5.7 worker needs
//! (all 19 v2 headers, `delivery_info`, `delivery_tag`, `body_encoding`, `priority`).

pub mod control;

use crate::backend::{Backend, BackendError};
use crate::protocol::{ExceptionInfo, ResultMeta, State, TaskMessage, time};
use crate::transport::{Broker, TransportError, keys};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Broker failure.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Backend failure (including timeouts).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The task failed or was revoked remotely; carries the remote exception.
    #[error("task {task_id} {state}: {}: {}", exc.exc_type, exc.message())]
    Remote {
        /// Task id.
        task_id: String,
        /// FAILURE or REVOKED.
        state: State,
        /// The remote exception (`exc_type`, `exc_message`, `exc_module`), boxed to keep
        /// the error small on the happy path.
        exc: Box<ExceptionInfo>,
        /// The remote traceback.
        traceback: Option<String>,
    },
    /// An argument of a typed call could not be turned into JSON.
    #[error("argument {name:?} of {task} cannot be sent as JSON: {reason}")]
    Encode {
        /// Task name.
        task: String,
        /// The parameter.
        name: String,
        /// What serde said.
        reason: String,
    },
    /// A typed result did not have the declared type.
    #[error("the result of task {task_id} is not a {expected}: {reason}")]
    Decode {
        /// Task id.
        task_id: String,
        /// The declared result type.
        expected: &'static str,
        /// What serde said.
        reason: String,
    },
}

/// Options of `send_task` (the `apply_async` keywords that matter on Redis).
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Queue name (default `celery`).
    pub queue: Option<String>,
    /// 0–9, lower first.
    pub priority: Option<u8>,
    /// Run no earlier than now + countdown.
    pub countdown: Option<Duration>,
    /// Run no earlier than this time.
    pub eta: Option<DateTime<Utc>>,
    /// Expire (REVOKED `expired`) after this long from now.
    pub expires: Option<Duration>,
    /// Explicit task id.
    pub task_id: Option<String>,
    /// Success callbacks (signatures as JSON).
    pub link: Vec<Value>,
    /// Error callbacks.
    pub link_error: Vec<Value>,
    /// Hard time limit (seconds).
    pub time_limit: Option<f64>,
    /// Soft time limit (seconds).
    pub soft_time_limit: Option<f64>,
    /// Group id and index (group members).
    pub group: Option<(String, i64)>,
    /// Chord body signature (chord header members).
    pub chord: Option<Value>,
    /// Parent and root id (for tasks sent from tasks).
    pub parent: Option<(String, String)>,
}

/// A Celery client bound to a broker and a result backend.
#[derive(Debug, Clone)]
pub struct Client {
    broker: Broker,
    backend: Backend,
    origin: String,
    declared: Arc<Mutex<HashSet<String>>>,
}

impl Client {
    /// Connect to a broker URL and a backend URL (may be the same).
    pub async fn connect(broker_url: &str, backend_url: &str) -> Result<Self, ClientError> {
        let broker = Broker::connect(broker_url).await?;
        let backend = Backend::connect(backend_url).await?;
        Ok(Self::new(broker, backend))
    }

    /// From existing connections.
    pub fn new(broker: Broker, backend: Backend) -> Self {
        Client {
            broker,
            backend,
            origin: anon_nodename(),
            declared: Default::default(),
        }
    }

    /// The broker.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The result backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Build the message `send_task` would publish (exposed for tests and tools).
    pub fn build_message(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        opts: &SendOptions,
    ) -> TaskMessage {
        let mut msg = TaskMessage::new(name, args, kwargs);
        if let Some(id) = &opts.task_id {
            msg.headers.id = id.clone();
            msg.headers.root_id = Some(id.clone());
        }
        if let Some((parent, root)) = &opts.parent {
            msg.headers.parent_id = Some(parent.clone());
            msg.headers.root_id = Some(root.clone());
        }
        let now = Utc::now();
        let eta = opts.eta.or_else(|| {
            opts.countdown
                .map(|c| now + chrono::Duration::from_std(c).unwrap_or_default())
        });
        msg.headers.eta = eta.map(time::iso);
        if let Some(exp) = opts.expires {
            msg.headers.expires = Some(time::iso(
                now + chrono::Duration::from_std(exp).unwrap_or_default(),
            ));
            msg.properties.expiration = Some(exp.as_millis().to_string());
        }
        msg.headers
            .set_time_limits(opts.time_limit, opts.soft_time_limit);
        if let Some((g, i)) = &opts.group {
            msg.headers.group = Some(g.clone());
            msg.headers.group_index = Some(*i);
        }
        msg.headers.origin = Some(self.origin.clone());
        msg.embed.callbacks = (!opts.link.is_empty()).then(|| opts.link.clone());
        msg.embed.errbacks = (!opts.link_error.is_empty()).then(|| opts.link_error.clone());
        msg.embed.chord = opts.chord.clone();
        msg.properties.reply_to = Some(uuid::Uuid::new_v4().to_string());
        msg
    }

    /// Send a task (`send_task` / `apply_async`). Returns a handle on its result.
    pub async fn send_task(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        opts: SendOptions,
    ) -> Result<AsyncResult, ClientError> {
        let msg = self.build_message(name, args, kwargs, &opts);
        let queue = opts
            .queue
            .clone()
            .unwrap_or_else(|| keys::DEFAULT_QUEUE.to_string());
        let priority = opts.priority.unwrap_or(0);
        self.publish(&msg, &queue, priority).await?;
        Ok(AsyncResult {
            id: msg.headers.id.clone(),
            backend: self.backend.clone(),
        })
    }

    /// Publish a prepared message (declaring its queue once per client, as kombu does).
    pub async fn publish(
        &self,
        msg: &TaskMessage,
        queue: &str,
        priority: u8,
    ) -> Result<(), ClientError> {
        let first = self
            .declared
            .lock()
            .expect("declared set")
            .insert(queue.to_string());
        if first {
            self.broker.declare_queue(queue).await?;
        }
        let env = msg.to_envelope(queue, priority);
        self.broker.publish(queue, priority, &env.encode()).await?;
        Ok(())
    }

    /// A handle on an existing task id.
    pub fn result(&self, id: &str) -> AsyncResult {
        AsyncResult {
            id: id.to_string(),
            backend: self.backend.clone(),
        }
    }
}

/// `gen<pid>@<hostname>`, Celery's `anon_nodename()` for the `origin` header.
pub fn anon_nodename() -> String {
    format!("gen{}@{}", std::process::id(), hostname())
}

/// This machine's host name: one definition for the task and lock libraries.
pub use naming::hostname;

/// A handle on a task's result.
#[derive(Debug, Clone)]
pub struct AsyncResult {
    /// Task id.
    pub id: String,
    backend: Backend,
}

impl AsyncResult {
    /// Current state (PENDING when nothing is stored).
    pub async fn state(&self) -> Result<State, ClientError> {
        Ok(self.backend.state(&self.id).await?)
    }

    /// Wait for the result: the value on SUCCESS, [`ClientError::Remote`] on FAILURE or
    /// REVOKED, a timeout error otherwise.
    pub async fn get(&self, timeout: Duration) -> Result<Value, ClientError> {
        let meta = self.backend.wait(&self.id, timeout).await?;
        into_value(meta)
    }

    /// Wait for the ready meta itself.
    pub async fn meta(&self, timeout: Duration) -> Result<ResultMeta, ClientError> {
        Ok(self.backend.wait(&self.id, timeout).await?)
    }
}

/// A handle on the result of a task whose result type is known: what the stubs of a
/// `#[celeriac::task]` (`add::delay(&client, 2, 3)`) return.
pub struct TypedResult<T> {
    inner: AsyncResult,
    _result: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TypedResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedResult")
            .field("id", &self.inner.id)
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> Clone for TypedResult<T> {
    fn clone(&self) -> Self {
        TypedResult {
            inner: self.inner.clone(),
            _result: std::marker::PhantomData,
        }
    }
}

impl<T: serde::de::DeserializeOwned> TypedResult<T> {
    /// Type an untyped handle.
    pub fn new(inner: AsyncResult) -> Self {
        TypedResult {
            inner,
            _result: std::marker::PhantomData,
        }
    }

    /// Task id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The untyped handle.
    pub fn untyped(&self) -> &AsyncResult {
        &self.inner
    }

    /// Current state (PENDING when nothing is stored).
    pub async fn state(&self) -> Result<State, ClientError> {
        self.inner.state().await
    }

    /// Wait for the result: the value as `T` on SUCCESS, [`ClientError::Remote`] (with the
    /// remote exception) on FAILURE or REVOKED, [`ClientError::Decode`] when the stored value
    /// is not a `T`, a timeout error otherwise.
    pub async fn get(&self, timeout: Duration) -> Result<T, ClientError> {
        let value = self.inner.get(timeout).await?;
        serde_json::from_value(value).map_err(|e| ClientError::Decode {
            task_id: self.inner.id.clone(),
            expected: std::any::type_name::<T>(),
            reason: e.to_string(),
        })
    }
}

/// Turn a ready meta into the value or the remote error.
pub fn into_value(meta: ResultMeta) -> Result<Value, ClientError> {
    match meta.status {
        State::Success => Ok(meta.result),
        ref s => {
            let exc = meta.exception_info().unwrap_or_else(|| ExceptionInfo {
                exc_type: "Exception".into(),
                exc_message: vec![meta.result.clone()],
                exc_module: "builtins".into(),
            });
            Err(ClientError::Remote {
                task_id: meta.task_id.clone(),
                state: s.clone(),
                exc: Box::new(exc),
                traceback: meta.traceback,
            })
        }
    }
}
