//! [`DirectConn`]: the blocking API's synchronous connection, and the one thing it does that
//! a plain `redis::Connection` does not — the release sent when a guard is dropped is not
//! waited for. Its reply is read after the next command on the connection has been written,
//! so a scope-bound lock (`{ let _g = lock.acquire()?; ... }` in a loop) costs one round trip
//! per acquire+release instead of two.
//!
//! Ordering is what makes this safe. Redis runs one connection's commands in the order they
//! arrive, so whatever this client sends next — typically the next acquire of the same lock —
//! finds the key already deleted. To other processes the lock is free as soon as Redis has
//! read the release, exactly as with an awaited one; only the holder's confirmation comes
//! later. A release that turns out to have failed is logged when its reply is read (a
//! dropped guard has nobody to return an error to, awaited or not); one whose fate is unknown
//! because the connection broke, or that Redis answered with an error, is sent again from the
//! library's runtime. Compare-and-delete is idempotent: a second send deletes nothing of
//! another holder's.
//!
//! An explicit [`crate::blocking::LockGuard::release`] still waits for its reply, because it
//! returns redis-py's not-owned error.
//!
//! Floor 2 (connection), owned by [`crate::connection::Connection`], which opens it, keeps
//! it in its slot and sends again what it could not confirm. It builds the release and reads
//! its code through [`crate::wire`], and knows nothing of guards.

use std::collections::VecDeque;

use redis::{ConnectionLike, RedisResult, Value};

use crate::wire;

/// A release written to the socket whose reply has not been read yet.
pub(crate) struct Unread {
    pub(crate) name: String,
    pub(crate) token: Vec<u8>,
}

/// A synchronous connection plus the releases sent on it and not yet confirmed.
pub(crate) struct DirectConn {
    conn: redis::Connection,
    /// Oldest first, in the order their replies will arrive.
    unread: VecDeque<Unread>,
    /// Releases to send again from the runtime (see the module notes).
    resend: Vec<Unread>,
}

impl DirectConn {
    pub(crate) fn new(conn: redis::Connection) -> DirectConn {
        DirectConn {
            conn,
            unread: VecDeque::new(),
            resend: Vec::new(),
        }
    }

    /// Write the compare-and-delete of `name` held with `token`, without reading the reply.
    pub(crate) fn send_release(&mut self, name: &str, token: &[u8]) -> RedisResult<()> {
        let cmd = wire::release_eval(name, token).get_packed_command();
        self.conn.send_packed_command(&cmd)?;
        self.unread.push_back(Unread {
            name: name.to_string(),
            token: token.to_vec(),
        });
        Ok(())
    }

    /// Read the reply of every unread release (all written before anything sent now).
    fn read_unread(&mut self) -> RedisResult<()> {
        while let Some(u) = self.unread.pop_front() {
            match self.conn.recv_response() {
                Ok(Value::Int(1)) => {}
                Ok(Value::Int(code)) => {
                    if let Err(e) = wire::owned_result(&u.name, code) {
                        tracing::warn!(lock = %u.name, error = %e, "release on drop found the lock not ours");
                    }
                }
                Ok(other) => {
                    tracing::warn!(lock = %u.name, reply = ?other, "release on drop failed; sending it again");
                    self.resend.push(u);
                }
                Err(e) => {
                    self.resend.push(u);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Releases to send again now (taken: the caller sends them).
    pub(crate) fn take_resend(&mut self) -> Vec<Unread> {
        std::mem::take(&mut self.resend)
    }

    /// Everything not confirmed, when the connection is being dropped after an error.
    pub(crate) fn into_unconfirmed(mut self) -> Vec<Unread> {
        let mut all = std::mem::take(&mut self.resend);
        all.extend(self.unread.drain(..));
        all
    }

    /// Bound every socket read and write, so a server that stops answering fails the
    /// operation (and the connection is replaced) instead of hanging the caller.
    pub(crate) fn set_timeouts(&self, t: std::time::Duration) -> RedisResult<()> {
        self.conn.set_read_timeout(Some(t))?;
        self.conn.set_write_timeout(Some(t))
    }
}

impl ConnectionLike for DirectConn {
    /// Write the command first, then read the unread releases' replies (they are ahead of
    /// its own on the wire): the release and this command share one round trip.
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.conn.send_packed_command(cmd)?;
        self.read_unread()?;
        loop {
            match self.conn.recv_response()? {
                // RESP3 pushes are not replies (we speak RESP2, but do not count on it).
                Value::Push { .. } => continue,
                v => return Ok(v),
            }
        }
    }

    /// Pipelines (a few reads) settle the unread replies first, then run as usual.
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.read_unread()?;
        self.conn.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }

    fn check_connection(&mut self) -> bool {
        self.read_unread().is_ok() && self.conn.check_connection()
    }

    fn is_open(&self) -> bool {
        self.conn.is_open()
    }
}
