//! The kombu message envelope: the JSON object stored in a Redis list, published on a
//! fanout channel, or kept in the `unacked` hash.
//!
//! `{"body", "content-encoding", "content-type", "headers", "properties"}` in that order
//! (kombu `Channel.prepare_message`). The body is base64 of the serialized payload when
//! `properties.body_encoding == "base64"` (kombu's virtual-channel default), else verbatim.
//! Unknown keys at every level are kept so a requeue never drops a field.

use super::{ProtocolError, json};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The content type celeriac accepts and produces.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// `properties.delivery_info`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryInfo {
    /// Exchange the message was published to (`""` for Celery task routing).
    #[serde(default)]
    pub exchange: String,
    /// Routing key (for the anonymous exchange: the queue name).
    #[serde(default)]
    pub routing_key: String,
    /// `redelivered`, `priority` and anything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `properties` of the envelope, in kombu's emission order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Properties {
    /// Task id for tasks; absent for events and pidbox messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Client's oid (only used by the rpc backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// 2 = persistent (tasks, pidbox requests), 1 = transient (events, replies).
    #[serde(default = "default_delivery_mode")]
    pub delivery_mode: u8,
    /// `str(int(expires_seconds * 1000))`, only when the task has `expires`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    /// Required by kombu's `QoS.append`.
    #[serde(default)]
    pub delivery_info: DeliveryInfo,
    /// 0–9, lower is served first on Redis.
    #[serde(default)]
    pub priority: u8,
    /// `"base64"` (kombu default) or absent/`"utf-8"` for a verbatim body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_encoding: Option<String>,
    /// Chosen by the publisher, unique per publish; the field name in `unacked`.
    #[serde(default)]
    pub delivery_tag: String,
    /// Anything newer kombu adds.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_delivery_mode() -> u8 {
    2
}

/// A kombu envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Encoded body (base64 text when `body_encoding == "base64"`).
    pub body: String,
    /// `utf-8` for JSON.
    #[serde(rename = "content-encoding", default = "default_encoding")]
    pub content_encoding: String,
    /// `application/json`; anything else is refused before decoding.
    #[serde(rename = "content-type", default = "default_content_type")]
    pub content_type: String,
    /// Message headers (task headers v2, `{"hostname"}` for events, `{"clock", ...}` for pidbox).
    #[serde(default)]
    pub headers: Map<String, Value>,
    /// kombu's message properties: delivery tag and info, priority, reply-to, correlation id.
    #[serde(default)]
    pub properties: Properties,
    /// Unknown top-level keys.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub(crate) fn default_encoding() -> String {
    "utf-8".into()
}
fn default_content_type() -> String {
    CONTENT_TYPE_JSON.into()
}

impl Envelope {
    /// Build an envelope around a JSON payload: body base64 of its Python-style JSON.
    pub fn with_json_body(
        payload: &Value,
        headers: Map<String, Value>,
        properties: Properties,
    ) -> Self {
        Envelope {
            body: B64.encode(json::to_vec(payload)),
            content_encoding: default_encoding(),
            content_type: default_content_type(),
            headers,
            properties,
            extra: Map::new(),
        }
    }

    /// An envelope for a message routed through a named exchange (events, pidbox requests
    /// and replies): `delivery_info` names the exchange and routing key, the body is base64,
    /// and a fresh delivery tag is chosen (kombu's `Channel.prepare_message`).
    /// `delivery_mode` is 1 (transient: events, replies) or 2 (pidbox requests).
    pub fn routed(
        payload: &Value,
        headers: Map<String, Value>,
        exchange: &str,
        routing_key: &str,
        delivery_mode: u8,
    ) -> Self {
        let props = Properties {
            delivery_mode,
            delivery_info: DeliveryInfo {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                extra: Map::new(),
            },
            priority: 0,
            body_encoding: Some("base64".into()),
            delivery_tag: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        Self::with_json_body(payload, headers, props)
    }

    /// Parse envelope bytes (as popped from a list or received on a channel).
    pub fn decode(raw: &[u8]) -> Result<Self, ProtocolError> {
        serde_json::from_slice(raw).map_err(|e| ProtocolError::EnvelopeNotJson(e.to_string()))
    }

    /// Encode as Python's `json.dumps` would.
    pub fn encode(&self) -> Vec<u8> {
        json::to_vec(self)
    }

    /// The decoded body bytes (base64-decoded when `body_encoding` says so).
    pub fn body_bytes(&self) -> Result<Vec<u8>, ProtocolError> {
        match self.properties.body_encoding.as_deref() {
            Some("base64") => B64
                .decode(self.body.as_bytes())
                .map_err(|e| ProtocolError::BodyNotBase64(e.to_string())),
            _ => Ok(self.body.clone().into_bytes()),
        }
    }

    /// The body as JSON. Refuses any content type other than JSON without looking at it:
    /// pickle, yaml and msgpack bodies are never deserialized.
    pub fn body_json(&self) -> Result<Value, ProtocolError> {
        if self.content_type != CONTENT_TYPE_JSON {
            return Err(ProtocolError::UnsupportedContentType(
                self.content_type.clone(),
            ));
        }
        let bytes = self.body_bytes()?;
        serde_json::from_slice(&bytes).map_err(|e| ProtocolError::BodyNotJson(e.to_string()))
    }

    /// Mark as redelivered, as kombu's `_do_restore_message` does: `redelivered: true` is
    /// appended to the headers and to `properties.delivery_info`.
    pub fn mark_redelivered(&mut self) {
        self.headers.insert("redelivered".into(), Value::Bool(true));
        self.properties
            .delivery_info
            .extra
            .insert("redelivered".into(), Value::Bool(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURED: &str = r#"{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "11111111-1111-1111-1111-111111111111", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "11111111-1111-1111-1111-111111111111", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen6987@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "11111111-1111-1111-1111-111111111111", "reply_to": "150c6268-55ef-3155-bc4f-50a99cf0cc33", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "8d18ab40-68a7-4733-8c86-32e9fd33c5e5"}}"#;

    #[test]
    fn captured_envelope_reencodes_byte_for_byte() {
        let env = Envelope::decode(CAPTURED.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(env.encode()).unwrap(), CAPTURED);
    }

    #[test]
    fn pickle_is_refused_without_decoding() {
        let mut env = Envelope::decode(CAPTURED.as_bytes()).unwrap();
        env.content_type = "application/x-python-serialize".into();
        assert_eq!(
            env.body_json(),
            Err(ProtocolError::UnsupportedContentType(
                "application/x-python-serialize".into()
            ))
        );
    }

    #[test]
    fn redelivery_marks_headers_and_delivery_info() {
        let mut env = Envelope::decode(CAPTURED.as_bytes()).unwrap();
        env.mark_redelivered();
        let s = String::from_utf8(env.encode()).unwrap();
        assert!(s.contains(r#""stamps": {}, "redelivered": true}"#));
        assert!(s.contains(r#""routing_key": "celery", "redelivered": true}"#));
    }
}
