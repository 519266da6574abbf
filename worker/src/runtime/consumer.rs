//! Intake: the consumer thread waits for work, claims messages while the worker holds fewer
//! unacked ones than its prefetch, and turns each delivery into a held request (reserved, or
//! scheduled until its ETA) — or settles it at once: undecodable ones go to the dead-letter
//! list, unknown tasks fail with `NotRegistered`, revoked and expired ones are REVOKED. The
//! settling I/O (results, acks) runs on the main runtime, never on this thread.

use super::dispatch::make_ready;
use super::outcome;
use super::request::{Request, revoked_reason};
use super::shutdown::Phase;
use super::state::{self, Held, Phase as HeldPhase};
use super::worker::{Worker, WorkerError};
use celeriac::protocol::{ExceptionInfo, TaskMessage};
use celeriac::retry::Backoff;
use celeriac::transport::{Broker, Delivery, wait::IdleWaiter};
use std::sync::Arc;
use std::time::Duration;

/// The consumer — waiting for work, claiming it, deciding what may run — on a thread of its
/// own with a single-threaded runtime, together with the connections it claims and peeks
/// on. An idle worker's path from "a message arrived" to "its request starts" is then a
/// few hand-offs between tasks of one thread and a single hop to the main runtime, instead
/// of bouncing between the main runtime's threads at every step (a cross-thread wake-up
/// costs 40–60 µs on a small VM; the path had four). Requests, acks and results stay on
/// the main runtime.
///
/// The thread's runtime lives until the worker has stopped (dropping this), not just until
/// the loop ends: a connection the consumer re-established while serving a message may be
/// driven from it, and the stopping worker still acks and stores through those.
pub(super) struct Consumer {
    finished: Option<tokio::sync::oneshot::Receiver<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Consumer {
    pub(super) fn start(inner: Arc<Worker>) -> Result<Consumer, WorkerError> {
        let (finished_tx, finished_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("celeriac-consumer".into())
            .spawn(move || {
                rt.block_on(async move {
                    consume_loop(inner).await;
                    let _ = finished_tx.send(());
                    let _ = stop_rx.await;
                });
            })?;
        Ok(Consumer {
            finished: Some(finished_rx),
            stop: Some(stop_tx),
        })
    }

    /// Resolves when the consume loop has returned: `true` when it did so itself (shutdown
    /// reached), `false` when its thread died (a panic).
    pub(super) async fn finished(&mut self) -> bool {
        match self.finished.take() {
            Some(rx) => rx.await.is_ok(),
            None => true,
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub(super) async fn consume_loop(inner: Arc<Worker>) {
    // Claims go over a connection of this thread's own (see `Consumer`).
    let claimer = loop {
        match Broker::connect(&inner.cfg.broker_url).await {
            Ok(b) => break b,
            Err(e) => {
                tracing::warn!(error = %e, "consumer cannot connect; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = inner.shutdown.reached(Phase::Warm) => return,
                }
            }
        }
    };
    let mut queues = inner.queues.lock().expect("queues").clone();
    let mut waiter = IdleWaiter::for_queues(inner.broker.url().clone(), &queues);
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        if inner.shutdown.phase() != Phase::Running {
            return;
        }
        {
            let current = inner.queues.lock().expect("queues").clone();
            // Compare as sets: our local order is rotated for round robin.
            let (mut a, mut b) = (current.clone(), queues.clone());
            a.sort();
            b.sort();
            if a != b {
                queues = current;
                waiter = IdleWaiter::for_queues(inner.broker.url().clone(), &queues);
            }
        }
        let released = inner.state.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let held = inner.state.unacked_against_prefetch();
        let limit = match inner.cfg.prefetch {
            0 => 256,
            p => p.saturating_sub(held).min(256),
        };
        if limit == 0 || queues.is_empty() {
            // Full: take nothing we cannot run (no claim while the only slot is busy).
            tokio::select! {
                _ = released => {}
                _ = inner.queues_changed.notified() => {}
                _ = inner.shutdown.reached(Phase::Warm) => {}
            }
            continue;
        }
        match claimer
            .claim(
                &queues,
                limit,
                &inner.cfg.node,
                inner.cfg.max_message_size,
                inner.cfg.lease,
            )
            .await
        {
            Ok(claimed) if !claimed.is_empty() => {
                backoff.reset();
                // kombu's round robin: the queue that delivered goes to the end.
                if queues.len() > 1
                    && let Some(pos) = queues.iter().position(|q| q == claimed[0].queue())
                {
                    let q = queues.remove(pos);
                    queues.push(q);
                }
                for c in claimed {
                    match c {
                        celeriac::transport::Claimed::Delivery(d) => on_delivery(&inner, d),
                        celeriac::transport::Claimed::DeadLettered {
                            queue,
                            task_id,
                            reason,
                        } => {
                            tracing::error!(
                                %queue,
                                task_id = task_id.as_deref().unwrap_or("-"),
                                %reason,
                                "message moved to the dead-letter list"
                            );
                            if let Some(id) = task_id {
                                let exc = ExceptionInfo::new(
                                    "celery.exceptions",
                                    "InvalidTaskError",
                                    reason,
                                );
                                let w = inner.clone();
                                inner.main.spawn(async move {
                                    outcome::store_dead_letter_failure(&w, &id, &exc).await
                                });
                            }
                        }
                    }
                }
            }
            Ok(_) => {
                waiter.rearm();
                tokio::select! {
                    _ = waiter.notified() => {}
                    _ = inner.queues_changed.notified() => {}
                    _ = inner.shutdown.reached(Phase::Warm) => {}
                    // A safety net only; wake-ups come from the waiter.
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = inner.shutdown.reached(Phase::Warm) => {}
                }
            }
        }
    }
}

pub(super) fn on_delivery(inner: &Arc<Worker>, d: Delivery) {
    let msg = match TaskMessage::decode(&d.raw) {
        Ok(m) => m,
        Err(e) => {
            let w = inner.clone();
            inner
                .main
                .spawn(async move { outcome::dead_letter(&w, &d, &e).await });
            return;
        }
    };
    let id = msg.headers.id.clone();
    tracing::info!(task_id = %id, task = %msg.headers.task, "Task {}[{}] received", msg.headers.task, id);
    inner
        .events
        .task("task-received", state::received_fields(&msg));
    // What settles a message without running it (unknown task, revoked or expired) writes
    // its result and ack on the main runtime, as every result and ack does, not on this
    // thread.
    if !inner.serves(&msg.headers.task) {
        let w = inner.clone();
        inner
            .main
            .spawn(async move { outcome::not_registered(&w, &msg, &d).await });
        return;
    }
    if let Some(reason) = revoked_reason(inner, &msg) {
        let w = inner.clone();
        inner
            .main
            .spawn(async move { outcome::revoke_message(&w, &msg, &d, reason).await });
        return;
    }
    let eta = msg.headers.eta_time().ok().flatten();
    let scheduled = eta.filter(|t| *t > chrono::Utc::now());
    let phase = match &scheduled {
        Some(_) => HeldPhase::Scheduled {
            eta: msg.headers.eta.clone().unwrap_or_default(),
        },
        None => HeldPhase::Reserved,
    };
    // From here on the request is its delivery tag: a message with the id of a task still
    // running here (Celery's `self.retry()` publishes the retry before the original returns)
    // is a request of its own.
    let request = Request {
        msg: Arc::new(msg),
        delivery: Arc::new(d),
    };
    inner.state.hold(Held {
        msg: request.msg.clone(),
        delivery: request.delivery.clone(),
        phase,
        unacked: true,
        terminate: None,
    });
    match scheduled {
        None => make_ready(inner, request),
        Some(at) => {
            let task = inner.clone();
            inner.main.spawn(async move {
                let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {
                        task.state.set_phase(request.tag(), HeldPhase::Reserved);
                        make_ready(&task, request);
                    }
                    // Warm shutdown gives scheduled messages back (see `stop`).
                    _ = task.shutdown.reached(Phase::Warm) => {}
                }
            });
        }
    }
}
