//! Result metas as the Redis result backend stores them (`celery-task-meta-<id>`), task
//! states, and the JSON exception encoding Python's `AsyncResult.get()` re-raises.
//!
//! Key order mirrors `celery/backends/base.py` `_get_result_meta`: `status, result,
//! traceback, children, date_done, [group_id], [parent_id], [name, args, kwargs, worker,
//! retries, queue], task_id`.

use super::{ProtocolError, json, time};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::fmt;

/// Task states (`celery/states.py`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    /// No result stored yet.
    Pending,
    /// Received by a worker (events only).
    Received,
    /// Started (stored only with `task_track_started`).
    Started,
    /// Finished with a value.
    Success,
    /// Raised an exception.
    Failure,
    /// Will be retried.
    Retry,
    /// Revoked (by control, expiry, termination, or celeriac's purge).
    Revoked,
    /// Rejected (events only).
    Rejected,
    /// A custom state string.
    Other(String),
}

impl State {
    /// Celery's name for the state.
    pub fn as_str(&self) -> &str {
        match self {
            State::Pending => "PENDING",
            State::Received => "RECEIVED",
            State::Started => "STARTED",
            State::Success => "SUCCESS",
            State::Failure => "FAILURE",
            State::Retry => "RETRY",
            State::Revoked => "REVOKED",
            State::Rejected => "REJECTED",
            State::Other(s) => s,
        }
    }

    /// Parse Celery's name.
    pub fn parse(s: &str) -> State {
        match s {
            "PENDING" => State::Pending,
            "RECEIVED" => State::Received,
            "STARTED" => State::Started,
            "SUCCESS" => State::Success,
            "FAILURE" => State::Failure,
            "RETRY" => State::Retry,
            "REVOKED" => State::Revoked,
            "REJECTED" => State::Rejected,
            other => State::Other(other.to_string()),
        }
    }

    /// `READY_STATES = {SUCCESS, FAILURE, REVOKED}`: `get()` stops waiting.
    pub fn is_ready(&self) -> bool {
        matches!(self, State::Success | State::Failure | State::Revoked)
    }

    /// `EXCEPTION_STATES`: `result` holds an exception dict.
    pub fn is_exception(&self) -> bool {
        matches!(self, State::Failure | State::Retry | State::Revoked)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"exc_type", "exc_message": [args...], "exc_module"}` — what `prepare_exception` writes
/// with the JSON serializer and `exception_to_python` turns back into a Python exception.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionInfo {
    /// `type.__qualname__`, e.g. `ValueError`.
    pub exc_type: String,
    /// `list(exc.args)`.
    pub exc_message: Vec<Value>,
    /// `type.__module__`, e.g. `builtins`.
    pub exc_module: String,
}

impl ExceptionInfo {
    /// An exception with a single message argument.
    pub fn new(module: &str, ty: &str, message: impl Into<Value>) -> Self {
        ExceptionInfo {
            exc_type: ty.into(),
            exc_message: vec![message.into()],
            exc_module: module.into(),
        }
    }

    /// `ValueError(msg)` from `builtins`.
    pub fn value_error(msg: impl Into<String>) -> Self {
        Self::new("builtins", "ValueError", msg.into())
    }

    /// `celery.exceptions.NotRegistered(name)`.
    pub fn not_registered(name: &str) -> Self {
        Self::new("celery.exceptions", "NotRegistered", name)
    }

    /// `celery.exceptions.TaskRevokedError(reason)` (`revoked`, `expired`, `terminated`, `purged`).
    pub fn revoked(reason: &str) -> Self {
        Self::new("celery.exceptions", "TaskRevokedError", reason)
    }

    /// `billiard.exceptions.WorkerLostError(msg)`.
    pub fn worker_lost(msg: impl Into<String>) -> Self {
        Self::new("billiard.exceptions", "WorkerLostError", msg.into())
    }

    /// `billiard.exceptions.TimeLimitExceeded(seconds)`.
    pub fn time_limit(seconds: f64) -> Self {
        Self::new(
            "billiard.exceptions",
            "TimeLimitExceeded",
            json_number(seconds),
        )
    }

    /// Python-style `repr()`, e.g. `ValueError('boom')`, for events and logs.
    pub fn repr(&self) -> String {
        let args: Vec<String> = self.exc_message.iter().map(super::pyrepr::repr).collect();
        format!("{}({})", self.exc_type, args.join(", "))
    }

    /// A readable one-line message: the first argument, or all of them.
    pub fn message(&self) -> String {
        match self.exc_message.as_slice() {
            [Value::String(s)] => s.clone(),
            [] => String::new(),
            [one] => one.to_string(),
            many => Value::Array(many.to_vec()).to_string(),
        }
    }

    /// A traceback text in Python's shape, so tools that print it look familiar.
    pub fn traceback(&self, task: &str) -> String {
        format!(
            "Traceback (most recent call last):\n  File \"<celeriac>\", line 1, in {task}\n{}: {}\n",
            if self.exc_module == "builtins" {
                self.exc_type.clone()
            } else {
                format!("{}.{}", self.exc_module, self.exc_type)
            },
            self.message()
        )
    }
}

/// An integer-valued float as a JSON integer (Celery's `TimeLimitExceeded(1)`).
pub fn json_number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// Fields added with `result_extended=True`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtendedFields {
    /// Task name.
    pub name: String,
    /// Positional args.
    pub args: Vec<Value>,
    /// Keyword args.
    pub kwargs: Map<String, Value>,
    /// Worker node name.
    pub worker: String,
    /// Retry count.
    pub retries: i64,
    /// Queue (`delivery_info.routing_key`).
    pub queue: String,
}

/// A result meta.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultMeta {
    /// The task state this meta records (`status`: PENDING … SUCCESS, FAILURE, RETRY, REVOKED).
    pub status: State,
    /// The value, or an exception dict in exception states.
    pub result: Value,
    /// Traceback text for failures.
    pub traceback: Option<String>,
    /// `[[id, parent], null]` tuples of children (callbacks, chain steps).
    pub children: Value,
    /// ISO date for ready states.
    pub date_done: Option<String>,
    /// Group id when the task was a group member.
    pub group_id: Option<String>,
    /// Parent task id.
    pub parent_id: Option<String>,
    /// `result_extended` fields.
    pub extended: Option<ExtendedFields>,
    /// The task id.
    pub task_id: String,
}

impl ResultMeta {
    /// A meta with `date_done` = now for ready states, `null` otherwise.
    pub fn new(task_id: &str, status: State, result: Value) -> Self {
        let date_done = status.is_ready().then(time::iso_now);
        ResultMeta {
            status,
            result,
            traceback: None,
            children: json!([]),
            date_done,
            group_id: None,
            parent_id: None,
            extended: None,
            task_id: task_id.into(),
        }
    }

    /// A FAILURE/RETRY/REVOKED meta carrying `exc`.
    pub fn exception(
        task_id: &str,
        status: State,
        exc: &ExceptionInfo,
        traceback: Option<String>,
    ) -> Self {
        let mut m = Self::new(
            task_id,
            status,
            serde_json::to_value(exc).expect("exception serializes"),
        );
        m.traceback = traceback;
        m
    }

    /// The exception, for exception states.
    pub fn exception_info(&self) -> Option<ExceptionInfo> {
        if !self.status.is_exception() {
            return None;
        }
        serde_json::from_value(self.result.clone()).ok()
    }

    /// Encode as the backend stores it (Python-style JSON).
    pub fn encode(&self) -> Vec<u8> {
        json::to_vec(&self.to_value())
    }

    /// As an ordered JSON object.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("status".into(), Value::String(self.status.as_str().into()));
        m.insert("result".into(), self.result.clone());
        m.insert(
            "traceback".into(),
            self.traceback
                .clone()
                .map(Value::String)
                .unwrap_or(Value::Null),
        );
        m.insert("children".into(), self.children.clone());
        m.insert(
            "date_done".into(),
            self.date_done
                .clone()
                .map(Value::String)
                .unwrap_or(Value::Null),
        );
        if let Some(g) = &self.group_id {
            m.insert("group_id".into(), Value::String(g.clone()));
        }
        if let Some(p) = &self.parent_id {
            m.insert("parent_id".into(), Value::String(p.clone()));
        }
        if let Some(x) = &self.extended {
            m.insert("name".into(), Value::String(x.name.clone()));
            m.insert("args".into(), Value::Array(x.args.clone()));
            m.insert("kwargs".into(), Value::Object(x.kwargs.clone()));
            m.insert("worker".into(), Value::String(x.worker.clone()));
            m.insert("retries".into(), json!(x.retries));
            m.insert("queue".into(), Value::String(x.queue.clone()));
        }
        m.insert("task_id".into(), Value::String(self.task_id.clone()));
        Value::Object(m)
    }

    /// Decode a stored meta.
    pub fn decode(raw: &[u8]) -> Result<Self, ProtocolError> {
        let v: Value =
            serde_json::from_slice(raw).map_err(|e| ProtocolError::BodyNotJson(e.to_string()))?;
        let Value::Object(mut m) = v else {
            return Err(ProtocolError::WrongType {
                field: "meta",
                detail: "not an object".into(),
            });
        };
        let status = match m.remove("status") {
            Some(Value::String(s)) => State::parse(&s),
            _ => return Err(ProtocolError::Missing("status")),
        };
        let s = |v: Option<Value>| match v {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let extended = if m.contains_key("name") && m.contains_key("worker") {
            Some(ExtendedFields {
                name: s(m.remove("name")).unwrap_or_default(),
                args: match m.remove("args") {
                    Some(Value::Array(a)) => a,
                    _ => vec![],
                },
                kwargs: match m.remove("kwargs") {
                    Some(Value::Object(k)) => k,
                    _ => Map::new(),
                },
                worker: s(m.remove("worker")).unwrap_or_default(),
                retries: m.remove("retries").and_then(|v| v.as_i64()).unwrap_or(0),
                queue: s(m.remove("queue")).unwrap_or_default(),
            })
        } else {
            None
        };
        Ok(ResultMeta {
            status,
            result: m.remove("result").unwrap_or(Value::Null),
            traceback: s(m.remove("traceback")),
            children: m.remove("children").unwrap_or(Value::Null),
            date_done: s(m.remove("date_done")),
            group_id: s(m.remove("group_id")),
            parent_id: s(m.remove("parent_id")),
            extended,
            task_id: s(m.remove("task_id")).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_failure_meta_roundtrips() {
        let raw = r#"{"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"}, "traceback": "Traceback (most recent call last):\nValueError: boom\n", "children": [], "date_done": "2026-11-22T08:30:09.695126+00:00", "name": "tasks.fail", "args": ["boom"], "kwargs": {}, "worker": "w1@vm", "retries": 0, "queue": "celery", "task_id": "a2222222"}"#;
        let m = ResultMeta::decode(raw.as_bytes()).unwrap();
        assert_eq!(m.status, State::Failure);
        assert_eq!(
            m.exception_info().unwrap(),
            ExceptionInfo::value_error("boom")
        );
        assert_eq!(String::from_utf8(m.encode()).unwrap(), raw);
    }

    #[test]
    fn time_limit_message_is_an_integer_like_python() {
        let e = ExceptionInfo::time_limit(1.0);
        assert_eq!(
            json::to_string(&e),
            r#"{"exc_type": "TimeLimitExceeded", "exc_message": [1], "exc_module": "billiard.exceptions"}"#
        );
    }

    #[test]
    fn exception_repr_is_pythonic() {
        assert_eq!(
            ExceptionInfo::value_error("boom").repr(),
            "ValueError('boom')"
        );
    }
}
