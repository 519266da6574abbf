//! The tasks this deployment serves, registered under their Celery names — the Rust
//! counterpart of JWQL's `shared_tasks` module. Names are part of the contract: monitors and
//! tests outside this repository call them as `shared_tasks.<name>`.
//!
//! Each body is a plain synchronous function: in the JWQL mode it runs in a child process of
//! its own, so it may block, leak or abort without harming the worker.

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

use celeriac::task::{Registry, TaskCall, TaskError};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// The registry of every task in this crate.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("shared_tasks.add", add)
        .register("shared_tasks.echo", echo)
        .register("shared_tasks.fail", fail)
        .register("shared_tasks.sleep", sleep)
        .register("shared_tasks.pid", pid)
        .register("shared_tasks.crash", crash)
        .register("shared_tasks.alloc", alloc)
        .register("shared_tasks.retry_until", retry_until)
        .register("shared_tasks.spawn_sleepers", spawn_sleepers)
        .register("shared_tasks.spin", spin)
        .register("shared_tasks.append_line", append_line)
        .register("shared_tasks.locked_sleep", locked_sleep);
    r
}

/// `add(x, y)` → `x + y`, with Python's rules: int + int stays an int (arbitrary size within
/// i128 here), anything with a float is a float, strings and lists concatenate.
pub fn add(call: &TaskCall) -> Result<Value, TaskError> {
    let x = call.arg(0, "x")?;
    let y = call.arg(1, "y")?;
    match (x, y) {
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
            py_type(x),
            py_type(y)
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

/// `echo(*args, **kwargs)` → `{"args": [...], "kwargs": {...}}`.
pub fn echo(call: &TaskCall) -> Result<Value, TaskError> {
    let mut m = Map::new();
    m.insert("args".into(), Value::Array(call.args.clone()));
    m.insert("kwargs".into(), Value::Object(call.kwargs.clone()));
    Ok(Value::Object(m))
}

/// `fail(message)` → raises `ValueError(message)` (`exc_module: builtins`).
pub fn fail(call: &TaskCall) -> Result<Value, TaskError> {
    let msg = call.arg(0, "message")?;
    Err(TaskError::Exception {
        exc: celeriac::ExceptionInfo {
            exc_type: "ValueError".into(),
            exc_message: vec![msg.clone()],
            exc_module: "builtins".into(),
        },
        traceback: None,
    })
}

/// `sleep(seconds)` → sleeps in the process running the task, returns `seconds`.
pub fn sleep(call: &TaskCall) -> Result<Value, TaskError> {
    let v = call.arg(0, "seconds")?.clone();
    let s = call.f64_arg(0, "seconds")?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err(TaskError::value_error(format!(
            "seconds must be within 0..=86400, got {s}"
        )));
    }
    std::thread::sleep(Duration::from_secs_f64(s));
    Ok(v)
}

/// `pid()` → the OS process id of the process that executed the body.
pub fn pid(_call: &TaskCall) -> Result<Value, TaskError> {
    Ok(json!(std::process::id()))
}

/// `crash()` → aborts the executing process (SIGABRT).
pub fn crash(_call: &TaskCall) -> Result<Value, TaskError> {
    std::process::abort()
}

/// `alloc(mib)` → allocates `mib` MiB, writes every page so the resident set really grows,
/// leaks it on purpose, and returns the executing process's resident set in KiB.
pub fn alloc(call: &TaskCall) -> Result<Value, TaskError> {
    let mib = call.f64_arg(0, "mib")?;
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
    Ok(json!(resident_kib()))
}

/// `retry_until(n)`: raises a retry (countdown 0.1 s) until it has been retried `n` times,
/// then returns the retry count. Exercises Celery's retry protocol end to end.
pub fn retry_until(call: &TaskCall) -> Result<Value, TaskError> {
    let n = call.f64_arg(0, "n")? as i64;
    if call.retries < n {
        return Err(TaskError::Retry {
            countdown: Duration::from_millis(100),
            max_retries: Some(n),
            exc: celeriac::ExceptionInfo::new("builtins", "KeyError", "again"),
        });
    }
    Ok(json!(call.retries))
}

/// `spawn_sleepers(n, seconds)`: starts `n` grandchild `sleep` processes and waits for
/// them, returning their pids — a task with a process tree, for time-limit tests.
pub fn spawn_sleepers(call: &TaskCall) -> Result<Value, TaskError> {
    let n = call.f64_arg(0, "n")? as usize;
    let secs = call.f64_arg(1, "seconds")?;
    let mut kids = Vec::new();
    for _ in 0..n.min(64) {
        let c = std::process::Command::new("sleep")
            .arg(secs.to_string())
            .spawn()
            .map_err(|e| TaskError::exception("builtins", "OSError", e.to_string()))?;
        kids.push(c);
    }
    let pids: Vec<u32> = kids.iter().map(|c| c.id()).collect();
    for mut c in kids {
        let _ = c.wait();
    }
    Ok(json!(pids))
}

/// `spin(seconds)`: burns CPU for `seconds` (a CPU-bound task for time-limit tests).
pub fn spin(call: &TaskCall) -> Result<Value, TaskError> {
    let secs = call.f64_arg(0, "seconds")?;
    let until = std::time::Instant::now() + Duration::from_secs_f64(secs.clamp(0.0, 86_400.0));
    let mut x: u64 = 0;
    while std::time::Instant::now() < until {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
    Ok(json!(secs))
}

/// `append_line(path, line, seconds=0)`: sleeps `seconds`, then appends `line` to the file at
/// `path` (one `write` with `O_APPEND`, so concurrent writers never interleave a line) and
/// returns `line`. Each execution leaves one line: fault tests count executions with it.
pub fn append_line(call: &TaskCall) -> Result<Value, TaskError> {
    use std::io::Write;
    let path = call.str_arg(0, "path")?;
    let line = call.str_arg(1, "line")?;
    let secs = call
        .arg(2, "seconds")
        .ok()
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    if secs > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(secs.min(3600.0)));
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| TaskError::exception("builtins", "OSError", e.to_string()))?;
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| TaskError::exception("builtins", "OSError", e.to_string()))?;
    Ok(Value::String(line.to_string()))
}

/// `locked_sleep(key, seconds)`: sleeps under the global lock `key` (`#[only_one]` semantics,
/// skip policy); returns `"ran"`, or `"skipped"` when someone — a Rust or a redis-py holder —
/// already holds it. The lock server is `CELERIAC_LOCK_URL`, else `CELERY_BROKER_URL`.
pub fn locked_sleep(call: &TaskCall) -> Result<Value, TaskError> {
    let key = call.str_arg(0, "key")?;
    let secs = call.f64_arg(1, "seconds")?;
    match locks::demo::locked_sleep_outcome(key, secs) {
        Ok(s) => Ok(json!(s)),
        Err(locks::NotRun::Skipped { .. }) => Ok(json!("skipped")),
        Err(e) => Err(TaskError::exception(
            "builtins",
            "RuntimeError",
            e.to_string(),
        )),
    }
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

    fn call(args: Value) -> TaskCall {
        TaskCall {
            args: args.as_array().unwrap().clone(),
            ..Default::default()
        }
    }

    #[test]
    fn add_follows_python_numeric_rules() {
        assert_eq!(add(&call(json!([2, 3]))).unwrap(), json!(5));
        assert_eq!(add(&call(json!([2, 0.5]))).unwrap(), json!(2.5));
        assert_eq!(add(&call(json!(["a", "b"]))).unwrap(), json!("ab"));
        assert!(add(&call(json!([1, null]))).is_err());
    }

    #[test]
    fn fail_raises_value_error_with_the_message() {
        let Err(TaskError::Exception { exc, .. }) = fail(&call(json!(["boom"]))) else {
            panic!()
        };
        assert_eq!(
            (exc.exc_type.as_str(), exc.exc_module.as_str()),
            ("ValueError", "builtins")
        );
        assert_eq!(exc.exc_message, vec![json!("boom")]);
    }

    #[test]
    fn registry_serves_every_contract_name() {
        let r = registry();
        for n in ["add", "echo", "fail", "sleep", "pid", "crash", "alloc"] {
            assert!(r.get(&format!("shared_tasks.{n}")).is_some(), "{n}");
        }
    }
}
