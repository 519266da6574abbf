//! `#[celeriac::task]` tasks as a worker runs them: each test builds a `TaskCall` by hand,
//! as a worker decodes one from a message, and calls the registered body (`name::task()`).
//! No Redis is needed; the client stubs are only type-checked.

use celeriac::task::{Context, TaskCall, TaskError, TaskOptions};
use serde_json::{Value, json};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Tasks under test
// ---------------------------------------------------------------------------------------

#[celeriac::task(name = "shared_tasks.add", acks_late = true)]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// Keeps its own default name: `<crate>.greet`.
#[celeriac::task]
fn greet(name: String, greeting: Option<String>, #[arg(default = 1)] times: u32) -> String {
    let g = greeting.unwrap_or_else(|| "hello".to_string());
    vec![format!("{g} {name}"); times as usize].join(", ")
}

#[celeriac::task(name = "t.three")]
fn three(a: i64, b: i64, c: i64) -> i64 {
    a * b * c
}

#[celeriac::task(name = "t.nothing")]
fn nothing() {}

#[celeriac::task(name = "t.default_str")]
fn default_str(
    #[arg(default = "plain")] mode: String,
    #[arg(default = Some(3))] n: Option<u8>,
) -> (String, Option<u8>) {
    (mode, n)
}

#[celeriac::task(name = "t.borrowed")]
fn borrowed(key: &str, values: Vec<f64>) -> usize {
    key.len() + values.len()
}

#[celeriac::task(name = "t.static_str")]
fn static_str() -> &'static str {
    "ran"
}

#[derive(Debug, thiserror::Error)]
enum CalError {
    #[error("no such file: {0}")]
    Missing(String),
    #[error("retry me")]
    Busy,
}

impl From<CalError> for TaskError {
    fn from(e: CalError) -> Self {
        match e {
            CalError::Missing(_) => TaskError::exception("myapp.errors", "Missing", e.to_string()),
            CalError::Busy => TaskError::Retry {
                countdown: Duration::from_secs(1),
                max_retries: Some(2),
                exc: celeriac::ExceptionInfo::new("myapp.errors", "Busy", "busy"),
            },
        }
    }
}

#[celeriac::task(name = "t.calibrate")]
fn calibrate(file: String) -> Result<u64, CalError> {
    match file.as_str() {
        "busy" => Err(CalError::Busy),
        f if f.ends_with(".fits") => Ok(f.len() as u64),
        f => Err(CalError::Missing(f.to_string())),
    }
}

#[derive(Debug, thiserror::Error, celeriac::Exception)]
#[error("calibration failed for {file}")]
#[exception(module = "jwql.errors", name = "CalibrationError")]
struct CalibrationFailed {
    file: String,
}

#[derive(Debug, thiserror::Error, celeriac::Exception)]
#[error("quota")]
#[exception(module = "jwql.errors")]
struct QuotaExceeded;

#[celeriac::task(name = "t.derived")]
fn derived(file: String) -> Result<String, CalibrationFailed> {
    if file.is_empty() {
        Err(CalibrationFailed { file })
    } else {
        Ok(file)
    }
}

#[celeriac::task(name = "t.quota")]
fn quota() -> Result<(), QuotaExceeded> {
    Err(QuotaExceeded)
}

#[celeriac::task(name = "t.parse")]
fn parse(text: String) -> Result<i64, std::num::ParseIntError> {
    text.parse()
}

#[celeriac::task(name = "t.string_error")]
fn string_error(fail: bool) -> Result<i32, String> {
    if fail {
        Err("went wrong".into())
    } else {
        Ok(1)
    }
}

#[celeriac::task(name = "t.boxed")]
fn boxed() -> Result<i32, Box<dyn std::error::Error + Send + Sync>> {
    Err("boxed failure".into())
}

#[celeriac::task(name = "t.unencodable")]
fn unencodable() -> std::collections::HashMap<(i32, i32), i32> {
    [((1, 2), 3)].into_iter().collect()
}

#[celeriac::task(
    name = "t.flaky",
    autoretry_for = ["ValueError", "core.num.error.ParseIntError"],
    max_retries = 5,
    default_retry_delay = 2.5
)]
fn flaky(kind: String) -> Result<(), TaskError> {
    match kind.as_str() {
        "value" => Err(TaskError::value_error("transient")),
        "parse" => Err(TaskError::exception("core.num.error", "ParseIntError", "x")),
        _ => Err(TaskError::type_error("permanent")),
    }
}

#[celeriac::task(name = "t.backoff", autoretry_for = ["Exception"], retry_backoff = true)]
fn backoff() -> Result<(), std::io::Error> {
    Err(std::io::Error::other("disk full"))
}

#[celeriac::task(
    name = "t.bound",
    bind = true,
    max_retries = 4,
    default_retry_delay = 30
)]
fn bound(ctx: &Context, attempts: i64) -> Result<String, TaskError> {
    if ctx.retries() < attempts {
        return Err(ctx.retry().countdown(Duration::from_secs(5)).into());
    }
    Ok(format!(
        "{} {} {} {}",
        ctx.name(),
        ctx.id(),
        ctx.hostname(),
        ctx.delivery_info()["routing_key"]
    ))
}

#[celeriac::task(
    name = "t.bound_defaults",
    bind = true,
    max_retries = 4,
    default_retry_delay = 30
)]
fn bound_defaults(ctx: &celeriac::task::Context<'_>) -> Result<(), TaskError> {
    Err(ctx.retry().into())
}

#[celeriac::task(name = "t.bound_exc", bind = true)]
fn bound_exc(ctx: &Context, n: i64) -> Result<(), TaskError> {
    Err(ctx
        .retry()
        .max_retries(9)
        .exc(TaskError::value_error(format!("n={n}")))
        .into())
}

#[celeriac::task(name = "t.sleepy")]
async fn sleepy(ms: u64) -> Result<u64, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms * 2)
}

#[celeriac::task(
    name = "t.configured",
    queue = "calibration",
    time_limit = 600,
    soft_time_limit = 540.5,
    acks_late = true,
    max_retries = 7,
    default_retry_delay = 10,
    autoretry_for = ["ValueError", "myapp.errors.Busy"],
    retry_backoff = 4,
    rate_limit = "10/m",
    ignore_result = true
)]
fn configured() {}

/// Another attribute below ours still applies, though it rewrites the return type
/// (`#[locks::only_one]` makes it `Result<u32, locks::NotRun>`). Nothing listens on port 1,
/// so the lock is never taken.
#[celeriac::task(name = "t.locked")]
#[locks::only_one(
    key = "t:{key}",
    client = locks::Client::open_detached("redis://127.0.0.1:1/0").expect("lock url")
)]
fn locked(key: &str) -> u32 {
    key.len() as u32
}

mod jobs {
    #[celeriac::task(name = "jobs.cleanup")]
    pub(crate) fn cleanup(days: u32) -> u32 {
        days
    }
}

/// A task Python serves; only its stubs exist here.
#[celeriac::task(
    name = "jwql.shared_tasks.shared_tasks.run_calwebb_detector1",
    remote,
    queue = "calwebb"
)]
fn run_calwebb_detector1(input_file: String, short_name: String) -> Vec<String>;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn call(args: Value, kwargs: Value) -> TaskCall {
    TaskCall {
        args: serde_json::from_value(args).expect("args list"),
        kwargs: serde_json::from_value(kwargs).expect("kwargs object"),
        id: "id-1".into(),
        hostname: "celery@host".into(),
        delivery_info: json!({"routing_key": "celery"}),
        ..Default::default()
    }
}

fn run(def: celeriac::task::TaskDef, args: Value, kwargs: Value) -> Result<Value, TaskError> {
    (def.func)(&call(args, kwargs))
}

/// The (module, type, message) of an exception outcome.
fn exception(r: Result<Value, TaskError>) -> (String, String, String) {
    match r {
        Err(TaskError::Exception { exc, .. }) => (
            exc.exc_module,
            exc.exc_type,
            exc.exc_message[0].as_str().unwrap_or_default().to_string(),
        ),
        other => panic!("expected an exception, got {other:?}"),
    }
}

fn type_error(r: Result<Value, TaskError>) -> String {
    let (module, ty, msg) = exception(r);
    assert_eq!(
        (module.as_str(), ty.as_str()),
        ("builtins", "TypeError"),
        "{msg}"
    );
    msg
}

// ---------------------------------------------------------------------------------------
// Binding
// ---------------------------------------------------------------------------------------

#[test]
fn the_function_stays_callable_directly() {
    assert_eq!(add(2, 3), 5);
    assert_eq!(add::NAME, "shared_tasks.add");
}

#[test]
fn positional_and_keyword_arguments_bind_to_parameters() {
    assert_eq!(run(add::task(), json!([2, 3]), json!({})), Ok(json!(5)));
    assert_eq!(
        run(add::task(), json!([2]), json!({"y": 40})),
        Ok(json!(42))
    );
    assert_eq!(
        run(add::task(), json!([]), json!({"y": 1, "x": 2})),
        Ok(json!(3))
    );
}

#[test]
fn option_and_default_parameters_may_be_left_out() {
    assert_eq!(
        run(greet::task(), json!(["ann"]), json!({})),
        Ok(json!("hello ann"))
    );
    assert_eq!(
        run(greet::task(), json!(["ann", "hi", 2]), json!({})),
        Ok(json!("hi ann, hi ann"))
    );
    assert_eq!(
        run(greet::task(), json!(["ann"]), json!({"times": 2})),
        Ok(json!("hello ann, hello ann"))
    );
    assert_eq!(
        run(greet::task(), json!(["ann", null]), json!({})),
        Ok(json!("hello ann"))
    );
    assert_eq!(
        run(default_str::task(), json!([]), json!({})),
        Ok(json!(["plain", 3]))
    );
    assert_eq!(
        run(default_str::task(), json!(["fast", null]), json!({})),
        Ok(json!(["fast", null]))
    );
}

#[test]
fn the_default_name_is_crate_dot_function() {
    assert_eq!(greet::NAME, "typed_tasks.greet");
    assert_eq!(greet::task().name, "typed_tasks.greet");
}

#[test]
fn too_many_positional_arguments_is_pythons_type_error() {
    assert_eq!(
        type_error(run(add::task(), json!([1, 2, 3]), json!({}))),
        "add() takes 2 positional arguments but 3 were given"
    );
    assert_eq!(
        type_error(run(greet::task(), json!(["a", "b", 1, 2]), json!({}))),
        "greet() takes from 1 to 3 positional arguments but 4 were given"
    );
    assert_eq!(
        type_error(run(nothing::task(), json!([1]), json!({}))),
        "nothing() takes 0 positional arguments but 1 was given"
    );
}

#[test]
fn missing_arguments_are_named_as_python_names_them() {
    assert_eq!(
        type_error(run(add::task(), json!([1]), json!({}))),
        "add() missing 1 required positional argument: 'y'"
    );
    assert_eq!(
        type_error(run(add::task(), json!([]), json!({}))),
        "add() missing 2 required positional arguments: 'x' and 'y'"
    );
    assert_eq!(
        type_error(run(three::task(), json!([]), json!({}))),
        "three() missing 3 required positional arguments: 'a', 'b', and 'c'"
    );
    assert_eq!(
        type_error(run(three::task(), json!([]), json!({"b": 1}))),
        "three() missing 2 required positional arguments: 'a' and 'c'"
    );
}

#[test]
fn unknown_and_repeated_keywords_are_type_errors() {
    assert_eq!(
        type_error(run(add::task(), json!([1, 2]), json!({"z": 3}))),
        "add() got an unexpected keyword argument 'z'"
    );
    assert_eq!(
        type_error(run(add::task(), json!([1, 2]), json!({"x": 3}))),
        "add() got multiple values for argument 'x'"
    );
}

#[test]
fn a_value_of_the_wrong_type_names_the_parameter_and_what_was_expected() {
    assert_eq!(
        type_error(run(add::task(), json!(["a", 2]), json!({}))),
        "add() argument 'x': invalid type: string \"a\", expected i64"
    );
    assert_eq!(
        type_error(run(add::task(), json!([1]), json!({"y": 1.5}))),
        "add() argument 'y': invalid type: floating point `1.5`, expected i64"
    );
    assert_eq!(
        type_error(run(greet::task(), json!(["a", null, -1]), json!({}))),
        "greet() argument 'times': invalid value: integer `-1`, expected u32"
    );
    assert_eq!(
        type_error(run(borrowed::task(), json!(["k", [1, "x"]]), json!({}))),
        "borrowed() argument 'values': invalid type: string \"x\", expected f64"
    );
}

#[test]
fn borrowed_parameters_borrow_from_the_call() {
    assert_eq!(
        run(borrowed::task(), json!(["key", [1.0, 2]]), json!({})),
        Ok(json!(5))
    );
}

// ---------------------------------------------------------------------------------------
// Results and errors
// ---------------------------------------------------------------------------------------

#[test]
fn unit_is_none_and_values_are_json() {
    assert_eq!(run(nothing::task(), json!([]), json!({})), Ok(Value::Null));
    assert_eq!(
        run(static_str::task(), json!([]), json!({})),
        Ok(json!("ran"))
    );
}

#[test]
fn an_error_converting_into_task_error_keeps_its_exception_or_retry() {
    assert_eq!(
        run(calibrate::task(), json!(["a.fits"]), json!({})),
        Ok(json!(6))
    );
    assert_eq!(
        exception(run(calibrate::task(), json!(["a.txt"]), json!({}))),
        (
            "myapp.errors".into(),
            "Missing".into(),
            "no such file: a.txt".into()
        )
    );
    assert!(matches!(
        run(calibrate::task(), json!(["busy"]), json!({})),
        Err(TaskError::Retry {
            max_retries: Some(2),
            ..
        })
    ));
}

#[test]
fn a_derived_exception_names_the_python_class() {
    assert_eq!(
        exception(run(derived::task(), json!([""]), json!({}))),
        (
            "jwql.errors".into(),
            "CalibrationError".into(),
            "calibration failed for ".into()
        )
    );
    assert_eq!(
        run(derived::task(), json!(["f"]), json!({})),
        Ok(json!("f"))
    );
    assert_eq!(
        exception(run(quota::task(), json!([]), json!({}))),
        ("jwql.errors".into(), "QuotaExceeded".into(), "quota".into())
    );
}

#[test]
fn a_plain_rust_error_is_named_after_its_type() {
    assert_eq!(run(parse::task(), json!(["42"]), json!({})), Ok(json!(42)));
    assert_eq!(
        exception(run(parse::task(), json!(["x"]), json!({}))),
        (
            "core.num.error".into(),
            "ParseIntError".into(),
            "invalid digit found in string".into()
        )
    );
}

#[test]
fn string_and_boxed_errors_are_plain_exceptions() {
    assert_eq!(
        run(string_error::task(), json!([false]), json!({})),
        Ok(json!(1))
    );
    assert_eq!(
        exception(run(string_error::task(), json!([true]), json!({}))),
        ("builtins".into(), "Exception".into(), "went wrong".into())
    );
    assert_eq!(
        exception(run(boxed::task(), json!([]), json!({}))),
        (
            "builtins".into(),
            "Exception".into(),
            "boxed failure".into()
        )
    );
}

#[test]
fn a_result_serde_cannot_encode_is_kombus_encode_error() {
    let (module, ty, msg) = exception(run(unencodable::task(), json!([]), json!({})));
    assert_eq!(
        (module.as_str(), ty.as_str()),
        ("kombu.exceptions", "EncodeError")
    );
    assert!(msg.contains("key must be a string"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------

#[test]
fn autoretry_for_retries_listed_exceptions_only() {
    let Err(TaskError::Retry {
        countdown,
        max_retries,
        exc,
    }) = run(flaky::task(), json!(["value"]), json!({}))
    else {
        panic!("no retry")
    };
    assert_eq!(countdown, Duration::from_millis(2500));
    assert_eq!(max_retries, Some(5));
    assert_eq!(exc.exc_type, "ValueError");
    assert!(matches!(
        run(flaky::task(), json!(["parse"]), json!({})),
        Err(TaskError::Retry { .. })
    ));
    assert_eq!(
        type_error(run(flaky::task(), json!(["other"]), json!({}))),
        "permanent"
    );
    // A call the function cannot accept is not retried: trying again cannot mend it.
    assert_eq!(
        type_error(run(flaky::task(), json!([]), json!({}))),
        "flaky() missing 1 required positional argument: 'kind'"
    );
}

#[test]
fn retry_backoff_doubles_per_retry_and_is_capped() {
    for retries in [0, 3, 9, 10, 50] {
        let mut c = call(json!([]), json!({}));
        c.retries = retries;
        let Err(TaskError::Retry {
            countdown,
            max_retries,
            exc,
        }) = (backoff::task().func)(&c)
        else {
            panic!("no retry")
        };
        let cap = 2u64.saturating_pow(retries as u32).min(600);
        assert!(
            countdown <= Duration::from_secs(cap),
            "{retries}: {countdown:?}"
        );
        assert_eq!(max_retries, Some(3));
        // An I/O error is Python's OSError (`From<std::io::Error> for TaskError`).
        assert_eq!(
            (exc.exc_module.as_str(), exc.exc_type.as_str()),
            ("builtins", "OSError")
        );
    }
}

#[test]
fn bind_gives_the_request_and_retry() {
    let mut c = call(json!([1]), json!({}));
    let Err(TaskError::Retry {
        countdown,
        max_retries,
        exc,
    }) = (bound::task().func)(&c)
    else {
        panic!("no retry")
    };
    assert_eq!(countdown, Duration::from_secs(5));
    assert_eq!(max_retries, Some(4));
    assert_eq!(exc.exc_type, "MaxRetriesExceededError");
    assert_eq!(
        exc.exc_message,
        vec![json!("Can't retry t.bound[id-1] args:(1,) kwargs:{}")]
    );
    c.retries = 1;
    assert_eq!(
        (bound::task().func)(&c),
        Ok(json!("t.bound id-1 celery@host \"celery\""))
    );
    // The context is not an argument: one argument is all the task takes.
    assert_eq!(
        type_error(run(bound::task(), json!([1, 2]), json!({}))),
        "bound() takes 1 positional argument but 2 were given"
    );
}

#[test]
fn a_bare_retry_uses_the_tasks_retry_options() {
    let Err(TaskError::Retry {
        countdown,
        max_retries,
        ..
    }) = run(bound_defaults::task(), json!([]), json!({}))
    else {
        panic!("no retry")
    };
    assert_eq!(countdown, Duration::from_secs(30));
    assert_eq!(max_retries, Some(4));
    let Err(TaskError::Retry {
        countdown,
        max_retries,
        exc,
    }) = run(bound_exc::task(), json!([]), json!({"n": 3}))
    else {
        panic!("no retry")
    };
    assert_eq!(countdown, Duration::from_secs(180));
    assert_eq!(max_retries, Some(9));
    assert_eq!(exc, celeriac::ExceptionInfo::value_error("n=3"));
}

#[test]
fn a_bound_task_can_be_called_with_a_hand_made_context() {
    let c = call(json!([]), json!({}));
    let ctx = Context::new("t.bound", &c).with_options(&bound::options());
    assert!(matches!(bound(&ctx, 1), Err(TaskError::Retry { .. })));
    assert_eq!(
        bound(&ctx, 0).unwrap(),
        "t.bound id-1 celery@host \"celery\""
    );
}

#[test]
fn an_attribute_below_ours_still_applies_and_its_error_fails_the_task() {
    let (module, ty, msg) = exception(run(locked::task(), json!(["k"]), json!({})));
    assert_eq!((module.as_str(), ty.as_str()), ("locks.error", "NotRun"));
    assert!(msg.contains("lock `t:k`"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// async, registry, options, stubs
// ---------------------------------------------------------------------------------------

#[test]
fn an_async_task_runs_to_completion() {
    assert_eq!(run(sleepy::task(), json!([5]), json!({})), Ok(json!(10)));
}

#[test]
fn tasks_macro_builds_a_registry() {
    let r = celeriac::tasks![add, greet, jobs::cleanup];
    assert_eq!(
        r.names(),
        vec!["jobs.cleanup", "shared_tasks.add", "typed_tasks.greet"]
    );
    assert_eq!(
        r.run("jobs.cleanup", &call(json!([7]), json!({}))),
        Ok(json!(7))
    );
    assert_eq!(
        r.get("shared_tasks.add").map(|d| d.options.acks_late),
        Some(Some(true))
    );
}

#[test]
fn options_land_in_options() {
    assert_eq!(
        configured::options(),
        TaskOptions {
            acks_late: Some(true),
            queue: Some("calibration".into()),
            time_limit: Some(600.0),
            soft_time_limit: Some(540.5),
            max_retries: Some(7),
            default_retry_delay: Some(10.0),
            autoretry_for: vec!["ValueError".into(), "myapp.errors.Busy".into()],
            retry_backoff: Some(4),
            rate_limit: Some("10/m".into()),
            ignore_result: Some(true),
        }
    );
    assert_eq!(configured::task().options, configured::options());
    assert_eq!(add::options().acks_late, Some(true));
    assert_eq!(greet::options(), TaskOptions::default());
}

#[test]
fn a_remote_declaration_has_a_name_options_and_stubs() {
    assert_eq!(
        run_calwebb_detector1::NAME,
        "jwql.shared_tasks.shared_tasks.run_calwebb_detector1"
    );
    assert_eq!(
        run_calwebb_detector1::options().queue.as_deref(),
        Some("calwebb")
    );
}

/// Never called: checks that the stubs have the signatures the docs promise.
#[allow(dead_code)]
async fn stubs_type_check(client: &celeriac::Client) -> Result<(), celeriac::client::ClientError> {
    let r: celeriac::TypedResult<i64> = add::delay(client, 2, 3).await?;
    let _: i64 = r.get(Duration::from_secs(1)).await?;
    let _: celeriac::TypedResult<Vec<String>> = run_calwebb_detector1::apply_async(
        client,
        ("a.fits".to_string(), "nrca1".to_string()),
        celeriac::SendOptions::default(),
    )
    .await?;
    let _: celeriac::TypedResult<Vec<String>> =
        run_calwebb_detector1::delay(client, "a".into(), "b".into()).await?;
    let _: celeriac::TypedResult<u64> = calibrate::delay(client, "f".into()).await?;
    let _: celeriac::TypedResult<String> = bound::delay(client, 3).await?;
    let _: celeriac::TypedResult<()> = nothing::apply_async(client, (), Default::default()).await?;
    let _: celeriac::TypedResult<String> = static_str::delay(client).await?;
    let _: celeriac::TypedResult<usize> = borrowed::delay(client, "k", vec![1.0]).await?;
    let _: celeriac::TypedResult<u64> = sleepy::delay(client, 1).await?;
    let _: celeriac::TypedResult<u32> = locked::delay(client, "k").await?;
    Ok(())
}
