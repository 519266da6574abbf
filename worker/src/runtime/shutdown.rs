//! One shutdown handle for the whole worker, with Celery's two phases: warm (stop taking
//! work, finish what runs, give back what was reserved) and cold (kill running tasks and give
//! their messages back too). Signals are wired in one function.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Shutdown phase; ordered, so `phase >= Warm` means "stopping".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Serving: claiming and running tasks.
    Running,
    /// Finish running tasks, take no new ones.
    Warm,
    /// Kill running tasks, requeue everything.
    Cold,
}

/// The shutdown handle, cloned into everything long-lived.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    tx: watch::Sender<Phase>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A handle in the running phase.
    pub(crate) fn new() -> Self {
        Shutdown {
            tx: watch::Sender::new(Phase::Running),
        }
    }

    /// Escalate to `p` (never de-escalates).
    pub(crate) fn escalate(&self, p: Phase) {
        self.tx.send_if_modified(|cur| {
            if p > *cur {
                *cur = p;
                true
            } else {
                false
            }
        });
    }

    /// Current phase.
    pub(crate) fn phase(&self) -> Phase {
        *self.tx.borrow()
    }

    /// Wait until the phase is at least `p`.
    pub(crate) async fn reached(&self, p: Phase) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|cur| *cur >= p).await;
    }
}

/// SIGTERM and the first SIGINT: warm shutdown. A second SIGINT, or SIGQUIT: cold.
/// (`celery/apps/worker.py`: the same mapping, including "Hitting Ctrl+C again will
/// terminate all running tasks!")
pub(crate) fn wire_signals(sd: Shutdown) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::warn!("worker: Warm shutdown (SIGTERM)");
                    sd.escalate(Phase::Warm);
                }
                _ = int.recv() => {
                    if sd.phase() == Phase::Running {
                        tracing::warn!("worker: Hitting Ctrl+C again will terminate all running tasks!");
                        sd.escalate(Phase::Warm);
                    } else {
                        tracing::warn!("worker: Cold shutdown (SIGINT)");
                        sd.escalate(Phase::Cold);
                    }
                }
                _ = quit.recv() => {
                    tracing::warn!("worker: Cold shutdown (SIGQUIT)");
                    sd.escalate(Phase::Cold);
                }
            }
        }
    });
    Ok(())
}
