//! The worker's background loops: heartbeats (`worker-heartbeat` events, which Flower and
//! `celeriac status` read), the lease refresh of every held message, and the stale-unacked
//! sweeper that gives back the messages of dead holders.

use super::worker::Worker;
use std::sync::Arc;
use std::time::Duration;

pub(super) async fn heartbeat_loop(inner: Arc<Worker>) {
    let Some(every) = inner.cfg.heartbeat else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        inner.events.send(
            "worker-heartbeat",
            inner.events.worker_fields(every.as_secs_f64()),
        );
    }
}

/// How often the stale-unacked sweeper looks (a single cheap `ZRANGE` when nothing is due):
/// a message whose holder died is back on its queue within this long after its lease ends.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Refresh the lease of every held message (every lease/3), and run the stale-unacked
/// sweeper (every [`SWEEP_EVERY`]).
pub(super) async fn lease_loop(inner: Arc<Worker>) {
    let refresh_every = (inner.cfg.lease / 3).max(Duration::from_millis(200));
    let mut refresh = tokio::time::interval(refresh_every);
    let mut sweep = tokio::time::interval(SWEEP_EVERY.min(refresh_every));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                if let Err(e) = inner
                    .broker
                    .refresh_leases(&inner.state.unacked_tags(), inner.cfg.lease)
                    .await
                {
                    tracing::warn!(error = %e, "lease refresh failed");
                }
            }
            _ = sweep.tick() => sweep_stale(&inner, "messages whose holder stopped renewing its lease").await,
        }
    }
}

/// Give back the unacked messages of dead holders (`restore_visible`), logging what came
/// back as `what`: at start-up (as Celery's consumer does) and every [`SWEEP_EVERY`].
pub(super) async fn sweep_stale(inner: &Worker, what: &str) {
    match inner
        .broker
        .restore_visible(inner.cfg.visibility_timeout)
        .await
    {
        Ok(Some(n)) if n > 0 => tracing::warn!(restored = n, "restored {what}"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "restoring {what} failed"),
    }
}
