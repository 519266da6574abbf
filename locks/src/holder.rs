//! Who holds a lock: this process's identity (written beside every lock it takes) and what
//! can be learnt about any holder, celeriac or redis-py, when reading a lock back.
//!
//! A celeriac holder is described by the holder hash ([`crate::keys::holder_key`]): host,
//! pid, the pid's start time and the boot id (so a recycled pid or a reboot is not
//! mistaken for the original process), acquisition time, fence and purpose. A redis-py
//! holder is only its token, `uuid1().hex`, from which the acquisition time and the node id
//! (MAC or random) can be decoded — that is all JWQL's locks ever tell an operator.
//!
//! Liveness ([`HolderInfo::liveness`]) is decided only for holders on this host; elsewhere
//! it is unknown, never guessed.
//!
//! Floor 0 (plain data): imports nothing from the crate. Writing the hash and reading it back
//! from Redis are the wire's job ([`crate::wire`]); this module only says what is in it.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What this process writes into the holder hash of each lock it takes.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub host: String,
    pub pid: u32,
    pub pid_start: Option<u64>,
    pub boot_id: Option<String>,
}

/// The identity of the current process, computed once.
pub(crate) fn identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| {
        let pid = std::process::id();
        Identity {
            host: hostname(),
            pid,
            pid_start: pid_start_ticks(pid),
            boot_id: boot_id(),
        }
    })
}

/// This machine's host name: one definition for the task and lock libraries.
pub use naming::hostname;

/// Start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), which
/// together with the pid identifies one process for the life of a boot.
pub(crate) fn pid_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Milliseconds since the Unix epoch, by this host's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Holder-hash field/value pairs for an acquisition (the script adds token, fence, ttl_ms).
pub(crate) fn holder_fields(purpose: Option<&str>, task_id: Option<&str>) -> Vec<String> {
    let id = identity();
    let mut v = vec![
        "host".into(),
        id.host.clone(),
        "pid".into(),
        id.pid.to_string(),
        "acquired_at_ms".into(),
        now_ms().to_string(),
        "lib".into(),
        concat!("celeriac-locks/", env!("CARGO_PKG_VERSION")).into(),
    ];
    if let Some(s) = id.pid_start {
        v.extend(["pid_start".into(), s.to_string()]);
    }
    if let Some(b) = &id.boot_id {
        v.extend(["boot_id".into(), b.clone()]);
    }
    if let Some(p) = purpose {
        v.extend(["purpose".into(), p.to_string()]);
    }
    if let Some(t) = task_id {
        v.extend(["task_id".into(), t.to_string()]);
    }
    v
}

/// The current holder of a lock, as read from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The lock key's value: a redis-py `uuid1().hex`, a celeriac token, or anything else a
    /// client stored (opaque; compared byte for byte, as redis-py's `owned()` does).
    pub token: Vec<u8>,
    /// Remaining time to live; `None` when the key has no expiry (JWQL's locks).
    pub ttl: Option<Duration>,
    /// Present when a celeriac process holds the lock (its holder hash matches the token).
    pub info: Option<Box<HolderInfo>>,
}

/// What a celeriac holder recorded about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderInfo {
    /// Host name of the holding process.
    pub host: String,
    /// Process id of the holding process on that host.
    pub pid: u32,
    /// Its start time in clock ticks since boot (tells a recycled pid apart).
    pub pid_start: Option<u64>,
    /// The holder host's boot id at acquisition.
    pub boot_id: Option<String>,
    /// When the lock was taken, by the holder's clock.
    pub acquired_at: SystemTime,
    /// The fencing number issued with this acquisition.
    pub fence: u64,
    /// The TTL asked for (`None` = no expiry); the watchdog renews to this.
    pub requested_ttl: Option<Duration>,
    /// Free text given by the holder (`#[only_one]` puts the function path here).
    pub purpose: Option<String>,
    /// Task id, when a task holds the lock.
    pub task_id: Option<String>,
    /// Library and version that wrote the hash.
    pub lib: Option<String>,
}

impl HolderInfo {
    /// Parse a holder hash (`HGETALL`); `None` if it lacks the fields every writer sets.
    pub(crate) fn from_hash(h: &HashMap<String, String>) -> Option<HolderInfo> {
        let get = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
        let ms: u64 = get("acquired_at_ms")?.parse().ok()?;
        let ttl_ms: u64 = get("ttl_ms").and_then(|v| v.parse().ok()).unwrap_or(0);
        Some(HolderInfo {
            host: get("host")?,
            pid: get("pid")?.parse().ok()?,
            pid_start: get("pid_start").and_then(|v| v.parse().ok()),
            boot_id: get("boot_id"),
            acquired_at: UNIX_EPOCH + Duration::from_millis(ms),
            fence: get("fence")?.parse().ok()?,
            requested_ttl: (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms)),
            purpose: get("purpose"),
            task_id: get("task_id"),
            lib: get("lib"),
        })
    }

    /// Is the holding process still running? Only answerable on the holder's own host.
    pub fn liveness(&self) -> Liveness {
        let me = identity();
        if self.host != me.host {
            return Liveness::Unknown(format!(
                "holder runs on host {}, this is {}",
                self.host, me.host
            ));
        }
        if let (Some(theirs), Some(ours)) = (&self.boot_id, &me.boot_id)
            && theirs != ours
        {
            return Liveness::Dead("the host has rebooted since the lock was taken".into());
        }
        match pid_start_ticks(self.pid) {
            None => Liveness::Dead(format!("pid {} is gone", self.pid)),
            Some(start) => match self.pid_start {
                Some(s) if s != start => Liveness::Dead(format!(
                    "pid {} now belongs to another process (started later)",
                    self.pid
                )),
                _ => Liveness::Alive,
            },
        }
    }
}

/// Whether a holder process is known to be alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Same host, the pid exists with the recorded start time.
    Alive,
    /// Same host and provably gone (reason given).
    Dead(String),
    /// Cannot tell from here (reason given).
    Unknown(String),
}

impl Holder {
    /// The token as text (lossy for non-UTF-8 values).
    pub fn token_str(&self) -> String {
        String::from_utf8_lossy(&self.token).into_owned()
    }

    /// If the token is a redis-py default token (`uuid.uuid1().hex`), the time and node id
    /// it encodes: when the lock was taken (by that host's clock) and roughly by whom.
    pub fn uuid1(&self) -> Option<(SystemTime, u64)> {
        decode_uuid1_hex(&self.token)
    }
}

/// Decode a 32-hex-digit version-1 UUID into (timestamp, node id).
pub fn decode_uuid1_hex(token: &[u8]) -> Option<(SystemTime, u64)> {
    let s = std::str::from_utf8(token).ok()?;
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Layout (RFC 4122): time_low(8) time_mid(4) version+time_hi(4) clock_seq(4) node(12).
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&s[r], 16).ok();
    let (low, mid, hi_v) = (hex(0..8)?, hex(8..12)?, hex(12..16)?);
    if hi_v >> 12 != 1 {
        return None;
    }
    // 100 ns intervals since 1582-10-15, the UUID epoch; shift to the Unix epoch.
    let ticks = ((hi_v & 0x0fff) << 48) | (mid << 32) | low;
    let unix_ticks = ticks.checked_sub(0x01b2_1dd2_1381_4000)?;
    let (secs, nanos) = (unix_ticks / 10_000_000, (unix_ticks % 10_000_000) * 100);
    let node = u64::from_str_radix(&s[20..32], 16).ok()?;
    Some((UNIX_EPOCH + Duration::new(secs, nanos as u32), node))
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.info {
            Some(i) => {
                write!(f, "pid {} on {}", i.pid, i.host)?;
                if let Some(p) = &i.purpose {
                    write!(f, " ({p})")?;
                }
                if let Some(t) = &i.task_id {
                    write!(f, " task {t}")?;
                }
                write!(f, ", fence {}", i.fence)?;
            }
            None => match self.uuid1() {
                Some((at, node)) => write!(
                    f,
                    "redis-py token {} (uuid1: taken at unix {:.3}, node {node:012x})",
                    self.token_str(),
                    at.duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64()
                )?,
                None => write!(f, "token {:?}", self.token_str())?,
            },
        }
        match self.ttl {
            Some(t) => write!(f, ", expires in {:.1}s", t.as_secs_f64()),
            None => write!(f, ", no expiry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_py_uuid1_token_decodes_to_time_and_node() {
        // A token observed from redis-py (reference B.2): 2026-11-22 08:35:12.297 UTC.
        let (at, node) = decode_uuid1_hex(b"a22ebe56e64f11f1bf7402fc00000001").unwrap();
        let secs = at.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_795_336_512);
        assert_eq!(node, 0x02fc_0000_0001);
        assert!(decode_uuid1_hex(b"not-a-token").is_none());
        // Version 4 tokens (celeriac's) carry no time.
        assert!(decode_uuid1_hex(uuid::Uuid::new_v4().simple().to_string().as_bytes()).is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_missing_pid_is_dead() {
        let id = identity();
        let mut info = HolderInfo {
            host: id.host.clone(),
            pid: id.pid,
            pid_start: id.pid_start,
            boot_id: id.boot_id.clone(),
            acquired_at: SystemTime::now(),
            fence: 1,
            requested_ttl: None,
            purpose: None,
            task_id: None,
            lib: None,
        };
        assert_eq!(info.liveness(), Liveness::Alive);
        info.pid_start = info.pid_start.map(|s| s + 1);
        assert!(matches!(info.liveness(), Liveness::Dead(_)));
        info.pid = u32::MAX - 1;
        assert!(matches!(info.liveness(), Liveness::Dead(_)));
        info.host = "elsewhere.invalid".into();
        assert!(matches!(info.liveness(), Liveness::Unknown(_)));
    }
}
