//! The tasks this deployment serves, registered under their Celery names — the Rust
//! counterpart of JWQL's `shared_tasks` module. Names are part of the contract: monitors and
//! tests outside this repository call them as `shared_tasks.<name>`.
//!
//! Each task is a plain typed function under `#[celeriac::task]`, which binds a Python
//! client's arguments to its parameters (a wrong call is a `TypeError`, as in Python) and
//! gives each a typed client stub (`add::delay(&client, ...)`). In the JWQL mode a task runs
//! in a child process of its own, so it may block, leak or abort without harming the worker.

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use celeriac::task::{Context, Registry, TaskDef, TaskError};
use serde_json::{Number, Value, json};
use std::time::Duration;

/// The registry of every task in this crate.
pub fn registry() -> Registry {
    let mut registry = celeriac::tasks![
        add,
        fail,
        sleep,
        pid,
        crash,
        alloc,
        retry_until,
        spawn_sleepers,
        spin,
        append_line,
        locked_sleep,
        calibrate,
        progress,
        async_sleep,
    ];
    registry.add(echo());
    registry
}

/// `add(x, y)` → `x + y`, with Python's rules: int + int stays an int (arbitrary size within
/// i128 here), anything with a float is a float, strings and lists concatenate.
#[celeriac::task]
pub fn add(x: Value, y: Value) -> Result<Value, TaskError> {
    match (&x, &y) {
        (Value::Number(a), Value::Number(b)) => {
            if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
                let s = i128::from(a) + i128::from(b);
                return Ok(i64::try_from(s)
                    .map(Value::from)
                    .unwrap_or_else(|_| json!(s as f64)));
            }
            if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
                return Ok(a
                    .checked_add(b)
                    .map(Value::from)
                    .unwrap_or_else(|| json!(a as f64 + b as f64)));
            }
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            Ok(json!(a + b))
        }
        (Value::String(a), Value::String(b)) => Ok(Value::String(format!("{a}{b}"))),
        (Value::Array(a), Value::Array(b)) => {
            Ok(Value::Array(a.iter().chain(b).cloned().collect()))
        }
        _ => Err(TaskError::type_error(format!(
            "unsupported operand type(s) for +: {} and {}",
            py_type(&x),
            py_type(&y)
        ))),
    }
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "'NoneType'",
        Value::Bool(_) => "'bool'",
        Value::Number(n) if n.is_f64() => "'float'",
        Value::Number(_) => "'int'",
        Value::String(_) => "'str'",
        Value::Array(_) => "'list'",
        Value::Object(_) => "'dict'",
    }
}

/// `echo(*args, **kwargs)` → `{"args": [...], "kwargs": {...}}`. Python's variadic
/// parameters have no typed form, so this task is defined by hand: a [`TaskDef`] takes the
/// call as it comes.
pub fn echo() -> TaskDef {
    TaskDef::new("shared_tasks.echo", |call| {
        Ok(json!({"args": call.args, "kwargs": call.kwargs}))
    })
}

/// `fail(message)` → raises `ValueError(message)` (`exc_module: builtins`).
#[celeriac::task]
pub fn fail(message: Value) -> Result<(), TaskError> {
    Err(TaskError::exception("builtins", "ValueError", message))
}

/// `sleep(seconds)` → sleeps in the process running the task, returns `seconds` as given.
#[celeriac::task]
pub fn sleep(seconds: Number) -> Result<Number, TaskError> {
    let s = seconds.as_f64().unwrap_or(f64::NAN);
    if !(0.0..=86_400.0).contains(&s) {
        return Err(TaskError::value_error(format!(
            "seconds must be within 0..=86400, got {s}"
        )));
    }
    std::thread::sleep(Duration::from_secs_f64(s));
    Ok(seconds)
}

/// `pid()` → the OS process id of the process that executed the body.
#[celeriac::task]
pub fn pid() -> u32 {
    std::process::id()
}

/// `crash()` → aborts the executing process (SIGABRT).
#[celeriac::task]
pub fn crash() {
    std::process::abort()
}

/// `alloc(mib)` → allocates `mib` MiB, writes every page so the resident set really grows,
/// leaks it on purpose, and returns the executing process's resident set in KiB.
#[celeriac::task]
pub fn alloc(mib: f64) -> Result<u64, TaskError> {
    if !(0.0..=65_536.0).contains(&mib) {
        return Err(TaskError::value_error(format!(
            "mib must be within 0..=65536, got {mib}"
        )));
    }
    let bytes = (mib * 1024.0 * 1024.0) as usize;
    let mut block = vec![0u8; bytes];
    for i in (0..bytes).step_by(4096) {
        block[i] = 1;
    }
    // A block nobody reads is removed by the optimiser, page writes and all (the release
    // build reported ~6 MiB for `alloc(200)`): let it escape, so it is really allocated.
    std::hint::black_box(&mut block);
    std::mem::forget(block);
    Ok(resident_kib())
}

/// `retry_until(n)`: raises a retry (countdown 0.1 s) until it has been retried `n` times,
/// then returns the retry count. Exercises Celery's retry protocol end to end.
#[celeriac::task(bind = true)]
pub fn retry_until(ctx: &Context, n: f64) -> Result<i64, TaskError> {
    let n = n as i64;
    if ctx.retries() < n {
        return Err(ctx
            .retry()
            .countdown(Duration::from_millis(100))
            .max_retries(n.max(0) as u32)
            .exc(TaskError::exception("builtins", "KeyError", "again"))
            .into());
    }
    Ok(ctx.retries())
}

/// `spawn_sleepers(n, seconds)`: starts `n` grandchild `sleep` processes and waits for
/// them, returning their pids — a task with a process tree, for time-limit tests.
#[celeriac::task]
pub fn spawn_sleepers(n: f64, seconds: f64) -> Result<Vec<u32>, TaskError> {
    let spawn = || {
        std::process::Command::new("sleep")
            .arg(seconds.to_string())
            .spawn()
    };
    let kids = (0..(n as usize).min(64))
        .map(|_| spawn())
        .collect::<Result<Vec<_>, _>>()?;
    let pids = kids.iter().map(|c| c.id()).collect();
    for mut c in kids {
        let _ = c.wait();
    }
    Ok(pids)
}

/// `spin(seconds)`: burns CPU for `seconds` (a CPU-bound task for time-limit tests).
#[celeriac::task]
pub fn spin(seconds: f64) -> f64 {
    let until = std::time::Instant::now() + Duration::from_secs_f64(seconds.clamp(0.0, 86_400.0));
    let mut x: u64 = 0;
    while std::time::Instant::now() < until {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
    seconds
}

/// `append_line(path, line, seconds=0)`: sleeps `seconds`, then appends `line` to the file at
/// `path` (one `write` with `O_APPEND`, so concurrent writers never interleave a line) and
/// returns `line`. Each execution leaves one line: fault tests count executions with it.
#[celeriac::task]
pub fn append_line(path: String, line: String, seconds: Option<f64>) -> Result<String, TaskError> {
    use std::io::Write;
    std::thread::sleep(Duration::from_secs_f64(
        seconds.unwrap_or(0.0).clamp(0.0, 3600.0),
    ));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    Ok(line)
}

/// `locked_sleep(key, seconds)`: sleeps under the global lock `key` (`#[only_one]` semantics,
/// skip policy); returns `"ran"`, or `"skipped"` when someone — a Rust or a redis-py holder —
/// already holds it. The lock server is `CELERIAC_LOCK_URL`, else `CELERY_BROKER_URL`.
#[celeriac::task]
pub fn locked_sleep(key: String, seconds: f64) -> Result<&'static str, TaskError> {
    match locks::demo::locked_sleep_outcome(&key, seconds) {
        Ok(s) => Ok(s),
        Err(locks::NotRun::Skipped { .. }) => Ok("skipped"),
        Err(e) => Err(TaskError::exception(
            "builtins",
            "RuntimeError",
            e.to_string(),
        )),
    }
}

/// `async_sleep(seconds)`: an `async fn` task, sleeping on a tokio timer, returns `seconds`.
/// In a child it runs on a runtime of its own; in an in-process pool, on the worker's.
#[celeriac::task]
pub async fn async_sleep(seconds: f64) -> f64 {
    tokio::time::sleep(Duration::from_secs_f64(seconds.clamp(0.0, 3600.0))).await;
    seconds
}

/// `calibrate(file, seconds=0)`: a task guarded by a global lock on `calibrate:{file}`, as
/// JWQL guards its pipeline steps. It sleeps `seconds` under the lock and returns the file
/// name's length. When another process — Rust or redis-py — holds that lock, the run is
/// skipped and the task fails with `locks.error.NotRun` naming the lock and its holder:
/// never a value that looks like success (JWQL's decorator returned `None` for both).
#[celeriac::task]
#[locks::only_one(key = "calibrate:{file}", timeout = 600)]
pub fn calibrate(file: String, seconds: Option<f64>) -> usize {
    std::thread::sleep(Duration::from_secs_f64(
        seconds.unwrap_or(0.0).clamp(0.0, 3600.0),
    ));
    file.len()
}

/// `progress(steps, seconds=0.05)`: reports `PROGRESS` with `{"current": i, "total": steps}`
/// after each step (Celery's `update_state` convention), then returns `steps`.
#[celeriac::task(bind = true)]
pub fn progress(ctx: &Context, steps: u32, seconds: Option<f64>) -> Result<u32, TaskError> {
    for i in 1..=steps {
        std::thread::sleep(Duration::from_secs_f64(
            seconds.unwrap_or(0.05).clamp(0.0, 60.0),
        ));
        ctx.update_state("PROGRESS", json!({"current": i, "total": steps}))?;
    }
    Ok(steps)
}

/// Resident set size of this process in KiB (`VmRSS` from `/proc/self/status`).
pub fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use celeriac::task::TaskCall;

    fn call(args: Value) -> TaskCall {
        TaskCall {
            args: args.as_array().unwrap().clone(),
            ..Default::default()
        }
    }

    fn run(name: &str, args: Value) -> Result<Value, TaskError> {
        registry().run(name, &call(args))
    }

    #[test]
    fn add_follows_python_numeric_rules() {
        assert_eq!(run("shared_tasks.add", json!([2, 3])).unwrap(), json!(5));
        assert_eq!(
            run("shared_tasks.add", json!([2, 0.5])).unwrap(),
            json!(2.5)
        );
        assert_eq!(
            run("shared_tasks.add", json!(["a", "b"])).unwrap(),
            json!("ab")
        );
        assert!(run("shared_tasks.add", json!([1, null])).is_err());
    }

    #[test]
    fn fail_raises_value_error_with_the_message() {
        let Err(TaskError::Exception { exc, .. }) = run("shared_tasks.fail", json!(["boom"]))
        else {
            panic!()
        };
        assert_eq!(
            (exc.exc_type.as_str(), exc.exc_module.as_str()),
            ("ValueError", "builtins")
        );
        assert_eq!(exc.exc_message, vec![json!("boom")]);
    }

    #[test]
    fn sleep_returns_its_argument_as_given() {
        assert_eq!(run("shared_tasks.sleep", json!([0])).unwrap(), json!(0));
        assert_eq!(
            run("shared_tasks.sleep", json!([0.01])).unwrap(),
            json!(0.01)
        );
    }

    #[test]
    fn echo_gives_back_args_and_kwargs() {
        let mut c = call(json!([1, "a"]));
        c.kwargs.insert("k".into(), json!(true));
        assert_eq!(
            registry().run("shared_tasks.echo", &c).unwrap(),
            json!({"args": [1, "a"], "kwargs": {"k": true}})
        );
    }

    #[test]
    fn registry_serves_every_contract_name() {
        let r = registry();
        for n in [
            "add",
            "echo",
            "fail",
            "sleep",
            "pid",
            "crash",
            "alloc",
            "retry_until",
            "spawn_sleepers",
            "spin",
            "append_line",
            "locked_sleep",
            "progress",
        ] {
            assert!(r.get(&format!("shared_tasks.{n}")).is_some(), "{n}");
        }
    }
}
