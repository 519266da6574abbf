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
//! - [`task`](mod@task) — the registry of task functions a worker serves and the error type a task
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
///
/// ```
/// #[celeriac::task(name = "shared_tasks.add", acks_late = true)]
/// fn add(x: i64, y: i64) -> i64 {
///     x + y
/// }
///
/// # fn main() {
/// // The function stays a function: call it, unit-test it.
/// assert_eq!(add(2, 3), 5);
///
/// // Beside it, a module of the same name holds the task: its name, options and definition.
/// assert_eq!(add::NAME, "shared_tasks.add");
/// assert_eq!(add::options().acks_late, Some(true));
///
/// // A worker serves a registry of them...
/// let registry = celeriac::tasks![add];
///
/// // ...and runs a call decoded from a message: `args` and `kwargs` are bound to the
/// // parameters as Python binds them, the result is stored as JSON.
/// let call = celeriac::task::TaskCall {
///     args: vec![2.into()],
///     kwargs: [("y".to_string(), 40.into())].into_iter().collect(),
///     ..Default::default()
/// };
/// assert_eq!(registry.run("shared_tasks.add", &call), Ok(42.into()));
/// # }
/// ```
///
/// The crate using the attribute needs no serde or serde_json dependency of its own (unless
/// its own types derive `Serialize`/`Deserialize`).
///
/// # What it generates
///
/// For `#[celeriac::task(...)] vis fn name(params) -> R { body }` (an item at module level,
/// not inside a function body: the generated module refers to its parent's items):
///
/// - the function, unchanged (other attributes on it, such as `#[locks::only_one(...)]`
///   written below this one, still apply, even if they change its return type);
/// - `vis mod name` (functions and modules live in different namespaces), containing
///   - `pub const NAME: &str`: the `name` option, by default `"<crate>.<function>"` (Celery's
///     default is `module.function`; in the crate `shared_tasks` the function `add` is
///     `shared_tasks.add`);
///   - `pub fn options() -> `[`TaskOptions`](task::TaskOptions): the options below;
///   - `pub fn task() -> `[`TaskDef`](task::TaskDef): what a worker registers
///     ([`tasks!`] calls it; `name::task().func` runs one call);
///   - the typed client stubs `pub async fn delay(client: &Client, <params>)` and
///     `pub async fn apply_async(client: &Client, args: (<param types>,), opts: SendOptions)`,
///     both returning `Result<`[`TypedResult<T>`](TypedResult)`, `[`ClientError`](client::ClientError)`>`
///     (see [Client stubs](#client-stubs)).
///
/// # Options
///
/// Celery's task options, under Celery's names:
///
/// | option | value | meaning | default |
/// |---|---|---|---|
/// | `name` | string | the Celery name | `"<crate>.<function>"` |
/// | `queue` | string | the queue the stubs send to | the client's (`celery`) |
/// | `time_limit` | seconds (int or float) | hard limit: the task's process is killed | the worker's |
/// | `soft_time_limit` | seconds | soft limit: see [`task::soft_time_limit_exceeded`] | the worker's |
/// | `acks_late` | bool | ack after the task ran, not as it starts | the worker's |
/// | `max_retries` | int | retries before the error is final | 3 |
/// | `default_retry_delay` | seconds | countdown of a retry that names none | 180 |
/// | `autoretry_for` | `["ValueError", "myapp.errors.Busy", ...]` | exception types that retry the task (below) | none |
/// | `retry_backoff` | bool or int | with `autoretry_for`: exponential countdown, this factor (`true` = 1) | off |
/// | `rate_limit` | string: `"10/s"`, `"10/m"`, `"10/h"` | per-worker rate | none |
/// | `ignore_result` | bool | store no result | `false` |
/// | `bind` | bool | the first parameter is the task's [`Context`](task::Context) | `false` |
/// | `remote` | flag | declare a task served elsewhere (below) | — |
///
/// An unknown option, a value of the wrong kind (`acks_late = "yes"`), an empty name or queue,
/// a malformed rate, or `retry_backoff` without `autoretry_for` is a compile error at the
/// offending tokens.
///
/// ```
/// #[celeriac::task(
///     name = "jwql.tasks.calibrate",
///     queue = "calibration",
///     time_limit = 3600,
///     soft_time_limit = 3300,
///     acks_late = true,
///     max_retries = 5,
///     default_retry_delay = 30,
///     rate_limit = "10/m",
///     ignore_result = false
/// )]
/// fn calibrate(file: String) -> u64 {
///     file.len() as u64
/// }
///
/// # fn main() {
/// let o = calibrate::options();
/// assert_eq!(o.queue.as_deref(), Some("calibration"));
/// assert_eq!(o.time_limit, Some(3600.0));
/// assert_eq!(o.rate_limit.as_deref(), Some("10/m"));
/// assert_eq!(calibrate::task().options, o);
/// # }
/// ```
///
/// # Arguments
///
/// Every parameter is a task argument, sent as JSON: its type must implement
/// `serde::Deserialize` (to be called) and `serde::Serialize` (for the client stubs), which a
/// compile error says at the parameter's type otherwise. A parameter may borrow from the
/// message (`&str`, `&serde_json::value::RawValue`). Parameters must be plain names (the name
/// is the keyword a caller may use); the function may not be generic over types or
/// constants, nor take `self`.
///
/// A call binds as Python binds `f(*args, **kwargs)`: positional arguments fill the first
/// parameters, keyword arguments the parameter of their name. A parameter written
/// `Option<T>` may be left out (it is then `None`); `#[arg(default = <expr>)]` gives any
/// parameter a default (a string literal also fills a `String`). A call that does not fit
/// fails with Python's `TypeError` and Python's exact words, as a Python task would:
///
/// | call of `add(x, y)` | `TypeError` message |
/// |---|---|
/// | `add(1, 2, 3)` | `add() takes 2 positional arguments but 3 were given` |
/// | `add(1)` | `add() missing 1 required positional argument: 'y'` |
/// | `add()` | `add() missing 2 required positional arguments: 'x' and 'y'` |
/// | `add(1, 2, z=3)` | `add() got an unexpected keyword argument 'z'` |
/// | `add(1, 2, x=3)` | `add() got multiple values for argument 'x'` |
/// | `add("a", 2)` | `add() argument 'x': invalid type: string "a", expected i64` |
///
/// (With optional parameters the first reads `takes from 1 to 3 positional arguments`; with
/// three or more missing, `'a', 'b', and 'c'`.) These errors are never retried by
/// `autoretry_for`: the same call would fail the same way.
///
/// ```
/// use celeriac::task::{TaskCall, TaskError};
/// use serde_json::json;
///
/// #[celeriac::task(name = "demo.greet")]
/// fn greet(name: String, greeting: Option<String>, #[arg(default = 1)] times: usize) -> String {
///     let g = greeting.unwrap_or_else(|| "hello".into());
///     vec![format!("{g} {name}"); times].join(", ")
/// }
///
/// # fn main() {
/// let run = |args: serde_json::Value, kwargs: serde_json::Value| {
///     let call = TaskCall {
///         args: serde_json::from_value(args).unwrap(),
///         kwargs: serde_json::from_value(kwargs).unwrap(),
///         ..Default::default()
///     };
///     (greet::task().func)(&call)
/// };
/// assert_eq!(run(json!(["ann"]), json!({})), Ok(json!("hello ann")));
/// assert_eq!(run(json!(["ann"]), json!({"times": 2})), Ok(json!("hello ann, hello ann")));
/// assert_eq!(
///     run(json!([]), json!({"greeting": "hi"})),
///     Err(TaskError::type_error("greet() missing 1 required positional argument: 'name'"))
/// );
/// # }
/// ```
///
/// # Results and errors
///
/// What the function returns is turned into the task's outcome by its type (whatever the
/// written return type says, so an attribute that rewrites it still works):
///
/// | the function returns | the task |
/// |---|---|
/// | `T: Serialize` (including `()`, stored as `None`) | succeeds with `T` as JSON |
/// | `Ok(T)` of a `Result<T, E>` | succeeds with `T` as JSON |
/// | `Err(E)`, `E: Into<`[`TaskError`](task::TaskError)`>` | fails (or retries) as `E` converts: e.g. a [`TaskError`](task::TaskError), a type with `#[derive(`[`Exception`]`)]`, or a `std::io::Error` (Python's `builtins.OSError`) |
/// | `Err(E)`, any other `E: std::error::Error` | fails with an exception named after `E`'s Rust type: `std::num::ParseIntError` is `core.num.error.ParseIntError`, message its `Display` |
/// | `Err(E)`, `E` a `String`, `Box<dyn Error>` or `anyhow::Error` | fails with `builtins.Exception`, message its `Display` |
/// | a value serde cannot encode (e.g. a map with non-string keys) | fails with `kombu.exceptions.EncodeError`, as Celery does |
///
/// Python's `AsyncResult.get()` re-raises the exception as Python would have raised it. A
/// result type that is not `Serialize`, or an error type with none of the above, is a compile
/// error at the return type.
///
/// ```
/// use celeriac::task::{TaskCall, TaskError};
///
/// #[derive(Debug, celeriac::Exception)]
/// #[exception(module = "jwql.errors", name = "CalibrationError")]
/// struct CalibrationFailed(String);
///
/// impl std::fmt::Display for CalibrationFailed {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "cannot calibrate {}", self.0)
///     }
/// }
///
/// #[celeriac::task(name = "demo.calibrate")]
/// fn calibrate(file: String) -> Result<u64, CalibrationFailed> {
///     if file.ends_with(".fits") { Ok(1) } else { Err(CalibrationFailed(file)) }
/// }
///
/// #[celeriac::task(name = "demo.parse")]
/// fn parse(text: String) -> Result<i64, std::num::ParseIntError> {
///     text.parse()
/// }
///
/// # fn main() {
/// let call = TaskCall { args: vec!["x.txt".into()], ..Default::default() };
/// assert_eq!(
///     (calibrate::task().func)(&call),
///     Err(TaskError::exception("jwql.errors", "CalibrationError", "cannot calibrate x.txt"))
/// );
/// assert_eq!(
///     (parse::task().func)(&call),
///     Err(TaskError::exception("core.num.error", "ParseIntError", "invalid digit found in string"))
/// );
/// # }
/// ```
///
/// # Retries
///
/// `autoretry_for` lists exception types (by name, `"ValueError"`, or with their module,
/// `"builtins.ValueError"`; `"Exception"` lists all) whose errors retry the task instead of
/// failing it, as Celery's `autoretry_for` does: the outcome is a
/// [`TaskError::Retry`](task::TaskError::Retry) with `max_retries` (default 3) and a countdown
/// of `default_retry_delay` (default 180 s), or, with `retry_backoff = factor`,
/// `factor * 2^retries` seconds capped at 600 s (Celery's `retry_backoff_max`) with full jitter
/// (a random countdown between 0 and that). Once retries are exhausted the task fails with the
/// error.
///
/// ```
/// use celeriac::task::{TaskCall, TaskError};
///
/// #[celeriac::task(
///     name = "demo.fetch",
///     autoretry_for = ["ConnectionError"],
///     retry_backoff = true,
///     max_retries = 8
/// )]
/// fn fetch(url: String) -> Result<String, TaskError> {
///     Err(TaskError::exception("builtins", "ConnectionError", format!("{url} unreachable")))
/// }
///
/// # fn main() {
/// let call = TaskCall { args: vec!["http://x".into()], retries: 3, ..Default::default() };
/// let Err(TaskError::Retry { countdown, max_retries, .. }) = (fetch::task().func)(&call) else {
///     panic!("not retried");
/// };
/// assert!(countdown.as_secs() <= 8); // 1 * 2^3, jittered
/// assert_eq!(max_retries, Some(8));
/// # }
/// ```
///
/// # `bind = true`
///
/// The first parameter is then the task's [`Context`](task::Context), written
/// `ctx: &celeriac::task::Context` (any path ending in `Context`, behind `&`): Celery's
/// `self.request` (`id()`, `retries()`, `hostname()`, `delivery_info()`, `name()`, `args()`,
/// `kwargs()`) and `self.retry(...)` as [`Context::retry`](task::Context::retry). It is not a
/// task argument and the client stubs do not take it.
///
/// ```
/// use celeriac::task::{Context, TaskCall, TaskError};
/// use std::time::Duration;
///
/// #[celeriac::task(name = "demo.poll", bind = true, max_retries = 10)]
/// fn poll(ctx: &Context, job: String) -> Result<String, TaskError> {
///     if ctx.retries() < 2 {
///         return Err(ctx.retry().countdown(Duration::from_secs(5)).into());
///     }
///     Ok(format!("{job} ready after {} tries", ctx.retries()))
/// }
///
/// # fn main() {
/// let call = TaskCall { args: vec!["j1".into()], ..Default::default() };
/// let Err(TaskError::Retry { countdown, max_retries, .. }) = (poll::task().func)(&call) else {
///     panic!("not retried");
/// };
/// assert_eq!((countdown, max_retries), (Duration::from_secs(5), Some(10)));
/// # }
/// ```
///
/// # `async fn`
///
/// An `async fn` task runs to completion on a fresh current-thread tokio runtime (time and I/O
/// enabled) for each call; a worker runs tasks in plain threads or child processes, outside
/// any runtime.
///
/// ```
/// #[celeriac::task(name = "demo.wait")]
/// async fn wait(ms: u64) -> u64 {
///     tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
///     ms
/// }
///
/// # fn main() {
/// let call = celeriac::task::TaskCall { args: vec![1.into()], ..Default::default() };
/// assert_eq!((wait::task().func)(&call), Ok(1.into()));
/// # }
/// ```
///
/// # Client stubs
///
/// `name::delay(&client, args...)` sends the task with its arguments (positionally, as JSON)
/// and `name::apply_async(&client, (args...,), opts)` with [`SendOptions`]; `opts.queue`
/// defaults to the task's `queue`. Both return a [`TypedResult<T>`](TypedResult) whose
/// `get(timeout)` decodes the result as `T`: the written return type, the `T` of a written
/// `Result<T, E>`, `()` for none, a borrowed `&str` / `&[T]` as `String` / `Vec<T>`. An
/// argument serde refuses is [`ClientError::Encode`](client::ClientError::Encode), naming it.
///
/// ```no_run
/// # #[celeriac::task(name = "shared_tasks.add")]
/// # fn add(x: i64, y: i64) -> i64 { x + y }
/// # async fn demo() -> Result<(), celeriac::client::ClientError> {
/// use std::time::Duration;
///
/// let client = celeriac::Client::connect("redis://localhost:6379/0", "redis://localhost:6379/0").await?;
/// let sum: i64 = add::delay(&client, 2, 3).await?.get(Duration::from_secs(10)).await?;
/// assert_eq!(sum, 5);
///
/// let opts = celeriac::SendOptions { countdown: Some(Duration::from_secs(60)), ..Default::default() };
/// let later = add::apply_async(&client, (1, 1), opts).await?;
/// println!("sent {}", later.id());
/// # Ok(()) }
/// # fn main() {}
/// ```
///
/// # `remote`
///
/// A task served elsewhere (by Python, or another service) is declared by its signature alone,
/// with its Celery name; only the module is generated (`NAME`, `options()`, `delay`,
/// `apply_async`), and only `name` and `queue` may be given:
///
/// ```no_run
/// /// Runs calwebb_detector1 on one file; returns the output files.
/// #[celeriac::task(name = "jwql.shared_tasks.shared_tasks.run_calwebb_detector1", remote)]
/// fn run_calwebb_detector1(input_file: String, short_name: String) -> Vec<String>;
///
/// # async fn demo(client: &celeriac::Client) -> Result<(), celeriac::client::ClientError> {
/// let files = run_calwebb_detector1::delay(client, "jw01_cal.fits".into(), "nrca1".into())
///     .await?
///     .get(std::time::Duration::from_secs(3600))
///     .await?;
/// # let _: Vec<String> = files;
/// # Ok(()) }
/// # fn main() {}
/// ```
///
/// # Compile errors
///
/// Besides the options above: `bind = true` without a context first (or a context without
/// `bind`), type or const generics, `self`, a pattern as a parameter, `impl Trait` in a
/// parameter or the return type, `unsafe fn`, a `remote` task with a body or without `name`, a
/// task without a body and without `remote`. Each points at the offending tokens; the
/// function itself is still emitted so one mistake gives one error.
pub use celeriac_macros::task;

/// Name the Python exception class an error type fails a task with.
///
/// `#[derive(celeriac::Exception)]` with `#[exception(module = "...", name = "...")]`
/// implements `From<T> for `[`TaskError`](task::TaskError): an
/// [`Exception`](task::TaskError::Exception) of that module and class whose message is the
/// type's `Display`. A task returning `Result<_, T>` then fails with that class, and Python's
/// `AsyncResult.get()` raises it. `module` is required; `name` defaults to the Rust type's
/// name. The type must implement `Display`.
///
/// ```
/// use celeriac::task::TaskError;
///
/// #[derive(Debug, celeriac::Exception)]
/// #[exception(module = "jwql.errors", name = "CalibrationError")]
/// enum Calibration {
///     NoFile(String),
///     BadHeader,
/// }
///
/// impl std::fmt::Display for Calibration {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         match self {
///             Calibration::NoFile(p) => write!(f, "no such file: {p}"),
///             Calibration::BadHeader => f.write_str("bad header"),
///         }
///     }
/// }
///
/// #[derive(Debug, celeriac::Exception)]
/// #[exception(module = "jwql.errors")]
/// struct QuotaExceeded;
///
/// impl std::fmt::Display for QuotaExceeded {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("quota exceeded")
///     }
/// }
///
/// assert_eq!(
///     TaskError::from(Calibration::NoFile("a.fits".into())),
///     TaskError::exception("jwql.errors", "CalibrationError", "no such file: a.fits")
/// );
/// assert_eq!(
///     TaskError::from(QuotaExceeded),
///     TaskError::exception("jwql.errors", "QuotaExceeded", "quota exceeded")
/// );
/// ```
pub use celeriac_macros::Exception;

/// Celery's `task_default_queue`: where a task goes, and what a worker consumes, when no
/// queue is named.
pub const DEFAULT_QUEUE: &str = transport::keys::DEFAULT_QUEUE;

/// Version string reported as `sw_ver` in events and in `stats`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
