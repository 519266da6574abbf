//! A worker of your own: typed Rust tasks, served by the whole `celeriac` command line.
//!
//! ```text
//! cargo build --release
//! target/release/own-worker -b redis://127.0.0.1:6379/0 worker -c1 --max-tasks-per-child=1
//! ```
//!
//! Python monitors call these tasks by name, as any Celery task:
//! `app.send_task("own.add", (2, 3)).get()`. The crate needs no `serde` of its own.

use std::fmt;
use std::process::ExitCode;

/// `own.add(x, y)`: two integers in, their sum out.
#[celeriac::task(name = "own.add")]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// `own.greet(name, greeting=None)`: an optional argument is `Option`.
#[celeriac::task(name = "own.greet")]
fn greet(name: String, greeting: Option<String>) -> String {
    format!("{}, {name}!", greeting.as_deref().unwrap_or("Hello"))
}

/// `own.pid()`: the process that ran the task (one child per task with
/// `--max-tasks-per-child=1`).
#[celeriac::task(name = "own.pid")]
fn pid() -> u32 {
    std::process::id()
}

/// `own.whoami()`: what a bound task knows of its request (`bind = true`).
#[celeriac::task(name = "own.whoami", bind = true)]
fn whoami(ctx: &celeriac::task::Context) -> Vec<String> {
    vec![
        ctx.name().to_string(),
        ctx.hostname().to_string(),
        ctx.delivery_info()["routing_key"].to_string(),
        ctx.retries().to_string(),
        ctx.id().to_string(),
    ]
}

/// `own.spin(seconds)`: burns CPU for `seconds`, under the task's own hard time limit of one
/// second: the worker kills its process at the limit (`TimeLimitExceeded(1.0)`).
#[celeriac::task(name = "own.spin", time_limit = 1)]
fn spin(seconds: f64) -> f64 {
    let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(seconds);
    let mut x = 0u64;
    while std::time::Instant::now() < until {
        x = std::hint::black_box(x.wrapping_add(1));
    }
    seconds
}

/// `own.quiet()`: a task whose result is never stored (`ignore_result = true`).
#[celeriac::task(name = "own.quiet", ignore_result = true)]
fn quiet() -> &'static str {
    "unseen"
}

/// `own.exe()`: the name of the program that ran the task: this crate's own binary, which
/// the worker re-executes for each child.
#[celeriac::task(name = "own.exe")]
fn exe() -> Option<String> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// The error `own.sqrt` fails with; Python sees `ValueError`.
#[derive(Debug, celeriac::Exception)]
#[exception(module = "builtins", name = "ValueError")]
struct Negative(f64);

impl fmt::Display for Negative {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "math domain error: sqrt({})", self.0)
    }
}

/// `own.sqrt(x)`: a failure is a Python exception the client re-raises.
#[celeriac::task(name = "own.sqrt")]
fn sqrt(x: f64) -> Result<f64, Negative> {
    if x < 0.0 {
        Err(Negative(x))
    } else {
        Ok(x.sqrt())
    }
}

fn main() -> ExitCode {
    celeriac_worker::main(celeriac::tasks![
        add, greet, pid, exe, whoami, sqrt, spin, quiet
    ])
}
