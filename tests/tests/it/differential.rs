//! Differential tests: one Python client scenario (`tests/py/diff_scenarios.py`), run once
//! against a Python Celery worker and once against a celeriac worker, each on a private
//! `redis-server` with broker and results in db 0, started with the same worker flags. The
//! scenario asserts what Celery promises and prints what it saw; the observations of both
//! runs must then agree field by field (stored states, results, exception type/module/
//! message, traceback and `date_done` presence, children, event fields).
//!
//! Python Celery is the reference: a scenario that fails against it is a wrong test, and
//! the panic says so. A scenario that passes against Celery and fails against celeriac, or
//! whose observations differ, is a celeriac bug, and the panic names the differing fields.
//! This module owns the harness and the choice of flags per behaviour; the client code and
//! the Celery behaviour each scenario mirrors live in the Python file.

use serde_json::Value;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tests::{CeleriacWorker, PythonWorker, RedisServer, py_dir, python_cmd, run_with_timeout};

/// Upper bound for one scenario script (each one waits with its own, tighter bounds).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// Which worker served a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Celery,
    Celeriac,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Celery => "Python Celery",
            Side::Celeriac => "celeriac",
        }
    }
}

/// A worker of either kind; both kill their processes on drop.
enum Worker {
    Celery(PythonWorker),
    Celeriac(CeleriacWorker),
}

impl Worker {
    /// Start a worker with celeriac's flags. Celery's `worker` command has no
    /// `--acks-late` (it is the `task_acks_late` setting), so for Python that flag becomes
    /// `CELERIAC_ACKS_LATE=1`, which `tests/py/shared_tasks.py` turns into the setting.
    fn start(side: Side, url: &str, args: &[&str]) -> Self {
        match side {
            Side::Celery => {
                let late = args.contains(&"--acks-late");
                let rest: Vec<&str> = args
                    .iter()
                    .copied()
                    .filter(|a| *a != "--acks-late")
                    .collect();
                let env: &[(&str, &str)] = if late {
                    &[("CELERIAC_ACKS_LATE", "1")]
                } else {
                    &[]
                };
                Worker::Celery(PythonWorker::start(url, env, &rest))
            }
            Side::Celeriac => Worker::Celeriac(CeleriacWorker::start(url, args)),
        }
    }

    fn node(&self) -> &str {
        match self {
            Worker::Celery(w) => &w.node,
            Worker::Celeriac(w) => &w.node,
        }
    }

    fn output(&self) -> String {
        match self {
            Worker::Celery(w) => w.proc_.output(),
            Worker::Celeriac(w) => w.proc_.output(),
        }
    }
}

/// What one run of a scenario printed.
#[derive(Debug)]
struct Observation {
    /// Must be equal for both workers.
    same: Value,
    /// Timings and the like, shown to the reader, never compared.
    info: Value,
    /// Wall time of the run, worker start included.
    took: Duration,
}

/// Run `scenario` against a fresh Redis and a fresh `side` worker started with `args`.
/// `Err` carries the script's output and the worker's log.
fn observe(side: Side, scenario: &str, args: &[&str]) -> Result<Observation, String> {
    let t0 = Instant::now();
    let redis = RedisServer::start();
    let url = redis.url(0);
    let worker = Worker::start(side, &url, args);
    let mut cmd = python_cmd(&url);
    cmd.arg(py_dir().join("diff_scenarios.py"))
        .arg(scenario)
        .env("DIFF_WORKER_NODE", worker.node());
    let out = run_with_timeout(cmd, SCRIPT_TIMEOUT);
    let parsed = out
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<Value>(l).ok());
    match parsed {
        Some(mut obs) if out.success => Ok(Observation {
            same: obs["same"].take(),
            info: obs["info"].take(),
            took: t0.elapsed(),
        }),
        _ => Err(format!(
            "exit code {:?}\n--- scenario stdout:\n{}\n--- scenario stderr:\n{}\n--- worker log \
             (last 80 lines):\n{}",
            out.code,
            out.stdout.trim_end(),
            out.stderr.trim_end(),
            tail(&worker.output(), 80)
        )),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Run `scenario` against Python Celery, then against celeriac, both with `worker_args`;
/// panic unless both pass and agree on every compared field.
fn both(scenario: &str, worker_args: &[&str]) {
    let celery = observe(Side::Celery, scenario, worker_args).unwrap_or_else(|e| {
        panic!(
            "scenario `{scenario}` fails against {} itself (worker flags {worker_args:?}), so \
             the scenario is wrong, not celeriac:\n{e}",
            Side::Celery.name()
        )
    });
    let celeriac = observe(Side::Celeriac, scenario, worker_args).unwrap_or_else(|e| {
        panic!(
            "celeriac fails scenario `{scenario}` (worker flags {worker_args:?}), which {} \
             passes; Celery observed:\n{}\nceleriac run:\n{e}",
            Side::Celery.name(),
            pretty(&celery.same)
        )
    });
    let mut diffs = Vec::new();
    diff("same", &celery.same, &celeriac.same, &mut diffs);
    eprintln!(
        "{scenario} {worker_args:?}: {} {:.1}s info {}; {} {:.1}s info {}",
        Side::Celery.name(),
        celery.took.as_secs_f64(),
        celery.info,
        Side::Celeriac.name(),
        celeriac.took.as_secs_f64(),
        celeriac.info
    );
    if !diffs.is_empty() {
        let mut msg = format!(
            "celeriac differs from {} in scenario `{scenario}` (worker flags {worker_args:?}):\n",
            Side::Celery.name()
        );
        for d in &diffs {
            let _ = writeln!(msg, "  {d}");
        }
        let _ = write!(
            msg,
            "Celery observed:\n{}\nceleriac observed:\n{}",
            pretty(&celery.same),
            pretty(&celeriac.same)
        );
        panic!("{msg}");
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Every path where `celery` and `celeriac` differ, as `path: celery X, celeriac Y`.
/// Numbers compare with their JSON type: `1` and `1.0` differ, as `int` and `float` do for
/// a Python client.
fn diff(path: &str, celery: &Value, celeriac: &Value, out: &mut Vec<String>) {
    match (celery, celeriac) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = format!("{path}.{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff(&sub, x, y, out),
                    (x, y) => {
                        out.push(format!("{sub}: celery {}, celeriac {}", shown(x), shown(y)))
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: celery {a}, celeriac {b}")),
    }
}

fn shown(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_string(), Value::to_string)
}

// ---- 1. retries, and a task id reused while its task runs ------------------------------

#[test]
fn retry_until_stores_two_retry_states_then_success_on_both_workers() {
    both("retry_until_two", &["-c1"]);
}

#[test]
fn retry_with_a_fresh_child_per_task_matches_celery() {
    both("retry_until_two", &["-c1", "--max-tasks-per-child=1"]);
}

#[test]
fn retry_on_the_solo_pool_matches_celery() {
    both("retry_until_two", &["-P", "solo"]);
}

/// With a second slot free, the retry message (same id, countdown 0.1 s) is due while the
/// original is still finishing; Celery runs it regardless.
#[test]
fn retry_published_while_original_runs_is_executed_by_both_workers() {
    both("retry_until_two", &["-c2"]);
}

/// `sleep(1)` as X, then `add(1, 2)` as X with countdown 1.5 s sent while the sleep runs:
/// Celery runs the add (task-succeeded with result 3) and keeps the first stored SUCCESS.
#[test]
fn message_reusing_a_running_task_id_runs_after_it_on_both_workers() {
    both("same_id_after_running", &["-c1", "-E"]);
}

/// The same with the add due while the sleep still runs and a slot free: it runs at once.
#[test]
fn message_reusing_a_running_task_id_runs_beside_it_on_a_free_slot() {
    both("same_id_overlapping", &["-c2", "-E"]);
}

/// The command line JWQL runs (README): [`tests::JWQL`] with events. For Python,
/// `--acks-late` becomes the `task_acks_late` setting.
fn jwql_with_events() -> Vec<&'static str> {
    [&["-E"][..], tests::JWQL].concat()
}

#[test]
fn retry_under_the_jwql_command_line_matches_celery() {
    both("retry_until_two", &jwql_with_events());
}

#[test]
fn message_reusing_a_running_task_id_runs_after_it_under_the_jwql_command_line() {
    both("same_id_after_running", &jwql_with_events());
}

// ---- 2. ETA, countdown, expires ---------------------------------------------------------

#[test]
fn countdown_runs_no_earlier_than_its_eta_on_both_workers() {
    both("countdown_one_second", &["-c1"]);
}

#[test]
fn eta_in_the_past_runs_at_once_on_both_workers() {
    both("eta_in_the_past", &["-c1"]);
}

#[test]
fn task_expired_at_its_eta_is_revoked_as_expired_by_both_workers() {
    both("expires_before_eta", &["-c1"]);
}

// ---- 3. time limits ---------------------------------------------------------------------

#[test]
fn worker_soft_time_limit_fails_the_task_and_the_next_runs_at_once() {
    both("worker_soft_limit", &["-c1", "--soft-time-limit", "1"]);
}

#[test]
fn worker_hard_time_limit_fails_the_task_and_the_next_runs_at_once() {
    both("worker_hard_limit", &["-c1", "--time-limit", "1"]);
}

#[test]
fn message_soft_time_limit_fails_the_task_and_the_next_runs_at_once() {
    both("message_soft_limit", &["-c1"]);
}

#[test]
fn message_hard_time_limit_fails_the_task_and_the_next_runs_at_once() {
    both("message_hard_limit", &["-c1"]);
}

// ---- 4. revoke --------------------------------------------------------------------------

#[test]
fn revoking_a_countdown_task_stores_revoked_on_both_workers() {
    both("revoke_pending", &["-c1"]);
}

#[test]
fn revoke_with_terminate_stops_a_running_task_on_both_workers() {
    both("revoke_terminate_running", &["-c1"]);
}

/// With late ack the terminated task's message is acked all the same (Celery's
/// Request._announce_revoked acks), so nothing is left in `unacked` to come back.
#[test]
fn revoke_with_terminate_under_the_jwql_command_line_matches_celery() {
    both("revoke_terminate_running", &jwql_with_events());
}

// ---- 5. remote control ------------------------------------------------------------------

#[test]
fn control_time_limit_yields_to_the_limits_in_the_message() {
    both("control_time_limit", &["-c1"]);
}

#[test]
fn control_rate_limit_spaces_tasks_one_token_per_second() {
    both("control_rate_limit", &["-c2"]);
}

// ---- 6. chords --------------------------------------------------------------------------

#[test]
fn chord_callback_gets_the_header_results_on_both_workers() {
    both("chord_success", &["-c2"]);
}

#[test]
fn chord_with_a_failing_member_fails_the_callback_with_chord_error() {
    both("chord_failing_member", &["-c2"]);
}

// ---- 7. events --------------------------------------------------------------------------

#[test]
fn task_events_match_celery_in_order_and_fields() {
    both("task_events", &["-c1", "-E"]);
}

// ---- 8. worker flags --------------------------------------------------------------------

/// `-c 0` is "one slot per CPU" for Celery (billiard's cpu_count); celeriac must report the
/// same max-concurrency in `inspect stats`.
#[test]
fn concurrency_zero_means_one_slot_per_cpu() {
    both("stats_concurrency", &["-c", "0"]);
}
