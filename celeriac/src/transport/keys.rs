//! Every Redis key, channel and separator celeriac and Celery use, in one place.
//!
//! Each name cites the kombu/celery definition it mirrors. No other module spells a key
//! literal; `docs/redis-keys.md` documents these for operators, and a test checks that the
//! guide lists every name defined here (see [`ALL_KEY_PATTERNS`]).

/// kombu's separator between a queue name and its priority suffix, and between the parts
/// of a binding member (`kombu/transport/redis.py`: `sep = '\x06\x16'`).
pub const SEP: &str = "\x06\x16";

/// kombu's default priority steps (`PRIORITY_STEPS = [0, 3, 6, 9]`).
pub const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// The default task queue (`task_default_queue = 'celery'`).
pub const DEFAULT_QUEUE: &str = "celery";

/// Hash `delivery_tag → [envelope, exchange, routing_key]` (kombu `QoS.unacked_key`). A
/// message the claim does not parse inside Redis is keyed by a tag the claimer mints instead
/// (see [`crate::transport::scripts::CLAIM`]).
pub const UNACKED: &str = "unacked";
/// Zset `delivery_tag → delivery time` (kombu `QoS.unacked_index_key`). celeriac refreshes
/// the score of what it holds (leases), so no sweeper restores a live task.
pub const UNACKED_INDEX: &str = "unacked_index";
/// redis-py lock guarding `restore_visible` (kombu `QoS.unacked_mutex_key`).
pub const UNACKED_MUTEX: &str = "unacked_mutex";

/// celeriac's dead-letter list: messages that cannot be decoded or must not run, each a JSON
/// object `{"reason", "queue", "time", "payload_b64"}` keeping the original bytes
/// ([`super::DeadLetter`]).
pub const DEAD_LETTER: &str = "celeriac.dead";

/// Hash `delivery_tag → node name` of the celeriac worker holding that unacked message, so
/// operators see who holds what and a sweeper knows whose lease lapsed.
pub const HOLDERS: &str = "celeriac.holders";

/// Prefix of binding tables `_kombu.binding.<exchange>` (kombu `keyprefix_queue`).
pub const BINDING_PREFIX: &str = "_kombu.binding.";
/// Prefix of kombu 5.7's permanent-binding sets (`_kombu.binding_permanent.<exchange>`).
pub const BINDING_PERMANENT_PREFIX: &str = "_kombu.binding_permanent.";
/// kombu 5.7's zset of binding deadlines for expiring queues.
pub const BINDING_DEADLINES: &str = "_kombu.binding_deadlines";

/// Control exchange (`control_exchange = 'celery'` + `exchange_fmt = '%s.pidbox'`).
pub const PIDBOX_EXCHANGE: &str = "celery.pidbox";
/// Reply exchange (`reply_exchange_fmt = 'reply.%s.pidbox'`).
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// Event exchange (`celery/events/dispatcher.py`: `celeryev`, fanout on Redis).
pub const EVENT_EXCHANGE: &str = "celeryev";

/// Result key prefix (`BaseKeyValueStoreBackend.task_keyprefix`).
pub const TASK_META_PREFIX: &str = "celery-task-meta-";
/// Group key prefix (`group_keyprefix`).
pub const GROUP_META_PREFIX: &str = "celery-taskset-meta-";

/// Patterns of every name above, for the key guide check (`<x>` marks a variable part).
pub const ALL_KEY_PATTERNS: &[&str] = &[
    "<queue>",
    "<queue>\\x06\\x16<3|6|9>",
    "unacked",
    "unacked_index",
    "unacked_mutex",
    "celeriac.dead",
    "celeriac.holders",
    "_kombu.binding.<exchange>",
    "_kombu.binding_permanent.<exchange>",
    "_kombu.binding_deadlines",
    "<node>.celery.pidbox",
    "<oid>.reply.celery.pidbox",
    "/<db>.celery.pidbox",
    "/<db>.celeryev/<routing_key>",
    "celery-task-meta-<task_id>",
    "celery-taskset-meta-<group_id>",
];

/// kombu's `priority(n)`: clamp to 0..9 and map to the highest step ≤ n.
pub fn priority_step(priority: u8) -> u8 {
    let p = priority.min(9);
    *PRIORITY_STEPS.iter().rev().find(|&&s| s <= p).unwrap_or(&0)
}

/// The list a message of `priority` goes to (`_q_for_pri`): `queue` or `queue\x06\x16<step>`.
pub fn queue_key(queue: &str, priority: u8) -> String {
    match priority_step(priority) {
        0 => queue.to_string(),
        s => format!("{queue}{SEP}{s}"),
    }
}

/// All four lists of a queue, in pop order.
pub fn queue_keys(queue: &str) -> [String; 4] {
    PRIORITY_STEPS.map(|s| queue_key(queue, s))
}

/// The queue a list key belongs to (`rsplit(sep, 1)[0]`).
pub fn queue_of_key(key: &str) -> &str {
    key.rsplit_once(SEP).map_or(key, |(q, _)| q)
}

/// BRPOP key order for several queues: priority outer, queue inner (`_brpop_start`).
pub fn consume_keys(queues: &[String]) -> Vec<String> {
    PRIORITY_STEPS
        .iter()
        .flat_map(|&s| queues.iter().map(move |q| queue_key(q, s)))
        .collect()
}

/// `_kombu.binding.<exchange>`.
pub fn binding(exchange: &str) -> String {
    format!("{BINDING_PREFIX}{exchange}")
}

/// `_kombu.binding_permanent.<exchange>`.
pub fn binding_permanent(exchange: &str) -> String {
    format!("{BINDING_PERMANENT_PREFIX}{exchange}")
}

/// A binding member: `routing_key SEP pattern SEP queue`.
pub fn binding_member(routing_key: &str, pattern: &str, queue: &str) -> String {
    format!("{routing_key}{SEP}{pattern}{SEP}{queue}")
}

/// Split a binding member into `(routing_key, pattern, queue)`.
pub fn parse_binding_member(member: &str) -> Option<(&str, &str, &str)> {
    let mut it = member.splitn(3, SEP);
    Some((it.next()?, it.next()?, it.next()?))
}

/// A worker's pidbox queue `<node>.celery.pidbox` (never holds data; fanout is pub/sub).
pub fn pidbox_queue(node: &str) -> String {
    format!("{node}.{PIDBOX_EXCHANGE}")
}

/// A control client's reply queue `<oid>.reply.celery.pidbox`.
pub fn reply_queue(oid: &str) -> String {
    format!("{oid}.{REPLY_EXCHANGE}")
}

/// Fanout channel for `exchange` (+ `/routing_key` when non-empty) in broker db `db`
/// (`_get_publish_topic` with `fanout_prefix=True`).
pub fn fanout_channel(db: i64, exchange: &str, routing_key: &str) -> String {
    if routing_key.is_empty() {
        format!("/{db}.{exchange}")
    } else {
        format!("/{db}.{exchange}/{routing_key}")
    }
}

/// `/<db>.celery.pidbox`: the channel control requests are published on.
pub fn pidbox_channel(db: i64) -> String {
    fanout_channel(db, PIDBOX_EXCHANGE, "")
}

/// `/<db>.celeryev/<routing_key>`.
pub fn event_channel(db: i64, routing_key: &str) -> String {
    fanout_channel(db, EVENT_EXCHANGE, routing_key)
}

/// `/<db>.celeryev/*`: what Flower and `celery events` subscribe to.
pub fn event_pattern(db: i64) -> String {
    format!("/{db}.{EVENT_EXCHANGE}/*")
}

/// `celery-task-meta-<id>`: the result key, and the channel its updates are published on.
pub fn task_meta(task_id: &str) -> String {
    format!("{TASK_META_PREFIX}{task_id}")
}

/// `celery-taskset-meta-<group_id>` (+ chord suffixes `.j`, `.t`, `.s`, `.d`, `.c`).
pub fn group_meta(group_id: &str, suffix: &str) -> String {
    format!("{GROUP_META_PREFIX}{group_id}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_map_like_kombu_bisect() {
        let keys: Vec<String> = (0..=9).map(|p| queue_key("celery", p)).collect();
        assert_eq!(keys[0], "celery");
        assert_eq!(keys[2], "celery");
        assert_eq!(keys[3], "celery\x06\x163");
        assert_eq!(keys[5], "celery\x06\x163");
        assert_eq!(keys[7], "celery\x06\x166");
        assert_eq!(keys[9], "celery\x06\x169");
        assert_eq!(queue_key("celery", 200), "celery\x06\x169");
    }

    #[test]
    fn consume_order_is_priority_outer_queue_inner() {
        let keys = consume_keys(&["celery".into(), "hipri".into()]);
        assert_eq!(
            keys,
            [
                "celery",
                "hipri",
                "celery\x06\x163",
                "hipri\x06\x163",
                "celery\x06\x166",
                "hipri\x06\x166",
                "celery\x06\x169",
                "hipri\x06\x169"
            ]
        );
        assert_eq!(queue_of_key("hipri\x06\x166"), "hipri");
    }

    #[test]
    fn channels_carry_the_db_prefix() {
        assert_eq!(pidbox_channel(3), "/3.celery.pidbox");
        assert_eq!(
            event_channel(0, "worker.heartbeat"),
            "/0.celeryev/worker.heartbeat"
        );
    }
}
