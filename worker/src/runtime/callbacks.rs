//! What happens around a task's outcome besides its own result (`celery/app/trace.py`):
//! `link` callbacks and the next `chain` step are published before the result is stored (so
//! the parent's `children` names them), `link_error` callbacks on failure, and retries
//! re-published as a new message with the same id.

use super::outcome::{fields, meta_for, store};
use super::worker::Worker;
use celeriac::protocol::{ExceptionInfo, ResultMeta, State as TaskState, TaskMessage, time};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// A signature (`{"task", "args", "kwargs", "options", "subtask_type", "immutable"}`) turned
/// into a message, as a child of `parent`. `prepend` is the parent's return value for
/// callbacks (unless the signature is immutable).
fn message_from_signature(
    sig: &Value,
    parent: &TaskMessage,
    prepend: Option<&Value>,
) -> Option<(TaskMessage, String, u8)> {
    let task = sig.get("task")?.as_str()?;
    let mut args: Vec<Value> = sig
        .get("args")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let kwargs: Map<String, Value> = sig
        .get("kwargs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let immutable = sig
        .get("immutable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(v) = prepend
        && !immutable
    {
        args.insert(0, v.clone());
    }
    let opts = sig
        .get("options")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut msg = TaskMessage::new(task, args, kwargs);
    if let Some(id) = opts.get("task_id").and_then(Value::as_str) {
        msg.headers.id = id.to_string();
    }
    msg.headers.parent_id = Some(parent.headers.id.clone());
    msg.headers.root_id = parent
        .headers
        .root_id
        .clone()
        .or_else(|| Some(parent.headers.id.clone()));
    msg.headers.origin = Some(celeriac::client::anon_nodename());
    if let Some(g) = opts.get("group_id").and_then(Value::as_str) {
        msg.headers.group = Some(g.to_string());
    }
    msg.properties.reply_to = opts
        .get("reply_to")
        .and_then(Value::as_str)
        .map(String::from);
    let queue = opts
        .get("queue")
        .and_then(Value::as_str)
        .or_else(|| opts.get("routing_key").and_then(Value::as_str))
        .unwrap_or(celeriac::transport::DEFAULT_QUEUE)
        .to_string();
    let priority = opts
        .get("priority")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(9) as u8;
    Some((msg, queue, priority))
}

async fn publish(inner: &Worker, msg: &TaskMessage, queue: &str, priority: u8) -> bool {
    let env = msg.to_envelope(queue, priority).encode();
    match inner.broker.publish(queue, priority, &env).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(task_id = %msg.headers.id, error = %e, "could not publish a callback");
            false
        }
    }
}

/// Publish `link` callbacks and the next chain step; returns the `children` value.
pub(super) async fn on_success(inner: &Arc<Worker>, msg: &TaskMessage, value: &Value) -> Value {
    let mut children = Vec::new();
    for sig in msg.embed.callbacks.iter().flatten() {
        if let Some((m, q, p)) = message_from_signature(sig, msg, Some(value))
            && publish(inner, &m, &q, p).await
        {
            children.push(json!([[m.headers.id, null], null]));
        }
    }
    if let Some(chain) = &msg.embed.chain
        && let Some((last, rest)) = chain.split_last()
        && let Some((mut m, q, p)) = message_from_signature(last, msg, Some(value))
    {
        // The chain list is reversed: the last element runs next and carries the rest.
        m.embed.chain = (!rest.is_empty()).then(|| rest.to_vec());
        if publish(inner, &m, &q, p).await {
            children.push(json!([[m.headers.id, null], null]));
        }
    }
    Value::Array(children)
}

/// Publish `link_error` callbacks with the failed task's id as argument (Celery's form for
/// errbacks it cannot introspect: `errback.apply_async((task_id,))`).
pub(super) async fn on_failure(inner: &Arc<Worker>, msg: &TaskMessage) {
    for sig in msg.embed.errbacks.iter().flatten() {
        if let Some((m, q, p)) = message_from_signature(sig, msg, Some(&json!(msg.headers.id))) {
            publish(inner, &m, &q, p).await;
        }
    }
}

/// `Task.retry()`: a new message with the same id, `retries + 1`, `eta = now + countdown`,
/// `parent_id` = own id, same queue and priority; RETRY stored; `task-retried` sent.
pub(super) async fn retry(
    inner: &Arc<Worker>,
    msg: &TaskMessage,
    countdown: f64,
    exc: &ExceptionInfo,
) {
    let mut next = msg.clone();
    next.headers.retries += 1;
    let eta = chrono::Utc::now() + chrono::Duration::milliseconds((countdown * 1000.0) as i64);
    next.headers.eta = Some(time::iso(eta));
    next.headers.parent_id = Some(msg.headers.id.clone());
    next.headers.extra.remove("redelivered");
    next.properties.delivery_tag = String::new();
    next.properties.delivery_info.extra.clear();
    let queue = msg.queue().to_string();
    let queue = if queue.is_empty() {
        celeriac::transport::DEFAULT_QUEUE.to_string()
    } else {
        queue
    };
    let published = publish(inner, &next, &queue, msg.properties.priority).await;
    let tb = format!(
        "Traceback (most recent call last):\ncelery.exceptions.Retry: Retry in {countdown}s: {}\n",
        exc.repr()
    );
    let mut meta = meta_for(
        inner,
        msg,
        ResultMeta::exception(&msg.headers.id, TaskState::Retry, exc, Some(tb.clone())),
    );
    if published {
        // `self.retry()` sends the retry from inside the task, so Celery's `send_task` adds
        // it to the request's children, and the RETRY meta names it (same id, no parent).
        meta.children = json!([[[msg.headers.id, null], null]]);
    }
    store(inner, &meta).await;
    inner.events.task(
        "task-retried",
        fields(&[
            ("uuid", json!(msg.headers.id)),
            ("exception", json!(exc.repr())),
            ("traceback", json!(tb)),
        ]),
    );
}

/// A chord header task finished: add its result to the join and, when it completes the
/// chord, dispatch the callback exactly once (or fail it with `ChordError` when a header
/// task failed), as Celery 5.7's `on_chord_part_return` does.
pub(super) async fn chord_part(
    inner: &Arc<Worker>,
    msg: &TaskMessage,
    state: &TaskState,
    result: &Value,
) {
    let (Some(group), Some(body)) = (&msg.headers.group, &msg.embed.chord) else {
        return;
    };
    let index = msg.headers.group_index.unwrap_or(0);
    let parts = match inner
        .backend
        .chord_part_return(group, &msg.headers.id, index, state, result)
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(group, error = %e, "chord join failed");
            return;
        }
    };
    let callback_id = body
        .get("options")
        .and_then(|o| o.get("task_id"))
        .and_then(Value::as_str)
        .map(String::from);
    if let Some(bad) = parts
        .iter()
        .find(|p| matches!(p.state, TaskState::Failure | TaskState::Revoked))
    {
        let cause = serde_json::from_value::<ExceptionInfo>(bad.result.clone())
            .map(|e| e.repr())
            .unwrap_or_else(|_| bad.result.to_string());
        let exc = ExceptionInfo::new(
            "celery.exceptions",
            "ChordError",
            format!("Dependency {} raised {cause}", bad.task_id),
        );
        if let Some(cid) = callback_id {
            let meta =
                ResultMeta::exception(&cid, TaskState::Failure, &exc, Some(exc.traceback("chord")));
            store(inner, &meta).await;
        }
    } else {
        let values: Vec<Value> = parts.into_iter().map(|p| p.result).collect();
        if let Some((m, q, p)) = message_from_signature(body, msg, Some(&Value::Array(values))) {
            publish(inner, &m, &q, p).await;
        }
    }
    if let Err(e) = inner.backend.chord_done(group).await {
        tracing::warn!(group, error = %e, "could not clean up the chord join");
    }
}
