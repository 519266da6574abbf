//! `celeriac control ...`: Celery's remote-control commands (`celery control`), and a
//! `shutdown` that, unlike Celery's, watches the nodes go and says which are still busy.

use super::{EX_UNAVAILABLE, Target};
use crate::cli::render;
use anyhow::{Result, bail};
use celeriac::Broker;
use celeriac::client::control;
use clap::Subcommand;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `celeriac control ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ControlCmd {
    /// Warm-stop workers and wait until each is offline.
    Shutdown {
        /// Which nodes: every live one, or those named with `-d`.
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
        /// Which nodes: every live one, or those named with `-d`.
        #[command(flatten)]
        target: Target,
    },
    /// Set a task's rate limit (e.g. 10/m; 0 disables).
    RateLimit {
        /// Task name.
        task: String,
        /// Rate (`N`, `N/s`, `N/m`, `N/h`).
        rate: String,
        /// Which nodes: every live one, or those named with `-d`.
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
        /// Which nodes: every live one, or those named with `-d`.
        #[command(flatten)]
        target: Target,
    },
    /// Start consuming from a queue.
    AddConsumer {
        /// The queue to start consuming from.
        queue: String,
        /// Which nodes: every live one, or those named with `-d`.
        #[command(flatten)]
        target: Target,
    },
    /// Stop consuming from a queue.
    CancelConsumer {
        /// The queue to stop consuming from.
        queue: String,
        /// Which nodes: every live one, or those named with `-d`.
        #[command(flatten)]
        target: Target,
    },
    /// Load new Python code: a worker serving a Python app starts a fresh zygote (which
    /// imports the app again) for new tasks; running tasks finish in the old one.
    PoolRestart {
        /// Which nodes: every live one, or those named with `-d`.
        #[command(flatten)]
        target: Target,
    },
}

/// The pidbox arguments of a command, named as Celery's control handlers take them.
fn arguments(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Send the command and print the replies: exit 0 when every node agreed, 1 when one
/// answered with an error, [`EX_UNAVAILABLE`] when none answered.
pub(crate) async fn run(cmd: ControlCmd, broker_url: &str) -> Result<u8> {
    let broker = super::broker(broker_url).await?;
    let (method, args, target) = match cmd {
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
            arguments(&[
                ("task_id", json!(ids)),
                ("terminate", json!(terminate)),
                ("signal", json!(signal)),
            ]),
            target,
        ),
        ControlCmd::RateLimit { task, rate, target } => (
            "rate_limit",
            arguments(&[("task_name", json!(task)), ("rate_limit", json!(rate))]),
            target,
        ),
        ControlCmd::TimeLimit {
            task,
            soft,
            hard,
            target,
        } => (
            "time_limit",
            arguments(&[
                ("task_name", json!(task)),
                ("soft", json!(soft)),
                ("hard", json!(hard)),
            ]),
            target,
        ),
        ControlCmd::AddConsumer { queue, target } => (
            "add_consumer",
            arguments(&[("queue", json!(queue))]),
            target,
        ),
        ControlCmd::CancelConsumer { queue, target } => (
            "cancel_consumer",
            arguments(&[("queue", json!(queue))]),
            target,
        ),
        // Celery's `control pool_restart` arguments, as its CLI sends them.
        ControlCmd::PoolRestart { target } => (
            "pool_restart",
            arguments(&[
                ("modules", Value::Null),
                ("reload", json!(false)),
                ("reloader", Value::Null),
            ]),
            target,
        ),
    };
    let replies = control::broadcast(
        &broker,
        method,
        args,
        &target.destination,
        target.reply_timeout(),
        true,
    )
    .await?;
    render::control_replies(&replies, target.json);
    Ok(if replies.is_empty() {
        EX_UNAVAILABLE
    } else if replies.iter().any(|r| r.value.get("error").is_some()) {
        1
    } else {
        0
    })
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

    /// Print the status line when it changed (not with `--json`, which prints one document
    /// at the end).
    fn say(&mut self, node: &str, quiet: bool) {
        let line = self.status();
        if line != self.said {
            if !quiet {
                render::node_status(node, &line);
            }
            self.said = line;
        }
    }

    /// Fold one event from this node into what we know about it.
    fn observe(&mut self, ev: &Value) {
        let uuid = ev["uuid"].as_str().unwrap_or("");
        match ev["type"].as_str().unwrap_or("") {
            "worker-heartbeat" | "worker-online" => {
                self.last_seen = Instant::now();
                if let Some(f) = ev["freq"].as_f64().filter(|f| *f > 0.0) {
                    self.freq = f;
                }
            }
            "worker-offline" => {
                self.offline = true;
                if ev["active"].as_u64() == Some(0) {
                    self.running.clear();
                }
            }
            "task-started" => {
                self.task_events = true;
                self.running
                    .entry(uuid.to_string())
                    .or_insert_with(|| format!("?[{uuid}]"));
            }
            "task-succeeded" | "task-failed" | "task-revoked" | "task-rejected"
            | "task-retried" => {
                self.task_events = true;
                self.running.remove(uuid);
            }
            _ => {}
        }
    }
}

/// The running tasks of an `active` reply: id → `name[id]`.
fn running_of(node: &control::Running) -> BTreeMap<String, String> {
    node.tasks
        .iter()
        .filter_map(|t| Some((t["id"].as_str()?.to_string(), render::task_label(t))))
        .collect()
}

/// Warm-stop the targeted nodes and watch them go: exit 0 when all stopped.
///
/// A node counts as stopped once it has left the cluster (its `worker-offline` event, or no
/// reply and no heartbeat for two heartbeat intervals) *and* none of the tasks it was running
/// is unaccounted for: tasks come from `active` replies and leave through
/// `task-succeeded/failed/revoked/...` events. One slow reply never makes a busy node look
/// stopped.
async fn shutdown(broker: &Broker, target: &Target, wait: Duration) -> Result<u8> {
    let (dest, timeout) = (&target.destination, target.reply_timeout());
    // Listen before asking anything, so no heartbeat, offline or task event is missed.
    let mut events = Box::pin(control::events(broker).await?);
    // `active` doubles as the ping: who is up, and what each one is running.
    let first = control::active(broker, dest, timeout).await?;
    if first.is_empty() {
        render::no_nodes_replied();
        return Ok(EX_UNAVAILABLE);
    }
    for d in dest {
        if !first.iter().any(|r| &r.node == d) {
            eprintln!("{d}: no reply (not up?); not asked to stop");
        }
    }
    let mut nodes: BTreeMap<String, Stopping> = first
        .iter()
        .map(|r| (r.node.clone(), Stopping::new(running_of(r))))
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
                    st.observe(&ev);
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
                    let replies = control::active(broker, &waiting, Duration::from_millis(500))
                        .await
                        .unwrap_or_default();
                    for r in replies {
                        if let Some(st) = nodes.get_mut(&r.node) {
                            st.last_seen = Instant::now();
                            st.running = running_of(&r);
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
        render::json(&json!({"nodes": out, "stragglers": stragglers}));
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
