//! One retry policy for everything that talks to Redis: capped exponential backoff, and
//! only for errors that waiting can mend. A dropped connection, a refused connect, a
//! timeout or a server still loading is retried; a wrong password, an ACL denial or a
//! script error fails at once, with its message, instead of being retried for minutes.

use std::time::Duration;

/// An error that can say whether trying again may help.
pub trait Retryable {
    /// Whether waiting and trying again may succeed.
    fn is_retryable(&self) -> bool;
}

impl Retryable for redis::RedisError {
    fn is_retryable(&self) -> bool {
        crate::conn::is_transient(self)
    }
}

impl Retryable for crate::transport::TransportError {
    fn is_retryable(&self) -> bool {
        self.is_transient()
    }
}

impl Retryable for crate::backend::BackendError {
    fn is_retryable(&self) -> bool {
        self.is_transient()
    }
}

/// Capped exponential backoff: `first`, doubling up to `max`; [`Backoff::reset`] after a
/// success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `first`, doubling, never above `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay to wait now; the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Start again from the first delay.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Run `op` until it succeeds, gives an error [`Retryable::is_retryable`] says waiting
/// cannot mend, or has failed `attempts` times; waits by `backoff` between attempts.
/// `on_retry` is told each error that will be retried (for logging).
pub async fn retry<T, E, F, Fut>(
    attempts: u32,
    mut backoff: Backoff,
    mut on_retry: impl FnMut(u32, &E),
    mut op: F,
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                attempt += 1;
                if !e.is_retryable() || attempt >= attempts {
                    return Err(e);
                }
                on_retry(attempt, &e);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(bool);
    impl Retryable for E {
        fn is_retryable(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_permanent_error_is_not_retried_and_a_transient_one_is() {
        let quick = || Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
        let mut calls = 0;
        let r: Result<(), E> = retry(
            5,
            quick(),
            |_, _| {},
            || {
                calls += 1;
                async { Err(E(false)) }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "a wrong password must not be retried");
        let mut calls = 0;
        let r: Result<(), E> = retry(
            5,
            quick(),
            |_, _| {},
            || {
                calls += 1;
                async { Err(E(true)) }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 5);
    }
}
