//! The remote-control (pidbox) server: answers `celery inspect`/`control`, Flower and
//! `celeriac inspect/control` exactly as a Python worker does (`celery/worker/control.py`,
//! `kombu/pidbox.py`).
//!
//! Requests arrive on the `celery.pidbox` fanout, which on Redis is `PSUBSCRIBE
//! /<db>.celery.pidbox`; replies are LPUSHed to every queue bound to the `reply.celery.pidbox`
//! exchange with the request's routing key (looked up in `_kombu.binding.reply.celery.pidbox`,
//! as kombu's direct-exchange routing does), with the request's `ticket` in the headers.
//! The subscription is re-established after a lost connection; bad requests are logged and
//! dropped, and the worker keeps serving.

use super::events;
use super::outcome::store;
use super::shutdown::Phase;
use super::state::{self, Phase as HeldPhase};
use super::worker::Worker;
use celeriac::protocol::control::ControlRequest;
use celeriac::protocol::envelope::Envelope;
use celeriac::protocol::{ExceptionInfo, ResultMeta, State as TaskState};
use celeriac::retry::Backoff;
use celeriac::transport::{DEFAULT_QUEUE, mailbox};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A running pidbox server.
#[derive(Debug)]
pub(crate) struct Pidbox {
    task: tokio::task::JoinHandle<()>,
    mailbox: mailbox::Pidbox,
}

/// Declare the mailbox and start serving control commands.
pub(crate) async fn start(
    inner: Arc<Worker>,
) -> Result<Pidbox, celeriac::transport::TransportError> {
    let mailbox = mailbox::Pidbox::new(inner.broker.clone(), &inner.cfg.node);
    mailbox.declare().await?;
    // Subscribe before returning, so a request sent right after start-up is not missed.
    let pubsub = mailbox.subscribe().await?;
    let task = tokio::spawn(serve(inner, mailbox.clone(), Some(pubsub)));
    Ok(Pidbox { task, mailbox })
}

impl Pidbox {
    /// Stop serving and remove the mailbox binding and keys, as a Python worker does on shutdown.
    pub(crate) async fn stop(self) {
        self.task.abort();
        if let Err(e) = self.mailbox.unbind().await {
            tracing::warn!(error = %e, "could not remove the pidbox binding");
        }
    }
}

async fn serve(
    inner: Arc<Worker>,
    mailbox: mailbox::Pidbox,
    mut first: Option<redis::aio::PubSub>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut last_refresh = tokio::time::Instant::now();
    loop {
        let pubsub = match first.take() {
            Some(p) => p,
            None => match mailbox.subscribe().await {
                Ok(p) => {
                    tracing::info!("pidbox: subscription re-established");
                    let _ = mailbox.declare().await;
                    backoff.reset();
                    p
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pidbox: cannot subscribe; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
        };
        let mut stream = pubsub.into_on_message();
        loop {
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = tokio::time::sleep(Duration::from_secs(60)) => {
                    if last_refresh.elapsed() > Duration::from_millis(mailbox::BINDING_TTL_MS / 3) {
                        let _ = mailbox.declare().await;
                        last_refresh = tokio::time::Instant::now();
                    }
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            let payload = msg.get_payload_bytes().to_vec();
            let inner = inner.clone();
            tokio::spawn(async move { handle(&inner, &payload).await });
        }
        tracing::warn!("pidbox: subscription lost; reconnecting");
    }
}

async fn handle(inner: &Arc<Worker>, payload: &[u8]) {
    let env = match Envelope::decode(payload) {
        Ok(e) => e,
        Err(e) => {
            return tracing::warn!(error = %e, "pidbox: ignoring a message that is not a kombu envelope");
        }
    };
    if let Some(c) = env.headers.get("clock").and_then(Value::as_u64) {
        inner.state.adjust(c);
    }
    let body = match env.body_json() {
        Ok(b) => b,
        Err(e) => {
            return tracing::warn!(error = %e, "pidbox: ignoring a request with an unreadable body");
        }
    };
    let req: ControlRequest = match serde_json::from_value(body) {
        Ok(r) => r,
        Err(e) => return tracing::warn!(error = %e, "pidbox: ignoring a malformed control request"),
    };
    if !req.addresses(&inner.cfg.node) {
        return;
    }
    tracing::debug!(method = %req.method, "pidbox: request");
    let reply = dispatch(inner, &req).await;
    if let (Some(reply), Some(ticket), Some(reply_to)) = (reply, &req.ticket, &req.reply_to) {
        let body = json!({ inner.cfg.node.clone(): reply });
        if let Err(e) = mailbox::reply(
            &inner.broker,
            &body,
            ticket,
            inner.state.tick(),
            &reply_to.exchange,
            &reply_to.routing_key,
        )
        .await
        {
            tracing::warn!(error = %e, "pidbox: could not send a reply");
        }
    }
}

/// Run one command; `None` means no reply (shutdown, casts that return nothing).
async fn dispatch(inner: &Arc<Worker>, req: &ControlRequest) -> Option<Value> {
    let args = &req.arguments;
    let s = &inner.state;
    let node = &inner.cfg.node;
    Some(match req.method.as_str() {
        "ping" => json!({"ok": "pong"}),
        "pool_restart" => match &inner.python {
            // Celery answers `reload started` and restarts in the background; so do we,
            // and say in the log when the new code serves.
            Some(py) => {
                let py = py.clone();
                tokio::spawn(async move {
                    match py.pool_restart().await {
                        Ok(pid) => tracing::warn!(
                            pid,
                            "pool restart: the new Python code serves new tasks"
                        ),
                        Err(e) => {
                            tracing::error!(error = %e, "pool restart failed; the running code keeps serving")
                        }
                    }
                });
                json!({"ok": "reload started"})
            }
            None => json!({"error": "Pool restarts not enabled: this worker serves no Python app"}),
        },
        "shutdown" => {
            tracing::warn!("Got shutdown from remote");
            inner.shutdown.escalate(Phase::Warm);
            return None;
        }
        "revoke" => {
            revoke(
                inner,
                args.get("task_id"),
                args.get("terminate").is_some_and(truthy),
                args.get("signal"),
            )
            .await
        }
        "terminate" => revoke(inner, args.get("task_id"), true, args.get("signal")).await,
        "active" => json!(s.infos(|p| matches!(p, HeldPhase::Active { .. }))),
        "reserved" => json!(s.infos(|p| matches!(p, HeldPhase::Reserved))),
        "scheduled" => json!(s.scheduled()),
        "revoked" => json!(s.revoked.lock().expect("revoked").list()),
        "registered" | "dump_tasks" => {
            let mut names = inner.task_names();
            let limits = s.rate_limits.lock().expect("rate limits");
            for n in &mut names {
                if let Some(r) = limits.get(n) {
                    *n = format!("{n} [rate_limit={}]", r.spec);
                }
            }
            json!(names)
        }
        "query_task" => {
            let ids: Vec<String> = match args.get("ids") {
                Some(Value::String(one)) => vec![one.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
                _ => vec![],
            };
            let held = s.held.lock().expect("held");
            let mut out = Map::new();
            // Held requests are keyed by delivery tag; one id may be held twice (a retry
            // received while the original runs): the running one answers, as Celery's
            // `query_task` looks in active requests before reserved ones.
            let mut matching: Vec<&state::Held> = held
                .values()
                .filter(|h| ids.contains(&h.msg.headers.id))
                .collect();
            matching.sort_by_key(|h| !matches!(h.phase, HeldPhase::Active { .. }));
            for h in matching {
                let state = match h.phase {
                    HeldPhase::Active { .. } => "active",
                    HeldPhase::Reserved => "reserved",
                    HeldPhase::Scheduled { .. } => "scheduled",
                };
                out.entry(h.msg.headers.id.clone())
                    .or_insert_with(|| json!([state, h.info(node)]));
            }
            Value::Object(out)
        }
        "stats" => stats(inner),
        "active_queues" => json!(
            inner
                .queues
                .lock()
                .expect("queues")
                .iter()
                .map(|q| queue_info(q))
                .collect::<Vec<_>>()
        ),
        "conf" => conf(inner),
        "clock" => json!({"clock": s.clock()}),
        "report" => json!({"ok": format!(
            "software -> celeriac:{} (rust)\nplatform -> system:Linux\nbroker: {}\nnode: {node}",
            celeriac::VERSION,
            inner.broker.url().redacted()
        )}),
        "heartbeat" => {
            let freq = inner.cfg.heartbeat.map_or(2.0, |d| d.as_secs_f64());
            inner
                .events
                .send("worker-heartbeat", inner.events.worker_fields(freq));
            Value::Null
        }
        "enable_events" => {
            if inner.events.set_task_events(true) {
                json!({"ok": "task events enabled"})
            } else {
                json!({"ok": "task events already enabled"})
            }
        }
        "disable_events" => {
            if inner.events.set_task_events(false) {
                json!({"ok": "task events disabled"})
            } else {
                json!({"ok": "task events already disabled"})
            }
        }
        "hello" => {
            let from = args.get("from_node").and_then(Value::as_str).unwrap_or("");
            if from == node {
                Value::Null
            } else {
                let mut rev = s.revoked.lock().expect("revoked");
                match args.get("revoked") {
                    Some(Value::Array(ids)) => ids
                        .iter()
                        .filter_map(Value::as_str)
                        .for_each(|id| rev.add(id)),
                    Some(Value::Object(ids)) => ids.keys().for_each(|id| rev.add(id)),
                    _ => {}
                }
                json!({"revoked": rev.list(), "clock": s.clock()})
            }
        }
        "rate_limit" => {
            let name = args.get("task_name").and_then(Value::as_str).unwrap_or("");
            if !inner.serves(name) {
                json!({"error": "unknown task"})
            } else {
                match args.get("rate_limit") {
                    None | Some(Value::Null) => {
                        s.rate_limits.lock().expect("rate limits").remove(name);
                        json!({"ok": "rate limit disabled successfully"})
                    }
                    Some(v) => {
                        let spec = match v {
                            Value::String(t) => t.clone(),
                            other => other.to_string(),
                        };
                        match super::state::RateLimit::parse(&spec) {
                            Some(r) if r.per_second == 0.0 => {
                                s.rate_limits.lock().expect("rate limits").remove(name);
                                json!({"ok": "rate limit disabled successfully"})
                            }
                            Some(r) => {
                                s.rate_limits
                                    .lock()
                                    .expect("rate limits")
                                    .insert(name.to_string(), r);
                                json!({"ok": "new rate limit set successfully"})
                            }
                            None => {
                                json!({"error": format!("Invalid rate limit string: {spec:?}")})
                            }
                        }
                    }
                }
            }
        }
        "time_limit" => {
            let name = args.get("task_name").and_then(Value::as_str).unwrap_or("");
            if !inner.serves(name) {
                json!({"error": "unknown task"})
            } else {
                let hard = args.get("hard").and_then(Value::as_f64);
                let soft = args.get("soft").and_then(Value::as_f64);
                s.time_limits
                    .lock()
                    .expect("time limits")
                    .insert(name.to_string(), (hard, soft));
                json!({"ok": "time limits set successfully"})
            }
        }
        "add_consumer" => {
            let Some(q) = args
                .get("queue")
                .and_then(Value::as_str)
                .filter(|q| !q.is_empty())
            else {
                return Some(json!({"error": "KeyError('queue')"}));
            };
            let added = {
                let mut qs = inner.queues.lock().expect("queues");
                if qs.iter().any(|x| x == q) {
                    false
                } else {
                    qs.push(q.to_string());
                    true
                }
            };
            if added {
                let _ = inner.broker.declare_queue(q).await;
                inner.queues_changed.notify_waiters();
                json!({"ok": format!("add consumer {q}")})
            } else {
                json!({"ok": format!("already consuming from '{q}'")})
            }
        }
        "cancel_consumer" => {
            let q = args.get("queue").and_then(Value::as_str).unwrap_or("");
            inner.queues.lock().expect("queues").retain(|x| x != q);
            inner.queues_changed.notify_waiters();
            json!({"ok": format!("no longer consuming from {q}")})
        }
        other => json!({"error": format!("KeyError('{other}')")}),
    })
}

/// Python's truth value of a JSON argument: Flower sends `terminate` as `1`, the celery CLI as
/// `true`, and `if terminate:` in `celery/worker/control.py` accepts both.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's repr of a set of strings: `{'a', 'b'}`, or `set()` when empty.
fn set_repr(ids: &[String]) -> String {
    if ids.is_empty() {
        return "set()".into();
    }
    let inner: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Python's type name of a JSON value, for error messages that match the worker's.
fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// The ids of a `revoke`/`terminate` request, as `set(maybe_list(task_id) or [])` reads them,
/// or the error reply a Python worker gives for the same argument (`celery/worker/control.py`:
/// a dict or list inside the set is unhashable; a non-string id fails the `', '.join`).
fn revoke_ids(task_id: Option<&Value>) -> Result<Vec<String>, Value> {
    let items: Vec<&Value> = match task_id {
        None => {
            return Err(
                json!({"error": "TypeError(\"revoke() missing 1 required positional argument: 'task_id'\")"}),
            );
        }
        Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(one) => vec![one],
    };
    if let Some(bad) = items
        .iter()
        .find(|v| matches!(v, Value::Array(_) | Value::Object(_)))
    {
        return Err(
            json!({"error": format!("TypeError(\"unhashable type: '{}'\")", py_type(bad))}),
        );
    }
    if let Some(bad) = items.iter().find(|v| !v.is_string()) {
        return Err(json!({"error": format!(
            "TypeError('sequence item 0: expected str instance, {} found')",
            py_type(bad)
        )}));
    }
    let mut ids: Vec<String> = Vec::new();
    for v in items {
        let id = v.as_str().expect("checked above").to_string();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

async fn revoke(
    inner: &Arc<Worker>,
    task_id: Option<&Value>,
    terminate: bool,
    signal: Option<&Value>,
) -> Value {
    let ids = match revoke_ids(task_id) {
        Ok(ids) => ids,
        Err(reply) => {
            tracing::warn!(task_id = ?task_id, reply = %reply, "pidbox: revoke with a malformed task id");
            return reply;
        }
    };
    {
        let mut rev = inner.state.revoked.lock().expect("revoked");
        for id in &ids {
            rev.add(id);
        }
    }
    // 5.7 writes REVOKED right away for tasks that are not running here and not finished.
    for id in &ids {
        if id.is_empty() {
            // Python logs "Failed to mark task  as revoked in backend: task_id must not be
            // empty" and goes on; never write a `celery-task-meta-` key with no id.
            tracing::warn!("pidbox: not marking an empty task id as revoked in the backend");
            continue;
        }
        if inner.state.is_active(id) {
            continue;
        }
        if let Ok(
            TaskState::Pending | TaskState::Received | TaskState::Retry | TaskState::Rejected,
        ) = inner.backend.state(id).await
        {
            let mut meta = ResultMeta::exception(
                id,
                TaskState::Revoked,
                &ExceptionInfo::revoked("revoked"),
                None,
            );
            meta.children = Value::Null;
            store(inner, &meta).await;
        }
    }
    if !terminate {
        tracing::info!("Tasks flagged as revoked: {}", ids.join(", "));
        return json!({"ok": format!("tasks {} flagged as revoked", set_repr(&ids))});
    }
    let sig = match signal {
        Some(Value::String(s)) => super::pool::parse_signal(s).unwrap_or(libc::SIGTERM),
        Some(Value::Number(n)) => n.as_i64().map_or(libc::SIGTERM, |n| n as i32),
        _ => libc::SIGTERM,
    };
    let mut terminated = Vec::new();
    {
        let held = inner.state.held.lock().expect("held");
        for h in held.values() {
            let id = &h.msg.headers.id;
            if ids.contains(id)
                && matches!(h.phase, HeldPhase::Active { .. })
                && let Some(tx) = &h.terminate
                && tx.send(sig).is_ok()
            {
                tracing::info!(task_id = %id, "Terminating {id} ({sig})");
                terminated.push(id.clone());
            }
        }
    }
    if terminated.is_empty() {
        json!({"ok": "terminate: tasks unknown"})
    } else {
        json!({"ok": format!("terminate: {}", terminated.join(", "))})
    }
}

fn queue_info(q: &str) -> Value {
    json!({
        "name": q,
        "exchange": {"name": q, "type": "direct", "arguments": null, "durable": true, "passive": false,
                     "auto_delete": false, "delivery_mode": null, "no_declare": false},
        "routing_key": q, "queue_arguments": null, "binding_arguments": null, "consumer_arguments": null,
        "durable": true, "exclusive": false, "auto_delete": false, "no_ack": false, "alias": null,
        "bindings": [], "no_declare": null, "expires": null, "message_ttl": null, "max_length": null,
        "max_length_bytes": null, "max_priority": null
    })
}

fn rusage() -> Value {
    // SAFETY: getrusage fills a zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    json!({
        "utime": tv(ru.ru_utime), "stime": tv(ru.ru_stime), "maxrss": ru.ru_maxrss, "ixrss": ru.ru_ixrss,
        "idrss": ru.ru_idrss, "isrss": ru.ru_isrss, "minflt": ru.ru_minflt, "majflt": ru.ru_majflt,
        "nswap": ru.ru_nswap, "inblock": ru.ru_inblock, "oublock": ru.ru_oublock, "msgsnd": ru.ru_msgsnd,
        "msgrcv": ru.ru_msgrcv, "nsignals": ru.ru_nsignals, "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw
    })
}

fn stats(inner: &Worker) -> Value {
    let s = &inner.state;
    let cfg = &inner.cfg;
    let url = inner.broker.url();
    let (host, port) = match url.info.addr() {
        redis::ConnectionAddr::Tcp(h, p)
        | redis::ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => (h.clone(), *p),
        other => (format!("{other:?}"), 0),
    };
    let (implementation, mtpc) = match cfg.pool {
        super::PoolMode::InProcess => ("celeriac.pool:InProcess", json!("N/A")),
        super::PoolMode::Children {
            max_tasks_per_child: 0,
        } => ("celeriac.pool:ChildProcesses", json!("N/A")),
        super::PoolMode::Children {
            max_tasks_per_child: n,
        } => ("celeriac.pool:ChildProcesses", json!(n)),
    };
    json!({
        "total": *s.totals.lock().expect("totals"),
        "pid": s.pid,
        "clock": s.clock().to_string(),
        "uptime": s.started.elapsed().as_secs(),
        "pool": {
            "implementation": implementation,
            "max-concurrency": cfg.concurrency,
            "processes": inner.executor.pids(),
            "max-tasks-per-child": mtpc,
            "put-guarded-by-semaphore": false,
            "timeouts": [cfg.soft_time_limit.map_or(0.0, |d| d.as_secs_f64()), cfg.time_limit.map_or(0.0, |d| d.as_secs_f64())],
            "writes": {"total": s.processed.load(Ordering::Relaxed), "avg": "100.00%", "all": "100.00%", "raw": "", "strategy": "fair", "inqueues": {"total": cfg.concurrency, "active": s.active_count()}},
        },
        "broker": {
            "hostname": host, "userid": url.info.redis_settings().username(), "virtual_host": url.db().to_string(),
            "port": port, "insist": false,
            "ssl": matches!(url.info.addr(), redis::ConnectionAddr::TcpTls { .. }),
            "transport": "redis", "connect_timeout": 4, "transport_options": {"visibility_timeout": cfg.visibility_timeout.as_secs_f64()},
            "login_method": null, "uri_prefix": null, "heartbeat": 120.0, "failover_strategy": "round-robin",
            "alternates": [], "credential_provider": null
        },
        "prefetch_count": cfg.prefetch + s.held.lock().expect("held").values().filter(|h| matches!(h.phase, HeldPhase::Scheduled { .. })).count(),
        "rusage": rusage(),
        "sw_ident": celeriac::protocol::event::SW_IDENT,
        "sw_ver": celeriac::VERSION,
        "loadavg": events::loadavg(),
    })
}

fn conf(inner: &Worker) -> Value {
    let cfg = &inner.cfg;
    let secs = |d: Option<Duration>| d.map(|d| json!(d.as_secs_f64())).unwrap_or(Value::Null);
    json!({
        "broker_url": celeriac::url::redact(&cfg.broker_url),
        "result_backend": celeriac::url::redact(&cfg.backend_url),
        "task_acks_late": cfg.acks_late,
        "task_reject_on_worker_lost": cfg.reject_on_worker_lost,
        "task_acks_on_failure_or_timeout": cfg.acks_on_failure_or_timeout,
        "task_time_limit": secs(cfg.time_limit),
        "task_soft_time_limit": secs(cfg.soft_time_limit),
        "task_track_started": cfg.track_started,
        "result_extended": cfg.result_extended,
        "result_expires": cfg.result_expires.as_secs(),
        "worker_concurrency": cfg.concurrency,
        "worker_prefetch_multiplier": cfg.prefetch.checked_div(cfg.concurrency).unwrap_or(0),
        "worker_max_tasks_per_child": match cfg.pool { super::PoolMode::Children { max_tasks_per_child } if max_tasks_per_child > 0 => json!(max_tasks_per_child), _ => Value::Null },
        "worker_send_task_events": inner.events.task_events_enabled(),
        "broker_transport_options": {"visibility_timeout": cfg.visibility_timeout.as_secs_f64()},
        "task_default_queue": DEFAULT_QUEUE,
        "celeriac_lease": cfg.lease.as_secs_f64(),
        "celeriac_max_message_size": cfg.max_message_size,
        "deprecated_settings": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_ids_read_task_id_as_python_does() {
        assert_eq!(revoke_ids(Some(&json!("a"))), Ok(vec!["a".to_string()]));
        assert_eq!(
            revoke_ids(Some(&json!(["a", "b", "a"]))),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(revoke_ids(Some(&Value::Null)), Ok(vec![]));
        assert_eq!(set_repr(&[]), "set()");
    }

    #[test]
    fn malformed_revoke_ids_get_the_errors_a_python_worker_replies() {
        let err = |v: Value| revoke_ids(Some(&v)).unwrap_err()["error"].clone();
        assert_eq!(
            err(json!(12345)),
            "TypeError('sequence item 0: expected str instance, int found')"
        );
        assert_eq!(
            err(json!({"x": 1})),
            "TypeError(\"unhashable type: 'dict'\")"
        );
        assert_eq!(
            err(json!(["a", ["b"]])),
            "TypeError(\"unhashable type: 'list'\")"
        );
        assert_eq!(
            revoke_ids(None).unwrap_err()["error"],
            "TypeError(\"revoke() missing 1 required positional argument: 'task_id'\")"
        );
    }

    #[test]
    fn terminate_flag_is_python_truthy() {
        assert!(truthy(&json!(1)));
        assert!(truthy(&json!(true)));
        assert!(truthy(&json!("yes")));
        assert!(!truthy(&json!(0)));
        assert!(!truthy(&json!(false)));
        assert!(!truthy(&Value::Null));
    }
}
