//! The blocking API, for code that is not async (a synchronous task body, a script).
//!
//! Each call runs the async API on the library's private runtime and blocks the calling
//! thread until it is done, so no tokio runtime is needed by the caller; the watchdog of a
//! held lock keeps renewing on that runtime while the caller's thread is busy. Dropping a
//! [`LockGuard`] releases the lock before `drop` returns, including during a panic.

use std::time::Duration;

use crate::error::LockError;
use crate::holder::Holder;
use crate::runtime::block_on;
use crate::watchdog::{LostReason, LostSignal};

/// Blocking counterpart of [`crate::Client`]; its connection lives on the private runtime.
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client,
}

impl Client {
    /// A client for the Redis at `url`.
    pub fn open(url: &str) -> Result<Client, LockError> {
        Ok(Client {
            inner: crate::Client::open_detached(url)?,
        })
    }

    /// A client for `CELERIAC_LOCK_URL`, else `CELERY_BROKER_URL`, else the local default.
    pub fn from_env() -> Result<Client, LockError> {
        Ok(Client {
            inner: crate::Client::from_env()?,
        })
    }

    /// Wrap an async client (made detached if it was not).
    pub fn from_async(client: &crate::Client) -> Client {
        let inner = if client.is_detached() {
            client.clone()
        } else {
            crate::Client::open_detached(client.url()).expect("URL already parsed once")
        };
        Client { inner }
    }

    /// A lock on `name` with redis-py's defaults (see [`crate::Client::lock`]).
    pub fn lock(&self, name: impl Into<String>) -> Lock {
        Lock {
            inner: self.inner.lock(name),
        }
    }

    /// The async client underneath.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }
}

/// Blocking counterpart of [`crate::Lock`]; the option methods are the same.
#[derive(Debug, Clone)]
pub struct Lock {
    inner: crate::Lock,
}

macro_rules! forward_options {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(
            #[doc = concat!("See [`crate::Lock::", stringify!($name), "`].")]
            pub fn $name(self, v: $ty) -> Self {
                Lock { inner: self.inner.$name(v) }
            }
        )*
    };
}

impl Lock {
    forward_options!(
        timeout(Duration),
        blocking(bool),
        blocking_timeout(Duration),
        sleep(Duration),
        watchdog(bool),
        fair(bool),
        purpose(impl Into<String>),
        task_id(impl Into<String>),
        token(impl Into<Vec<u8>>),
        options(crate::LockOptions),
    );

    /// Take the lock, waiting as the options say.
    pub fn acquire(&self) -> Result<LockGuard, LockError> {
        let lock = self.inner.clone();
        block_on(async move { lock.acquire().await }).map(LockGuard::new)
    }

    /// One non-blocking attempt.
    pub fn try_acquire(&self) -> Result<LockGuard, LockError> {
        let lock = self.inner.clone();
        block_on(async move { lock.try_acquire().await }).map(LockGuard::new)
    }

    /// Whether anyone holds the lock.
    pub fn locked(&self) -> Result<bool, LockError> {
        let lock = self.inner.clone();
        block_on(async move { lock.locked().await })
    }

    /// Who holds the lock now.
    pub fn holder(&self) -> Result<Option<Holder>, LockError> {
        let lock = self.inner.clone();
        block_on(async move { lock.holder().await })
    }

    /// Release the lock if it holds `token`.
    pub fn release_token(&self, token: &[u8]) -> Result<(), LockError> {
        let (lock, token) = (self.inner.clone(), token.to_vec());
        block_on(async move { lock.release_token(&token).await })
    }
}

/// A held lock (blocking API). Dropping it releases the lock before `drop` returns.
#[derive(Debug)]
pub struct LockGuard {
    inner: Option<crate::LockGuard>,
}

impl LockGuard {
    pub(crate) fn new(mut g: crate::LockGuard) -> LockGuard {
        g.wait_on_drop = true;
        LockGuard { inner: Some(g) }
    }

    fn g(&self) -> &crate::LockGuard {
        self.inner.as_ref().expect("guard present until release")
    }

    /// The lock name.
    pub fn name(&self) -> &str {
        self.g().name()
    }

    /// The token in the key.
    pub fn token(&self) -> &[u8] {
        self.g().token()
    }

    /// The fencing number of this acquisition.
    pub fn fence(&self) -> u64 {
        self.g().fence()
    }

    /// Whether the watchdog found the lock lost.
    pub fn is_lost(&self) -> Option<LostReason> {
        self.g().is_lost()
    }

    /// A cloneable loss signal.
    pub fn lost_signal(&self) -> LostSignal {
        self.g().lost_signal()
    }

    /// Whether the key still holds our token.
    pub fn owned(&self) -> Result<bool, LockError> {
        self.with(|g| async move { g.owned().await })
    }

    /// See [`crate::LockGuard::extend`].
    pub fn extend(&self, by: Duration, replace_ttl: bool) -> Result<(), LockError> {
        self.with(move |g| async move { g.extend(by, replace_ttl).await })
    }

    /// See [`crate::LockGuard::reacquire`].
    pub fn reacquire(&self) -> Result<(), LockError> {
        self.with(|g| async move { g.reacquire().await })
    }

    /// Release the lock; see [`crate::LockGuard::release`].
    pub fn release(mut self) -> Result<(), LockError> {
        let g = self.inner.take().expect("guard present until release");
        block_on(async move { g.release().await })
    }

    /// Run an operation on a non-owning copy of the guard on the private runtime.
    fn with<F, Fut, T>(&self, f: F) -> Result<T, LockError>
    where
        F: FnOnce(crate::LockGuard) -> Fut,
        Fut: std::future::Future<Output = Result<T, LockError>> + Send + 'static,
        T: Send + 'static,
    {
        block_on(f(self.g().shadow()))
    }
}
