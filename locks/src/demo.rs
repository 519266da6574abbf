//! Ready-made lock-guarded bodies for the deployment's test tasks.
//!
//! `shared_tasks.locked_sleep(key, seconds)` runs [`locked_sleep`] in the task's process
//! and maps its result to the task's return value (`"ran"`, or `"skipped"` for
//! [`NotRun::Skipped`](crate::NotRun::Skipped)). The lock client comes from the
//! environment (`CELERIAC_LOCK_URL`, else `CELERY_BROKER_URL`), so a worker started with
//! `-b redis://...` locks on the same server as its broker, as JWQL does.
//!
//! Floor 4 (front-ends): plain users of `#[only_one]`, which expands to calls into
//! `__private`.

use std::time::Duration;

use crate::only_one;

/// Sleep `seconds` while holding the lock `key` (TTL 30 s, renewed by the watchdog; a
/// killed process frees the lock within 30 s). Returns `Err(NotRun::Skipped)` without
/// sleeping when another process holds `key`.
#[only_one(key = "{key}", timeout = 30)]
pub fn locked_sleep(key: &str, seconds: f64) {
    std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
}

/// [`locked_sleep`] as the task's string result: `"ran"` or `"skipped"`; other failures
/// (Redis unreachable, ...) are returned as errors for the task to fail with.
pub fn locked_sleep_outcome(key: &str, seconds: f64) -> Result<&'static str, crate::NotRun> {
    match locked_sleep(key, seconds) {
        Ok(()) => Ok("ran"),
        Err(e) if e.is_skipped() => Ok("skipped"),
        Err(e) => Err(e),
    }
}
