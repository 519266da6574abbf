//! Global Redis locks, wire-compatible with redis-py's `Lock`, and the `#[only_one]`
//! attribute.
//!
//! A lock named `x` is the Redis key `x` holding an opaque token, taken with
//! `SET x token NX [PX ms]` and released by compare-and-delete — exactly what redis-py's
//! `r.lock("x")` does, so a Python process and a Rust process exclude each other on the same
//! name, in either direction, with no change on the Python side. Everything redis-py does
//! not do lives in extra keys Python never touches ([`keys`]):
//!
//! * a **watchdog** renews a lock with a TTL every TTL/3 while its guard lives, and tells
//!   the holder when the lock is lost ([`LockGuard::lost`], [`LostSignal`]) — never silently;
//! * a **fencing number** ([`LockGuard::fence`]) strictly increasing across holders;
//! * **holder identity** (host, pid, pid start time, acquired-at, purpose, task id) readable
//!   by tools ([`Lock::holder`], [`admin`], `celeriac locks`);
//! * **waiting without busy polling** when the holder is celeriac (pub/sub wake-up on
//!   release), redis-py's 0.1 s polling otherwise; optional **FIFO** order ([`Lock::fair`]);
//! * **all-or-nothing multi-lock** acquire in sorted order ([`MultiLock`]), so overlapping
//!   sets cannot deadlock.
//!
//! # Modules, in floors
//!
//! A module imports only from the floors below its own and, within its floor, from the
//! modules listed below it here, so the table is an order of the module graph: there is no
//! import circle, and each module can be read, tested and changed knowing only what is
//! under it.
//!
//! | floor | module | owns |
//! |---|---|---|
//! | 4 front-ends | [`demo`] | the body of the `shared_tasks.locked_sleep` test task |
//! | | `__private` | what the `#[only_one]` expansion calls |
//! | | [`admin`] | list / show / break locks (behind `celeriac locks`) |
//! | | [`blocking`] | the same API for synchronous code, no runtime needed |
//! | 3 locks | `multi` | [`MultiLock`], [`MultiGuard`], [`Client::multi_lock`] |
//! | | `lock` | [`Lock`], [`LockOptions`], [`Client::lock`]: acquire, try, read the holder |
//! | | `guard` | [`LockGuard`]: owned, extend, reacquire, release, release on drop |
//! | | `wait` | waiting for a release: back-off, pub/sub wake-ups, leaving the fair queue |
//! | | `client` | [`Client`]: the connection plus its watchdog; configuration from the environment |
//! | | `watchdog` | renewal of held locks and [`LostSignal`] |
//! | 2 connection | `connection` | the shared async connection, the direct one's slot, background releases, URL redaction |
//! | | `direct` | the blocking API's connection; a dropped guard's release shares the next command's round trip |
//! | 1 wire | `wire` | every command and script call, built from names and tokens, and every reply parsed; its `scripts` are the Lua, each stating what it guarantees |
//! | 0 data | `error` | [`LockError`], [`NotOwnedReason`], [`LostReason`], [`NotRun`] |
//! | | `holder` | [`Holder`], [`HolderInfo`], [`Liveness`], this process's identity, uuid1 token decoding |
//! | | [`keys`] | every key and channel name (the lock key itself is the name as given) |
//! | | `runtime` | the library's private tokio runtime |
//!
//! The connection layer knows no lock type: the constructors [`Client::lock`] and
//! [`Client::multi_lock`] are defined with the types they build, and [`Client`] sits on
//! floor 3 because it owns the watchdog. Releases are wire commands the connection sends by
//! itself (from a guard's `Drop`, or again after a broken connection), which is why the
//! wire sits under the connection and not above it.
//!
//! # Async
//!
//! ```no_run
//! use std::time::Duration;
//! # async fn f() -> Result<(), locks::LockError> {
//! let client = locks::Client::open("redis://127.0.0.1:6379/0")?;
//! let guard = client
//!     .lock("jw01000001001_01101_00001_nrca1")
//!     .timeout(Duration::from_secs(60))          // PX 60000; renewed every 20 s
//!     .blocking_timeout(Duration::from_secs(600)) // bounded wait
//!     .acquire()
//!     .await?;
//! let fence = guard.fence(); // pass to storage that checks it
//! tokio::select! {
//!     _ = async { /* the protected work */ } => {}
//!     reason = guard.lost() => eprintln!("lost the lock: {reason}"),
//! }
//! guard.release().await?;
//! # let _ = fence; Ok(()) }
//! ```
//!
//! # Blocking
//!
//! ```no_run
//! # fn f() -> Result<(), locks::LockError> {
//! let client = locks::blocking::Client::from_env()?; // CELERIAC_LOCK_URL / CELERY_BROKER_URL
//! let guard = client.lock("dark_monitor").blocking(false).try_acquire()?;
//! // ... work ...
//! guard.release()?;
//! # Ok(()) }
//! ```
//!
//! # `#[only_one]`
//!
//! Runs a function only while holding a lock; on `fn` and `async fn`. The return type
//! `T` becomes `Result<T, NotRun>`, so a skipped run is never mistaken for success (JWQL's
//! decorator returned `None` for both). Arguments:
//!
//! | argument | meaning | default |
//! |---|---|---|
//! | `key = "fmt"` | lock name; `{arg}` placeholders name the function's arguments | required |
//! | `timeout = secs \| None` | key TTL, renewed by the watchdog while the body runs | `30` |
//! | `policy = skip \| wait \| error` | busy lock: skip (`NotRun::Skipped { holder }`), wait, or fail (`NotRun::Busy`) | `skip` |
//! | `wait_timeout = secs` | deadline for `policy = wait` (`NotRun::TimedOut`) | none |
//! | `purpose = "..."` | recorded in the holder hash | the function path |
//! | `watchdog = bool`, `fair = bool` | see [`Lock::watchdog`], [`Lock::fair`] | `true`, `false` |
//! | `client = expr` | a [`Client`] or `&Client` | [`Client::global`] (from the environment) |
//!
//! The lock is released on every exit path: normal return, `?`, panic (a plain `fn`
//! releases before the panic leaves it; an `async fn` in the background) and cancellation
//! of an `async fn`'s future. If the watchdog finds the lock lost while an `async fn` body
//! runs, the body is cancelled and `NotRun::Lost` returned; a plain `fn` cannot be
//! interrupted, so the loss is logged as an error.
//!
//! ## A task guarded by a lock
//!
//! A task body is usually synchronous and runs in a worker's child process with no tokio
//! runtime; the attribute works there as is (it uses the library's private runtime). The
//! lock server is taken from `CELERIAC_LOCK_URL`, else `CELERY_BROKER_URL` — the broker, as
//! in JWQL, where broker, results and locks share db 0. `shared_tasks.locked_sleep` is:
//!
//! ```no_run
//! #[locks::only_one(key = "{key}", timeout = 30)]
//! fn locked_sleep(key: &str, seconds: f64) {
//!     std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
//! }
//!
//! fn task(key: &str, seconds: f64) -> Result<&'static str, locks::NotRun> {
//!     match locked_sleep(key, seconds) {
//!         Ok(()) => Ok("ran"),
//!         Err(e) if e.is_skipped() => Ok("skipped"),
//!         Err(e) => Err(e), // Redis unreachable: fail the task
//!     }
//! }
//! ```
//!
//! ([`demo::locked_sleep_outcome`] is exactly that.) If the task's process dies, its
//! watchdog dies with it and the lock expires within `timeout`; a worker can free it at once
//! with [`admin::release_held_by_pid`]. A worker that sets `CELERIAC_TASK_ID` in the
//! task's environment gets the task id recorded beside the lock.
//!
//! ```no_run
//! # use std::time::Duration;
//! #[locks::only_one(key = "calibrate:{file}", policy = wait, wait_timeout = 600, timeout = 60)]
//! async fn calibrate(file: &str) -> std::io::Result<u64> {
//!     Ok(file.len() as u64)
//! }
//! ```
//!
//! # Interoperating with Python holders
//!
//! A Python holder's lock is only its key: celeriac waiters poll it every `sleep` (0.1 s)
//! like redis-py does, unless the server has keyspace notifications enabled. The watchdog
//! never touches a lock it does not hold, and TTL-less Python locks are never renewed or
//! broken except by `celeriac locks release --force`. Fair mode orders celeriac waiters;
//! Python acquirers do not queue and can still take a free lock first.
//!
//! A lock held in one Redis can be lost if that Redis fails over before replicating it;
//! use the fencing number where that matters.

#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

// Lets the `#[only_one]` expansion (which names `::locks`) work inside this crate too.
extern crate self as locks;

// Floor 0: plain data and support.
mod error;
mod holder;
pub mod keys;
mod runtime;
// Floor 1: the wire.
mod wire;
// Floor 2: the connection.
mod connection;
mod direct;
// Floor 3: locks.
mod client;
mod guard;
mod lock;
mod multi;
mod wait;
mod watchdog;
// Floor 4: front-ends.
#[doc(hidden)]
pub mod __private;
pub mod admin;
pub mod blocking;
pub mod demo;

pub use client::{Client, DEFAULT_URL, URL_ENV_VARS};
pub use error::{LockError, LostReason, NotOwnedReason, NotRun};
pub use guard::LockGuard;
pub use holder::{Holder, HolderInfo, Liveness, decode_uuid1_hex, hostname};
pub use lock::{DEFAULT_SLEEP, Lock, LockOptions};
pub use multi::{MultiGuard, MultiLock};
pub use watchdog::LostSignal;

/// Run a function only while holding a global Redis lock; see the
/// [crate documentation](crate#only_one) for the arguments.
pub use locks_macros::only_one;
