//! Operator commands: `purge`, `control`, `inspect`, `status`, `events`, `summary`, `jobs`,
//! `job`, `dead`. Each prints a readable table by default and JSON with `--json`; failures
//! exit non-zero and say why on stderr. Everything reads Redis with SCAN/HSCAN/LRANGE, never
//! KEYS (production profiles rename KEYS away).

use anyhow::{Context, Result, bail};
use celeriac::Broker;
use celeriac::client::control::{self, Reply};
use celeriac::protocol::{
    Envelope, ExceptionInfo, ResultMeta, State as TaskState, TaskMessage, time,
};
use celeriac::transport::keys;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

/// Celery's exit code when no node replied (`EX_UNAVAILABLE`).
pub const EX_UNAVAILABLE: u8 = 69;

/// `--json` only.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `celeriac purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    /// Queues to purge (comma-separated). Default: celery.
    #[arg(short = 'Q', long = "queues", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Queues to leave alone.
    #[arg(short = 'X', long = "exclude-queues", value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Node selection and output options shared by control commands.
#[derive(Debug, Args, Clone)]
pub struct Target {
    /// Only these nodes (comma-separated node names).
    #[arg(
        short = 'd',
        long = "destination",
        value_delimiter = ',',
        global = true
    )]
    pub destination: Vec<String>,
    /// Seconds to wait for replies.
    #[arg(short = 't', long = "timeout", default_value_t = 1.0, global = true)]
    pub timeout: f64,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `celeriac control ...`.
#[derive(Debug, Subcommand)]
pub enum ControlCmd {
    /// Warm-stop workers and wait until each is offline.
    Shutdown {
        /// Targets.
        #[command(flatten)]
        target: Target,
        /// Seconds to wait for the workers to stop.
        #[arg(long = "wait", default_value_t = 60.0)]
        wait: f64,
    },
    /// Revoke tasks (discarded when they arrive; with --terminate, running ones are killed).
    Revoke {
        /// Task ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Kill the running task's process group.
        #[arg(long)]
        terminate: bool,
        /// Signal for --terminate.
        #[arg(long, default_value = "SIGTERM")]
        signal: String,
        /// Targets.
        #[command(flatten)]
        target: Target,
    },
    /// Set a task's rate limit (e.g. 10/m; 0 disables).
    RateLimit {
        /// Task name.
        task: String,
        /// Rate (`N`, `N/s`, `N/m`, `N/h`).
        rate: String,
        /// Targets.
        #[command(flatten)]
        target: Target,
    },
    /// Set a task's soft and hard time limits (seconds).
    TimeLimit {
        /// Task name.
        task: String,
        /// Soft limit.
        soft: f64,
        /// Hard limit.
        hard: Option<f64>,
        /// Targets.
        #[command(flatten)]
        target: Target,
    },
    /// Start consuming from a queue.
    AddConsumer {
        /// Queue.
        queue: String,
        /// Targets.
        #[command(flatten)]
        target: Target,
    },
    /// Stop consuming from a queue.
    CancelConsumer {
        /// Queue.
        queue: String,
        /// Targets.
        #[command(flatten)]
        target: Target,
    },
}

/// `celeriac inspect ...`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// ping, active, reserved, scheduled, registered, stats, revoked, active_queues,
    /// query_task, conf, clock, report.
    #[arg(value_parser = ["ping", "active", "reserved", "scheduled", "registered", "stats", "revoked", "active_queues", "query_task", "conf", "clock", "report"])]
    pub method: String,
    /// Task ids (query_task).
    pub ids: Vec<String>,
    /// Targets.
    #[command(flatten)]
    pub target: Target,
}

/// `celeriac status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Seconds to listen for heartbeats.
    #[arg(short = 't', long = "timeout", default_value_t = 2.5)]
    pub timeout: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `celeriac events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// One line per event (the only view; accepted for `celery events --dump` compatibility).
    #[arg(long)]
    pub dump: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<usize>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Print each event as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `celeriac jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Which tasks: queued, reserved, active, scheduled, failed.
    #[arg(long, default_value = "queued", value_parser = ["queued", "reserved", "active", "scheduled", "failed"])]
    pub state: String,
    /// Only this queue.
    #[arg(long, short = 'q')]
    pub queue: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `celeriac job ID`.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Task id.
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `celeriac dead ...`.
#[derive(Debug, Subcommand)]
pub enum DeadCmd {
    /// List dead letters (newest first).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its original bytes.
    Show {
        /// Index from `dead list` (0 = newest).
        index: usize,
    },
    /// Put dead letters back on their queue (fix the cause first).
    Requeue {
        /// Index from `dead list`.
        index: Option<usize>,
        /// All of them.
        #[arg(long)]
        all: bool,
    },
    /// Delete all dead letters.
    Purge {
        /// Do not ask for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
}

fn targets(t: &Target) -> (Vec<String>, Duration) {
    (
        t.destination.clone(),
        Duration::from_secs_f64(t.timeout.max(0.05)),
    )
}

fn args(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// A JSON value as plain text (strings unquoted), so table columns can be padded.
fn text(v: &Value) -> String {
    v.as_str()
        .map(String::from)
        .unwrap_or_else(|| v.to_string())
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn replies_json(replies: &[Reply]) -> Value {
    let mut m = Map::new();
    for r in replies {
        m.insert(r.node.clone(), r.value.clone());
    }
    Value::Object(m)
}

fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N]: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

/// `celeriac purge`.
pub async fn purge(a: PurgeArgs, broker_url: &str, backend_url: &str) -> Result<u8> {
    let broker = Broker::connect(broker_url)
        .await
        .context("connecting to the broker")?;
    let mut queues: Vec<String> = if a.queues.is_empty() {
        vec![keys::DEFAULT_QUEUE.into()]
    } else {
        a.queues.clone()
    };
    queues.retain(|q| !a.exclude.contains(q));
    if !a.force {
        let mut total = 0;
        for q in &queues {
            total += broker.queue_len(q).await?;
        }
        if !confirm(&format!(
            "{total} messages in {} queue(s) ({}) will be deleted. Are you sure?",
            queues.len(),
            queues.join(", ")
        )) {
            eprintln!("purge cancelled");
            return Ok(1);
        }
    }
    let backend = celeriac::Backend::connect(backend_url)
        .await
        .context("connecting to the result backend")?;
    let mut per_queue = BTreeMap::new();
    let mut ids = Vec::new();
    for q in &queues {
        let msgs = broker.purge(q).await?;
        per_queue.insert(q.clone(), msgs.len());
        ids.extend(msgs.iter().filter_map(|m| task_id_of(m)));
    }
    // Beyond Celery: wake every client waiting on a purged task with REVOKED('purged'). A
    // message taken off the list can no longer run anywhere, so this goes first, before the
    // slower look at what workers hold.
    revoke_purged(&backend, &ids).await?;
    // Reserved-but-not-running messages of these queues sit in `unacked`; Celery leaves them
    // there (they come back after the visibility timeout). Ask the workers what is running,
    // and drop the rest.
    let active: BTreeSet<String> = control::broadcast(
        &broker,
        "active",
        Map::new(),
        &[],
        Duration::from_secs(1),
        true,
    )
    .await
    .unwrap_or_default()
    .iter()
    .flat_map(|r| r.value.as_array().cloned().unwrap_or_default())
    .filter_map(|i| i["id"].as_str().map(String::from))
    .collect();
    let mut unacked_dropped = 0;
    let mut dropped_ids = Vec::new();
    for (tag, value) in broker.unacked_entries().await? {
        let Ok((env, _ex, rk)) = serde_json::from_slice::<(Value, String, String)>(&value) else {
            continue;
        };
        let rk = if rk.is_empty() {
            keys::DEFAULT_QUEUE.to_string()
        } else {
            rk
        };
        if !queues.contains(&rk) {
            continue;
        }
        let id = env["headers"]["id"].as_str().map(String::from);
        if id.as_ref().is_some_and(|i| active.contains(i)) {
            continue;
        }
        // Dropping a reserved message is an ack: it leaves unacked without a requeue.
        broker.ack(&tag).await?;
        unacked_dropped += 1;
        *per_queue.entry(rk).or_default() += 1;
        if let Some(i) = id {
            dropped_ids.push(i);
        }
    }
    // Tell workers still holding those in memory to discard them.
    if !dropped_ids.is_empty() {
        let _ = control::broadcast(
            &broker,
            "revoke",
            args(&[("task_id", json!(dropped_ids))]),
            &[],
            Duration::from_secs(1),
            false,
        )
        .await;
    }
    revoke_purged(&backend, &dropped_ids).await?;
    ids.extend(dropped_ids);
    let total: usize = per_queue.values().sum();
    if a.json {
        print_json(
            &json!({"purged": per_queue, "total": total, "unacked_removed": unacked_dropped, "revoked_ids": ids.len()}),
        );
    } else {
        for (q, n) in &per_queue {
            println!("{q}: purged {n} message{}", if *n == 1 { "" } else { "s" });
        }
        println!(
            "Purged {total} message{} from {} known task queue{}.",
            if total == 1 { "" } else { "s" },
            queues.len(),
            if queues.len() == 1 { "" } else { "s" }
        );
    }
    Ok(0)
}

/// Store and publish REVOKED(`purged`) for each id, waking `AsyncResult.get()` callers.
async fn revoke_purged(backend: &celeriac::Backend, ids: &[String]) -> Result<()> {
    for id in ids {
        let mut meta = ResultMeta::exception(
            id,
            TaskState::Revoked,
            &ExceptionInfo::revoked("purged"),
            None,
        );
        meta.children = Value::Null;
        backend
            .store(&meta)
            .await
            .with_context(|| format!("storing REVOKED for purged task {id}"))?;
    }
    Ok(())
}

fn task_id_of(raw: &[u8]) -> Option<String> {
    let env = Envelope::decode(raw).ok()?;
    if let Some(id) = env.headers.get("id").and_then(Value::as_str) {
        return Some(id.to_string());
    }
    TaskMessage::from_envelope(&env).ok().map(|m| m.headers.id)
}

/// `celeriac control ...`.
pub async fn control_cmd(cmd: ControlCmd, broker_url: &str) -> Result<u8> {
    let broker = Broker::connect(broker_url)
        .await
        .context("connecting to the broker")?;
    let (method, arguments, target) = match cmd {
        ControlCmd::Shutdown { target, wait } => {
            return shutdown(&broker, &target, Duration::from_secs_f64(wait)).await;
        }
        ControlCmd::Revoke {
            ids,
            terminate,
            signal,
            target,
        } => (
            "revoke",
            args(&[
                ("task_id", json!(ids)),
                ("terminate", json!(terminate)),
                ("signal", json!(signal)),
            ]),
            target,
        ),
        ControlCmd::RateLimit { task, rate, target } => (
            "rate_limit",
            args(&[("task_name", json!(task)), ("rate_limit", json!(rate))]),
            target,
        ),
        ControlCmd::TimeLimit {
            task,
            soft,
            hard,
            target,
        } => (
            "time_limit",
            args(&[
                ("task_name", json!(task)),
                ("soft", json!(soft)),
                ("hard", json!(hard)),
            ]),
            target,
        ),
        ControlCmd::AddConsumer { queue, target } => {
            ("add_consumer", args(&[("queue", json!(queue))]), target)
        }
        ControlCmd::CancelConsumer { queue, target } => {
            ("cancel_consumer", args(&[("queue", json!(queue))]), target)
        }
    };
    let (dest, timeout) = targets(&target);
    let replies = control::broadcast(&broker, method, arguments, &dest, timeout, true).await?;
    print_replies(&replies, target.json);
    Ok(if replies.is_empty() {
        EX_UNAVAILABLE
    } else if replies.iter().any(|r| r.value.get("error").is_some()) {
        1
    } else {
        0
    })
}

fn print_replies(replies: &[Reply], as_json: bool) {
    if as_json {
        return print_json(&replies_json(replies));
    }
    if replies.is_empty() {
        eprintln!("Error: No nodes replied within time constraint");
        return;
    }
    for r in replies {
        let (tag, text) = match &r.value {
            Value::Object(m) if m.contains_key("error") => (
                "ERROR",
                m["error"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| m["error"].to_string()),
            ),
            Value::Object(m) if m.len() == 1 && m.contains_key("ok") => (
                "OK",
                m["ok"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| m["ok"].to_string()),
            ),
            other => (
                "OK",
                serde_json::to_string_pretty(other).unwrap_or_default(),
            ),
        };
        println!("->  {}: {tag}", r.node);
        for line in text.lines() {
            println!("        {line}");
        }
    }
}

/// What `control shutdown` knows about one node it asked to stop.
#[derive(Debug)]
struct Stopping {
    /// Tasks it is still running: id → `name[id]`.
    running: BTreeMap<String, String>,
    /// Last sign of life: a reply to a probe or a heartbeat.
    last_seen: Instant,
    /// Its heartbeat interval (`freq` of its worker events; Celery's default 2 s).
    freq: f64,
    /// It published `worker-offline` (a Python worker does so *before* its running tasks
    /// finish, with `active` > 0; a celeriac worker after they finished).
    offline: bool,
    /// Task events were seen from it, so the end of its tasks can be observed.
    task_events: bool,
    /// Confirmed stopped.
    stopped: bool,
    /// The last status line printed.
    said: String,
}

impl Stopping {
    fn new(running: BTreeMap<String, String>) -> Self {
        Stopping {
            running,
            last_seen: Instant::now(),
            freq: 2.0,
            offline: false,
            task_events: false,
            stopped: false,
            said: String::new(),
        }
    }

    /// Gone from the cluster: offline, or neither answering nor heartbeating for two
    /// heartbeat intervals (Celery's own `Worker.alive` rule in `celery/events/state.py`).
    fn gone(&self) -> bool {
        self.offline || self.last_seen.elapsed().as_secs_f64() > (2.0 * self.freq).max(4.0)
    }

    /// The status line for this node.
    fn status(&self) -> String {
        if self.stopped {
            return "stopped".into();
        }
        if self.running.is_empty() {
            return "stopping".into();
        }
        let tasks: Vec<&str> = self.running.values().map(String::as_str).collect();
        let busy = format!("busy: {}", tasks.join(", "));
        if self.gone() {
            format!("{busy} (left the cluster; waiting for its task events)")
        } else {
            busy
        }
    }

    /// Print the status line when it changed.
    fn say(&mut self, node: &str, quiet: bool) {
        let line = self.status();
        if line != self.said {
            if !quiet {
                println!("{node}: {line}");
            }
            self.said = line;
        }
    }
}

/// `name[id]` of a `Request.info()` entry.
fn task_label(t: &Value) -> String {
    format!(
        "{}[{}]",
        t["name"].as_str().unwrap_or("?"),
        t["id"].as_str().unwrap_or("?")
    )
}

/// The running tasks of an `active` reply: id → `name[id]`.
fn running_of(reply: &Value) -> Option<BTreeMap<String, String>> {
    Some(
        reply
            .as_array()?
            .iter()
            .filter_map(|t| Some((t["id"].as_str()?.to_string(), task_label(t))))
            .collect(),
    )
}

/// Warm-stop the targeted nodes and watch them go: exit 0 when all stopped.
///
/// A node counts as stopped once it has left the cluster (its `worker-offline` event, or no
/// reply and no heartbeat for two heartbeat intervals) *and* none of the tasks it was running
/// is unaccounted for: tasks come from `active` replies and leave through
/// `task-succeeded/failed/revoked/...` events. One slow reply never makes a busy node look
/// stopped.
async fn shutdown(broker: &Broker, target: &Target, wait: Duration) -> Result<u8> {
    let (dest, timeout) = targets(target);
    // Listen before asking anything, so no heartbeat, offline or task event is missed.
    let mut events = Box::pin(control::events(broker).await?);
    // `active` doubles as the ping: who is up, and what each one is running.
    let first = control::broadcast(broker, "active", Map::new(), &dest, timeout, true).await?;
    if first.is_empty() {
        eprintln!("Error: No nodes replied within time constraint");
        return Ok(EX_UNAVAILABLE);
    }
    for d in &dest {
        if !first.iter().any(|r| &r.node == d) {
            eprintln!("{d}: no reply (not up?); not asked to stop");
        }
    }
    let mut nodes: BTreeMap<String, Stopping> = first
        .iter()
        .map(|r| {
            let running = running_of(&r.value).unwrap_or_default();
            (r.node.clone(), Stopping::new(running))
        })
        .collect();
    let asked: Vec<String> = nodes.keys().cloned().collect();
    control::broadcast(broker, "shutdown", Map::new(), &asked, timeout, false).await?;
    for (n, st) in nodes.iter_mut() {
        st.say(n, target.json);
    }
    let deadline = Instant::now() + wait;
    let mut next_probe = Instant::now() + Duration::from_millis(500);
    while nodes.values().any(|s| !s.stopped) && Instant::now() < deadline {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { bail!("the event subscription was closed") };
                if let Some(st) = ev["hostname"].as_str().and_then(|h| nodes.get_mut(h)) {
                    observe(st, &ev);
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = tokio::time::sleep_until(next_probe.into()) => {
                next_probe = Instant::now() + Duration::from_secs(1);
                let waiting: Vec<String> = nodes
                    .iter()
                    .filter(|(_, s)| !s.stopped && !s.offline)
                    .map(|(n, _)| n.clone())
                    .collect();
                if !waiting.is_empty() {
                    let replies = control::broadcast(
                        broker, "active", Map::new(), &waiting, Duration::from_millis(500), true,
                    )
                    .await
                    .unwrap_or_default();
                    for r in replies {
                        if let (Some(st), Some(running)) = (nodes.get_mut(&r.node), running_of(&r.value)) {
                            st.last_seen = Instant::now();
                            st.running = running;
                        }
                    }
                }
            }
        }
        for (n, st) in nodes.iter_mut() {
            if !st.stopped && st.gone() && st.running.is_empty() {
                st.stopped = true;
            }
            st.say(n, target.json);
        }
    }
    let stragglers: Vec<String> = nodes
        .iter()
        .filter(|(_, s)| !s.stopped)
        .map(|(n, _)| n.clone())
        .collect();
    if target.json {
        let out: Map<String, Value> = nodes
            .iter()
            .map(|(n, s)| {
                let v = if s.stopped {
                    json!("stopped")
                } else {
                    json!({"running": s.running.values().collect::<Vec<_>>(), "left_cluster": s.gone()})
                };
                (n.clone(), v)
            })
            .collect();
        print_json(&json!({"nodes": out, "stragglers": stragglers}));
    }
    if stragglers.is_empty() {
        return Ok(0);
    }
    for n in &stragglers {
        let st = &nodes[n];
        let why = if !st.gone() {
            "still up"
        } else if st.task_events {
            "left the cluster; its tasks were not reported finished"
        } else {
            "left the cluster without task events to confirm its tasks finished; run workers with -E"
        };
        let tasks: Vec<&str> = st.running.values().map(String::as_str).collect();
        eprintln!(
            "{n}: not stopped after {:.0}s ({why}); running: {}",
            wait.as_secs_f64(),
            if tasks.is_empty() {
                "-".to_string()
            } else {
                tasks.join(", ")
            }
        );
    }
    Ok(1)
}

/// Fold one event from a stopping node into what we know about it.
fn observe(st: &mut Stopping, ev: &Value) {
    let uuid = ev["uuid"].as_str().unwrap_or("");
    match ev["type"].as_str().unwrap_or("") {
        "worker-heartbeat" | "worker-online" => {
            st.last_seen = Instant::now();
            if let Some(f) = ev["freq"].as_f64().filter(|f| *f > 0.0) {
                st.freq = f;
            }
        }
        "worker-offline" => {
            st.offline = true;
            if ev["active"].as_u64() == Some(0) {
                st.running.clear();
            }
        }
        "task-started" => {
            st.task_events = true;
            st.running
                .entry(uuid.to_string())
                .or_insert_with(|| format!("?[{uuid}]"));
        }
        "task-succeeded" | "task-failed" | "task-revoked" | "task-rejected" | "task-retried" => {
            st.task_events = true;
            st.running.remove(uuid);
        }
        _ => {}
    }
}

/// `celeriac inspect ...`.
pub async fn inspect(a: InspectArgs, broker_url: &str) -> Result<u8> {
    let broker = Broker::connect(broker_url)
        .await
        .context("connecting to the broker")?;
    let (dest, timeout) = targets(&a.target);
    let arguments = match a.method.as_str() {
        "query_task" => args(&[("ids", json!(a.ids))]),
        "registered" => args(&[("taskinfoitems", json!([]))]),
        "conf" => args(&[("with_defaults", json!(false))]),
        _ => Map::new(),
    };
    let replies = control::broadcast(&broker, &a.method, arguments, &dest, timeout, true).await?;
    if a.target.json {
        print_json(&replies_json(&replies));
    } else if replies.is_empty() {
        eprintln!("Error: No nodes replied within time constraint");
    } else {
        for r in &replies {
            print_inspect_reply(&a.method, r);
        }
        println!(
            "\n{} node{} online.",
            replies.len(),
            if replies.len() == 1 { "" } else { "s" }
        );
    }
    Ok(if replies.is_empty() {
        EX_UNAVAILABLE
    } else {
        0
    })
}

/// One node's inspect reply as Celery's CLI shows it: `ok`/`error` texts, one line per list
/// item (tasks, scheduled entries, queues, names), anything else as indented JSON.
fn print_inspect_reply(method: &str, r: &Reply) {
    let (tag, body) = match &r.value {
        Value::Object(m) if m.contains_key("error") => ("ERROR", Some(text(&m["error"]))),
        Value::Object(m) if m.len() == 1 && m.contains_key("ok") => ("OK", Some(text(&m["ok"]))),
        _ => ("OK", None),
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

/// Live nodes seen through heartbeats within `listen` (after a `heartbeat` cast that makes
/// every worker send one at once, as Flower does on start).
async fn live_nodes(
    broker: &Broker,
    listen: Duration,
) -> Result<BTreeMap<String, (Value, Instant)>> {
    let mut events = Box::pin(control::events(broker).await?);
    control::broadcast(
        broker,
        "heartbeat",
        Map::new(),
        &[],
        Duration::from_secs(1),
        false,
    )
    .await?;
    let mut nodes = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + listen;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, events.next()).await {
        let kind = ev["type"].as_str().unwrap_or("");
        if let Some(h) = ev["hostname"].as_str() {
            match kind {
                "worker-heartbeat" | "worker-online" => {
                    nodes.insert(h.to_string(), (ev.clone(), Instant::now()));
                }
                "worker-offline" => {
                    nodes.remove(h);
                }
                _ => {}
            }
        }
    }
    Ok(nodes)
}

/// `celeriac status`.
pub async fn status(a: StatusArgs, broker_url: &str) -> Result<u8> {
    let broker = Broker::connect(broker_url)
        .await
        .context("connecting to the broker")?;
    let started = Instant::now();
    let nodes = live_nodes(&broker, Duration::from_secs_f64(a.timeout)).await?;
    let active = control::broadcast(
        &broker,
        "active",
        Map::new(),
        &[],
        Duration::from_secs(1),
        true,
    )
    .await
    .unwrap_or_default();
    let mut rows = Vec::new();
    for (node, (ev, seen)) in &nodes {
        let tasks: Vec<String> = active
            .iter()
            .filter(|r| &r.node == node)
            .flat_map(|r| r.value.as_array().cloned().unwrap_or_default())
            .map(|t| {
                format!(
                    "{}[{}]",
                    t["name"].as_str().unwrap_or("?"),
                    t["id"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let age = seen.elapsed().as_secs_f64()
            + (started.elapsed().as_secs_f64() - seen.duration_since(started).as_secs_f64())
                .min(0.0);
        rows.push(json!({
            "node": node, "active": tasks, "processed": ev["processed"], "heartbeat_age": (age * 10.0).round() / 10.0,
            "sw": format!("{} {}", ev["sw_ident"].as_str().unwrap_or("?"), ev["sw_ver"].as_str().unwrap_or("?")),
            "loadavg": ev["loadavg"],
        }));
    }
    if a.json {
        print_json(&json!(rows));
    } else if rows.is_empty() {
        eprintln!(
            "Error: no worker is up (no heartbeat within {:.1}s)",
            a.timeout
        );
    } else {
        println!(
            "{:<32} {:>9} {:>8}  {:<12} active",
            "node", "processed", "hb age", "software"
        );
        for r in &rows {
            let active = r["active"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            println!(
                "{:<32} {:>9} {:>7.1}s  {:<12} {}",
                r["node"].as_str().unwrap_or(""),
                text(&r["processed"]),
                r["heartbeat_age"].as_f64().unwrap_or(0.0),
                r["sw"].as_str().unwrap_or(""),
                if active.is_empty() {
                    "-".into()
                } else {
                    active
                }
            );
        }
        println!(
            "\n{} node{} online.",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        );
    }
    Ok(if rows.is_empty() { EX_UNAVAILABLE } else { 0 })
}

/// `celeriac events --dump`.
pub async fn events(a: EventsArgs, broker_url: &str) -> Result<u8> {
    let broker = Broker::connect(broker_url)
        .await
        .context("connecting to the broker")?;
    let mut stream = Box::pin(control::events(&broker).await?);
    control::broadcast(
        &broker,
        "heartbeat",
        Map::new(),
        &[],
        Duration::from_secs(1),
        false,
    )
    .await?;
    let deadline = a
        .timeout
        .map(|t| tokio::time::Instant::now() + Duration::from_secs_f64(t));
    let mut n = 0;
    // One Ctrl-C listener for the whole stream: a fresh one per event could miss a signal
    // that arrives while a line is being written.
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, stream.next())
                    .await
                    .ok()
                    .flatten(),
                None => stream.next().await,
            }
        };
        let ev = tokio::select! {
            ev = next => ev,
            _ = &mut interrupted => None,
        };
        let Some(ev) = ev else { break };
        let line = if a.json {
            serde_json::to_string(&ev)?
        } else {
            event_line(&ev)
        };
        let mut out = std::io::stdout().lock();
        // A closed pipe (`celeriac events | head`) ends the stream quietly.
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            break;
        }
        n += 1;
        if a.count.is_some_and(|c| n >= c) {
            break;
        }
    }
    Ok(0)
}

/// One line per event, like `celery events --dump`: `host [time] type: fields`.
pub fn event_line(ev: &Value) -> String {
    let host = ev["hostname"].as_str().unwrap_or("?");
    let kind = ev["type"].as_str().unwrap_or("?");
    let ts = ev["timestamp"].as_f64().unwrap_or(0.0);
    let when = chrono::DateTime::from_timestamp(ts as i64, ((ts.fract()) * 1e9) as u32)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        .unwrap_or_default();
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
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string())
            )
        })
        .collect();
    format!("{host} [{when}] {kind}: {}", fields.join(", "))
}

/// Queue names known to the broker: bound task queues (from `_kombu.binding.*` tables, via
/// SCAN) plus the default queue.
async fn known_queues(conn: &mut celeriac::conn::Conn) -> Result<Vec<String>> {
    let mut queues: BTreeSet<String> = [keys::DEFAULT_QUEUE.to_string()].into();
    let mut cursor: u64 = 0;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", keys::BINDING_PREFIX))
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        for table in page {
            let exchange = &table[keys::BINDING_PREFIX.len()..];
            if exchange == keys::PIDBOX_EXCHANGE
                || exchange == keys::REPLY_EXCHANGE
                || exchange == keys::EVENT_EXCHANGE
            {
                continue;
            }
            let members: Vec<String> = conn.smembers(&table).await?;
            for m in members {
                if let Some((_, _, q)) = keys::parse_binding_member(&m) {
                    queues.insert(q.to_string());
                }
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(queues.into_iter().collect())
}

/// `celeriac summary`.
pub async fn summary(a: JsonFlag, broker_url: &str) -> Result<u8> {
    let broker = Broker::connect(broker_url)
        .await
        .context("connecting to the broker")?;
    let mut conn = broker.conn();
    let queues = known_queues(&mut conn).await?;
    let mut qrows = Vec::new();
    for q in &queues {
        let mut p = redis::pipe();
        for k in keys::queue_keys(q) {
            p.llen(k);
        }
        let lens: Vec<usize> = p.query_async(&mut conn).await?;
        qrows.push(json!({"queue": q, "total": lens.iter().sum::<usize>(), "by_priority": {"0-2": lens[0], "3-5": lens[1], "6-8": lens[2], "9": lens[3]}}));
    }
    let unacked: usize = conn.hlen(keys::UNACKED).await?;
    let leased: usize = conn.hlen(keys::HOLDERS).await?;
    let oldest: Vec<(String, f64)> = conn.zrange_withscores(keys::UNACKED_INDEX, 0, 0).await?;
    let now = time::unix_now();
    // kombu scores an entry with its delivery time; celeriac with the end of its holder's
    // lease (in the future while the holder lives). The lowest score is the oldest delivery
    // only when it lies in the past; a live lease has no age to report.
    let oldest_age = oldest
        .first()
        .filter(|(_, s)| *s <= now)
        .map(|(_, s)| now - s);
    let dead: usize = conn.llen(keys::DEAD_LETTER).await?;
    let nodes = live_nodes(&broker, Duration::from_millis(1500)).await?;
    let workers: Vec<Value> = nodes
        .iter()
        .map(
            |(n, (ev, _))| json!({"node": n, "active": ev["active"], "processed": ev["processed"]}),
        )
        .collect();
    let out = json!({
        "queues": qrows, "unacked": {"total": unacked, "leased_by_celeriac": leased, "oldest_age_s": oldest_age},
        "workers": workers, "dead_letters": dead,
    });
    if a.json {
        print_json(&out);
        return Ok(0);
    }
    println!(
        "{:<24} {:>8} {:>6} {:>6} {:>6} {:>6}",
        "queue", "total", "p0-2", "p3-5", "p6-8", "p9"
    );
    for r in &qrows {
        let b = &r["by_priority"];
        println!(
            "{:<24} {:>8} {:>6} {:>6} {:>6} {:>6}",
            text(&r["queue"]),
            text(&r["total"]),
            text(&b["0-2"]),
            text(&b["3-5"]),
            text(&b["6-8"]),
            text(&b["9"])
        );
    }
    println!(
        "\nunacked: {unacked} ({leased} leased by live-or-recent celeriac workers){}",
        oldest_age
            .map(|a| format!(", oldest entry {a:.0}s since its delivery (or its lapsed lease)"))
            .unwrap_or_default()
    );
    println!("workers online: {}", workers.len());
    for w in &workers {
        println!(
            "  {:<32} active={} processed={}",
            w["node"].as_str().unwrap_or(""),
            w["active"],
            w["processed"]
        );
    }
    println!("dead letters: {dead}");
    Ok(0)
}

fn message_row(raw: &[u8], queue: &str, position: Option<usize>) -> Option<Value> {
    let env = Envelope::decode(raw).ok()?;
    let msg = TaskMessage::from_envelope(&env).ok()?;
    Some(json!({
        "id": msg.headers.id, "task": msg.headers.task, "queue": queue, "priority": msg.properties.priority,
        "eta": msg.headers.eta, "retries": msg.headers.retries, "args": msg.headers.argsrepr, "position": position,
    }))
}

/// `celeriac jobs`.
pub async fn jobs(a: JobsArgs, broker_url: &str, backend_url: &str) -> Result<u8> {
    let broker = Broker::connect(broker_url)
        .await
        .context("connecting to the broker")?;
    let mut conn = broker.conn();
    let mut rows = Vec::new();
    match a.state.as_str() {
        "queued" => {
            let queues = match &a.queue {
                Some(q) => vec![q.clone()],
                None => known_queues(&mut conn).await?,
            };
            'outer: for q in queues {
                for k in keys::queue_keys(&q) {
                    // The list is consumed from the right: the last element runs next.
                    let items: Vec<Vec<u8>> = conn.lrange(&k, 0, -1).await?;
                    for (i, raw) in items.iter().rev().enumerate() {
                        if let Some(r) = message_row(raw, &q, Some(i)) {
                            rows.push(r);
                        }
                        if rows.len() >= a.limit {
                            break 'outer;
                        }
                    }
                }
            }
        }
        "reserved" | "active" | "scheduled" => {
            let replies = control::broadcast(
                &broker,
                &a.state,
                Map::new(),
                &[],
                Duration::from_secs(1),
                true,
            )
            .await?;
            for r in replies {
                for item in r.value.as_array().cloned().unwrap_or_default() {
                    let req = if item.get("request").is_some() {
                        item["request"].clone()
                    } else {
                        item.clone()
                    };
                    let q = req["delivery_info"]["routing_key"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    if a.queue.as_ref().is_some_and(|want| *want != q) {
                        continue;
                    }
                    rows.push(json!({"id": req["id"], "task": req["name"], "queue": q, "worker": r.node,
                                     "eta": item.get("eta"), "time_start": req["time_start"], "worker_pid": req["worker_pid"]}));
                }
            }
            rows.truncate(a.limit);
        }
        _ => {
            // failed: FAILURE results in the backend (SCAN celery-task-meta-*).
            let backend = celeriac::Backend::connect(backend_url).await?;
            let mut bconn = backend.conn();
            let mut cursor: u64 = 0;
            loop {
                let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}*", keys::TASK_META_PREFIX))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut bconn)
                    .await?;
                for key in page {
                    let raw: Option<Vec<u8>> = bconn.get(&key).await?;
                    if let Some(m) = raw.and_then(|r| ResultMeta::decode(&r).ok())
                        && m.status == TaskState::Failure
                    {
                        let exc = m.exception_info();
                        rows.push(json!({"id": m.task_id, "date_done": m.date_done,
                            "exception": exc.map(|e| e.repr())}));
                    }
                    if rows.len() >= a.limit {
                        break;
                    }
                }
                if next == 0 || rows.len() >= a.limit {
                    break;
                }
                cursor = next;
            }
        }
    }
    if a.json {
        print_json(&json!(rows));
    } else if rows.is_empty() {
        println!("no {} tasks", a.state);
    } else {
        for r in &rows {
            let o = r.as_object().expect("row");
            let line: Vec<String> = o
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string())
                    )
                })
                .collect();
            println!("{}", line.join("  "));
        }
    }
    Ok(0)
}

/// `celeriac job ID`: where the task is now (queue position, holder), and what became of it.
pub async fn job(a: JobArgs, broker_url: &str, backend_url: &str) -> Result<u8> {
    let broker = Broker::connect(broker_url)
        .await
        .context("connecting to the broker")?;
    let backend = celeriac::Backend::connect(backend_url)
        .await
        .context("connecting to the result backend")?;
    let mut conn = broker.conn();
    let mut out = Map::new();
    out.insert("id".into(), json!(a.id));
    let needle = format!("\"id\": \"{}\"", a.id);
    let compact = format!("\"id\":\"{}\"", a.id);
    let has = |raw: &[u8]| {
        let s = String::from_utf8_lossy(raw);
        s.contains(&needle) || s.contains(&compact)
    };
    'q: for q in known_queues(&mut conn).await? {
        for k in keys::queue_keys(&q) {
            let items: Vec<Vec<u8>> = conn.lrange(&k, 0, -1).await?;
            let len = items.len();
            if let Some(idx) = items.iter().position(|r| has(r)) {
                out.insert("where".into(), json!("queued"));
                out.insert("queue".into(), json!(q));
                out.insert("list".into(), json!(k.escape_debug().to_string()));
                out.insert("position".into(), json!(len - 1 - idx));
                if let Some(row) = message_row(&items[idx], &q, Some(len - 1 - idx)) {
                    out.insert("message".into(), row);
                }
                break 'q;
            }
        }
    }
    if !out.contains_key("where") {
        for (tag, value) in broker.unacked_entries().await? {
            if has(&value) {
                let holder: Option<String> = conn.hget(keys::HOLDERS, &tag).await?;
                let score: Option<f64> = conn.zscore(keys::UNACKED_INDEX, &tag).await?;
                out.insert("where".into(), json!("unacked"));
                out.insert("delivery_tag".into(), json!(tag));
                out.insert("holder".into(), json!(holder));
                let now = time::unix_now();
                match (&holder, score) {
                    (Some(_), Some(s)) => out.insert(
                        "lease_expires_in_s".into(),
                        json!(((s - now) * 10.0).round() / 10.0),
                    ),
                    (None, Some(s)) => out.insert(
                        "held_for_s".into(),
                        json!(((now - s) * 10.0).round() / 10.0),
                    ),
                    _ => None,
                };
                break;
            }
        }
    }
    let replies = control::broadcast(
        &broker,
        "query_task",
        args(&[("ids", json!([a.id]))]),
        &[],
        Duration::from_secs(1),
        true,
    )
    .await?;
    for r in replies {
        if let Some(entry) = r.value.get(&a.id) {
            out.insert("worker".into(), json!(r.node));
            out.insert("worker_state".into(), entry[0].clone());
            out.insert("retries".into(), entry[1]["retries"].clone());
            out.insert("time_start".into(), entry[1]["time_start"].clone());
        }
    }
    match backend.get(&a.id).await? {
        Some(m) => {
            out.insert("state".into(), json!(m.status.as_str()));
            out.insert("result".into(), m.result.clone());
            out.insert("date_done".into(), json!(m.date_done));
            if let Some(x) = &m.extended {
                out.insert("retries".into(), json!(x.retries));
            }
        }
        None => {
            out.insert("state".into(), json!("PENDING"));
        }
    }
    let dead: Vec<Vec<u8>> = conn.lrange(keys::DEAD_LETTER, 0, -1).await?;
    if let Some(i) = dead
        .iter()
        .position(|d| dead_payload(d).is_some_and(|p| has(&p)))
    {
        out.insert("dead_letter_index".into(), json!(i));
    }
    if !out.contains_key("where") && !out.contains_key("worker") {
        out.insert(
            "where".into(),
            json!(if out["state"] == "PENDING" {
                "unknown"
            } else {
                "finished"
            }),
        );
    }
    if a.json {
        print_json(&Value::Object(out));
    } else {
        for (k, v) in &out {
            println!(
                "{k:>18}: {}",
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string())
            );
        }
    }
    Ok(0)
}

fn dead_payload(entry: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let v: Value = serde_json::from_slice(entry).ok()?;
    base64::engine::general_purpose::STANDARD
        .decode(v["payload_b64"].as_str()?)
        .ok()
}

/// `celeriac dead ...`.
pub async fn dead(cmd: DeadCmd, broker_url: &str) -> Result<u8> {
    let broker = Broker::connect(broker_url)
        .await
        .context("connecting to the broker")?;
    let mut conn = broker.conn();
    match cmd {
        DeadCmd::List {
            limit,
            json: as_json,
        } => {
            let items: Vec<Vec<u8>> = conn
                .lrange(keys::DEAD_LETTER, 0, limit as isize - 1)
                .await?;
            let rows: Vec<Value> = items
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let v: Value = serde_json::from_slice(e).unwrap_or(json!({"reason": "unreadable dead-letter entry"}));
                    let id = dead_payload(e).and_then(|p| task_id_of(&p));
                    json!({"index": i, "time": v["time"], "queue": v["queue"], "reason": v["reason"], "task_id": id})
                })
                .collect();
            if as_json {
                print_json(&json!(rows));
            } else if rows.is_empty() {
                println!("no dead letters");
            } else {
                for r in rows {
                    println!(
                        "{:>4}  {}  queue={}  task_id={}  reason={}",
                        r["index"],
                        r["time"]
                            .as_f64()
                            .map(|t| format!("{t:.0}"))
                            .unwrap_or_default(),
                        r["queue"].as_str().unwrap_or(""),
                        r["task_id"].as_str().unwrap_or("-"),
                        r["reason"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
        DeadCmd::Show { index } => {
            let e: Option<Vec<u8>> = conn.lindex(keys::DEAD_LETTER, index as isize).await?;
            let Some(e) = e else {
                bail!("no dead letter at index {index}")
            };
            let mut v: Value =
                serde_json::from_slice(&e).context("dead-letter entry is not JSON")?;
            if let Some(p) = dead_payload(&e) {
                v["payload"] = json!(String::from_utf8_lossy(&p));
            }
            print_json(&v);
            Ok(0)
        }
        DeadCmd::Requeue { index, all } => {
            let items: Vec<Vec<u8>> = conn.lrange(keys::DEAD_LETTER, 0, -1).await?;
            let picked: Vec<(usize, Vec<u8>)> = match (index, all) {
                (_, true) => items.into_iter().enumerate().collect(),
                (Some(i), false) => items
                    .into_iter()
                    .enumerate()
                    .filter(|(j, _)| *j == i)
                    .collect(),
                (None, false) => bail!("give an index or --all"),
            };
            if picked.is_empty() {
                bail!("no such dead letter");
            }
            let mut n = 0;
            for (_, e) in picked {
                let v: Value = serde_json::from_slice(&e).unwrap_or_default();
                let Some(payload) = dead_payload(&e) else {
                    continue;
                };
                let queue = v["queue"]
                    .as_str()
                    .filter(|q| !q.is_empty())
                    .unwrap_or(keys::DEFAULT_QUEUE)
                    .to_string();
                // Remove exactly this entry and push its payload back, atomically.
                let mut p = redis::pipe();
                p.atomic()
                    .lrem(keys::DEAD_LETTER, 1, &e)
                    .ignore()
                    .lpush(&queue, &payload)
                    .ignore();
                p.query_async::<()>(&mut conn).await?;
                n += 1;
            }
            println!("requeued {n} message{}", if n == 1 { "" } else { "s" });
            Ok(0)
        }
        DeadCmd::Purge { force } => {
            let len: usize = conn.llen(keys::DEAD_LETTER).await?;
            if !force && !confirm(&format!("Delete {len} dead letters?")) {
                eprintln!("cancelled");
                return Ok(1);
            }
            let _: i64 = conn.del(keys::DEAD_LETTER).await?;
            println!(
                "deleted {len} dead letter{}",
                if len == 1 { "" } else { "s" }
            );
            Ok(0)
        }
    }
}
