//! celeriac: Celery protocol v2 spoken over kombu's Redis transport.
//!
//! Module map:
//!
//! - [`protocol`] — pure wire types: the kombu envelope, task messages (v2, v1 on read),
//!   result metas, exceptions, control (pidbox) and event payloads. No I/O, no async.
//! - [`transport`] — kombu's Redis transport: every key name ([`transport::keys`]), the Lua
//!   scripts, publishing, the atomic claim, ack/reject/restore, bindings, fanout, the
//!   dead-letter list ([`transport::dead`]) and what operators ask of queues
//!   ([`transport::admin`]).
//! - [`backend`] — the Redis result backend: storing metas (SETEX + PUBLISH), waiting, and
//!   finding failures.
//! - [`client`] — what a monitor uses: `send_task`, `AsyncResult`, remote control, events
//!   and the live workers their heartbeats reveal.
//! - [`task`] — the registry of task functions a worker serves and the error type a task
//!   returns (so Python sees the exception it expects).
//! - [`url`] — broker/backend URL parsing (incl. Sentinel) and redaction.
//! - [`conn`] — the self-healing command connection (reconnects, follows failovers).
//!
//! The crate deliberately knows nothing about processes, signals or the CLI: those live in
//! the `worker` crate.

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[doc(hidden)]
pub mod __private;
pub mod backend;
pub mod client;
pub mod conn;
pub mod protocol;
pub mod retry;
pub mod task;
pub mod transport;
pub mod url;

pub use backend::Backend;
pub use client::{AsyncResult, Client, SendOptions, TypedResult};
pub use protocol::{Envelope, ExceptionInfo, ResultMeta, State, TaskMessage};
pub use transport::Broker;

/// Declare a Celery task as a plain typed function.
pub use celeriac_macros::task;

/// Name the Python exception class a task error fails with.
pub use celeriac_macros::Exception;

/// Celery's `task_default_queue`: where a task goes, and what a worker consumes, when no
/// queue is named.
pub const DEFAULT_QUEUE: &str = transport::keys::DEFAULT_QUEUE;

/// Version string reported as `sw_ver` in events and in `stats`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
