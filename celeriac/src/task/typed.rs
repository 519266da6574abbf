//! Typed tasks: what `#[celeriac::task]` needs at run time besides the plain [`TaskCall`].
//!
//! - [`Context`], the `bind = true` parameter (Celery's `self.request` and `self.retry`), and
//!   its retry builder.
//! - The binding of a call's `args`/`kwargs` to a function's parameters by Python's rules
//!   ([`Signature::bind`]), with CPython's exact `TypeError` messages, since Celery users read
//!   those, and the decoding of each bound value into its parameter's type ([`Bound`]).
//!
//! It deliberately does not know how results become JSON or errors become exceptions: that
//! is `crate::__private`'s dispatch, which the expansion calls.

use super::{TaskCall, TaskError, TaskOptions};
use crate::protocol::{ExceptionInfo, pyrepr};
use serde_json::{Map, Value};
use std::time::Duration;

/// Celery's `Task.default_retry_delay`: three minutes.
pub(crate) const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(180);

/// Celery's `Task.max_retries`.
pub(crate) const DEFAULT_MAX_RETRIES: u32 = 3;

/// The running task's request, for a task declared with `bind = true`: what Celery's
/// `self.request` holds, and `self.retry(...)` as [`Context::retry`].
///
/// The expansion builds it from the call and the task's options; it is the first parameter of
/// the function and is neither a task argument nor a parameter of the client stubs:
///
/// ```
/// use celeriac::task::{Context, TaskError};
/// use std::time::Duration;
///
/// #[celeriac::task(name = "demo.poll", bind = true, max_retries = 10)]
/// fn poll(ctx: &Context, job: String) -> Result<String, TaskError> {
///     if ctx.retries() < 2 {
///         // Not ready yet: come back in five seconds (Celery: `raise self.retry(countdown=5)`).
///         return Err(ctx.retry().countdown(Duration::from_secs(5)).into());
///     }
///     Ok(format!("{job} done by {}", ctx.hostname()))
/// }
/// # fn main() {}
/// ```
///
/// A test may build one by hand to call such a function directly:
///
/// ```
/// use celeriac::task::{Context, TaskCall};
///
/// let call = TaskCall { id: "abc".into(), ..Default::default() };
/// let ctx = Context::new("demo.poll", &call);
/// assert_eq!(ctx.id(), "abc");
/// assert_eq!(ctx.name(), "demo.poll");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    call: &'a TaskCall,
    name: &'a str,
    max_retries: u32,
    default_retry_delay: Duration,
}

impl<'a> Context<'a> {
    /// The context of `call` to the task named `name`, with Celery's retry defaults (3 retries,
    /// 180 s apart).
    pub fn new(name: &'a str, call: &'a TaskCall) -> Self {
        Context {
            call,
            name,
            max_retries: DEFAULT_MAX_RETRIES,
            default_retry_delay: DEFAULT_RETRY_DELAY,
        }
    }

    /// The same context with the retry defaults of `options` (`max_retries`,
    /// `default_retry_delay`) where they are set.
    pub fn with_options(mut self, options: &TaskOptions) -> Self {
        if let Some(n) = options.max_retries {
            self.max_retries = n;
        }
        if let Some(d) = options.default_retry_delay.and_then(seconds) {
            self.default_retry_delay = d;
        }
        self
    }

    /// Task id (`self.request.id`).
    pub fn id(&self) -> &'a str {
        &self.call.id
    }

    /// Celery name of the task (`self.name`).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// How many times the task has been retried so far (`self.request.retries`).
    pub fn retries(&self) -> i64 {
        self.call.retries
    }

    /// Node name of the worker running the task (`self.request.hostname`).
    pub fn hostname(&self) -> &'a str {
        &self.call.hostname
    }

    /// Where the message came from (`self.request.delivery_info`: `exchange`,
    /// `routing_key`, `priority`, `redelivered`).
    pub fn delivery_info(&self) -> &'a Value {
        &self.call.delivery_info
    }

    /// Positional arguments as sent (`self.request.args`).
    pub fn args(&self) -> &'a [Value] {
        &self.call.args
    }

    /// Keyword arguments as sent (`self.request.kwargs`).
    pub fn kwargs(&self) -> &'a Map<String, Value> {
        &self.call.kwargs
    }

    /// The whole call.
    pub fn call(&self) -> &'a TaskCall {
        self.call
    }

    /// Celery's `self.update_state(state=..., meta=...)`: store `state` (`"PROGRESS"`, say)
    /// with `meta` as the task's current result; `AsyncResult.state` / `.info` in a client
    /// see it until the task ends. See [`TaskCall::update_state`].
    pub fn update_state(&self, state: &str, meta: Value) -> Result<(), TaskError> {
        self.call.update_state(state, meta)
    }

    /// Ask for a retry, as Celery's `raise self.retry(...)`; return it as the task's error:
    ///
    /// ```text
    /// return Err(ctx.retry().countdown(Duration::from_secs(5)).into());
    /// ```
    ///
    /// The request is a builder converting into [`TaskError::Retry`]:
    ///
    /// - `.countdown(Duration)`: delay before the next attempt; default the task's
    ///   `default_retry_delay` (Celery's 180 s).
    /// - `.max_retries(u32)`: give up after this many retries; default the task's
    ///   `max_retries` (Celery's 3).
    /// - `.exc(impl Into<TaskError>)`: the exception the task fails with once retries are
    ///   exhausted; default `celery.exceptions.MaxRetriesExceededError("Can't retry
    ///   NAME[ID] args:(...) kwargs:{...}")`, Celery's own message.
    pub fn retry(&self) -> Retry<'a> {
        Retry {
            ctx: *self,
            countdown: None,
            max_retries: None,
            exc: None,
        }
    }
}

/// A retry request built by [`Context::retry`]; it does nothing until converted into a
/// [`TaskError`] and returned.
#[derive(Debug, Clone)]
#[must_use = "a retry happens only when the request is returned: `return Err(ctx.retry().into())`"]
pub struct Retry<'a> {
    ctx: Context<'a>,
    countdown: Option<Duration>,
    max_retries: Option<u32>,
    exc: Option<ExceptionInfo>,
}

impl Retry<'_> {
    /// Delay before the next attempt (Celery's `countdown=`).
    pub fn countdown(mut self, countdown: Duration) -> Self {
        self.countdown = Some(countdown);
        self
    }

    /// Give up after this many retries (Celery's `max_retries=`).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// The exception that caused the retry, raised once retries are exhausted (Celery's
    /// `exc=`).
    pub fn exc(mut self, exc: impl Into<TaskError>) -> Self {
        self.exc = Some(match exc.into() {
            TaskError::Exception { exc, .. } | TaskError::Retry { exc, .. } => exc,
        });
        self
    }
}

impl From<Retry<'_>> for TaskError {
    fn from(r: Retry<'_>) -> Self {
        let ctx = r.ctx;
        let exc = r.exc.unwrap_or_else(|| {
            // celery/app/task.py, Task.retry: the error raised when no `exc` was given.
            ExceptionInfo::new(
                "celery.exceptions",
                "MaxRetriesExceededError",
                format!(
                    "Can't retry {}[{}] args:{} kwargs:{}",
                    ctx.name,
                    ctx.call.id,
                    pyrepr::repr_args(&ctx.call.args),
                    pyrepr::repr(&Value::Object(ctx.call.kwargs.clone())),
                ),
            )
        });
        TaskError::Retry {
            countdown: r.countdown.unwrap_or(ctx.default_retry_delay),
            max_retries: Some(i64::from(r.max_retries.unwrap_or(ctx.max_retries))),
            exc,
        }
    }
}

/// Seconds as a duration; `None` for a negative or non-finite value.
pub(crate) fn seconds(s: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(s).ok()
}

/// A type a task parameter may have: anything serde can build from the JSON argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task argument: it must implement serde::Deserialize",
    label = "not deserializable from a JSON argument",
    note = "derive it with `#[derive(serde::Deserialize)]`, or take a type that implements it"
)]
pub trait TaskArg<'de>: Sized {
    /// Decode the argument.
    fn from_json(value: &'de Value) -> Result<Self, serde_json::Error>;
}

impl<'de, T: serde::Deserialize<'de>> TaskArg<'de> for T {
    fn from_json(value: &'de Value) -> Result<Self, serde_json::Error> {
        T::deserialize(value)
    }
}

/// One parameter of a task function, as the binding sees it.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// The keyword a caller uses for it.
    pub name: &'static str,
    /// Whether the call must supply it (neither `Option<T>` nor `#[arg(default = ...)]`).
    pub required: bool,
}

/// A task function's name and parameters (the bind context excluded), what Python's call
/// rules need.
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    /// The function's name, as Python's messages start (`add() takes ...`).
    pub func: &'static str,
    /// Parameters in order.
    pub params: &'static [Param],
}

/// A call's values, one slot per parameter, after binding.
#[derive(Debug)]
pub struct Bound<'a> {
    sig: &'a Signature,
    slots: Vec<Option<&'a Value>>,
}

impl Signature {
    /// Bind `call` to the parameters as CPython does: positional arguments fill the first
    /// parameters, keyword arguments the parameters of their name; then unknown keywords,
    /// a parameter given twice, too many positional arguments and missing required ones are
    /// `TypeError`s worded as Python words them (and checked in CPython's order).
    pub fn bind<'a>(&'a self, call: &'a TaskCall) -> Result<Bound<'a>, TaskError> {
        let n = self.params.len();
        let mut slots: Vec<Option<&'a Value>> = vec![None; n];
        for (slot, v) in slots.iter_mut().zip(&call.args) {
            *slot = Some(v);
        }
        for (key, v) in &call.kwargs {
            let Some(j) = self.params.iter().position(|p| p.name == key) else {
                return Err(TaskError::type_error(format!(
                    "{}() got an unexpected keyword argument '{key}'",
                    self.func
                )));
            };
            if slots[j].is_some() {
                return Err(TaskError::type_error(format!(
                    "{}() got multiple values for argument '{key}'",
                    self.func
                )));
            }
            slots[j] = Some(v);
        }
        if call.args.len() > n {
            return Err(TaskError::type_error(
                self.too_many_positional(call.args.len()),
            ));
        }
        let missing: Vec<String> = self
            .params
            .iter()
            .zip(&slots)
            .filter(|(p, s)| p.required && s.is_none())
            .map(|(p, _)| format!("'{}'", p.name))
            .collect();
        if !missing.is_empty() {
            return Err(TaskError::type_error(format!(
                "{}() missing {} required positional argument{}: {}",
                self.func,
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                natural_list(&missing)
            )));
        }
        Ok(Bound { sig: self, slots })
    }

    /// CPython's `too_many_positional` message.
    fn too_many_positional(&self, given: usize) -> String {
        let n = self.params.len();
        let optional = self.params.iter().filter(|p| !p.required).count();
        let (takes, plural) = if optional > 0 {
            (format!("from {} to {n}", n - optional), true)
        } else {
            (n.to_string(), n != 1)
        };
        format!(
            "{}() takes {takes} positional argument{} but {given} {} given",
            self.func,
            if plural { "s" } else { "" },
            if given == 1 { "was" } else { "were" }
        )
    }
}

/// `'a'`; `'a' and 'b'`; `'a', 'b', and 'c'` (CPython's `format_missing`).
fn natural_list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [a, b] => format!("{a} and {b}"),
        [head @ .., a, b] => format!("{}, {a}, and {b}", head.join(", ")),
    }
}

impl<'a> Bound<'a> {
    /// The value bound to parameter `i`, if the call gave one.
    pub fn value(&self, i: usize) -> Option<&'a Value> {
        self.slots.get(i).copied().flatten()
    }

    /// Decode `value` as parameter `i`'s type: a `TypeError` naming the function and the
    /// parameter when serde refuses it.
    pub fn decode<T: TaskArg<'a>>(&self, i: usize, value: &'a Value) -> Result<T, TaskError> {
        T::from_json(value).map_err(|e| {
            let name = self.sig.params.get(i).map(|p| p.name).unwrap_or("?");
            TaskError::type_error(format!("{}() argument '{name}': {e}", self.sig.func))
        })
    }

    /// Decode required parameter `i` (binding guarantees it is present; should it not be, the
    /// call fails with Python's "missing" message rather than a panic).
    pub fn required<T: TaskArg<'a>>(&self, i: usize) -> Result<T, TaskError> {
        match self.value(i) {
            Some(v) => self.decode(i, v),
            None => {
                let name = self.sig.params.get(i).map(|p| p.name).unwrap_or("?");
                Err(TaskError::type_error(format!(
                    "{}() missing 1 required positional argument: '{name}'",
                    self.sig.func
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: &[Param] = &[
        Param {
            name: "x",
            required: true,
        },
        Param {
            name: "y",
            required: true,
        },
    ];
    const ADD: Signature = Signature {
        func: "add",
        params: P,
    };

    fn call(args: Value, kwargs: Value) -> TaskCall {
        TaskCall {
            args: serde_json::from_value(args).unwrap(),
            kwargs: serde_json::from_value(kwargs).unwrap(),
            ..Default::default()
        }
    }

    fn message(e: TaskError) -> String {
        match e {
            TaskError::Exception { exc, .. } => {
                assert_eq!(
                    (exc.exc_module.as_str(), exc.exc_type.as_str()),
                    ("builtins", "TypeError")
                );
                exc.exc_message[0].as_str().unwrap().to_string()
            }
            other => panic!("not an exception: {other:?}"),
        }
    }

    #[test]
    fn natural_list_reads_as_python_writes_it() {
        let names = |n: &[&str]| n.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>();
        assert_eq!(natural_list(&names(&["a"])), "'a'");
        assert_eq!(natural_list(&names(&["a", "b"])), "'a' and 'b'");
        assert_eq!(natural_list(&names(&["a", "b", "c"])), "'a', 'b', and 'c'");
        assert_eq!(
            natural_list(&names(&["a", "b", "c", "d"])),
            "'a', 'b', 'c', and 'd'"
        );
    }

    #[test]
    fn keyword_errors_come_before_counting_positionals() {
        // CPython processes keywords before checking the positional count.
        let c = call(json!([1, 2, 3]), json!({"x": 1}));
        assert_eq!(
            message(ADD.bind(&c).unwrap_err()),
            "add() got multiple values for argument 'x'"
        );
    }

    #[test]
    fn too_many_positional_wording_follows_cpython() {
        let one = Signature {
            func: "f",
            params: &P[..1],
        };
        let none = Signature {
            func: "g",
            params: &[],
        };
        let c = call(json!([1, 2]), json!({}));
        assert_eq!(
            message(one.bind(&c).unwrap_err()),
            "f() takes 1 positional argument but 2 were given"
        );
        let c = call(json!([1]), json!({}));
        assert_eq!(
            message(none.bind(&c).unwrap_err()),
            "g() takes 0 positional arguments but 1 was given"
        );
        let opt = Signature {
            func: "h",
            params: &[
                Param {
                    name: "a",
                    required: true,
                },
                Param {
                    name: "b",
                    required: false,
                },
            ],
        };
        let c = call(json!([1, 2, 3]), json!({}));
        assert_eq!(
            message(opt.bind(&c).unwrap_err()),
            "h() takes from 1 to 2 positional arguments but 3 were given"
        );
    }

    #[test]
    fn retry_defaults_come_from_the_options() {
        let c = call(json!([2, "a"]), json!({"k": true}));
        let c = TaskCall {
            id: "id-1".into(),
            ..c
        };
        let opts = TaskOptions {
            max_retries: Some(7),
            default_retry_delay: Some(2.5),
            ..Default::default()
        };
        let ctx = Context::new("demo.t", &c).with_options(&opts);
        let TaskError::Retry {
            countdown,
            max_retries,
            exc,
        } = ctx.retry().into()
        else {
            panic!("not a retry")
        };
        assert_eq!(countdown, Duration::from_millis(2500));
        assert_eq!(max_retries, Some(7));
        assert_eq!(exc.exc_type, "MaxRetriesExceededError");
        assert_eq!(exc.exc_module, "celery.exceptions");
        assert_eq!(
            exc.exc_message,
            vec![json!(
                "Can't retry demo.t[id-1] args:(2, 'a') kwargs:{'k': True}"
            )]
        );
    }
}
