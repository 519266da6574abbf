//! Pure wire types of Celery-over-Redis: bytes or JSON values in, typed values out.
//!
//! Owns the kombu envelope ([`envelope`]), the Celery task message v2 with v1 read support
//! ([`message`]), result metas and exception encoding ([`result`]), Python-compatible JSON
//! text ([`json`]) and Python `repr` strings ([`pyrepr`]). Nothing here does I/O or knows
//! about Redis: the transport and backend modules carry these bytes around.

pub mod control;
pub mod envelope;
pub mod event;
pub mod json;
pub mod message;
pub mod pyrepr;
pub mod result;
pub mod time;

pub use envelope::{DeliveryInfo, Envelope, Properties};
pub use message::{Embed, TaskHeaders, TaskMessage};
pub use result::{ExceptionInfo, ResultMeta, State};

/// What can go wrong decoding a message. Each variant names the field that failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The envelope is not valid JSON (or not an object).
    #[error("envelope is not a JSON object: {0}")]
    EnvelopeNotJson(String),
    /// A required field is missing.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("field {field} has the wrong type: {detail}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What was found.
        detail: String,
    },
    /// The body claims base64 but is not.
    #[error("body is not valid base64: {0}")]
    BodyNotBase64(String),
    /// The body does not decode as the expected JSON.
    #[error("body is not valid JSON: {0}")]
    BodyNotJson(String),
    /// The body is JSON but not `[args, kwargs, embed]`.
    #[error("body is not [args, kwargs, embed]: {0}")]
    BodyShape(String),
    /// Only `application/json` is accepted; pickle/yaml/msgpack are never deserialized.
    #[error("content type {0:?} refused: only application/json is accepted")]
    UnsupportedContentType(String),
    /// A date field is not ISO-8601.
    #[error("field {field} is not an ISO-8601 date: {value:?}")]
    BadDate {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// The message is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Size in bytes.
        size: usize,
        /// The largest size accepted (`--max-message-size`).
        max: usize,
    },
}
