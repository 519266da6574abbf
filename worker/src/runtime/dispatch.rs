//! Dispatch: a runnable request starts at once when a slot is free and none waits before
//! it, else it waits in one FIFO for the next free slot (`-O fair`: never a busy slot),
//! after the per-worker `rate_limit` of its task name, if any.

use super::request::{self, Request};
use super::shutdown::Phase;
use super::worker::Worker;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

/// A request may run: start it now when a slot is free and nothing is queued before it,
/// else queue it for the dispatcher (FIFO, `-O fair`: it waits for a free slot). Starting
/// directly saves an idle worker a hand-off between tasks on the way to running the task.
pub(super) fn make_ready(inner: &Arc<Worker>, request: Request) {
    if inner.waiting.load(Ordering::SeqCst) == 0
        && inner.shutdown.phase() == Phase::Running
        && let Ok(permit) = inner.slots.clone().try_acquire_owned()
    {
        start(inner, request, permit);
        return;
    }
    inner.waiting.fetch_add(1, Ordering::SeqCst);
    let _ = inner.ready_tx.send(request);
}

fn start(inner: &Arc<Worker>, request: Request, permit: tokio::sync::OwnedSemaphorePermit) {
    let task = inner.clone();
    inner.main.spawn(async move {
        rate_limit_wait(&task, &request.msg.headers.task).await;
        request::run(&task, request).await;
        drop(permit);
    });
}

/// Start queued requests in order as slots free up, until the worker stops.
pub(super) async fn dispatch_loop(inner: Arc<Worker>, mut ready: mpsc::UnboundedReceiver<Request>) {
    while let Some(request) = ready.recv().await {
        let permit = tokio::select! {
            p = inner.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = inner.shutdown.reached(Phase::Warm) => return,
        };
        if inner.shutdown.phase() != Phase::Running {
            return;
        }
        inner.waiting.fetch_sub(1, Ordering::SeqCst);
        start(&inner, request, permit);
    }
}

/// Honour a `rate_limit` set for this task's name (a per-worker token bucket, like Celery's).
async fn rate_limit_wait(inner: &Worker, name: &str) {
    let wait = inner
        .state
        .rate_limits
        .lock()
        .expect("rate limits")
        .get_mut(name)
        .map(|r| r.book());
    if let Some(w) = wait.filter(|w| !w.is_zero()) {
        tokio::time::sleep(w).await;
    }
}
