//! What operators ask of the transport: which task queues exist, how long each is, what
//! waits in them and in which order, and what is taken but not yet acked, by whom.
//!
//! Everything here reads with SCAN, HSCAN, LRANGE and friends, never `KEYS` (production
//! profiles rename it away, and it blocks Redis on a large keyspace). Nothing here changes
//! Redis; the changes an operator makes go through [`Broker::purge`], [`Broker::ack`] and
//! the dead-letter operations in [`super::dead`]. Rendering the answers is the caller's job.

use super::{Broker, Result, keys};
use crate::protocol::{TaskMessage, time};
use redis::AsyncCommands;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// Whether raw message bytes name `task_id` as their `"id"`: a substring test, not a parse,
/// so a long queue is searched without decoding every message. It matches the id as Python's
/// `json.dumps` writes it (`"id": "<id>"`) and as compact encoders do (`"id":"<id>"`); the
/// key is quoted, so `root_id` and `parent_id` do not match.
pub(crate) fn mentions_task(raw: &[u8], task_id: &str) -> bool {
    let text = String::from_utf8_lossy(raw);
    text.contains(&format!("\"id\": \"{task_id}\""))
        || text.contains(&format!("\"id\":\"{task_id}\""))
}

/// A message waiting on a queue.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The queue (no priority suffix).
    pub queue: String,
    /// The Redis list holding it: the queue's name, plus kombu's priority suffix for
    /// priorities 3 and up.
    pub list: String,
    /// Its place in that list: 0 is the next message a consumer takes from it.
    pub position: usize,
    /// The envelope bytes as queued.
    pub raw: Vec<u8>,
}

impl Queued {
    /// The task message, when the bytes decode as one.
    pub fn message(&self) -> Option<TaskMessage> {
        TaskMessage::decode(&self.raw).ok()
    }
}

/// A message taken off a queue and not yet acked, as recorded in `unacked`.
#[derive(Debug, Clone, PartialEq)]
pub struct Unacked {
    /// Its delivery tag, the key [`Broker::ack`] takes.
    pub tag: String,
    /// The queue it was taken from: its routing key (kombu routes the anonymous exchange by
    /// it), or Celery's default queue when the key is empty, as kombu's restore does.
    pub queue: String,
    /// `headers.id` of its envelope, when it names one.
    pub task_id: Option<String>,
}

/// The `unacked` bookkeeping at a glance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnackedStats {
    /// Messages taken and not yet acked, by any consumer.
    pub total: usize,
    /// Of those, the ones a celeriac worker holds under a lease.
    pub leased: usize,
    /// How long ago the oldest entry was delivered (or, for a celeriac worker's entry, how
    /// long ago its lease lapsed); `None` when nothing is stale, including when every entry
    /// is under a live lease.
    pub oldest_age: Option<Duration>,
}

/// Who holds one unacked message, and since or until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// Its delivery tag.
    pub tag: String,
    /// The celeriac worker (node name) holding it under a lease; `None` for a message a
    /// Python consumer took.
    pub holder: Option<String>,
    /// Its `unacked_index` score, in Unix seconds: the end of the lease when a celeriac
    /// worker holds it (renewed while that worker lives), else kombu's delivery time.
    /// `None` when the index has no entry for it.
    pub score: Option<f64>,
}

impl Broker {
    /// Task queues known to the broker, sorted: every queue bound in a `_kombu.binding.*`
    /// table (found with SCAN) except the pidbox, reply and event exchanges' own queues, plus
    /// Celery's default queue, which exists before anything binds it.
    pub async fn known_queues(&self) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let mut queues: BTreeSet<String> = [keys::DEFAULT_QUEUE.to_string()].into();
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", keys::BINDING_PREFIX))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await?;
            for table in page {
                let exchange = &table[keys::BINDING_PREFIX.len()..];
                if [
                    keys::PIDBOX_EXCHANGE,
                    keys::REPLY_EXCHANGE,
                    keys::EVENT_EXCHANGE,
                ]
                .contains(&exchange)
                {
                    continue;
                }
                let members: Vec<String> = conn.smembers(&table).await?;
                queues.extend(
                    members
                        .iter()
                        .filter_map(|m| keys::parse_binding_member(m))
                        .map(|(_, _, q)| q.to_string()),
                );
            }
            if next == 0 {
                return Ok(queues.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// Every message waiting on `queue`, in the order consumers take them: priority lists in
    /// pop order, and within a list the next message first.
    pub async fn queued(&self, queue: &str) -> Result<Vec<Queued>> {
        let mut out = Vec::new();
        for list in keys::queue_keys(queue) {
            out.extend(self.list_in_pop_order(queue, list).await?);
        }
        Ok(out)
    }

    /// The first waiting message, in any known queue, whose bytes name `task_id`.
    pub async fn find_queued(&self, task_id: &str) -> Result<Option<Queued>> {
        for queue in self.known_queues().await? {
            for list in keys::queue_keys(&queue) {
                let found = self
                    .list_in_pop_order(&queue, list)
                    .await?
                    .into_iter()
                    .find(|q| mentions_task(&q.raw, task_id));
                if found.is_some() {
                    return Ok(found);
                }
            }
        }
        Ok(None)
    }

    /// One list of `queue`, next message first (consumers pop from the right).
    async fn list_in_pop_order(&self, queue: &str, list: String) -> Result<Vec<Queued>> {
        let items: Vec<Vec<u8>> = self.conn().lrange(&list, 0, -1).await?;
        Ok(items
            .into_iter()
            .rev()
            .enumerate()
            .map(|(position, raw)| Queued {
                queue: queue.to_string(),
                list: list.clone(),
                position,
                raw,
            })
            .collect())
    }

    /// Every `unacked` entry that is the `[envelope, exchange, routing_key]` kombu writes,
    /// read with HSCAN; entries of another shape are left out (the restore dead-letters them).
    pub async fn unacked(&self) -> Result<Vec<Unacked>> {
        Ok(self
            .unacked_entries()
            .await?
            .into_iter()
            .filter_map(|(tag, value)| {
                let (env, _exchange, rk) =
                    serde_json::from_slice::<(Value, String, String)>(&value).ok()?;
                let queue = if rk.is_empty() {
                    keys::DEFAULT_QUEUE.to_string()
                } else {
                    rk
                };
                let task_id = env["headers"]["id"]
                    .as_str()
                    .filter(|id| !id.is_empty())
                    .map(String::from);
                Some(Unacked {
                    tag,
                    queue,
                    task_id,
                })
            })
            .collect())
    }

    /// Counts of `unacked` and of celeriac's leases, and the age of the oldest stale entry,
    /// in one round trip.
    pub async fn unacked_stats(&self) -> Result<UnackedStats> {
        let mut p = redis::pipe();
        p.hlen(keys::UNACKED)
            .hlen(keys::HOLDERS)
            .zrange_withscores(keys::UNACKED_INDEX, 0, 0);
        let (total, leased, lowest): (usize, usize, Vec<(String, f64)>) =
            p.query_async(&mut self.conn()).await?;
        let now = time::unix_now();
        // kombu scores an entry with its delivery time; celeriac with the end of its holder's
        // lease (in the future while the holder lives). The lowest score is the oldest
        // delivery only when it lies in the past; a live lease has no age to report.
        let oldest_age = lowest
            .first()
            .filter(|(_, s)| *s <= now)
            .map(|(_, s)| Duration::from_secs_f64(now - s));
        Ok(UnackedStats {
            total,
            leased,
            oldest_age,
        })
    }

    /// Who holds the unacked message whose bytes name `task_id`, if one does.
    pub async fn find_unacked(&self, task_id: &str) -> Result<Option<Hold>> {
        let found = self
            .unacked_entries()
            .await?
            .into_iter()
            .find(|(_, value)| mentions_task(value, task_id));
        let Some((tag, _)) = found else {
            return Ok(None);
        };
        let mut p = redis::pipe();
        p.hget(keys::HOLDERS, &tag)
            .zscore(keys::UNACKED_INDEX, &tag);
        let (holder, score): (Option<String>, Option<f64>) =
            p.query_async(&mut self.conn()).await?;
        Ok(Some(Hold { tag, holder, score }))
    }
}

#[cfg(test)]
mod tests {
    use super::mentions_task;

    #[test]
    fn a_task_is_found_by_its_own_id_only() {
        let python = br#"{"headers": {"id": "t-1", "root_id": "t-2", "parent_id": "t-3"}}"#;
        let compact = br#"{"headers":{"id":"t-1"}}"#;
        assert!(mentions_task(python, "t-1"));
        assert!(mentions_task(compact, "t-1"));
        assert!(!mentions_task(python, "t-2"), "root_id is not the id");
        assert!(!mentions_task(python, "t-3"), "parent_id is not the id");
        assert!(!mentions_task(b"not a message", "t-1"));
    }
}
