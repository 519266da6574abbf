//! The Celery task message: protocol v2 headers plus the `[args, kwargs, embed]` body,
//! and protocol v1 (everything in the body) accepted on read.
//!
//! Field names are Celery's (`celery/app/amqp.py` `as_task_v2`), so the same word greps
//! here and there. Unknown headers are kept in `extra` and re-emitted on retry/requeue.

use super::envelope::{DeliveryInfo, Envelope, Properties};
use super::{ProtocolError, pyrepr, time};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Protocol v2 headers: the 19 keys Celery 5.3–5.7 emits, in its order, plus unknown ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskHeaders {
    /// `"py"` from Python clients; celeriac writes `"py"` too so nothing downstream branches.
    #[serde(default = "lang_py")]
    pub lang: String,
    /// Registered task name (required).
    pub task: String,
    /// Task id (required).
    pub id: String,
    /// Alternative name for logs.
    #[serde(default)]
    pub shadow: Option<String>,
    /// ISO-8601 run-after time.
    #[serde(default)]
    pub eta: Option<String>,
    /// ISO-8601 expiry time.
    #[serde(default)]
    pub expires: Option<String>,
    /// Group id of group/chord members.
    #[serde(default)]
    pub group: Option<String>,
    /// Position in the group (the chord zset score).
    #[serde(default)]
    pub group_index: Option<i64>,
    /// Retry count.
    #[serde(default, deserialize_with = "null_as_default")]
    pub retries: i64,
    /// `[hard, soft]` seconds — note Celery's order. Kept as JSON numbers so `2` stays `2`.
    #[serde(default = "null_pair", deserialize_with = "null_as_default")]
    pub timelimit: [Option<serde_json::Number>; 2],
    /// First task of the workflow.
    #[serde(default)]
    pub root_id: Option<String>,
    /// Task that sent this one.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// `repr(args)`.
    #[serde(default)]
    pub argsrepr: Option<String>,
    /// `repr(kwargs)`.
    #[serde(default)]
    pub kwargsrepr: Option<String>,
    /// `gen<pid>@<host>` of the sender.
    #[serde(default)]
    pub origin: Option<String>,
    /// Do not store a result. Python's `send_task` writes `null` when the option is unset, so
    /// the value is kept as given.
    #[serde(default)]
    pub ignore_result: Option<bool>,
    /// Replacement nesting depth.
    #[serde(default, deserialize_with = "null_as_default")]
    pub replaced_task_nesting: i64,
    /// Stamping (5.3+).
    #[serde(default)]
    pub stamped_headers: Option<Value>,
    /// Stamps (5.3+).
    #[serde(default = "empty_map", deserialize_with = "null_as_default")]
    pub stamps: Map<String, Value>,
    /// Headers this version does not know.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A `null` where Celery normally writes a value reads as the default: clients built on older
/// or hand-rolled code send nulls, and Python's worker reads these fields with `.get()`.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn lang_py() -> String {
    "py".into()
}
fn null_pair() -> [Option<serde_json::Number>; 2] {
    [None, None]
}
fn empty_map() -> Map<String, Value> {
    Map::new()
}

impl TaskHeaders {
    /// Fresh headers for a new task.
    pub fn new(task: impl Into<String>, id: impl Into<String>) -> Self {
        let id = id.into();
        TaskHeaders {
            lang: lang_py(),
            task: task.into(),
            root_id: Some(id.clone()),
            id,
            shadow: None,
            eta: None,
            expires: None,
            group: None,
            group_index: None,
            retries: 0,
            timelimit: [None, None],
            parent_id: None,
            argsrepr: None,
            kwargsrepr: None,
            origin: None,
            ignore_result: Some(false),
            replaced_task_nesting: 0,
            stamped_headers: None,
            stamps: Map::new(),
            extra: Map::new(),
        }
    }

    /// `(hard, soft)` time limits in seconds.
    pub fn time_limits(&self) -> (Option<f64>, Option<f64>) {
        let f = |n: &Option<serde_json::Number>| n.as_ref().and_then(|n| n.as_f64());
        (f(&self.timelimit[0]), f(&self.timelimit[1]))
    }

    /// Set `[hard, soft]` from seconds (whole seconds written as integers, like Python ints).
    pub fn set_time_limits(&mut self, hard: Option<f64>, soft: Option<f64>) {
        let n = |x: Option<f64>| {
            x.and_then(|x| match super::result::json_number(x) {
                Value::Number(n) => Some(n),
                _ => None,
            })
        };
        self.timelimit = [n(hard), n(soft)];
    }

    /// Parsed `eta`; an unparsable value is an error, as Celery raises `InvalidTaskError`.
    pub fn eta_time(&self) -> Result<Option<DateTime<Utc>>, ProtocolError> {
        parse_opt_date("eta", self.eta.as_deref())
    }

    /// Parsed `expires`.
    pub fn expires_time(&self) -> Result<Option<DateTime<Utc>>, ProtocolError> {
        parse_opt_date("expires", self.expires.as_deref())
    }
}

fn parse_opt_date(
    field: &'static str,
    v: Option<&str>,
) -> Result<Option<DateTime<Utc>>, ProtocolError> {
    match v {
        None => Ok(None),
        Some(s) => time::parse_iso(s)
            .map(Some)
            .ok_or_else(|| ProtocolError::BadDate {
                field,
                value: s.to_string(),
            }),
    }
}

/// The third body element: callbacks, errbacks, chain and chord signatures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embed {
    /// `link` signatures.
    #[serde(default)]
    pub callbacks: Option<Vec<Value>>,
    /// `link_error` signatures.
    #[serde(default)]
    pub errbacks: Option<Vec<Value>>,
    /// Remaining chain, reversed: the last element runs next.
    #[serde(default)]
    pub chain: Option<Vec<Value>>,
    /// Chord body signature for chord header members.
    #[serde(default)]
    pub chord: Option<Value>,
    /// Unknown keys.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A decoded task message.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// v2 headers (v1 messages are converted).
    pub headers: TaskHeaders,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Callbacks/chain/chord.
    pub embed: Embed,
    /// Envelope properties (delivery tag, delivery info, priority).
    pub properties: Properties,
}

impl TaskMessage {
    /// A new message for `task` with a random id.
    pub fn new(task: impl Into<String>, args: Vec<Value>, kwargs: Map<String, Value>) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        TaskMessage {
            headers: TaskHeaders::new(task, id),
            args,
            kwargs,
            embed: Embed::default(),
            properties: Properties::default(),
        }
    }

    /// Decode straight from envelope bytes. The common case (a v2 JSON message) is parsed in
    /// one pass into typed headers and body; anything else takes the general path through
    /// [`Envelope::decode`] and [`TaskMessage::from_envelope`], which also names what is wrong.
    pub fn decode(raw: &[u8]) -> Result<Self, ProtocolError> {
        if let Some(msg) = Self::decode_v2_fast(raw) {
            return Ok(msg);
        }
        Self::from_envelope(&Envelope::decode(raw)?)
    }

    fn decode_v2_fast(raw: &[u8]) -> Option<Self> {
        use base64::Engine;
        #[derive(Deserialize)]
        struct Fast<'a> {
            #[serde(borrow)]
            body: std::borrow::Cow<'a, str>,
            #[serde(rename = "content-type", borrow)]
            content_type: std::borrow::Cow<'a, str>,
            // Read only to be as strict as the general path (a null is refused there too).
            #[serde(
                rename = "content-encoding",
                default = "super::envelope::default_encoding"
            )]
            _content_encoding: String,
            headers: TaskHeaders,
            properties: Properties,
        }
        // serde would also take a JSON array for a struct; an envelope is an object.
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        let f: Fast<'_> = serde_json::from_slice(raw).ok()?;
        if f.content_type != super::envelope::CONTENT_TYPE_JSON
            || f.properties.body_encoding.as_deref() != Some("base64")
        {
            return None;
        }
        let body = base64::engine::general_purpose::STANDARD
            .decode(f.body.as_bytes())
            .ok()?;
        let (args, kwargs, embed): (Vec<Value>, Map<String, Value>, Option<Embed>) =
            serde_json::from_slice(&body).ok()?;
        let msg = TaskMessage {
            headers: f.headers,
            args,
            kwargs,
            embed: embed.unwrap_or_default(),
            properties: f.properties,
        };
        // Dates are validated on the general path, which reports which one is wrong.
        (msg.headers.eta_time().is_ok() && msg.headers.expires_time().is_ok()).then_some(msg)
    }

    /// Decode from an envelope: v2 when `headers.task` exists, else v1 (task in the body).
    pub fn from_envelope(env: &Envelope) -> Result<Self, ProtocolError> {
        let body = env.body_json()?;
        if env.headers.contains_key("task") {
            let headers: TaskHeaders = serde_json::from_value(Value::Object(env.headers.clone()))
                .map_err(|e| header_error(&env.headers, e))?;
            let Value::Array(parts) = body else {
                return Err(ProtocolError::BodyShape("body is not a list".into()));
            };
            let [args, kwargs, embed]: [Value; 3] = parts.try_into().map_err(|p: Vec<Value>| {
                ProtocolError::BodyShape(format!("{} elements, expected 3", p.len()))
            })?;
            let args = match args {
                Value::Array(a) => a,
                other => {
                    return Err(ProtocolError::BodyShape(format!(
                        "args is {}",
                        kind(&other)
                    )));
                }
            };
            let kwargs = match kwargs {
                Value::Object(m) => m,
                other => {
                    return Err(ProtocolError::BodyShape(format!(
                        "kwargs is {}",
                        kind(&other)
                    )));
                }
            };
            let embed = match embed {
                Value::Null => Embed::default(),
                v @ Value::Object(_) => serde_json::from_value(v)
                    .map_err(|e| ProtocolError::BodyShape(format!("embed: {e}")))?,
                other => {
                    return Err(ProtocolError::BodyShape(format!(
                        "embed is {}",
                        kind(&other)
                    )));
                }
            };
            let msg = TaskMessage {
                headers,
                args,
                kwargs,
                embed,
                properties: env.properties.clone(),
            };
            msg.headers.eta_time()?;
            msg.headers.expires_time()?;
            Ok(msg)
        } else {
            Self::from_v1(body, env.properties.clone())
        }
    }

    /// Protocol v1: `{"task", "id", "args", "kwargs", "eta", "expires", "retries", ...}` in the body
    /// (`celery/worker/strategy.py` `proto1_to_proto2`).
    fn from_v1(body: Value, properties: Properties) -> Result<Self, ProtocolError> {
        let Value::Object(mut b) = body else {
            return Err(ProtocolError::BodyShape("v1 body is not an object".into()));
        };
        let task = take_str(&mut b, "task")?.ok_or(ProtocolError::Missing("task"))?;
        let id = take_str(&mut b, "id")?.ok_or(ProtocolError::Missing("id"))?;
        let mut headers = TaskHeaders::new(task, id);
        headers.eta = take_str(&mut b, "eta")?;
        headers.expires = take_str(&mut b, "expires")?;
        headers.group = take_str(&mut b, "taskset")?.or(take_str(&mut b, "group")?);
        headers.retries = b.remove("retries").and_then(|v| v.as_i64()).unwrap_or(0);
        if let Some(Value::Array(tl)) = b.remove("timelimit") {
            let num = |v: Option<&Value>| match v {
                Some(Value::Number(n)) => Some(n.clone()),
                _ => None,
            };
            headers.timelimit = [num(tl.first()), num(tl.get(1))];
        }
        let args = match b.remove("args") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => vec![],
            Some(other) => {
                return Err(ProtocolError::BodyShape(format!(
                    "args is {}",
                    kind(&other)
                )));
            }
        };
        let kwargs = match b.remove("kwargs") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => Map::new(),
            Some(other) => {
                return Err(ProtocolError::BodyShape(format!(
                    "kwargs is {}",
                    kind(&other)
                )));
            }
        };
        let list = |v: Option<Value>| match v {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        };
        let embed = Embed {
            callbacks: list(b.remove("callbacks")),
            errbacks: list(b.remove("errbacks")),
            chain: None,
            chord: b.remove("chord").filter(|v| !v.is_null()),
            extra: Map::new(),
        };
        headers.eta_time()?;
        headers.expires_time()?;
        Ok(TaskMessage {
            headers,
            args,
            kwargs,
            embed,
            properties,
        })
    }

    /// The task id that encoded envelope bytes name: `headers.id` when the envelope has one
    /// (protocol v2, read without decoding the body), else the id of a fully decoded message
    /// (a v1 message keeps it in its body). `None` for bytes that are not a task message, so
    /// a caller holding raw messages (a purge, a dead letter) learns whom to tell about them.
    pub fn id_of(raw: &[u8]) -> Option<String> {
        let env = Envelope::decode(raw).ok()?;
        if let Some(id) = env.headers.get("id").and_then(Value::as_str) {
            return Some(id.to_string());
        }
        TaskMessage::from_envelope(&env).ok().map(|m| m.headers.id)
    }

    /// The queue this message came from / goes to (routing key of the anonymous exchange).
    pub fn queue(&self) -> &str {
        &self.properties.delivery_info.routing_key
    }

    /// Encode into an envelope bound for `queue` with `priority`, filling every field a
    /// Python worker needs (a message without `delivery_info`/`delivery_tag` is lost by it).
    pub fn to_envelope(&self, queue: &str, priority: u8) -> Envelope {
        let mut headers = self.headers.clone();
        if headers.argsrepr.is_none() {
            headers.argsrepr = Some(pyrepr::truncate(
                pyrepr::repr_args(&self.args),
                pyrepr::ARGSREPR_MAX,
            ));
        }
        if headers.kwargsrepr.is_none() {
            headers.kwargsrepr = Some(pyrepr::truncate(
                pyrepr::repr(&Value::Object(self.kwargs.clone())),
                pyrepr::ARGSREPR_MAX,
            ));
        }
        let Value::Object(hmap) = serde_json::to_value(&headers).expect("headers serialize") else {
            unreachable!("headers serialize to an object")
        };
        let body = json!([self.args, self.kwargs, self.embed]);
        let mut props = self.properties.clone();
        props.correlation_id = Some(self.headers.id.clone());
        if props.delivery_tag.is_empty() {
            props.delivery_tag = uuid::Uuid::new_v4().to_string();
        }
        props.delivery_info = DeliveryInfo {
            exchange: String::new(),
            routing_key: queue.to_string(),
            extra: Map::new(),
        };
        props.priority = priority.min(9);
        props.body_encoding = Some("base64".into());
        props.delivery_mode = 2;
        Envelope::with_json_body(&body, hmap, props)
    }
}

fn header_error(h: &Map<String, Value>, e: serde_json::Error) -> ProtocolError {
    if !h.get("id").is_some_and(Value::is_string) {
        ProtocolError::Missing("headers.id")
    } else {
        ProtocolError::WrongType {
            field: "headers",
            detail: e.to_string(),
        }
    }
}

fn take_str(m: &mut Map<String, Value>, k: &'static str) -> Result<Option<String>, ProtocolError> {
    match m.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ProtocolError::WrongType {
            field: k,
            detail: kind(&other).into(),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURED: &str = r#"{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "11111111-1111-1111-1111-111111111111", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "11111111-1111-1111-1111-111111111111", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen6987@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "11111111-1111-1111-1111-111111111111", "reply_to": "150c6268-55ef-3155-bc4f-50a99cf0cc33", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "8d18ab40-68a7-4733-8c86-32e9fd33c5e5"}}"#;

    #[test]
    fn decodes_captured_v2_message_and_reencodes_identically() {
        let env = Envelope::decode(CAPTURED.as_bytes()).unwrap();
        let msg = TaskMessage::from_envelope(&env).unwrap();
        assert_eq!(msg.headers.task, "tasks.add");
        assert_eq!(msg.args, vec![json!(2), json!(3)]);
        assert!(msg.kwargs.is_empty());
        let again = msg.to_envelope("celery", 0);
        assert_eq!(String::from_utf8(again.encode()).unwrap(), CAPTURED);
    }

    #[test]
    fn fast_and_general_decoding_agree() {
        let env = Envelope::decode(CAPTURED.as_bytes()).unwrap();
        assert_eq!(
            TaskMessage::decode(CAPTURED.as_bytes()).unwrap(),
            TaskMessage::from_envelope(&env).unwrap()
        );
        assert!(TaskMessage::decode_v2_fast(CAPTURED.as_bytes()).is_some());
    }

    #[test]
    fn accepts_v1_messages() {
        let body = r#"{"task": "tasks.add", "id": "99999999-0000-0000-0000-000000000002", "args": [1, 2], "kwargs": {}, "group": null, "group_index": null, "retries": 0, "eta": "2026-11-22T08:35:45.378737+00:00", "expires": null, "utc": true, "callbacks": null, "errbacks": null, "timelimit": [null, null], "taskset": null, "chord": null}"#;
        let env = Envelope {
            body: body.into(),
            content_encoding: "utf-8".into(),
            content_type: "application/json".into(),
            headers: Map::new(),
            properties: Properties::default(),
            extra: Map::new(),
        };
        let msg = TaskMessage::from_envelope(&env).unwrap();
        assert_eq!(msg.headers.id, "99999999-0000-0000-0000-000000000002");
        assert_eq!(msg.args, vec![json!(1), json!(2)]);
        assert!(msg.headers.eta_time().unwrap().is_some());
        assert_eq!(
            TaskMessage::id_of(&env.encode()).as_deref(),
            Some("99999999-0000-0000-0000-000000000002"),
            "a v1 message names its id in the body"
        );
    }

    #[test]
    fn id_of_reads_the_header_and_refuses_what_is_not_a_message() {
        assert_eq!(
            TaskMessage::id_of(CAPTURED.as_bytes()).as_deref(),
            Some("11111111-1111-1111-1111-111111111111")
        );
        assert_eq!(TaskMessage::id_of(b"garbage, not a message"), None);
    }

    #[test]
    fn body_that_is_not_three_elements_is_rejected() {
        let mut env = Envelope::decode(CAPTURED.as_bytes()).unwrap();
        env.properties.body_encoding = None;
        env.body = "[[1], {}]".into();
        assert!(matches!(
            TaskMessage::from_envelope(&env),
            Err(ProtocolError::BodyShape(_))
        ));
        env.body = "not json".into();
        assert!(matches!(
            TaskMessage::from_envelope(&env),
            Err(ProtocolError::BodyNotJson(_))
        ));
    }

    #[test]
    fn missing_id_is_named() {
        let mut env = Envelope::decode(CAPTURED.as_bytes()).unwrap();
        env.headers.remove("id");
        assert_eq!(
            TaskMessage::from_envelope(&env),
            Err(ProtocolError::Missing("headers.id"))
        );
    }
}
