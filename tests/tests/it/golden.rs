//! Golden fixtures: messages captured from Python Celery 5.7 (`tests/fixtures/`), decoded
//! and re-encoded byte for byte, so celeriac's encoder writes exactly what Python writes.

use celeriac::protocol::{Envelope, TaskMessage};
use celeriac::transport::keys;

fn fixtures() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(
        tests::workspace_root().join("tests/fixtures/celery-5.7-messages.jsonl"),
    )
    .expect("fixture file");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("fixture line is JSON");
            (
                v["case"].as_str().unwrap().to_string(),
                v["key"].as_str().unwrap().to_string(),
                v["raw"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn python_messages_reencode_byte_for_byte() {
    let all = fixtures();
    assert!(all.len() >= 8, "fixture file has {} messages", all.len());
    for (case, key, raw) in all {
        let env = Envelope::decode(raw.as_bytes()).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            String::from_utf8(env.encode()).unwrap(),
            raw,
            "{case}: envelope re-encoding differs"
        );
        let msg = TaskMessage::from_envelope(&env).unwrap_or_else(|e| panic!("{case}: {e}"));
        let again = msg.to_envelope(msg.queue(), msg.properties.priority);
        assert_eq!(
            String::from_utf8(again.encode()).unwrap(),
            raw,
            "{case}: task message re-encoding differs"
        );
        assert_eq!(
            keys::queue_key(msg.queue(), msg.properties.priority),
            key,
            "{case}: priority list"
        );
    }
}

#[test]
fn python_chain_message_names_the_next_step_last() {
    let (_, _, raw) = fixtures()
        .into_iter()
        .find(|(c, _, _)| c == "chain")
        .expect("chain fixture");
    let msg = TaskMessage::from_envelope(&Envelope::decode(raw.as_bytes()).unwrap()).unwrap();
    let chain = msg.embed.chain.expect("chain embed");
    assert_eq!(chain.len(), 2);
    assert_eq!(chain.last().unwrap()["args"], serde_json::json!([3]));
}

#[test]
fn eta_expires_and_time_limits_are_read() {
    let all = fixtures();
    let (_, _, raw) = all
        .iter()
        .find(|(c, _, _)| c == "countdown_expires_priority")
        .unwrap();
    let msg = TaskMessage::from_envelope(&Envelope::decode(raw.as_bytes()).unwrap()).unwrap();
    assert!(msg.headers.eta_time().unwrap().is_some());
    assert!(msg.headers.expires_time().unwrap().is_some());
    assert_eq!(msg.properties.priority, 7);
    assert_eq!(msg.properties.expiration.as_deref(), Some("120000"));
    let (_, _, raw) = all.iter().find(|(c, _, _)| c == "time_limits").unwrap();
    let msg = TaskMessage::from_envelope(&Envelope::decode(raw.as_bytes()).unwrap()).unwrap();
    assert_eq!(msg.headers.time_limits(), (Some(2.0), Some(1.0)));
}
