//! The dead-letter list ([`keys::DEAD_LETTER`]): messages celeriac will not run, each kept
//! with why it was refused, the queue it came from, when, and its original bytes.
//!
//! [`DeadLetter`] is the entry's one definition: the claim and the worker write it with
//! [`DeadLetter::encode`], operators read it back with [`DeadLetter::decode`], so the two
//! cannot drift apart. Its JSON fields (`reason`, `queue`, `time`, `payload_b64`) are the ones
//! `docs/redis-keys.md` documents for `redis-cli` users. This module also owns the list
//! operations an operator needs: read, requeue, purge. It does not decide what is dead: the
//! claim ([`Broker::claim`]) and the worker's checks do.

use super::{Broker, Result, keys};
use crate::protocol::{TaskMessage, json, time};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One dead letter: a message that must not run, with the reason and its original bytes.
///
/// Serialized as `{"reason", "queue", "time", "payload_b64"}`, in that order, through
/// Python-style JSON ([`json::to_vec`]), exactly the bytes earlier versions wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why the message was refused, in words an operator can act on.
    pub reason: String,
    /// The queue it was taken from (no priority suffix); empty when it came from an `unacked`
    /// entry that named none. Entries written by older claims hold the list's key here.
    pub queue: String,
    /// When it was dead-lettered, in Unix seconds (entries of older claims: the end of the
    /// lease they were claimed with).
    pub time: f64,
    /// The message exactly as it was queued. Stored base64 as `payload_b64`, so any bytes,
    /// JSON or not, survive the JSON entry.
    #[serde(rename = "payload_b64", with = "base64_bytes")]
    pub payload: Vec<u8>,
    /// Fields this version does not write (entries of older claims carry `node`), kept so
    /// reading and showing an entry loses nothing.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A dead-letter entry that is not a [`DeadLetter`]: not JSON, or missing one of its fields
/// (an entry written by hand, or damaged).
#[derive(Debug, thiserror::Error)]
#[error("not a dead-letter entry {{reason, queue, time, payload_b64}}: {0}")]
pub struct DeadLetterError(#[source] serde_json::Error);

impl DeadLetter {
    /// A dead letter for `payload`, refused for `reason` on `queue`, stamped with the current
    /// time.
    pub fn new(queue: &str, reason: &str, payload: &[u8]) -> Self {
        DeadLetter {
            reason: reason.into(),
            queue: queue.into(),
            time: time::unix_now(),
            payload: payload.to_vec(),
            extra: Map::new(),
        }
    }

    /// The entry's bytes as they go on the list.
    pub fn encode(&self) -> Vec<u8> {
        json::to_vec(self)
    }

    /// Read an entry back from the list.
    pub fn decode(raw: &[u8]) -> std::result::Result<Self, DeadLetterError> {
        serde_json::from_slice(raw).map_err(DeadLetterError)
    }

    /// The task id the payload names (`headers.id`, or a v1 body's id), if it is a task
    /// message at all: the id a waiting client's `AsyncResult` has.
    pub fn task_id(&self) -> Option<String> {
        TaskMessage::id_of(&self.payload)
    }

    /// Where [`Broker::requeue_dead_letter`] puts the payload back: the recorded queue, or
    /// Celery's default queue when none was recorded. The payload goes onto that list as
    /// named (entries of older claims recorded the priority list's key itself).
    pub fn requeue_to(&self) -> &str {
        if self.queue.is_empty() {
            keys::DEFAULT_QUEUE
        } else {
            &self.queue
        }
    }
}

/// `payload_b64`: the payload as standard base64 text.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(D::Error::custom)
    }
}

/// One entry of the dead-letter list as read at one moment.
#[derive(Debug)]
pub struct DeadLetterEntry {
    /// Its position when read: 0 is the newest. Positions shift as entries are added or
    /// removed, so they name an entry only until the list next changes.
    pub index: usize,
    /// The entry, or why it cannot be read.
    pub letter: std::result::Result<DeadLetter, DeadLetterError>,
    /// The bytes as stored: what a requeue removes, compared byte for byte, so it never
    /// removes an entry that merely looks the same after decoding.
    raw: Vec<u8>,
}

impl DeadLetterEntry {
    fn read(index: usize, raw: Vec<u8>) -> Self {
        DeadLetterEntry {
            index,
            letter: DeadLetter::decode(&raw),
            raw,
        }
    }
}

impl Broker {
    /// The dead letters, newest first: at most `limit` of them, or all with `None`.
    pub async fn dead_letters(&self, limit: Option<usize>) -> Result<Vec<DeadLetterEntry>> {
        let stop = match limit {
            Some(0) => return Ok(Vec::new()),
            Some(n) => n as isize - 1,
            None => -1,
        };
        let raw: Vec<Vec<u8>> = self.conn().lrange(keys::DEAD_LETTER, 0, stop).await?;
        Ok(raw
            .into_iter()
            .enumerate()
            .map(|(i, r)| DeadLetterEntry::read(i, r))
            .collect())
    }

    /// The dead letter at `index` (0 = newest), if there is one.
    pub async fn dead_letter(&self, index: usize) -> Result<Option<DeadLetterEntry>> {
        let raw: Option<Vec<u8>> = self
            .conn()
            .lindex(keys::DEAD_LETTER, index as isize)
            .await?;
        Ok(raw.map(|r| DeadLetterEntry::read(index, r)))
    }

    /// How many dead letters there are.
    pub async fn dead_letter_count(&self) -> Result<usize> {
        Ok(self.conn().llen(keys::DEAD_LETTER).await?)
    }

    /// The index of the newest dead letter whose payload names `task_id` (see
    /// [`super::admin`] for how a message is matched without decoding it).
    pub async fn find_dead_letter(&self, task_id: &str) -> Result<Option<usize>> {
        Ok(self
            .dead_letters(None)
            .await?
            .into_iter()
            .find(|e| {
                e.letter
                    .as_ref()
                    .is_ok_and(|l| super::admin::mentions_task(&l.payload, task_id))
            })
            .map(|e| e.index))
    }

    /// Put a dead letter's payload back on its queue ([`DeadLetter::requeue_to`]) and remove
    /// the entry, in one `MULTI`/`EXEC`, so the message is never in both places or in neither.
    /// Returns false, touching nothing, for an entry that cannot be read (its payload is
    /// unknown). Fix whatever refused the message first, or it comes straight back.
    pub async fn requeue_dead_letter(&self, entry: &DeadLetterEntry) -> Result<bool> {
        let Ok(letter) = &entry.letter else {
            return Ok(false);
        };
        let mut p = redis::pipe();
        p.atomic()
            .lrem(keys::DEAD_LETTER, 1, &entry.raw)
            .ignore()
            .lpush(letter.requeue_to(), &letter.payload)
            .ignore();
        p.query_async::<()>(&mut self.conn()).await?;
        Ok(true)
    }

    /// Delete every dead letter; returns how many there were (`LLEN` and `DEL` in one
    /// `MULTI`/`EXEC`, so the count is what was deleted).
    pub async fn purge_dead_letters(&self) -> Result<usize> {
        let mut p = redis::pipe();
        p.atomic()
            .llen(keys::DEAD_LETTER)
            .del(keys::DEAD_LETTER)
            .ignore();
        let (n,): (usize,) = p.query_async(&mut self.conn()).await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_entry_is_written_with_the_fields_and_bytes_of_earlier_versions() {
        let mut letter = DeadLetter::new("celery", "envelope is not JSON", b"not a message");
        letter.time = 1_732_288_000.25;
        // What earlier versions wrote: `json::to_vec(&json!({...}))` in this field order.
        let earlier = json::to_vec(&json!({
            "reason": "envelope is not JSON",
            "queue": "celery",
            "time": 1_732_288_000.25,
            "payload_b64": "bm90IGEgbWVzc2FnZQ==",
        }));
        assert_eq!(
            String::from_utf8_lossy(&letter.encode()),
            String::from_utf8_lossy(&earlier)
        );
        assert_eq!(DeadLetter::decode(&earlier).unwrap(), letter);
    }

    #[test]
    fn an_older_claims_entry_keeps_its_extra_fields() {
        let raw = br#"{"node": "celery@h", "queue": "celery\u0006\u00169", "payload_b64": "eA==", "reason": "too big", "time": 1732288000}"#;
        let letter = DeadLetter::decode(raw).unwrap();
        assert_eq!(letter.payload, b"x");
        assert_eq!(letter.time, 1_732_288_000.0);
        assert_eq!(letter.extra["node"], "celery@h");
        assert_eq!(letter.requeue_to(), "celery\x06\x169");
    }

    #[test]
    fn what_is_not_an_entry_is_refused_with_the_reason() {
        for raw in [
            &b"garbage"[..],
            br#"{"reason": "r", "queue": "q", "time": 1}"#,
            br#"{"reason": "r", "queue": "q", "time": 1, "payload_b64": "not base64!"}"#,
        ] {
            assert!(DeadLetter::decode(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn an_entry_without_a_queue_goes_back_to_the_default_queue() {
        let letter = DeadLetter::new("", "unroutable", b"{}");
        assert_eq!(letter.requeue_to(), keys::DEFAULT_QUEUE);
        assert_eq!(letter.task_id(), None);
    }
}
