//! One request's run: from a free slot to a settled message. It reads its message once,
//! checks revocation and the idempotency guard, acks early (Celery's default) or plans the
//! late ack, hands the task to the executor under the effective time limits, and gives the
//! outcome to [`super::outcome`].

use super::callbacks;
use super::child::ChildRequest;
use super::executor::ExecOutcome;
use super::outcome;
use super::state::{self, Phase as HeldPhase};
use super::worker::Worker;
use celeriac::protocol::{ResultMeta, State as TaskState, TaskMessage, time};
use celeriac::transport::Delivery;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// `revoked` (in the revoked set) or `expired` (past its `expires`), if either applies.
pub(super) fn revoked_reason(inner: &Worker, msg: &TaskMessage) -> Option<&'static str> {
    if inner
        .state
        .revoked
        .lock()
        .expect("revoked")
        .contains(&msg.headers.id)
    {
        return Some("revoked");
    }
    if let Ok(Some(exp)) = msg.headers.expires_time()
        && exp <= chrono::Utc::now()
    {
        return Some("expired");
    }
    None
}

/// A message this worker holds, from intake to settlement: its delivery tag (the key of
/// its read view in [`state::State::held`], which `inspect` and `revoke` use), the decoded
/// message and the delivery, shared with that view. It moves intake → dispatch → [`run`];
/// nothing looks it up again.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub(super) msg: Arc<TaskMessage>,
    pub(super) delivery: Arc<Delivery>,
}

impl Request {
    /// The delivery tag: what the request is known by while it is held (a retry published
    /// while the original still runs has the same task id and a tag of its own).
    pub(super) fn tag(&self) -> &str {
        &self.delivery.tag
    }
}

/// When the message of a running request is acked, decided once as it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckPlan {
    /// Acked as the request starts (Celery's default: when the pool accepts the job); a
    /// message to give back is published again.
    Early,
    /// Acked after the outcome is stored (`task_acks_late`).
    Late {
        /// A process lost mid-task requeues the message (`task_reject_on_worker_lost`).
        reject_on_worker_lost: bool,
        /// Failures and timeouts are acked too (`task_acks_on_failure_or_timeout`, default
        /// true); when false, a failure is rejected (removed) and a timeout requeued.
        on_failure_or_timeout: bool,
    },
}

impl AckPlan {
    /// The plan for a task named `task`: a Python task's own attributes (`Task.acks_late`,
    /// which Celery defaults from `task_acks_late`), else the worker's flags; the flags can
    /// only add late acking, as `--acks-late` is the worker-wide setting.
    fn of(
        cfg: &super::config::WorkerConfig,
        rust: Option<&celeriac::task::TaskOptions>,
        task: &str,
    ) -> Self {
        if let Some(t) = cfg.python_tasks.get(task) {
            if t.acks_late || cfg.acks_late {
                return AckPlan::Late {
                    reject_on_worker_lost: t.reject_on_worker_lost || cfg.reject_on_worker_lost,
                    on_failure_or_timeout: t.acks_on_failure_or_timeout
                        && cfg.acks_on_failure_or_timeout,
                };
            }
            return AckPlan::Early;
        }
        // A Rust task's own `acks_late = true` (`#[celeriac::task(acks_late = true)]`), as
        // a Python task's attribute, with the same worker-wide flag beside it.
        if cfg.acks_late || rust.and_then(|o| o.acks_late).unwrap_or(false) {
            AckPlan::Late {
                reject_on_worker_lost: cfg.reject_on_worker_lost,
                on_failure_or_timeout: cfg.acks_on_failure_or_timeout,
            }
        } else {
            AckPlan::Early
        }
    }
}

/// Run a request in the slot it was given and settle its message.
pub(super) async fn run(worker: &Arc<Worker>, request: Request) {
    let Request { msg, delivery } = &request;
    let tag = request.tag();
    if !worker.state.is_held(tag) {
        // A stopping worker gave the message back while this request waited for its slot.
        return;
    }
    let id = msg.headers.id.as_str();
    if let Some(reason) = revoked_reason(worker, msg) {
        outcome::revoke_message(worker, msg, delivery, reason).await;
        worker.state.release(tag);
        return;
    }
    // Idempotency guard: a redelivered message whose task already succeeded is acked, not re-run.
    let redelivered = msg
        .headers
        .extra
        .get("redelivered")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if worker.cfg.skip_succeeded
        && redelivered
        && let Ok(Some(done)) = worker.backend.get(id).await
        && done.status == TaskState::Success
    {
        tracing::warn!(task_id = %id, "redelivered task already succeeded; acking without running it again");
        // A crash may have fallen between storing the result and the chord join: join again
        // (the join counts each header task once, so a second call cannot count twice).
        callbacks::chord_part(worker, msg, &TaskState::Success, &done.result).await;
        outcome::ack(worker, delivery).await;
        worker.state.release(tag);
        return;
    }
    let (term_tx, term_rx) = mpsc::unbounded_channel();
    let plan = AckPlan::of(
        &worker.cfg,
        worker.rust_options(&msg.headers.task),
        &msg.headers.task,
    );
    worker.state.start(
        tag,
        term_tx,
        time::unix_now(),
        matches!(plan, AckPlan::Early),
    );
    if plan == AckPlan::Early {
        // Celery acks when the pool accepts the job; the ack's round trip overlaps the run.
        let w = worker.clone();
        let d = delivery.clone();
        tokio::spawn(async move { outcome::ack(&w, &d).await });
    }
    worker
        .events
        .task("task-started", outcome::fields(&[("uuid", json!(id))]));
    // A Python task's tracer stores STARTED itself (with the child's pid), as Celery's does.
    if worker.cfg.track_started && !worker.cfg.python_tasks.contains_key(&msg.headers.task) {
        let mut m = ResultMeta::new(
            id,
            TaskState::Started,
            json!({"pid": std::process::id(), "hostname": worker.cfg.node}),
        );
        m.children = Value::Null;
        outcome::store(worker, &outcome::meta_for(worker, msg, m)).await;
    }
    let (hard, soft) = effective_time_limits(
        &msg.headers.timelimit,
        worker
            .state
            .time_limits
            .lock()
            .expect("time limits")
            .get(&msg.headers.task)
            .copied(),
        (worker.cfg.time_limit, worker.cfg.soft_time_limit),
    );
    let req = ChildRequest {
        task: msg.headers.task.clone(),
        id: id.to_string(),
        args: msg.args.clone(),
        kwargs: msg.kwargs.clone(),
        retries: msg.headers.retries,
        hostname: worker.cfg.node.clone(),
        soft_time_limit: soft.map(|l| l.after.as_secs_f64()),
        delivery_info: state::delivery_info(msg),
    };
    let job = worker.jobs.fetch_add(1, Ordering::Relaxed);
    let t0 = Instant::now();
    let state = worker.state.clone();
    // A Rust task's `update_state`: stored at once, as Celery's `update_state` writes the
    // backend from the task itself. Stores are made in order on the caller's thread (a
    // runtime thread: the child's reader, or the in-process task), so the final result,
    // stored after the run, is always the last word.
    let updates = {
        let w = worker.clone();
        let msg = msg.clone();
        celeriac::task::StateSink::new(move |state, meta| {
            let state = TaskState::parse(state);
            let m = outcome::meta_for(
                &w,
                &msg,
                ResultMeta::new(&msg.headers.id, state, meta.clone()),
            );
            let w = w.clone();
            tokio::task::block_in_place(|| w.main.block_on(outcome::store(&w, &m)));
        })
    };
    let outcome = worker
        .executor
        .run(
            req,
            delivery.clone(),
            hard.as_ref().map(|l| l.after),
            Box::new(move |pid| state.set_worker_pid(tag, pid)),
            term_rx,
            updates,
        )
        .await;
    let runtime = t0.elapsed().as_secs_f64();
    if !matches!(outcome, ExecOutcome::Done(_) | ExecOutcome::Traced(_)) {
        release_locks_of_dead_child(worker, tag);
    }
    let shown = hard.map(|l| l.shown);
    outcome::settle(worker, &request, plan, outcome, shown, runtime, job).await;
    worker.state.count_done(&msg.headers.task);
    worker.state.release(tag);
}

/// A time limit a request runs under.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Limit {
    /// How long the task may run.
    pub(super) after: Duration,
    /// The number Celery puts in `TimeLimitExceeded(...)` for it (`job._timeout`): the
    /// message's number as sent (`1` stays an int), else a float, as the worker's
    /// `--time-limit` and `control time_limit` are parsed as floats (`1.0`).
    pub(super) shown: Value,
}

/// The `(hard, soft)` limits a request runs under. Each limit is taken, in Celery's order
/// (`Request.execute_using_pool`: `soft_time_limit or task.soft_time_limit`, the task's
/// attribute being what `control time_limit` changes, then the pool's defaults), from the
/// message, then a `control time_limit` for the task's name, then the worker's flags. A
/// zero or negative value counts as unset, as Python's `or` treats `0`.
pub(super) fn effective_time_limits(
    message: &[Option<serde_json::Number>; 2],
    control: Option<state::TimeLimits>,
    worker: (Option<Duration>, Option<Duration>),
) -> (Option<Limit>, Option<Limit>) {
    let pick = |m: &Option<serde_json::Number>, c: Option<f64>, w: Option<Duration>| {
        let set = |s: &f64| *s > 0.0;
        if let Some(n) = m.as_ref().filter(|n| n.as_f64().is_some_and(|s| set(&s))) {
            let secs = n.as_f64().unwrap_or_default();
            return Some(Limit {
                after: Duration::from_secs_f64(secs),
                shown: Value::Number(n.clone()),
            });
        }
        c.filter(set)
            .map(Duration::from_secs_f64)
            .or(w)
            .map(|after| Limit {
                after,
                shown: json!(after.as_secs_f64()),
            })
    };
    let (ch, cs) = control.unwrap_or((None, None));
    (
        pick(&message[0], ch, worker.0),
        pick(&message[1], cs, worker.1),
    )
}

/// A task's process died or was killed: free the global locks it held at once (instead of
/// after their TTL), as the lock library records the holder's pid beside each lock.
pub(super) fn release_locks_of_dead_child(inner: &Worker, tag: &str) {
    let (pid, task_id) = match inner
        .state
        .held
        .lock()
        .expect("held")
        .get(tag)
        .map(|h| (h.phase.clone(), h.msg.headers.id.clone()))
    {
        Some((
            HeldPhase::Active {
                worker_pid: Some(pid),
                ..
            },
            task_id,
        )) if pid != std::process::id() => (pid, task_id),
        _ => return,
    };
    tokio::spawn(async move {
        let url = locks::Client::url_from_env();
        let released = match locks::Client::open(&url) {
            Ok(client) => locks::admin::release_held_by_pid(&client, pid).await,
            Err(e) => Err(e),
        };
        match released {
            Ok(names) if !names.is_empty() => {
                tracing::warn!(%task_id, pid, locks = ?names, "released the locks of a task whose process died")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%task_id, pid, error = %e, "could not release the locks of a dead task process")
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: Value) -> Option<serde_json::Number> {
        match v {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    #[test]
    fn the_messages_limits_win_and_keep_the_number_as_sent() {
        let (hard, soft) = effective_time_limits(
            &[n(json!(1)), n(json!(0.5))],
            Some((Some(9.0), Some(8.0))),
            (Some(Duration::from_secs(30)), None),
        );
        let hard = hard.expect("hard");
        assert_eq!(hard.after, Duration::from_secs(1));
        assert_eq!(hard.shown, json!(1), "an int in the message stays an int");
        assert_eq!(soft.expect("soft").after, Duration::from_millis(500));
    }

    #[test]
    fn control_limits_come_before_the_workers_and_are_shown_as_floats() {
        let (hard, soft) = effective_time_limits(
            &[None, n(json!(0))],
            Some((Some(2.0), Some(1.0))),
            (Some(Duration::from_secs(30)), Some(Duration::from_secs(20))),
        );
        let hard = hard.expect("hard");
        assert_eq!(hard.after, Duration::from_secs(2));
        assert_eq!(hard.shown, json!(2.0));
        // A zero in the message is unset, as Python's `or` reads it.
        assert_eq!(soft.expect("soft").after, Duration::from_secs(1));
    }

    #[test]
    fn the_workers_flags_apply_last() {
        let (hard, soft) =
            effective_time_limits(&[None, None], None, (Some(Duration::from_secs(3)), None));
        assert_eq!(hard.expect("hard").shown, json!(3.0));
        assert_eq!(soft, None);
    }
}
