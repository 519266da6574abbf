//! The executor seam: how a request's task body is run, behind one small trait, so dispatch
//! and outcome never know whether it ran in the worker process ([`InProcess`], `-P solo` /
//! `threads`), in a child process of ours ([`super::pool::ChildPool`], the prefork default),
//! or elsewhere. A new kind of execution (a Python child forked from a pre-imported
//! interpreter) is one more implementation.

use super::child::{ChildOutcome, ChildRequest, execute};
use super::zygote::PyReport;
use celeriac::task::{Registry, StateSink};
use celeriac::transport::Delivery;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExecOutcome {
    /// The task body finished (value, exception or retry request).
    Done(ChildOutcome),
    /// The process running it died (signal, abort, OOM kill): `WorkerLostError`.
    WorkerLost(String),
    /// Killed at the hard time limit (seconds).
    TimeLimit(f64),
    /// Killed by a revoke with `terminate` (signal number).
    Terminated(i32),
    /// A Python task ran through Celery's tracer, which stored its result itself
    /// ([`super::zygote`]); what is left is the parent's part: events and the ack.
    Traced(PyReport),
}

/// The future of one run.
pub(crate) type RunFuture<'a> = Pin<Box<dyn Future<Output = ExecOutcome> + Send + 'a>>;

/// Runs task bodies.
pub(crate) trait Executor: Send + Sync + std::fmt::Debug {
    /// Run one request (`delivery` is its message as received: an executor that hands the
    /// message on whole, as the Python one does, passes those bytes). `started` is told the pid of the process running it (for `inspect
    /// active` and for freeing the locks of a process that died); a signal number received
    /// on `terminate` (a revoke with `terminate`) ends the run early. `hard_limit` ends it
    /// as [`ExecOutcome::TimeLimit`] where the executor can enforce it. A Rust task's
    /// `update_state` calls go to `updates` (a Python task's tracer stores its own).
    fn run<'a>(
        &'a self,
        req: ChildRequest,
        delivery: Arc<Delivery>,
        hard_limit: Option<Duration>,
        started: Box<dyn FnOnce(u32) + Send + 'a>,
        terminate: mpsc::UnboundedReceiver<i32>,
        updates: StateSink,
    ) -> RunFuture<'a>;

    /// Kill everything running now (cold shutdown).
    fn kill_all(&self);

    /// Pids of the processes that run or stand by to run tasks (`stats.pool.processes`).
    fn pids(&self) -> Vec<u32>;
}

/// Task bodies run in the worker process itself, on the runtime thread that runs the
/// request: the worker starts its runtime with one thread per slot plus two, so slots
/// blocking their threads never starve heartbeats, pidbox or the consumer, and a tiny task
/// costs no hand-off to another thread. No time limits, as with Celery's solo and threads
/// pools; a crash takes the worker down.
#[derive(Debug)]
pub(crate) struct InProcess(pub Arc<Registry>);

impl Executor for InProcess {
    fn run<'a>(
        &'a self,
        req: ChildRequest,
        _delivery: Arc<Delivery>,
        _hard_limit: Option<Duration>,
        started: Box<dyn FnOnce(u32) + Send + 'a>,
        _terminate: mpsc::UnboundedReceiver<i32>,
        updates: StateSink,
    ) -> RunFuture<'a> {
        Box::pin(async move {
            started(std::process::id());
            ExecOutcome::Done(execute(&self.0, &req, updates))
        })
    }

    fn kill_all(&self) {}

    fn pids(&self) -> Vec<u32> {
        vec![std::process::id()]
    }
}

/// One worker, several kinds of task: the Python app's tasks go to the zygote, everything
/// else (built-in Rust tasks, command tasks) to the executor the pool flags chose.
#[derive(Debug)]
pub(crate) struct Routed {
    /// The Python app's executor.
    pub python: Arc<super::zygote::PythonPool>,
    /// The names it serves.
    pub python_names: std::collections::HashSet<String>,
    /// The executor for the rest.
    pub rest: Box<dyn Executor>,
}

impl Executor for Routed {
    fn run<'a>(
        &'a self,
        req: ChildRequest,
        delivery: Arc<Delivery>,
        hard_limit: Option<Duration>,
        started: Box<dyn FnOnce(u32) + Send + 'a>,
        terminate: mpsc::UnboundedReceiver<i32>,
        updates: StateSink,
    ) -> RunFuture<'a> {
        if self.python_names.contains(&req.task) {
            self.python
                .run(req, delivery, hard_limit, started, terminate, updates)
        } else {
            self.rest
                .run(req, delivery, hard_limit, started, terminate, updates)
        }
    }

    fn kill_all(&self) {
        self.python.kill_all();
        self.rest.kill_all();
    }

    fn pids(&self) -> Vec<u32> {
        let mut pids = self.python.pids();
        pids.extend(self.rest.pids());
        pids
    }
}
