//! Settling a message: results stored (with the late ack in the same atomic step when the
//! backend is the broker's database), events, callbacks and chord joins, acks, requeues and
//! the REVOKED of discarded requests (`celery/app/trace.py`, `Request.on_failure`,
//! `Request._announce_revoked`). Every result and ack write of the worker goes through here,
//! with retries for what a reconnect can mend.

use super::callbacks;
use super::child::ChildOutcome;
use super::executor::ExecOutcome;
use super::request::{AckPlan, Request};
use super::shutdown::Phase;
use super::worker::Worker;
use super::zygote::PyReport;
use celeriac::protocol::result::ExtendedFields;
use celeriac::protocol::{ExceptionInfo, ResultMeta, State as TaskState, TaskMessage};
use celeriac::retry::{Backoff, retry};
use celeriac::transport::Delivery;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Run a result or ack write until it succeeds, with the library's retry policy: 100 ms
/// doubling to 2 s, at most `attempts` times, and not at all for an error waiting cannot
/// mend (a wrong password, an ACL denial, a script error). A Redis restart or failover
/// costs retries, not results or acks.
pub(super) async fn retrying<T, E, F, Fut>(what: &str, key: &str, attempts: u32, op: F) -> Option<T>
where
    E: std::fmt::Display + celeriac::retry::Retryable,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let on_retry =
        |attempt: u32, e: &E| tracing::warn!(%key, attempt, error = %e, "{what} failed; retrying");
    match retry(attempts, backoff, on_retry, op).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(%key, error = %e, "giving up: {what}");
            None
        }
    }
}

pub(super) async fn ack(inner: &Worker, d: &Delivery) {
    // If the ack is given up, the message stays in unacked for the sweeper, and the
    // idempotency guard sees its SUCCESS when it comes back.
    retrying("ack", &d.tag, 40, || inner.broker.ack(&d.tag)).await;
}

/// Store `meta`; when `ack_tag` is given and the broker is the backend's database, ack that
/// message in the same atomic step. Returns whether the message was acked.
pub(super) async fn store_acking(inner: &Worker, meta: &ResultMeta, ack_tag: Option<&str>) -> bool {
    let Some(tag) = ack_tag.filter(|_| inner.same_database) else {
        store(inner, meta).await;
        return false;
    };
    retrying("storing the result", &meta.task_id, 60, || {
        inner.backend.store_and_ack(meta, tag)
    })
    .await
    .is_some()
}

pub(super) async fn store(inner: &Worker, meta: &ResultMeta) {
    retrying("storing the result", &meta.task_id, 60, || {
        inner.backend.store(meta)
    })
    .await;
}

pub(super) fn fields(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Add group/parent/extended fields to a meta, as `_get_result_meta` does.
pub(super) fn meta_for(inner: &Worker, msg: &TaskMessage, mut meta: ResultMeta) -> ResultMeta {
    meta.group_id = msg.headers.group.clone();
    meta.parent_id = msg.headers.parent_id.clone();
    if inner.cfg.result_extended {
        meta.extended = Some(ExtendedFields {
            name: msg.headers.task.clone(),
            args: msg.args.clone(),
            kwargs: msg.kwargs.clone(),
            worker: inner.cfg.node.clone(),
            retries: msg.headers.retries,
            queue: msg.queue().to_string(),
        });
    }
    meta
}

/// What to do with the message once the outcome is stored.
enum AckAction {
    /// Ack it (a no-op under early ack, which acked when the request started). Also what
    /// kombu's `reject(requeue=False)` amounts to on Redis: Celery rejects a late-acked
    /// failure that way when `task_acks_on_failure_or_timeout` is false.
    Ack,
    /// Give it back to its queue.
    Requeue,
    /// Nothing left to do: the ack rode with the stored result.
    Nothing,
}

async fn republish_front(inner: &Worker, d: &Delivery) {
    if let Err(e) = inner.broker.republish_front(d).await {
        tracing::error!(tag = %d.tag, error = %e, "could not put the message back");
    }
}

/// Settle a request's message after its run: store the outcome, send its events, run its
/// callbacks and chord join, then ack, requeue or republish it as its [`AckPlan`] says.
pub(super) async fn settle(
    worker: &Arc<Worker>,
    request: &Request,
    plan: AckPlan,
    outcome: ExecOutcome,
    hard_limit: Option<Value>,
    runtime: f64,
    job: u64,
) {
    let Request { msg, delivery } = request;
    let ran = Ran {
        runtime,
        job,
        plan,
        hard_limit,
    };
    match finish(worker, msg, outcome, ran, &delivery.tag).await {
        AckAction::Ack if plan != AckPlan::Early => ack(worker, delivery).await,
        AckAction::Requeue if plan == AckPlan::Early => {
            // Already acked: give the message back by publishing it again, front of the queue.
            republish_front(worker, delivery).await;
        }
        AckAction::Requeue => {
            if let Err(e) = worker
                .broker
                .requeue(delivery, worker.shutdown.phase() < Phase::Cold)
                .await
            {
                tracing::error!(task_id = %msg.headers.id, error = %e, "requeue failed; the message stays in unacked");
            }
        }
        _ => {}
    }
}

/// How a request ran, beside its outcome.
struct Ran {
    /// Seconds from start to outcome.
    runtime: f64,
    /// The pool's job number (Celery's `Job: N` in WorkerLostError).
    job: u64,
    plan: AckPlan,
    /// The hard limit as Celery shows it in `TimeLimitExceeded(...)`
    /// ([`super::request::Limit::shown`]).
    hard_limit: Option<Value>,
}

/// Turn an outcome into stored state, events, callbacks and the ack decision
/// (`celery/app/trace.py` and `Request.on_failure` / `on_timeout`).
async fn finish(
    inner: &Arc<Worker>,
    msg: &TaskMessage,
    outcome: ExecOutcome,
    ran: Ran,
    tag: &str,
) -> AckAction {
    let Ran {
        runtime,
        job,
        plan,
        hard_limit,
    } = ran;
    // With late ack, the result and the ack can be written in one step.
    let late_tag = matches!(plan, AckPlan::Late { .. }).then_some(tag);
    let id = &msg.headers.id;
    let name = &msg.headers.task;
    let cold = inner.shutdown.phase() >= Phase::Cold;
    match outcome {
        ExecOutcome::Done(ChildOutcome::Ok(value)) => {
            let children = callbacks::on_success(inner, msg, &value).await;
            let mut acked = false;
            if msg.headers.ignore_result != Some(true) && !inner.ignores_result(name) {
                let mut meta = meta_for(
                    inner,
                    msg,
                    ResultMeta::new(id, TaskState::Success, value.clone()),
                );
                meta.children = children;
                // A chord member acks only after its join step, below.
                let tag = late_tag.filter(|_| msg.embed.chord.is_none());
                acked = store_acking(inner, &meta, tag).await;
            }
            callbacks::chord_part(inner, msg, &TaskState::Success, &value).await;
            tracing::info!(task_id = %id, task = %name, runtime, "Task {name}[{id}] succeeded in {runtime:.6}s: {}", celeriac::protocol::pyrepr::repr(&value));
            inner.events.task(
                "task-succeeded",
                fields(&[
                    ("uuid", json!(id)),
                    ("result", json!(celeriac::protocol::pyrepr::repr(&value))),
                    ("runtime", json!(runtime)),
                ]),
            );
            if acked {
                AckAction::Nothing
            } else {
                AckAction::Ack
            }
        }
        ExecOutcome::Done(ChildOutcome::Err { exc, traceback }) => {
            let tb = traceback.unwrap_or_else(|| exc.traceback(name));
            if fail(inner, msg, &exc, Some(tb), late_tag).await {
                AckAction::Nothing
            } else {
                AckAction::Ack
            }
        }
        ExecOutcome::Done(ChildOutcome::Retry {
            countdown,
            max_retries,
            exc,
        }) => {
            if max_retries.is_some_and(|m| msg.headers.retries >= m) {
                let tb = exc.traceback(name);
                fail(inner, msg, &exc, Some(tb), None).await;
                return AckAction::Ack;
            }
            callbacks::retry(inner, msg, countdown, &exc).await;
            AckAction::Ack
        }
        ExecOutcome::Traced(report) => traced(inner, msg, report, plan),
        ExecOutcome::TimeLimit(secs) => {
            tracing::error!(task_id = %id, "Hard time limit ({secs}s) exceeded for {name}[{id}]");
            if let AckPlan::Late {
                on_failure_or_timeout: false,
                ..
            } = plan
            {
                // `Request.on_timeout`: `reject(requeue=True)` when timeouts are not acked.
                return AckAction::Requeue;
            }
            // `TimeLimitExceeded(job._timeout)`: the limit as Celery holds it.
            let limit = hard_limit.unwrap_or_else(|| json!(secs));
            let exc = ExceptionInfo {
                exc_message: vec![limit],
                ..ExceptionInfo::time_limit(secs)
            };
            fail(inner, msg, &exc, None, None).await;
            AckAction::Ack
        }
        ExecOutcome::Terminated(sig) => {
            store_revoked(inner, msg, "terminated", Some(sig)).await;
            AckAction::Ack
        }
        ExecOutcome::WorkerLost(detail) => {
            if cold {
                // Killed by our own cold shutdown: give the message back, store nothing.
                return AckAction::Requeue;
            }
            let detail = format!("{detail} Job: {job}.").replace(". Job:", " Job:");
            tracing::error!(task_id = %id, "Process running {name}[{id}] lost: {detail}");
            if let AckPlan::Late {
                reject_on_worker_lost: true,
                ..
            } = plan
            {
                return AckAction::Requeue;
            }
            let exc = ExceptionInfo::worker_lost(detail.clone());
            let tb = format!(
                "Traceback (most recent call last):\nbilliard.exceptions.WorkerLostError: {detail}\n"
            );
            fail(inner, msg, &exc, Some(tb), None).await;
            AckAction::Ack
        }
    }
}

/// The parent's part after Celery's tracer ran a Python task in a child and stored its
/// result there (`Request.on_success` / `on_failure` / `on_retry`): events, and what becomes
/// of the message.
fn traced(inner: &Worker, msg: &TaskMessage, report: PyReport, plan: AckPlan) -> AckAction {
    let id = &msg.headers.id;
    let name = &msg.headers.task;
    match report {
        PyReport::Success { result, runtime } => {
            tracing::info!(task_id = %id, task = %name, runtime, "Task {name}[{id}] succeeded in {runtime:.6}s: {result}");
            inner.events.task(
                "task-succeeded",
                fields(&[
                    ("uuid", json!(id)),
                    ("result", json!(result)),
                    ("runtime", json!(runtime)),
                ]),
            );
            AckAction::Ack
        }
        PyReport::Failure {
            exception,
            traceback,
        } => {
            tracing::error!(task_id = %id, task = %name, "Task {name}[{id}] raised unexpected: {exception}");
            exception_event(inner, "task-failed", id, &exception, traceback.as_deref());
            // A late ack with `acks_on_failure_or_timeout` false is kombu's
            // `reject(requeue=False)`, which on Redis removes the message as an ack does.
            AckAction::Ack
        }
        PyReport::Retry {
            exception,
            traceback,
        } => {
            tracing::info!(task_id = %id, task = %name, "Task {name}[{id}] retry: {exception}");
            exception_event(inner, "task-retried", id, &exception, traceback.as_deref());
            AckAction::Ack
        }
        PyReport::Ignored => AckAction::Ack,
        PyReport::Rejected {
            requeue,
            exception,
            traceback,
        } => {
            if requeue {
                tracing::warn!(task_id = %id, task = %name, "Task {name}[{id}] rejected and requeued: {exception}");
                // An early-acked message cannot be rejected any more (kombu: `reject` on an
                // acknowledged message does nothing).
                return match plan {
                    AckPlan::Late { .. } => AckAction::Requeue,
                    AckPlan::Early => AckAction::Ack,
                };
            }
            exception_event(inner, "task-failed", id, &exception, traceback.as_deref());
            AckAction::Ack
        }
        // Turned into a lost worker by the executor; listed so a new report kind is not
        // silently acked.
        PyReport::Lost { .. } => AckAction::Ack,
    }
}

/// `task-failed` / `task-retried` with the exception and traceback a Python child reported.
fn exception_event(inner: &Worker, kind: &str, id: &str, exception: &str, traceback: Option<&str>) {
    inner.events.task(
        kind,
        fields(&[
            ("uuid", json!(id)),
            ("exception", json!(exception)),
            ("traceback", json!(traceback)),
        ]),
    );
}

/// Store FAILURE (acking with it when `ack_tag` is given and possible); returns whether acked.
pub(super) async fn fail(
    inner: &Arc<Worker>,
    msg: &TaskMessage,
    exc: &ExceptionInfo,
    tb: Option<String>,
    ack_tag: Option<&str>,
) -> bool {
    let id = &msg.headers.id;
    tracing::error!(task_id = %id, task = %msg.headers.task, "Task {}[{}] raised unexpected: {}", msg.headers.task, id, exc.repr());
    callbacks::on_failure(inner, msg).await;
    let meta = meta_for(
        inner,
        msg,
        ResultMeta::exception(id, TaskState::Failure, exc, tb.clone()),
    );
    let acked = if inner.ignores_result(&msg.headers.task) {
        false
    } else {
        store_acking(inner, &meta, ack_tag.filter(|_| msg.embed.chord.is_none())).await
    };
    callbacks::chord_part(inner, msg, &TaskState::Failure, &meta.result).await;
    inner.events.task(
        "task-failed",
        fields(&[
            ("uuid", json!(id)),
            ("exception", json!(exc.repr())),
            ("traceback", json!(tb.unwrap_or_default())),
        ]),
    );
    acked
}

/// Discard a revoked/expired message: REVOKED stored, `task-revoked`, ack
/// (`Request._announce_revoked`).
pub(super) async fn revoke_message(inner: &Worker, msg: &TaskMessage, d: &Delivery, reason: &str) {
    let id = &msg.headers.id;
    tracing::info!(task_id = %id, %reason, "Discarding revoked task: {}[{}]", msg.headers.task, id);
    store_revoked(inner, msg, reason, None).await;
    ack(inner, d).await;
}

/// Store REVOKED with `TaskRevokedError(reason)` and send `task-revoked`: for a request
/// discarded before it ran (`reason` "revoked" or "expired") or one terminated by `signal`.
async fn store_revoked(inner: &Worker, msg: &TaskMessage, reason: &str, signal: Option<i32>) {
    let id = &msg.headers.id;
    let exc = ExceptionInfo::revoked(reason);
    let meta = meta_for(
        inner,
        msg,
        ResultMeta::exception(id, TaskState::Revoked, &exc, None),
    );
    store(inner, &meta).await;
    inner.events.task(
        "task-revoked",
        fields(&[
            ("uuid", json!(id)),
            ("terminated", json!(signal.is_some())),
            ("signum", json!(signal)),
            ("expired", json!(reason == "expired")),
        ]),
    );
}

/// Put an undecodable or unrunnable message on the dead-letter list (acking it atomically).
///
/// Beyond Celery (which rejects such a message silently, leaving its caller waiting forever):
/// when the message still names a task id, a FAILURE is stored for it, so a client blocked in
/// `get()` wakes with `ContentDisallowed` (a refused serializer) or `InvalidTaskError`.
pub(super) async fn dead_letter(
    inner: &Worker,
    d: &Delivery,
    err: &celeriac::protocol::ProtocolError,
) {
    let reason = err.to_string();
    tracing::error!(tag = %d.tag, queue = %d.queue(), %reason, "message moved to the dead-letter list");
    if let Err(e) = inner.broker.ack_dead(d, &reason).await {
        tracing::error!(error = %e, "could not dead-letter the message; it stays in unacked");
        return;
    }
    if let Some(id) = celeriac::transport::task_id_of(&d.raw) {
        let exc = match err {
            celeriac::protocol::ProtocolError::UnsupportedContentType(_) => {
                ExceptionInfo::new("kombu.exceptions", "ContentDisallowed", reason.clone())
            }
            _ => ExceptionInfo::new("celery.exceptions", "InvalidTaskError", reason.clone()),
        };
        store_dead_letter_failure(inner, &id, &exc).await;
    }
}

/// Store the FAILURE that wakes a client waiting in `get()` on a dead-lettered message
/// (whether the claim refused it or the worker could not decode it).
pub(super) async fn store_dead_letter_failure(inner: &Worker, id: &str, exc: &ExceptionInfo) {
    let mut meta = ResultMeta::exception(id, TaskState::Failure, exc, None);
    meta.children = Value::Null;
    store(inner, &meta).await;
}

/// A message for a task this worker does not serve: FAILURE `NotRegistered`, `task-failed`,
/// ack (Celery: `reject(requeue=False)`, which on Redis removes the message too).
pub(super) async fn not_registered(inner: &Worker, msg: &TaskMessage, d: &Delivery) {
    let id = &msg.headers.id;
    tracing::error!(task = %msg.headers.task, "Received unregistered task of type {:?}", msg.headers.task);
    let exc = ExceptionInfo::not_registered(&msg.headers.task);
    let tb = exc.traceback(&msg.headers.task);
    let meta = meta_for(
        inner,
        msg,
        ResultMeta::exception(id, TaskState::Failure, &exc, Some(tb.clone())),
    );
    store(inner, &meta).await;
    inner.events.task(
        "task-failed",
        fields(&[
            ("uuid", json!(id)),
            ("exception", json!(exc.repr())),
            ("traceback", json!(tb)),
        ]),
    );
    ack(inner, d).await;
}
