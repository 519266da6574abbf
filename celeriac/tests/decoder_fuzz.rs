//! Property-based fuzzing of everything celeriac decodes from Redis: the kombu envelope,
//! the task message (v2 and v1), result metas and pidbox control requests.
//!
//! Two kinds of input: arbitrary bytes (raw, and mutations of well-formed messages, which
//! get much further into the decoders than noise does), and JSON-shaped messages whose
//! every field may be right, wrong-typed, missing or surrounded by unknown keys, with
//! bodies base64-encoded or not and arbitrary content types. Properties:
//!
//! - no decoder panics, whatever the input;
//! - anything that decodes re-encodes to bytes that decode to the same value (for task
//!   messages: the same task, after the one normalisation `to_envelope` documents).
//!
//! Case counts keep the whole file to a few seconds in a debug build.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use celeriac::protocol::control::ControlRequest;
use celeriac::protocol::{Envelope, ResultMeta, TaskMessage};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Number, Value, json};

// ---------------------------------------------------------------------------------------
// JSON building blocks
// ---------------------------------------------------------------------------------------

/// Strings that matter to the decoders, plus arbitrary Unicode (control characters,
/// astral planes) that the Python-style encoder must escape and read back.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => chars_from("abcdefghijklmnopqrstuvwxyz0123456789_.@-", 12),
        2 => prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
        1 => Just("2026-11-22T08:30:09.695126+00:00".to_string()),
        1 => Just("not a date".to_string()),
        1 => Just("application/json".to_string()),
        1 => Just("base64".to_string()),
    ]
}

/// Up to `max` characters drawn from `alphabet` (cheaper than a regex strategy).
fn chars_from(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), 0..=max).prop_map(String::from_iter)
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u8..=12).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((text(), json()), 0..4).prop_map(|kv| kv.into_iter().collect())
}

/// An object with the `required` fields, each `optional` field present or not, and
/// sometimes unknown keys (which every level must keep).
fn record(
    required: Vec<(&'static str, BoxedStrategy<Value>)>,
    optional: Vec<(&'static str, BoxedStrategy<Value>)>,
) -> BoxedStrategy<Value> {
    let names: Vec<(&'static str, bool)> = required
        .iter()
        .map(|(n, _)| (*n, true))
        .chain(optional.iter().map(|(n, _)| (*n, false)))
        .collect();
    let values: Vec<BoxedStrategy<Option<Value>>> = required
        .into_iter()
        .map(|(_, s)| s.prop_map(Some).boxed())
        .chain(
            optional
                .into_iter()
                .map(|(_, s)| prop::option::weighted(0.7, s).boxed()),
        )
        .collect();
    let extra = prop_oneof![3 => Just(Map::new()), 1 => object()];
    (values, extra)
        .prop_map(move |(vals, extra)| {
            let mut m = Map::new();
            for ((name, _), v) in names.iter().zip(vals) {
                if let Some(v) = v {
                    m.insert(name.to_string(), v);
                }
            }
            for (k, v) in extra {
                m.entry(k).or_insert(v);
            }
            Value::Object(m)
        })
        .boxed()
}

fn string() -> BoxedStrategy<Value> {
    text().prop_map(Value::String).boxed()
}

fn opt_string() -> BoxedStrategy<Value> {
    prop_oneof![Just(Value::Null), string()].boxed()
}

fn date() -> BoxedStrategy<Value> {
    prop_oneof![
        2 => Just(Value::Null),
        1 => Just(json!("2026-11-22T08:30:09.695126+00:00")),
        1 => Just(json!("2026-11-22T08:30:09")),
        1 => Just(json!("1999-01-01T00:00:00Z")),
    ]
    .boxed()
}

fn small_int() -> BoxedStrategy<Value> {
    (0i64..5).prop_map(Value::from).boxed()
}

fn signatures() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        prop::collection::vec(json(), 0..3).prop_map(Value::Array)
    ]
    .boxed()
}

fn args() -> BoxedStrategy<Value> {
    prop::collection::vec(json(), 0..4)
        .prop_map(Value::Array)
        .boxed()
}

fn kwargs() -> BoxedStrategy<Value> {
    object().prop_map(Value::Object).boxed()
}

fn timelimit() -> BoxedStrategy<Value> {
    (
        prop_oneof![Just(Value::Null), number()],
        prop_oneof![Just(Value::Null), number()],
    )
        .prop_map(|(hard, soft)| json!([hard, soft]))
        .boxed()
}

// ---------------------------------------------------------------------------------------
// Well-formed Celery messages...
// ---------------------------------------------------------------------------------------

fn embed() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        record(
            vec![],
            vec![
                ("callbacks", signatures()),
                ("errbacks", signatures()),
                ("chain", signatures()),
                ("chord", json().boxed()),
            ],
        ),
    ]
    .boxed()
}

/// Protocol v2 body: `[args, kwargs, embed]`.
fn v2_body() -> BoxedStrategy<Value> {
    (args(), kwargs(), embed())
        .prop_map(|(a, k, e)| json!([a, k, e]))
        .boxed()
}

/// Protocol v1: everything in the body.
fn v1_body() -> BoxedStrategy<Value> {
    record(
        vec![("task", string()), ("id", string())],
        vec![
            ("args", args()),
            ("kwargs", kwargs()),
            ("eta", date()),
            ("expires", date()),
            ("retries", small_int()),
            ("timelimit", timelimit()),
            ("callbacks", signatures()),
            ("errbacks", signatures()),
            ("chord", json().boxed()),
            ("taskset", opt_string()),
        ],
    )
}

fn v2_headers() -> BoxedStrategy<Value> {
    record(
        vec![("task", string()), ("id", string())],
        vec![
            ("lang", Just(json!("py")).boxed()),
            ("shadow", opt_string()),
            ("eta", date()),
            ("expires", date()),
            ("group", opt_string()),
            (
                "group_index",
                prop_oneof![Just(Value::Null), small_int()].boxed(),
            ),
            ("retries", small_int()),
            ("timelimit", timelimit()),
            ("root_id", opt_string()),
            ("parent_id", opt_string()),
            ("argsrepr", opt_string()),
            ("kwargsrepr", opt_string()),
            ("origin", opt_string()),
            (
                "ignore_result",
                prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool)].boxed(),
            ),
            ("replaced_task_nesting", small_int()),
            (
                "stamped_headers",
                prop_oneof![Just(Value::Null), args()].boxed(),
            ),
            ("stamps", kwargs()),
        ],
    )
}

fn properties() -> BoxedStrategy<Value> {
    let delivery_info = record(
        vec![("exchange", string()), ("routing_key", string())],
        vec![("redelivered", any::<bool>().prop_map(Value::Bool).boxed())],
    );
    record(
        vec![("delivery_info", delivery_info), ("delivery_tag", string())],
        vec![
            ("correlation_id", opt_string()),
            ("reply_to", opt_string()),
            (
                "delivery_mode",
                prop_oneof![Just(json!(2)), Just(json!(1))].boxed(),
            ),
            ("expiration", opt_string()),
            ("priority", (0u8..=9).prop_map(Value::from).boxed()),
        ],
    )
}

fn content_type() -> BoxedStrategy<Value> {
    prop_oneof![
        12 => Just(json!("application/json")),
        1 => Just(json!("application/x-python-serialize")),
        1 => Just(json!("application/x-yaml")),
        1 => Just(json!("application/x-msgpack")),
        1 => string(),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------
// ...and the damage done to them
// ---------------------------------------------------------------------------------------

/// One structural edit of a JSON document, at a node chosen by `at`.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the node with any JSON value (wrong type, null, ...).
    Replace(Value),
    /// Remove the node from its object or array.
    Remove,
    /// Add a key to the node, if it is an object.
    Insert(String, Value),
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    At(usize),
}

fn edit() -> impl Strategy<Value = (prop::sample::Index, Edit)> {
    let e = prop_oneof![
        json().prop_map(Edit::Replace),
        Just(Edit::Remove),
        (text(), json()).prop_map(|(k, v)| Edit::Insert(k, v)),
    ];
    (any::<prop::sample::Index>(), e)
}

/// Usually no edit (a well-formed message), else one to three.
fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, Edit)>> {
    prop_oneof![
        2 => Just(vec![]),
        3 => prop::collection::vec(edit(), 1..4),
    ]
}

fn node_paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                here.push(Step::Key(k.clone()));
                node_paths(x, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                here.push(Step::At(i));
                node_paths(x, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(mut v: &'a mut Value, path: &[Step]) -> &'a mut Value {
    for step in path {
        v = match (v, step) {
            (Value::Object(m), Step::Key(k)) => m.get_mut(k).expect("path from node_paths"),
            (Value::Array(a), Step::At(i)) => &mut a[*i],
            _ => unreachable!("path from node_paths"),
        };
    }
    v
}

fn damage(mut v: Value, edits: Vec<(prop::sample::Index, Edit)>) -> Value {
    for (at, edit) in edits {
        let mut paths = Vec::new();
        node_paths(&v, &mut Vec::new(), &mut paths);
        let path = &paths[at.index(paths.len())];
        match edit {
            Edit::Replace(x) => *node_mut(&mut v, path) = x,
            Edit::Remove => {
                if let Some((last, parent)) = path.split_last() {
                    match (node_mut(&mut v, parent), last) {
                        (Value::Object(m), Step::Key(k)) => {
                            m.remove(k);
                        }
                        (Value::Array(a), Step::At(i)) => {
                            a.remove(*i);
                        }
                        _ => {}
                    }
                }
            }
            Edit::Insert(k, x) => {
                if let Value::Object(m) = node_mut(&mut v, path) {
                    m.insert(k, x);
                }
            }
        }
    }
    v
}

/// A kombu envelope around a v2 or v1 task body (each possibly damaged), the body
/// base64-encoded or verbatim as `properties.body_encoding` says, the envelope itself
/// possibly damaged too (which can also leave the encoding and the body at odds).
fn envelope() -> BoxedStrategy<Vec<u8>> {
    let message = prop_oneof![
        3 => (v2_body(), v2_headers()),
        1 => (v1_body(), kwargs()),
    ];
    let encoding = prop_oneof![
        4 => Just(Some("base64")),
        1 => Just(Some("utf-8")),
        1 => Just(None),
    ];
    (
        (message, edits()),
        encoding,
        properties(),
        prop::option::weighted(0.8, content_type()),
        any::<bool>(),
        prop_oneof![3 => Just(Map::new()), 1 => object()],
        edits(),
    )
        .prop_map(
            |(((body, headers), body_edits), encoding, mut props, ctype, cenc, extra, edits)| {
                let text = serde_json::to_string(&damage(body, body_edits)).expect("serialize");
                let body = match encoding {
                    Some("base64") => json!(B64.encode(text.as_bytes())),
                    _ => json!(text),
                };
                if let (Some(e), Value::Object(p)) = (encoding, &mut props) {
                    p.insert("body_encoding".into(), json!(e));
                }
                let mut env = Map::new();
                env.insert("body".into(), body);
                if cenc {
                    env.insert("content-encoding".into(), json!("utf-8"));
                }
                if let Some(ct) = ctype {
                    env.insert("content-type".into(), ct);
                }
                env.insert("headers".into(), headers);
                env.insert("properties".into(), props);
                for (k, v) in extra {
                    env.entry(k).or_insert(v);
                }
                serde_json::to_vec(&damage(Value::Object(env), edits)).expect("serialize")
            },
        )
        .boxed()
}

fn result_meta() -> BoxedStrategy<Vec<u8>> {
    let status = prop_oneof![
        Just(json!("SUCCESS")),
        Just(json!("FAILURE")),
        Just(json!("PENDING")),
        Just(json!("STARTED")),
        Just(json!("RETRY")),
        Just(json!("REVOKED")),
        string(),
    ];
    let exception = record(
        vec![
            ("exc_type", string()),
            ("exc_message", args()),
            ("exc_module", string()),
        ],
        vec![],
    );
    let meta = record(
        vec![
            ("status", status.boxed()),
            ("result", prop_oneof![exception, json()].boxed()),
            ("task_id", string()),
        ],
        vec![
            ("traceback", opt_string()),
            ("children", prop_oneof![Just(json!([])), json()].boxed()),
            ("date_done", date()),
            ("group_id", opt_string()),
            ("parent_id", opt_string()),
            ("name", string()),
            ("args", args()),
            ("kwargs", kwargs()),
            ("worker", string()),
            ("retries", small_int()),
            ("queue", string()),
        ],
    );
    (meta, edits())
        .prop_map(|(v, e)| serde_json::to_vec(&damage(v, e)).expect("serialize"))
        .boxed()
}

fn control_request() -> BoxedStrategy<Vec<u8>> {
    let reply_to = record(
        vec![
            ("exchange", Just(json!("reply.celery.pidbox")).boxed()),
            ("routing_key", string()),
        ],
        vec![],
    );
    let destination = prop_oneof![
        Just(Value::Null),
        prop::collection::vec(string(), 0..3).prop_map(Value::Array)
    ];
    let request = record(
        vec![
            (
                "method",
                prop_oneof![Just(json!("ping")), Just(json!("revoke")), string()].boxed(),
            ),
            ("arguments", kwargs()),
        ],
        vec![
            ("destination", destination.boxed()),
            (
                "pattern",
                prop_oneof![
                    Just(Value::Null),
                    chars_from("ab1@*?.![]-", 10).prop_map(Value::String)
                ]
                .boxed(),
            ),
            (
                "matcher",
                prop_oneof![Just(json!("glob")), Just(json!("pcre"))].boxed(),
            ),
            ("ticket", opt_string()),
            ("reply_to", reply_to),
        ],
    );
    (request, edits())
        .prop_map(|(v, e)| serde_json::to_vec(&damage(v, e)).expect("serialize"))
        .boxed()
}

/// Byte-level damage to a message: flips, insertions, deletions, truncation.
fn mutated(base: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    (
        base,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, byte, op) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match op {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    2 => {
                        bytes.remove(i);
                    }
                    _ => bytes.truncate(i),
                }
            }
            bytes
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------

/// Decode as the worker does; whatever decodes must survive a re-encode unchanged.
fn check_envelope(raw: &[u8]) -> Result<(), TestCaseError> {
    // Whatever the general path (envelope, then message) accepts, the worker's one-pass
    // `TaskMessage::decode` returns as the very same message. (Not the converse: the one-pass
    // decoder reads only body, content-type, headers and properties, so it also accepts
    // envelopes whose other top-level fields the general path refuses.)
    if let Ok(general) = Envelope::decode(raw).and_then(|e| TaskMessage::from_envelope(&e)) {
        let fast = TaskMessage::decode(raw);
        prop_assert_eq!(fast.as_ref().ok(), Some(&general), "TaskMessage::decode");
    } else {
        let _ = TaskMessage::decode(raw);
    }
    let Ok(env) = Envelope::decode(raw) else {
        return Ok(());
    };
    let again = Envelope::decode(&env.encode());
    prop_assert_eq!(again.as_ref(), Ok(&env), "envelope re-encode");
    let _ = env.body_bytes();
    let Ok(msg) = TaskMessage::from_envelope(&env) else {
        return Ok(());
    };
    let _ = (msg.headers.time_limits(), msg.queue());
    prop_assert!(msg.headers.eta_time().is_ok() && msg.headers.expires_time().is_ok());

    let priority = msg.properties.priority;
    let back = TaskMessage::from_envelope(&Envelope::decode(
        &msg.to_envelope("celery", priority).encode(),
    )?);
    let back = back.map_err(|e| TestCaseError::fail(format!("re-encoded message: {e}")))?;
    // `to_envelope` fills argsrepr/kwargsrepr when absent and rewrites the routing
    // properties; everything else is the same task.
    let mut want = msg.headers.clone();
    want.argsrepr = want.argsrepr.or(back.headers.argsrepr.clone());
    want.kwargsrepr = want.kwargsrepr.or(back.headers.kwargsrepr.clone());
    prop_assert_eq!(&back.headers, &want);
    prop_assert_eq!(&back.args, &msg.args);
    prop_assert_eq!(&back.kwargs, &msg.kwargs);
    prop_assert_eq!(&back.embed, &msg.embed);
    prop_assert_eq!(&back.properties.extra, &msg.properties.extra);
    prop_assert_eq!(&back.properties.reply_to, &msg.properties.reply_to);
    prop_assert_eq!(&back.properties.expiration, &msg.properties.expiration);
    if !msg.properties.delivery_tag.is_empty() {
        prop_assert_eq!(&back.properties.delivery_tag, &msg.properties.delivery_tag);
    }
    // And from there on it is a fixed point.
    let third = TaskMessage::from_envelope(&Envelope::decode(
        &back.to_envelope("celery", priority).encode(),
    )?)
    .map_err(|e| TestCaseError::fail(format!("second re-encode: {e}")))?;
    prop_assert_eq!(third, back);
    Ok(())
}

fn check_result_meta(raw: &[u8]) -> Result<(), TestCaseError> {
    let Ok(meta) = ResultMeta::decode(raw) else {
        return Ok(());
    };
    let _ = (meta.exception_info(), meta.status.is_ready());
    let again = ResultMeta::decode(&meta.encode());
    prop_assert_eq!(again.as_ref(), Ok(&meta), "result meta re-encode");
    Ok(())
}

fn check_control(raw: &[u8]) -> Result<(), TestCaseError> {
    // The pidbox server parses the body to a Value first, then into the request.
    let from_value = serde_json::from_slice::<Value>(raw)
        .ok()
        .map(serde_json::from_value::<ControlRequest>);
    let Ok(req) = serde_json::from_slice::<ControlRequest>(raw) else {
        return Ok(());
    };
    if let Some(v) = from_value {
        prop_assert_eq!(
            v.as_ref().ok(),
            Some(&req),
            "from_value agrees with from_slice"
        );
    }
    for node in ["celery@jwql-1", "w1@vm", "", "aaaaaaaaaaaaaaaa"] {
        let _ = req.addresses(node);
    }
    let bytes = serde_json::to_vec(&req).expect("serialize");
    let again: ControlRequest = serde_json::from_slice(&bytes)
        .map_err(|e| TestCaseError::fail(format!("re-encoded request: {e}")))?;
    prop_assert_eq!(again, req);
    Ok(())
}

/// `n` cases with a cheap generator: in a debug build proptest's default ChaCha RNG, not
/// the decoders, would take most of the time.
fn cases(n: u32) -> Config {
    Config {
        cases: n,
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(cases(5000))]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(raw in prop::collection::vec(any::<u8>(), 0..256)) {
        check_envelope(&raw)?;
        check_result_meta(&raw)?;
        check_control(&raw)?;
    }
}

proptest! {
    #![proptest_config(cases(1500))]

    #[test]
    fn task_envelopes_decode_or_refuse_and_roundtrip(raw in envelope()) {
        check_envelope(&raw)?;
    }

    #[test]
    fn damaged_task_envelopes_never_panic(raw in mutated(envelope())) {
        check_envelope(&raw)?;
    }

    #[test]
    fn result_metas_roundtrip(raw in result_meta()) {
        check_result_meta(&raw)?;
    }

    #[test]
    fn damaged_result_metas_never_panic(raw in mutated(result_meta())) {
        check_result_meta(&raw)?;
    }

    #[test]
    fn control_requests_roundtrip(raw in control_request()) {
        check_control(&raw)?;
    }

    #[test]
    fn damaged_control_requests_never_panic(raw in mutated(control_request())) {
        check_control(&raw)?;
    }
}

/// The generators reach the interesting paths: a fuzz target that only ever produces
/// refusals proves nothing about the round trip.
#[test]
fn generated_envelopes_often_decode_to_task_messages() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        cases(500),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::XorShift,
        ),
    );
    let strategy = envelope();
    let mut decoded = 0;
    for _ in 0..500 {
        let raw = strategy.new_tree(&mut runner).unwrap().current();
        let msg = Envelope::decode(&raw)
            .ok()
            .and_then(|e| TaskMessage::from_envelope(&e).ok());
        decoded += usize::from(msg.is_some());
    }
    assert!(
        decoded >= 100,
        "only {decoded} of 500 generated envelopes decoded to a task message"
    );
}
