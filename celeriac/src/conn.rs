//! A self-healing command connection: a multiplexed redis-rs connection that, when the
//! connection drops or the server turns read-only (a Sentinel failover demoted it), is
//! replaced on the next command by a fresh one to wherever the URL points now (for Sentinel:
//! the new master). The failing command returns its error; callers retry with backoff, so a
//! Redis restart or failover costs retries, not lost work.

use crate::url::RedisUrl;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Whether a Redis error says "not reachable right now" (refused, reset, timed out, still
/// loading its data, no master known to the sentinels) rather than "refused for good" (a
/// wrong password, an ACL denial, a bad URL, a TLS certificate that does not verify). Only
/// the former is worth waiting out, as kombu's `ensure_connection` retries only connection
/// errors.
pub fn is_transient(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    // redis-rs' own classification of the I/O error underneath: refused, reset, broken,
    // closed, timed out. A TLS handshake that fails verification is none of these.
    e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::BusyLoading)
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::NoValidReplicasFoundBySentinel
        )
}

/// Timeouts of the command connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnOptions {
    /// Maximum time for a response.
    pub response_timeout: Duration,
    /// Maximum time to connect.
    pub connect_timeout: Duration,
}

impl Default for ConnOptions {
    fn default() -> Self {
        ConnOptions {
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(4),
        }
    }
}

#[derive(Debug)]
struct Shared {
    url: RedisUrl,
    opts: ConnOptions,
    current: Mutex<Option<MultiplexedConnection>>,
}

/// The self-healing connection; clones share one underlying connection.
#[derive(Debug, Clone)]
pub struct Conn {
    shared: Arc<Shared>,
    db: i64,
}

impl Conn {
    /// Connect now (so a wrong URL fails at start-up, not at the first command).
    pub async fn connect(url: RedisUrl, opts: ConnOptions) -> RedisResult<Self> {
        let db = url.db();
        let conn = Conn {
            shared: Arc::new(Shared {
                url,
                opts,
                current: Mutex::new(None),
            }),
            db,
        };
        conn.get().await?;
        Ok(conn)
    }

    async fn get(&self) -> RedisResult<MultiplexedConnection> {
        let mut cur = self.shared.current.lock().await;
        if let Some(c) = cur.as_ref() {
            return Ok(c.clone());
        }
        let client = self.shared.url.client().await?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(self.shared.opts.response_timeout))
            .set_connection_timeout(Some(self.shared.opts.connect_timeout));
        let c = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?;
        *cur = Some(c.clone());
        Ok(c)
    }

    async fn invalidate_on(&self, err: &redis::RedisError) {
        let broken = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.code() == Some("READONLY")
            || err.code() == Some("MASTERDOWN")
            || err.code() == Some("LOADING");
        if broken {
            *self.shared.current.lock().await = None;
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut c = self.get().await?;
            let r = c.req_packed_command(cmd).await;
            if let Err(e) = &r {
                self.invalidate_on(e).await;
            }
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut c = self.get().await?;
            let r = c.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &r {
                self.invalidate_on(e).await;
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}
