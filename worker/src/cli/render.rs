//! Everything the CLI prints, in one place, so every command follows the same conventions:
//!
//! - a value a script reads (`call --wait`, `result`) is one JSON line on stdout;
//! - `--json` switches a table to one pretty-printed JSON document;
//! - tables and progress lines are for people and may change;
//! - failures and "nothing answered" go to stderr, and the command's exit code says so.
//!
//! Commands gather what they found into the row types below (or, for answers passed through
//! from workers, JSON values) and call one function per output. Nothing here connects to
//! anything or decides an exit code.

use ::locks::Liveness;
use ::locks::admin::{LockEntry, LockKind};
use anyhow::Result;
use celeriac::client::control::Reply;
use celeriac::protocol::{ExceptionInfo, ResultMeta, State, json as pyjson};
use celeriac::transport::DeadLetter;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Conventions shared by every command
// ---------------------------------------------------------------------------------------

/// A line of text on stdout (a task id, a count).
pub(crate) fn line(text: &str) {
    println!("{text}");
}

/// `--json` output: one pretty-printed document.
pub(crate) fn json(v: &impl Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A value for a script: one compact JSON line (`celeriac call ... --wait` prints `5`).
pub(crate) fn json_line(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// A stored result meta, as it is stored (Python's JSON spacing), on one line.
pub(crate) fn meta(m: &ResultMeta) {
    println!("{}", pyjson::to_string(&m.to_value()));
}

/// Why a command could not give its answer, on stderr.
pub(crate) fn error(e: &dyn Display) {
    eprintln!("Error: {e}");
}

/// A task that failed or was revoked, with its remote exception, on stderr.
pub(crate) fn remote_failure(task_id: &str, state: &State, exc: &ExceptionInfo) {
    eprintln!(
        "Error: task {task_id} {state}: {}.{}: {}",
        exc.exc_module,
        exc.exc_type,
        exc.message()
    );
}

/// `<verb> <n> <noun>[s]`, e.g. `requeued 1 message`.
pub(crate) fn counted(verb: &str, n: usize, noun: &str) {
    println!("{verb} {n} {noun}{}", plural(n));
}

/// The English plural suffix for `n` things.
fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A JSON value as plain text (strings unquoted), so table columns can be padded.
pub(crate) fn text(v: &Value) -> String {
    v.as_str()
        .map(String::from)
        .unwrap_or_else(|| v.to_string())
}

/// `name[id]` of a task as workers describe it (`Request.info()`).
pub(crate) fn task_label(t: &Value) -> String {
    format!(
        "{}[{}]",
        t["name"].as_str().unwrap_or("?"),
        t["id"].as_str().unwrap_or("?")
    )
}

/// Celery's message when a broadcast got no reply.
pub(crate) fn no_nodes_replied() {
    eprintln!("Error: No nodes replied within time constraint");
}

/// `N node(s) online.` after a table of nodes.
fn nodes_online(n: usize) {
    println!("\n{n} node{} online.", plural(n));
}

// ---------------------------------------------------------------------------------------
// purge
// ---------------------------------------------------------------------------------------

/// What `celeriac purge` removed.
#[derive(Debug, Serialize)]
pub(crate) struct PurgeReport {
    /// Messages removed per queue: waiting ones plus reserved ones dropped.
    pub purged: BTreeMap<String, usize>,
    /// The sum of `purged`.
    pub total: usize,
    /// Reserved (unacked, not running) messages dropped.
    pub unacked_removed: usize,
    /// Tasks whose waiting clients were told REVOKED.
    pub revoked_ids: usize,
}

/// `q: purged N messages` per queue and Celery's closing line, or the report as JSON.
pub(crate) fn purge(report: &PurgeReport, queues: usize, as_json: bool) {
    if as_json {
        return json(report);
    }
    for (q, n) in &report.purged {
        println!("{q}: purged {n} message{}", plural(*n));
    }
    println!(
        "Purged {} message{} from {queues} known task queue{}.",
        report.total,
        plural(report.total),
        plural(queues)
    );
}

// ---------------------------------------------------------------------------------------
// control, inspect
// ---------------------------------------------------------------------------------------

/// Replies as one JSON object, node → answer.
fn replies_json(replies: &[Reply]) -> Value {
    let mut m = Map::new();
    for r in replies {
        m.insert(r.node.clone(), r.value.clone());
    }
    Value::Object(m)
}

/// An `ok`/`error` answer as `(tag, text)`, as Celery's CLI labels them.
fn ok_or_error(value: &Value) -> Option<(&'static str, String)> {
    match value {
        Value::Object(m) if m.contains_key("error") => Some(("ERROR", text(&m["error"]))),
        Value::Object(m) if m.len() == 1 && m.contains_key("ok") => Some(("OK", text(&m["ok"]))),
        _ => None,
    }
}

/// Control replies: `->  node: OK` and the answer indented below, as `celery control` does.
pub(crate) fn control_replies(replies: &[Reply], as_json: bool) {
    if as_json {
        return json(&replies_json(replies));
    }
    if replies.is_empty() {
        return no_nodes_replied();
    }
    for r in replies {
        let (tag, body) = ok_or_error(&r.value).unwrap_or_else(|| {
            (
                "OK",
                serde_json::to_string_pretty(&r.value).unwrap_or_default(),
            )
        });
        println!("->  {}: {tag}", r.node);
        for line in body.lines() {
            println!("        {line}");
        }
    }
}

/// Inspect replies, one node after the other, then how many answered.
pub(crate) fn inspect_replies(method: &str, replies: &[Reply], as_json: bool) {
    if as_json {
        return json(&replies_json(replies));
    }
    if replies.is_empty() {
        return no_nodes_replied();
    }
    for r in replies {
        inspect_reply(method, r);
    }
    nodes_online(replies.len());
}

/// One node's inspect reply as Celery's CLI shows it: `ok`/`error` texts, one line per list
/// item (tasks, scheduled entries, queues, names), anything else as indented JSON.
fn inspect_reply(method: &str, r: &Reply) {
    let (tag, body) = match ok_or_error(&r.value) {
        Some((tag, body)) => (tag, Some(body)),
        None => ("OK", None),
    };
    if method == "ping" && tag == "OK" {
        return println!("->  {}: OK {}", r.node, body.as_deref().unwrap_or("pong"));
    }
    println!("->  {}: {tag}", r.node);
    if let Some(body) = body {
        for line in body.trim_matches('\n').lines() {
            println!("        {line}");
        }
        return;
    }
    let Value::Array(items) = &r.value else {
        for line in serde_json::to_string_pretty(&r.value)
            .unwrap_or_default()
            .lines()
        {
            println!("    {line}");
        }
        return;
    };
    if items.is_empty() {
        println!("    - empty -");
    }
    for i in items {
        match i {
            Value::String(s) => println!("    * {s}"),
            // scheduled: {eta, priority, request}
            Value::Object(o) if o.contains_key("request") => println!(
                "    * {} eta:{} priority:{}",
                task_label(&o["request"]),
                text(&o["eta"]),
                text(&o["priority"])
            ),
            // active_queues: kombu Queue.as_dict()
            Value::Object(o) if o.contains_key("exchange") && o.contains_key("routing_key") => {
                println!(
                    "    * {} exchange={}({}) key={}",
                    text(&o["name"]),
                    text(&o["exchange"]["name"]),
                    text(&o["exchange"]["type"]),
                    text(&o["routing_key"])
                )
            }
            // active/reserved: Request.info()
            Value::Object(o) if o.contains_key("id") => println!(
                "    * {} args={} kwargs={} pid={}",
                task_label(i),
                o.get("args").cloned().unwrap_or(Value::Null),
                o.get("kwargs").cloned().unwrap_or(Value::Null),
                o.get("worker_pid").cloned().unwrap_or(Value::Null)
            ),
            other => println!("    * {other}"),
        }
    }
}

/// `node: status` while `control shutdown` watches a node go.
pub(crate) fn node_status(node: &str, status: &str) {
    println!("{node}: {status}");
}

// ---------------------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------------------

/// One live node in `celeriac status`.
#[derive(Debug, Serialize)]
pub(crate) struct StatusRow {
    /// Node name.
    pub node: String,
    /// What it is running, `name[id]` each.
    pub active: Vec<String>,
    /// Tasks processed, as its heartbeat says.
    pub processed: Value,
    /// Seconds since its heartbeat arrived, to a tenth.
    pub heartbeat_age: f64,
    /// `sw_ident sw_ver` of its heartbeat (`py-celery 5.7.0`, `celeriac 0.1.0`).
    pub sw: String,
    /// Its load average, as its heartbeat says.
    pub loadavg: Value,
}

/// The live nodes as a table (or JSON); with none, the reason on stderr.
pub(crate) fn status(rows: &[StatusRow], listened: f64, as_json: bool) {
    if as_json {
        return json(&rows);
    }
    if rows.is_empty() {
        return eprintln!("Error: no worker is up (no heartbeat within {listened:.1}s)");
    }
    println!(
        "{:<32} {:>9} {:>8}  {:<12} active",
        "node", "processed", "hb age", "software"
    );
    for r in rows {
        println!(
            "{:<32} {:>9} {:>7.1}s  {:<12} {}",
            r.node,
            text(&r.processed),
            r.heartbeat_age,
            r.sw,
            if r.active.is_empty() {
                "-".into()
            } else {
                r.active.join(", ")
            }
        );
    }
    nodes_online(rows.len());
}

// ---------------------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------------------

/// One event on its own line (JSON with `--json`), flushed at once for a live view.
/// Returns false when stdout is closed (`celeriac events | head`), so the stream can end.
pub(crate) fn event(ev: &Value, as_json: bool) -> Result<bool> {
    let line = if as_json {
        serde_json::to_string(ev)?
    } else {
        event_line(ev)
    };
    let mut out = std::io::stdout().lock();
    Ok(writeln!(out, "{line}").and_then(|_| out.flush()).is_ok())
}

/// One line per event, like `celery events --dump`: `host [time] type: fields`.
pub(crate) fn event_line(ev: &Value) -> String {
    let host = ev["hostname"].as_str().unwrap_or("?");
    let kind = ev["type"].as_str().unwrap_or("?");
    let ts = ev["timestamp"].as_f64().unwrap_or(0.0);
    let when = chrono::DateTime::from_timestamp(ts as i64, ((ts.fract()) * 1e9) as u32)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        .unwrap_or_default();
    // What the line already shows, or what only a machine needs.
    let skip = [
        "hostname",
        "type",
        "timestamp",
        "utcoffset",
        "pid",
        "clock",
        "local_received",
        "sw_ident",
        "sw_ver",
        "sw_sys",
    ];
    let fields: Vec<String> = ev
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    format!("{host} [{when}] {kind}: {}", fields.join(", "))
}

// ---------------------------------------------------------------------------------------
// summary
// ---------------------------------------------------------------------------------------

/// `celeriac summary`.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// Every known queue.
    pub queues: Vec<QueueRow>,
    /// The unacked bookkeeping.
    pub unacked: UnackedRow,
    /// The live workers.
    pub workers: Vec<WorkerRow>,
    /// How many dead letters there are.
    pub dead_letters: usize,
}

/// One queue's length, in total and per priority list.
#[derive(Debug, Serialize)]
pub(crate) struct QueueRow {
    /// Queue name.
    pub queue: String,
    /// Messages waiting.
    pub total: usize,
    /// Messages per priority list, in pop order; shown as kombu's bands (`0-2`, `3-5`,
    /// `6-8`, `9`).
    #[serde(serialize_with = "priority_bands")]
    pub by_priority: [usize; 4],
}

/// The bands kombu's four priority lists take on Redis (`PRIORITY_STEPS = [0, 3, 6, 9]`).
const BANDS: [&str; 4] = ["0-2", "3-5", "6-8", "9"];

fn priority_bands<S: Serializer>(lens: &[usize; 4], s: S) -> Result<S::Ok, S::Error> {
    let bands: Map<String, Value> = BANDS
        .iter()
        .zip(lens)
        .map(|(b, n)| (b.to_string(), json!(n)))
        .collect();
    bands.serialize(s)
}

/// Unacked messages at a glance.
#[derive(Debug, Serialize)]
pub(crate) struct UnackedRow {
    /// Taken and not acked, by anyone.
    pub total: usize,
    /// Of those, held under a celeriac lease.
    pub leased_by_celeriac: usize,
    /// Seconds since the oldest stale entry's delivery (or lapsed lease).
    pub oldest_age_s: Option<f64>,
}

/// One live worker, as its heartbeat describes it.
#[derive(Debug, Serialize)]
pub(crate) struct WorkerRow {
    /// Node name.
    pub node: String,
    /// Tasks running, as its heartbeat says.
    pub active: Value,
    /// Tasks processed, as its heartbeat says.
    pub processed: Value,
}

/// The summary as a few short tables (or JSON).
pub(crate) fn summary(s: &Summary, as_json: bool) {
    if as_json {
        return json(s);
    }
    println!(
        "{:<24} {:>8} {:>6} {:>6} {:>6} {:>6}",
        "queue", "total", "p0-2", "p3-5", "p6-8", "p9"
    );
    for q in &s.queues {
        let [a, b, c, d] = q.by_priority;
        println!("{:<24} {:>8} {a:>6} {b:>6} {c:>6} {d:>6}", q.queue, q.total);
    }
    println!(
        "\nunacked: {} ({} leased by live-or-recent celeriac workers){}",
        s.unacked.total,
        s.unacked.leased_by_celeriac,
        s.unacked
            .oldest_age_s
            .map(|a| format!(", oldest entry {a:.0}s since its delivery (or its lapsed lease)"))
            .unwrap_or_default()
    );
    println!("workers online: {}", s.workers.len());
    for w in &s.workers {
        println!(
            "  {:<32} active={} processed={}",
            w.node, w.active, w.processed
        );
    }
    println!("dead letters: {}", s.dead_letters);
}

// ---------------------------------------------------------------------------------------
// jobs, job
// ---------------------------------------------------------------------------------------

/// Task rows, one line each of `key=value` pairs (empty fields left out), or JSON.
pub(crate) fn jobs(rows: &[Value], state: &str, as_json: bool) {
    if as_json {
        return json(&rows);
    }
    if rows.is_empty() {
        return println!("no {state} tasks");
    }
    for r in rows {
        let line: Vec<String> = r
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect();
        println!("{}", line.join("  "));
    }
}

/// What is known about one task, one `key: value` line each, or JSON.
pub(crate) fn job(fields: &Map<String, Value>, as_json: bool) {
    if as_json {
        return json(fields);
    }
    for (k, v) in fields {
        println!("{k:>18}: {}", text(v));
    }
}

// ---------------------------------------------------------------------------------------
// dead
// ---------------------------------------------------------------------------------------

/// One line of `celeriac dead list`.
#[derive(Debug, Serialize)]
pub(crate) struct DeadRow {
    /// Position in the list (0 = newest).
    pub index: usize,
    /// When it was dead-lettered (Unix seconds); `None` for an unreadable entry.
    pub time: Option<f64>,
    /// Its queue; `None` for an unreadable entry.
    pub queue: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// The task id its payload names.
    pub task_id: Option<String>,
}

/// The dead-letter list, one line per entry (or JSON).
pub(crate) fn dead_list(rows: &[DeadRow], as_json: bool) {
    if as_json {
        return json(&rows);
    }
    if rows.is_empty() {
        return println!("no dead letters");
    }
    for r in rows {
        println!(
            "{}  {}  queue={}  task_id={}  reason={}",
            r.index,
            r.time.map(|t| format!("{t:.0}")).unwrap_or_default(),
            r.queue.as_deref().unwrap_or(""),
            r.task_id.as_deref().unwrap_or("-"),
            r.reason
        );
    }
}

/// One dead letter as JSON, its payload added as text (`payload`) for reading.
pub(crate) fn dead_letter(letter: &DeadLetter) -> Result<()> {
    let mut v = serde_json::to_value(letter)?;
    v["payload"] = json!(String::from_utf8_lossy(&letter.payload));
    json(&v);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// locks
// ---------------------------------------------------------------------------------------

/// The locks as a table, or one JSON array on one line.
pub(crate) fn lock_list(entries: &[LockEntry], as_json: bool) {
    if as_json {
        let arr: Vec<Value> = entries.iter().map(lock_json).collect();
        return println!("{}", Value::Array(arr));
    }
    let rows: Vec<[String; 4]> = entries
        .iter()
        .map(|e| {
            [
                e.name.clone(),
                holder_text(e),
                e.holder
                    .ttl
                    .map(human)
                    .unwrap_or_else(|| "no expiry".into()),
                e.age.map(human).unwrap_or_else(|| "?".into()),
            ]
        })
        .collect();
    let head = ["NAME", "HOLDER", "TTL", "AGE"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 3 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3]]);
    }
}

/// One lock in full (or as one JSON line).
pub(crate) fn lock(e: &LockEntry, as_json: bool) {
    if as_json {
        return println!("{}", lock_json(e));
    }
    println!("name:      {}", e.name);
    println!("token:     {}", e.holder.token_str());
    println!(
        "ttl:       {}",
        e.holder
            .ttl
            .map(human)
            .unwrap_or_else(|| "no expiry".into())
    );
    if let Some(a) = e.age {
        println!("age:       {}", human(a));
    }
    match &e.holder.info {
        Some(i) => {
            println!("holder:    celeriac pid {} on {}", i.pid, i.host);
            match &e.liveness {
                Some(Liveness::Alive) => println!("alive:     yes"),
                Some(Liveness::Dead(why)) => println!("alive:     no ({why})"),
                Some(Liveness::Unknown(why)) => println!("alive:     unknown ({why})"),
                None => {}
            }
            println!("fence:     {}", i.fence);
            if let Some(p) = &i.purpose {
                println!("purpose:   {p}");
            }
            if let Some(t) = &i.task_id {
                println!("task:      {t}");
            }
        }
        None => match e.holder.uuid1() {
            Some((at, node)) => println!(
                "holder:    redis-py (uuid1 token: taken at unix {:.3}, node {node:012x})",
                secs_since(at)
            ),
            None => println!("holder:    unknown (not a celeriac or redis-py default token)"),
        },
    }
}

/// Who held the lock `release` just broke.
pub(crate) fn lock_released(name: &str, e: &LockEntry) {
    println!("released {name:?}, held by {}", e.holder);
}

fn secs_since(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A duration as a person reads it: `4.2s`, `3m07s`, `2h05m`, `1d03h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn holder_text(e: &LockEntry) -> String {
    match (&e.holder.info, e.kind) {
        (Some(i), _) => {
            let alive = match &e.liveness {
                Some(Liveness::Alive) => " alive",
                Some(Liveness::Dead(_)) => " DEAD",
                _ => "",
            };
            let mut s = format!("pid {} on {}{alive}", i.pid, i.host);
            if let Some(p) = &i.purpose {
                // Keep the table readable; `show` prints the whole purpose.
                let short: String = p.chars().take(40).collect();
                let more = if p.chars().count() > 40 { "…" } else { "" };
                s.push_str(&format!(" ({short}{more})"));
            }
            s
        }
        (None, LockKind::RedisPy) => match e.holder.uuid1() {
            Some((_, node)) => format!("redis-py, node {node:012x}"),
            None => "redis-py".into(),
        },
        (None, _) => format!("token {}", e.holder.token_str()),
    }
}

fn lock_json(e: &LockEntry) -> Value {
    let info = e.holder.info.as_ref().map(|i| {
        json!({
            "host": i.host,
            "pid": i.pid,
            "pid_start": i.pid_start,
            "acquired_at": secs_since(i.acquired_at),
            "fence": i.fence,
            "purpose": i.purpose,
            "task_id": i.task_id,
        })
    });
    let alive = match &e.liveness {
        Some(Liveness::Alive) => json!(true),
        Some(Liveness::Dead(_)) => json!(false),
        _ => Value::Null,
    };
    json!({
        "name": e.name,
        "kind": match e.kind {
            LockKind::Celeriac => "celeriac",
            LockKind::RedisPy => "redis-py",
            LockKind::Other => "other",
        },
        "token": e.holder.token_str(),
        "ttl": e.holder.ttl.map(|t| t.as_secs_f64()),
        "age": e.age.map(|a| a.as_secs_f64()),
        "holder": info,
        "alive": alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_json_names_the_priority_bands_as_before() {
        let row = QueueRow {
            queue: "celery".into(),
            total: 3,
            by_priority: [2, 0, 0, 1],
        };
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"{"queue":"celery","total":3,"by_priority":{"0-2":2,"3-5":0,"6-8":0,"9":1}}"#
        );
    }

    #[test]
    fn an_event_line_reads_like_celery_events_dump() {
        let ev = json!({"hostname": "w@h", "type": "task-succeeded", "timestamp": 0.5,
                        "uuid": "t-1", "result": "5", "clock": 7});
        assert_eq!(
            event_line(&ev),
            "w@h [1970-01-01 00:00:00.500000] task-succeeded: uuid=t-1, result=5"
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_millis(4200)), "4.2s");
        assert_eq!(human(Duration::from_secs(187)), "3m07s");
        assert_eq!(human(Duration::from_secs(2 * 3600 + 300)), "2h05m");
        assert_eq!(human(Duration::from_secs(27 * 3600)), "1d03h");
    }
}
