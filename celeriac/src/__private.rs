//! Support code called by the `#[celeriac::task]` and `#[derive(celeriac::Exception)]`
//! expansions. Not a public API: names and signatures here may change in any release.
//!
//! The generated code names only `::celeriac::__private::*` (and the public task and client
//! types), so a crate using the attribute needs no serde or serde_json of its own: both are
//! re-exported here.
//!
//! What lives here: the dispatch from a task function's return value to the task's outcome
//! (by trait, not by the written return type, since another attribute such as
//! `#[locks::only_one]` may change that type), `autoretry_for`, running an `async fn` body,
//! and the typed client stubs' encoding and sending. Argument binding is in
//! `crate::task::typed`.

pub use serde;
pub use serde_json;

pub use crate::task::typed::{Bound, Param, Signature, TaskArg};
pub use crate::task::typed::{Context, Retry};

use crate::client::{Client, ClientError, SendOptions, TypedResult};
use crate::protocol::ExceptionInfo;
use crate::task::typed::{DEFAULT_MAX_RETRIES, DEFAULT_RETRY_DELAY, seconds};
use crate::task::{TaskCall, TaskError, TaskOptions};
use serde_json::{Map, Value};
use std::error::Error;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

/// Celery's `retry_backoff_max`: the exponential backoff never waits longer than 10 minutes.
pub const RETRY_BACKOFF_MAX: u64 = 600;

/// The context a `bind = true` task receives.
pub fn context<'a>(name: &'a str, call: &'a TaskCall, options: &TaskOptions) -> Context<'a> {
    Context::new(name, call).with_options(options)
}

// ---------------------------------------------------------------------------------------
// Return value -> outcome, by autoref specialization.
//
// The expansion writes `(&&&&&&probe(&out)).celeriac_kind().finish(out, opts, retries)`.
// Method lookup tries the receiver with six references first and drops one at each step,
// so the first impl below whose bounds hold wins:
//
//   5 refs  Result<T, E>, E: Into<TaskError>          -> E's own exception (or retry)
//   4 refs  Result<T, E>, E: std::error::Error        -> exception named after E's type
//   3 refs  Result<T, E>, E: Into<Box<dyn Error + Send + Sync>> (String, anyhow, boxes)
//   2 refs  Result<T, E>, E: Into<Box<dyn Error>>     -> `builtins.Exception(Display)`
//   1 ref   Result<T, E>, anything else               -> compile error naming E
//   0 refs  any other T                               -> the value, as JSON
// ---------------------------------------------------------------------------------------

/// Carries the return type for the dispatch; holds no value.
pub struct Probe<T>(PhantomData<fn() -> T>);

impl<T> std::fmt::Debug for Probe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

/// A probe for the type of `_value`.
pub fn probe<T>(_value: &T) -> Probe<T> {
    Probe(PhantomData)
}

/// A type a task may return as its result value: anything serde can write as JSON.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task result: it must implement serde::Serialize",
    label = "the task's result is not serializable",
    note = "derive it with `#[derive(serde::Serialize)]`, or return a type that implements it"
)]
pub trait TaskResult {
    /// The value as JSON.
    fn to_json(&self) -> Result<Value, serde_json::Error>;
}

impl<T: serde::Serialize + ?Sized> TaskResult for T {
    fn to_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

/// The error type of a task returning `Result<T, E>` where `E` has no exception mapping.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task's error type",
    label = "this error cannot be turned into a Python exception",
    note = "implement std::error::Error for it (e.g. with thiserror), or \
            `#[derive(celeriac::Exception)]` to name the Python exception class, \
            or convert it into celeriac::task::TaskError"
)]
pub trait TaskErrorType {}

/// `Result<T, E>` with `E: Into<TaskError>`.
#[derive(Debug, Clone, Copy)]
pub struct IntoTaskErrorTag;
/// `Result<T, E>` with `E: std::error::Error + 'static`.
#[derive(Debug, Clone, Copy)]
pub struct StdErrorTag;
/// `Result<T, E>` with `E` convertible into a boxed error (`String`, `anyhow::Error`, ...).
#[derive(Debug, Clone, Copy)]
pub struct BoxErrorTag;
/// `Result<T, E>` with no way to name `E` as an exception.
#[derive(Debug, Clone, Copy)]
pub struct UnsupportedErrorTag;
/// Any other return value.
#[derive(Debug, Clone, Copy)]
pub struct ValueTag;

/// Level 5 of the dispatch.
pub trait ViaIntoTaskError {
    /// The tag that finishes the outcome.
    fn celeriac_kind(&self) -> IntoTaskErrorTag {
        IntoTaskErrorTag
    }
}
impl<T, E: Into<TaskError>> ViaIntoTaskError for &&&&&Probe<Result<T, E>> {}

/// Level 4 of the dispatch.
pub trait ViaStdError {
    /// The tag that finishes the outcome.
    fn celeriac_kind(&self) -> StdErrorTag {
        StdErrorTag
    }
}
impl<T, E: Error + 'static> ViaStdError for &&&&Probe<Result<T, E>> {}

/// Level 3 of the dispatch.
pub trait ViaSendBoxError {
    /// The tag that finishes the outcome.
    fn celeriac_kind(&self) -> BoxErrorTag {
        BoxErrorTag
    }
}
impl<T, E: Into<Box<dyn Error + Send + Sync>>> ViaSendBoxError for &&&Probe<Result<T, E>> {}

/// Level 2 of the dispatch.
pub trait ViaBoxError {
    /// The tag that finishes the outcome.
    fn celeriac_kind(&self) -> BoxErrorTag {
        BoxErrorTag
    }
}
impl<T, E: Into<Box<dyn Error>>> ViaBoxError for &&Probe<Result<T, E>> {}

/// Level 1 of the dispatch.
pub trait ViaUnsupportedError {
    /// The tag that reports the error type.
    fn celeriac_kind(&self) -> UnsupportedErrorTag {
        UnsupportedErrorTag
    }
}
impl<T, E> ViaUnsupportedError for &Probe<Result<T, E>> {}

/// Level 0 of the dispatch.
pub trait ViaValue {
    /// The tag that finishes the outcome.
    fn celeriac_kind(&self) -> ValueTag {
        ValueTag
    }
}
impl<T> ViaValue for Probe<T> {}

impl IntoTaskErrorTag {
    /// The value as JSON, or `E`'s exception (subject to `autoretry_for`).
    pub fn finish<T: TaskResult, E: Into<TaskError>>(
        self,
        out: Result<T, E>,
        options: &TaskOptions,
        retries: i64,
    ) -> Result<Value, TaskError> {
        match out {
            Ok(v) => encode_result(&v),
            Err(e) => Err(autoretry(e.into(), options, retries)),
        }
    }
}

impl StdErrorTag {
    /// The value as JSON, or an exception named after `E`'s Rust type.
    pub fn finish<T: TaskResult, E: Error + 'static>(
        self,
        out: Result<T, E>,
        options: &TaskOptions,
        retries: i64,
    ) -> Result<Value, TaskError> {
        match out {
            Ok(v) => encode_result(&v),
            Err(e) => Err(autoretry(std_error::<E>(&e), options, retries)),
        }
    }
}

impl BoxErrorTag {
    /// The value as JSON, or `builtins.Exception` with the error's text (a boxed or
    /// string error has no type to name).
    pub fn finish<T: TaskResult, E: std::fmt::Display>(
        self,
        out: Result<T, E>,
        options: &TaskOptions,
        retries: i64,
    ) -> Result<Value, TaskError> {
        match out {
            Ok(v) => encode_result(&v),
            Err(e) => Err(autoretry(
                TaskError::exception("builtins", "Exception", e.to_string()),
                options,
                retries,
            )),
        }
    }
}

impl UnsupportedErrorTag {
    /// Never compiles: reports the error type through [`TaskErrorType`].
    pub fn finish<T, E: TaskErrorType>(
        self,
        _out: Result<T, E>,
        _options: &TaskOptions,
        _retries: i64,
    ) -> Result<Value, TaskError> {
        unreachable!("TaskErrorType has no implementations")
    }
}

impl ValueTag {
    /// The value as JSON.
    pub fn finish<T: TaskResult>(
        self,
        out: T,
        _options: &TaskOptions,
        _retries: i64,
    ) -> Result<Value, TaskError> {
        encode_result(&out)
    }
}

/// A result as JSON; `kombu.exceptions.EncodeError` when serde cannot write it (Celery's
/// error for a result its serializer refuses).
pub fn encode_result<T: TaskResult + ?Sized>(value: &T) -> Result<Value, TaskError> {
    value.to_json().map_err(|e| TaskError::Exception {
        exc: ExceptionInfo::new("kombu.exceptions", "EncodeError", e.to_string()),
        traceback: None,
    })
}

/// The exception for a Rust error: type = the last segment of its type's path, module = the
/// rest with `::` as `.` (`std::num::ParseIntError` -> `core.num.error` / `ParseIntError`),
/// message = its `Display`.
pub fn std_error<E: Error + 'static>(e: &E) -> TaskError {
    let (module, ty) = exception_path(std::any::type_name::<E>());
    TaskError::exception(&module, &ty, e.to_string())
}

/// Split a Rust type name into a Python-style module and type name, ignoring generic
/// arguments (`my::Wrapper<alloc::string::String>` -> `my` / `Wrapper`).
pub fn exception_path(type_name: &str) -> (String, String) {
    let base = type_name.split('<').next().unwrap_or(type_name);
    match base.rsplit_once("::") {
        Some((module, ty)) => (module.replace("::", "."), ty.to_string()),
        None => ("builtins".to_string(), base.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// autoretry_for
// ---------------------------------------------------------------------------------------

/// Apply `autoretry_for`: an exception whose type is listed (by name, `ValueError`, or with
/// its module, `builtins.ValueError`; `Exception` lists every type) becomes a
/// [`TaskError::Retry`], as Celery's `autoretry_for` wrapper calls `task.retry(exc=exc)`.
/// Anything else, and a retry the task asked for itself, passes through.
pub fn autoretry(err: TaskError, options: &TaskOptions, retries: i64) -> TaskError {
    autoretry_with(err, options, retries, &mut jitter)
}

/// [`autoretry`] with the random source of the backoff's full jitter given: `rand(n)`
/// returns a number in `0..=n`.
pub fn autoretry_with(
    err: TaskError,
    options: &TaskOptions,
    retries: i64,
    rand: &mut dyn FnMut(u64) -> u64,
) -> TaskError {
    let TaskError::Exception { exc, traceback } = err else {
        return err;
    };
    if !autoretries(&options.autoretry_for, &exc) {
        return TaskError::Exception { exc, traceback };
    }
    let countdown = match options.retry_backoff {
        Some(factor) if factor > 0 => Duration::from_secs(rand(backoff(factor, retries))),
        _ => options
            .default_retry_delay
            .and_then(seconds)
            .unwrap_or(DEFAULT_RETRY_DELAY),
    };
    TaskError::Retry {
        countdown,
        max_retries: Some(i64::from(
            options.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        )),
        exc,
    }
}

/// Whether `exc` is of a type listed in `autoretry_for`.
fn autoretries(listed: &[String], exc: &ExceptionInfo) -> bool {
    listed.iter().any(|name| {
        name == "Exception"
            || name == "builtins.Exception"
            || *name == exc.exc_type
            || name
                .rsplit_once('.')
                .is_some_and(|(m, t)| m == exc.exc_module && t == exc.exc_type)
    })
}

/// Celery's `get_exponential_backoff_interval` before the jitter: `factor * 2^retries`
/// seconds, at most [`RETRY_BACKOFF_MAX`].
pub fn backoff(factor: u32, retries: i64) -> u64 {
    let exp = u32::try_from(retries.max(0)).unwrap_or(u32::MAX);
    2u64.checked_pow(exp)
        .and_then(|p| p.checked_mul(u64::from(factor)))
        .map_or(RETRY_BACKOFF_MAX, |s| s.min(RETRY_BACKOFF_MAX))
}

/// A random number in `0..=n` (Python's `random.randrange(n + 1)`).
fn jitter(n: u64) -> u64 {
    let r = u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    r % (n + 1)
}

// ---------------------------------------------------------------------------------------
// async fn bodies
// ---------------------------------------------------------------------------------------

/// Run an `async fn` task body to completion: on a fresh current-thread tokio runtime with
/// time and I/O enabled (a task runs in a worker's child process, which has no runtime), or
/// on the multi-threaded runtime the caller runs on (the in-process pools). Inside a
/// current-thread runtime this is tokio's "runtime within a runtime" panic, which the
/// registry turns into a `RuntimeError`.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output, TaskError> {
    // An in-process pool (`-P solo` / `threads`) runs task bodies on the worker's own
    // (multi-threaded) runtime threads: the future runs there, the thread handed over to
    // blocking work meanwhile, as a runtime within a runtime cannot be started.
    if let Ok(handle) = tokio::runtime::Handle::try_current()
        && handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return Ok(tokio::task::block_in_place(|| handle.block_on(fut)));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
        .map_err(|e| {
            TaskError::exception(
                "builtins",
                "RuntimeError",
                format!("cannot start the task's tokio runtime: {e}"),
            )
        })?;
    Ok(rt.block_on(fut))
}

// ---------------------------------------------------------------------------------------
// Typed client stubs
// ---------------------------------------------------------------------------------------

/// A type a typed stub can send as a task argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task argument: it must implement serde::Serialize",
    label = "the typed client stubs cannot send this as JSON",
    note = "derive it with `#[derive(serde::Serialize)]`, or take a type that implements it"
)]
pub trait SendArg {
    /// The value as JSON.
    fn to_arg_json(&self) -> Result<Value, serde_json::Error>;
}

impl<T: serde::Serialize + ?Sized> SendArg for T {
    fn to_arg_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

/// A type a typed stub can decode a task's result into.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a typed task result: it must implement serde::Deserialize \
               without borrowing",
    label = "`TypedResult::get` cannot decode this",
    note = "return an owned type (`String`, not `&str`) that implements serde::Deserialize"
)]
pub trait ResultType: serde::de::DeserializeOwned {}
impl<T: serde::de::DeserializeOwned> ResultType for T {}

/// Argument `name` of `task` as JSON, or [`ClientError::Encode`].
pub fn encode_arg<T: SendArg + ?Sized>(
    task: &str,
    name: &str,
    value: &T,
) -> Result<Value, ClientError> {
    value.to_arg_json().map_err(|e| ClientError::Encode {
        task: task.to_string(),
        name: name.to_string(),
        reason: e.to_string(),
    })
}

/// Send `task` with positional `args`; `opts.queue` falls back to the task's `queue`.
pub async fn send<R: ResultType>(
    client: &Client,
    task: &str,
    args: Vec<Value>,
    mut opts: SendOptions,
    queue: Option<&str>,
) -> Result<TypedResult<R>, ClientError> {
    if opts.queue.is_none() {
        opts.queue = queue.map(str::to_string);
    }
    let r = client.send_task(task, args, Map::new(), opts).await?;
    Ok(TypedResult::new(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(module: &str, ty: &str) -> TaskError {
        TaskError::exception(module, ty, "boom")
    }

    fn opts(list: &[&str]) -> TaskOptions {
        TaskOptions {
            autoretry_for: list.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn autoretry_matches_by_name_module_or_exception() {
        let o = opts(&["ValueError", "builtins.KeyError"]);
        let r = |e| matches!(autoretry(e, &o, 0), TaskError::Retry { .. });
        assert!(r(err("builtins", "ValueError")));
        assert!(r(err("builtins", "KeyError")));
        assert!(!r(err("myapp", "KeyError")));
        assert!(!r(err("builtins", "TypeError")));
        let all = opts(&["Exception"]);
        assert!(matches!(
            autoretry(err("x.y", "Z"), &all, 0),
            TaskError::Retry { .. }
        ));
        assert!(matches!(
            autoretry(err("x.y", "Z"), &TaskOptions::default(), 0),
            TaskError::Exception { .. }
        ));
    }

    #[test]
    fn autoretry_uses_celery_defaults_without_backoff() {
        let TaskError::Retry {
            countdown,
            max_retries,
            exc,
        } = autoretry(err("builtins", "ValueError"), &opts(&["ValueError"]), 1)
        else {
            panic!("no retry")
        };
        assert_eq!(countdown, Duration::from_secs(180));
        assert_eq!(max_retries, Some(3));
        assert_eq!(exc.exc_type, "ValueError");

        let o = TaskOptions {
            default_retry_delay: Some(7.0),
            max_retries: Some(9),
            ..opts(&["ValueError"])
        };
        let TaskError::Retry {
            countdown,
            max_retries,
            ..
        } = autoretry(err("builtins", "ValueError"), &o, 1)
        else {
            panic!("no retry")
        };
        assert_eq!(countdown, Duration::from_secs(7));
        assert_eq!(max_retries, Some(9));
    }

    #[test]
    fn backoff_doubles_and_is_capped_at_ten_minutes() {
        assert_eq!(backoff(1, 0), 1);
        assert_eq!(backoff(1, 3), 8);
        assert_eq!(backoff(5, 2), 20);
        assert_eq!(backoff(1, 9), 512);
        assert_eq!(backoff(1, 10), 600);
        assert_eq!(backoff(3, 1000), 600);
        assert_eq!(backoff(u32::MAX, 40), 600);
        assert_eq!(backoff(1, -1), 1);
    }

    #[test]
    fn backoff_countdown_is_jittered_within_the_cap() {
        let o = TaskOptions {
            retry_backoff: Some(2),
            ..opts(&["Exception"])
        };
        let mut seen = Vec::new();
        let mut top = |n: u64| {
            seen.push(n);
            n
        };
        let TaskError::Retry { countdown, .. } = autoretry_with(err("a", "B"), &o, 20, &mut top)
        else {
            panic!("no retry")
        };
        assert_eq!(countdown, Duration::from_secs(600));
        assert_eq!(seen, vec![600]);
        for _ in 0..100 {
            let TaskError::Retry { countdown, .. } = autoretry(err("a", "B"), &o, 2) else {
                panic!("no retry")
            };
            assert!(countdown <= Duration::from_secs(8), "{countdown:?}");
        }
    }

    #[test]
    fn a_retry_the_task_asked_for_passes_through() {
        let asked = TaskError::Retry {
            countdown: Duration::from_secs(1),
            max_retries: None,
            exc: ExceptionInfo::value_error("x"),
        };
        assert_eq!(autoretry(asked.clone(), &opts(&["Exception"]), 0), asked);
    }

    #[test]
    fn rust_error_types_are_named_by_their_path() {
        assert_eq!(
            exception_path("core::num::error::ParseIntError"),
            ("core.num.error".to_string(), "ParseIntError".to_string())
        );
        assert_eq!(
            exception_path("my::Wrapper<alloc::string::String>"),
            ("my".to_string(), "Wrapper".to_string())
        );
        let e = "x".parse::<i32>().unwrap_err();
        let TaskError::Exception { exc, .. } = std_error(&e) else {
            panic!()
        };
        assert_eq!(exc.exc_type, "ParseIntError");
        assert_eq!(exc.exc_module, "core.num.error");
        assert_eq!(
            exc.exc_message,
            vec![Value::from("invalid digit found in string")]
        );
    }

    #[test]
    fn an_unencodable_argument_is_an_encode_error_naming_it() {
        let mut m = std::collections::HashMap::new();
        m.insert((1, 2), 3);
        match encode_arg("t.add", "x", &m) {
            Err(ClientError::Encode { task, name, reason }) => {
                assert_eq!((task.as_str(), name.as_str()), ("t.add", "x"));
                assert!(reason.contains("key must be a string"), "{reason}");
            }
            other => panic!("expected an encode error, got {other:?}"),
        }
        assert_eq!(encode_arg("t.add", "x", "a").ok(), Some(Value::from("a")));
    }

    #[test]
    fn an_unencodable_result_is_kombus_encode_error() {
        let mut m = std::collections::HashMap::new();
        m.insert((1, 2), 3);
        let TaskError::Exception { exc, .. } = encode_result(&m).unwrap_err() else {
            panic!()
        };
        assert_eq!(
            (exc.exc_module.as_str(), exc.exc_type.as_str()),
            ("kombu.exceptions", "EncodeError")
        );
    }
}
