//! The worker runtime: consume → run → store → ack, with Celery's semantics. This module
//! starts the parts and stops them ([`run`]); each file owns one stage of a request's life:
//!
//! - `config` — [`WorkerConfig`], validated by the CLI before anything starts.
//! - `worker` — the shared parts (`Worker`: connections, registry, held-request state,
//!   events, executor, slots) and the start-up wait for Redis.
//! - `consumer` — intake, on a thread of its own: claims messages while the worker holds
//!   fewer unacked ones than its prefetch (a busy single-slot worker takes nothing it cannot
//!   run), turns each into a held `Request` (reserved, or scheduled until its ETA), or
//!   settles it at once (undecodable → dead letters, unknown task → `NotRegistered`,
//!   revoked/expired → REVOKED).
//! - `dispatch` — one FIFO for free slots (`-O fair`: never a busy slot), rate limits.
//! - `request` — one request's run: revocation and idempotency checks, the ack plan
//!   (early/late) decided once, the effective time limits, the executor.
//! - [`executor`] — the seam behind which a task body runs: in-process or in a child process
//!   ([`pool`], [`child`]).
//! - `outcome` — every result and ack write: metas, events, callbacks and chord joins
//!   (`callbacks`), acks, requeues, dead letters.
//! - `background` — heartbeats, lease refresh, the stale-unacked sweeper; [`pidbox`] —
//!   remote control; [`events`] — the event publisher; [`state`] — what `inspect` reads;
//!   [`shutdown`] — warm and cold shutdown.

mod background;
mod callbacks;
pub(crate) mod child;
mod config;
mod consumer;
mod dispatch;
pub(crate) mod events;
pub(crate) mod executor;
mod outcome;
pub(crate) mod pidbox;
pub(crate) mod pool;
mod request;
pub(crate) mod shutdown;
pub(crate) mod state;
mod worker;
pub(crate) mod zygote;

pub(crate) use config::{PoolMode, WorkerConfig};
pub(crate) use worker::{Exit, WorkerError};

use background::{heartbeat_loop, lease_loop};
use celeriac::backend::Backend;
use celeriac::task::Registry;
use celeriac::transport::Broker;
use consumer::Consumer;
use dispatch::dispatch_loop;
use events::Events;
use executor::Executor;
use shutdown::{Phase, Shutdown};
use state::{Held, State};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use worker::{Worker, connect_at_startup};

/// Run a worker until it is shut down.
pub(crate) async fn run(
    cfg: WorkerConfig,
    registry: Registry,
    python: Option<Arc<zygote::PythonPool>>,
    shutdown: Shutdown,
) -> Result<Exit, WorkerError> {
    let Some(broker) = connect_at_startup(&cfg, &shutdown, &cfg.broker_url, || {
        Broker::connect(&cfg.broker_url)
    })
    .await?
    else {
        return Ok(Exit::Warm);
    };
    let Some(backend) = connect_at_startup(&cfg, &shutdown, &cfg.backend_url, || {
        Backend::connect(&cfg.backend_url)
    })
    .await?
    else {
        return Ok(Exit::Warm);
    };
    let backend = backend.with_expires(cfg.result_expires);
    let registry = Arc::new(registry);
    let state = Arc::new(State::new(cfg.node.clone()));
    // A task's own limits (a Python task's `Task.time_limit` / `Task.rate_limit`, a Rust
    // task's `#[celeriac::task(time_limit = ..)]`) sit where `control time_limit` /
    // `rate_limit` put theirs: on the task, above the worker's defaults.
    let own_limits = cfg
        .python_tasks
        .iter()
        .map(|(name, t)| {
            (
                name,
                t.time_limit,
                t.soft_time_limit,
                t.rate_limit.as_deref(),
            )
        })
        .chain(registry.defs().map(|d| {
            let o = &d.options;
            (
                &d.name,
                o.time_limit,
                o.soft_time_limit,
                o.rate_limit.as_deref(),
            )
        }));
    for (name, hard, soft, rate) in own_limits {
        if hard.is_some() || soft.is_some() {
            state
                .time_limits
                .lock()
                .expect("time limits")
                .insert(name.clone(), (hard, soft));
        }
        if let Some(r) = rate.and_then(state::RateLimit::parse)
            && r.per_second > 0.0
        {
            state
                .rate_limits
                .lock()
                .expect("rate limits")
                .insert(name.clone(), r);
        }
    }
    let events = Events::start(broker.clone(), state.clone(), cfg.task_events);
    let executor: Box<dyn Executor> = match cfg.pool {
        PoolMode::InProcess => Box::new(executor::InProcess(registry.clone())),
        PoolMode::Children {
            max_tasks_per_child,
        } => {
            let pool = pool::ChildPool::new(
                cfg.exe.clone(),
                max_tasks_per_child,
                cfg.command_tasks.clone(),
                cfg.concurrency,
                // Task bodies take their global locks where the broker is (JWQL keeps both
                // in one Redis), unless the environment names another place.
                std::env::var_os("CELERIAC_LOCK_URL")
                    .is_none()
                    .then(|| cfg.broker_url.clone()),
            );
            // With a Python app, its zygote keeps the standby; Rust children start on demand.
            if python.is_none() {
                pool.warm_up()?;
            }
            Box::new(pool)
        }
    };
    let executor: Box<dyn Executor> = match &python {
        Some(py) => Box::new(executor::Routed {
            python: py.clone(),
            python_names: cfg.python_tasks.keys().cloned().collect(),
            rest: executor,
        }),
        None => executor,
    };
    let (ready_tx, ready_rx) = mpsc::unbounded_channel();
    let inner = Arc::new(Worker {
        slots: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
        waiting: AtomicUsize::new(0),
        queues: std::sync::Mutex::new(cfg.queues.clone()),
        queues_changed: tokio::sync::Notify::new(),
        same_database: cfg.broker_url == cfg.backend_url,
        cfg,
        broker,
        backend,
        registry,
        state,
        events,
        executor,
        python: python.clone(),
        shutdown,
        ready_tx,
        jobs: AtomicU64::new(0),
        main: tokio::runtime::Handle::current(),
    });

    // Start-up, in Celery's order: restore stale unacked, declare queues, online, pidbox.
    background::sweep_stale(&inner, "unacknowledged messages of dead consumers").await;
    for q in inner.cfg.queues.clone() {
        inner.broker.declare_queue(&q).await?;
    }
    let pidbox = pidbox::start(inner.clone()).await?;

    let freq = inner.cfg.heartbeat.map_or(2.0, |d| d.as_secs_f64());
    inner
        .events
        .send("worker-online", inner.events.worker_fields(freq));
    tracing::info!(node = %inner.cfg.node, queues = ?inner.cfg.queues, concurrency = inner.cfg.concurrency, "celeriac worker ready");
    // Ready line on stderr for tools and tests waiting for start-up.
    eprintln!("celeriac worker {} ready.", inner.cfg.node);

    let background = vec![
        tokio::spawn(heartbeat_loop(inner.clone())),
        tokio::spawn(lease_loop(inner.clone())),
    ];
    let dispatcher = tokio::spawn(dispatch_loop(inner.clone(), ready_rx));

    let mut consumer = Consumer::start(inner.clone())?;
    let consumer_died = !consumer.finished().await;
    if consumer_died {
        // Not a shutdown anyone asked for: stop as a warm shutdown would, then fail loudly.
        tracing::error!("the consumer thread died; stopping the worker");
        inner.shutdown.escalate(Phase::Warm);
    }

    // Stopping: no new task starts; warm waits for running ones, cold kills them.
    let exit = stop(&inner).await;
    dispatcher.abort();
    for b in background {
        b.abort();
    }
    inner
        .events
        .send("worker-offline", inner.events.worker_fields(freq));
    pidbox.stop().await;
    if let Some(py) = &python {
        py.stop().await;
    }
    inner.events.flush(Duration::from_secs(2)).await;
    drop(consumer);
    tracing::info!(?exit, "worker stopped");
    if consumer_died {
        return Err(WorkerError::Io(std::io::Error::other(
            "the consumer thread died (see the log above)",
        )));
    }
    Ok(exit)
}

pub(super) async fn stop(inner: &Arc<Worker>) -> Exit {
    // Wait for running tasks (warm), or kill them (cold, now or when escalated).
    loop {
        if inner.shutdown.phase() >= Phase::Cold {
            inner.executor.kill_all();
        }
        if inner.state.active_count() == 0 {
            break;
        }
        tokio::select! {
            _ = inner.state.released.notified() => {}
            _ = inner.shutdown.reached(Phase::Cold) => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // Give back everything held but not started (reserved, scheduled): RPUSH, redelivered.
    let held: Vec<Held> = {
        let mut map = inner.state.held.lock().expect("held");
        map.drain().map(|(_, h)| h).collect()
    };
    let mut requeued = 0;
    for h in held {
        if h.unacked {
            match inner.broker.requeue(&h.delivery, false).await {
                Ok(_) => requeued += 1,
                Err(e) => {
                    tracing::error!(task_id = %h.msg.headers.id, error = %e, "could not requeue; it stays in unacked for the sweeper")
                }
            }
        }
    }
    if requeued > 0 {
        tracing::warn!(
            count = requeued,
            "Restoring {requeued} unacknowledged message(s)"
        );
    }
    if inner.shutdown.phase() >= Phase::Cold {
        Exit::Cold
    } else {
        Exit::Warm
    }
}
