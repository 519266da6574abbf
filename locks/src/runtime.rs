//! The library's private tokio runtime, used by the blocking API, the `#[only_one]`
//! expansion on plain `fn`s and the process-wide default client, so that synchronous
//! callers (a task body in a worker child) need no runtime of their own and a watchdog
//! keeps renewing while the calling thread is busy in synchronous code.
//!
//! It is created on first use and lives for the rest of the process.
//!
//! Floor 0 (support): imports nothing from the crate; the connection layer spawns on it, and
//! the blocking API blocks on it.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

const THREAD_NAME: &str = "celeriac-locks";

/// The private runtime (two worker threads: one can block briefly in a `Drop` while the
/// other drives I/O).
pub(crate) fn handle() -> Handle {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .expect("start the locks library's private tokio runtime")
    })
    .handle()
    .clone()
}

/// Run `fut` to completion on the private runtime, blocking the calling thread. Works
/// from any thread, inside another runtime or not (the future runs on our threads; the
/// caller only waits on a channel).
pub(crate) fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    assert!(
        std::thread::current().name() != Some(THREAD_NAME),
        "the blocking lock API was called from inside the locks runtime; use the async API"
    );
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .expect("the locks runtime dropped a blocking call (it panicked)")
}
