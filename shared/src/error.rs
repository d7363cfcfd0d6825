//! The one error vocabulary clients see: stable codes, a short text, and field details.
//!
//! A [`Failure`] reaches the client in one of two derived shapes, [`FailureAck`] (ack and
//! HTTP body) and [`ErrorEvent`] (the `error` event), whose `JsonSchema` the API documents
//! publish: what is serialized and what is documented come from the same structs.

use schemars::JsonSchema;
use serde::Serialize;
use std::fmt;

/// The wire codes of the contract (§4). Each maps to one HTTP status (§8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationFailed,
    Unauthorized,
    Forbidden,
    RateLimited,
    /// The durable queue could not confirm: the client should retry with the same id.
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, for the documents that list one response per code.
    pub const ALL: [ErrorCode; 6] = [
        ErrorCode::ValidationFailed,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationFailed => "VALIDATION_FAILED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::ValidationFailed => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failing field: `path` is a JSON pointer into the payload (`/metadata/imageUrl`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Detail {
    /// The failing field's own JSON pointer (`/content`, `/metadata/foo`); `""` for the
    /// whole payload.
    pub path: String,
    pub message: String,
}

impl Detail {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A refused request, as the client will see it (ack, `error` event or HTTP body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub error: String,
    pub details: Vec<Detail>,
    pub retry_after_ms: Option<u64>,
}

impl Failure {
    pub fn new(code: ErrorCode, error: impl Into<String>) -> Self {
        Self {
            code,
            error: error.into(),
            details: Vec::new(),
            retry_after_ms: None,
        }
    }

    pub fn validation(details: Vec<Detail>) -> Self {
        Self {
            details,
            ..Self::new(ErrorCode::ValidationFailed, "the payload is invalid")
        }
    }

    pub fn forbidden() -> Self {
        Self::new(
            ErrorCode::Forbidden,
            "not a participant of this conversation",
        )
    }

    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, reason)
    }

    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "the message queue could not confirm; retry with the same clientMessageId",
        )
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }

    pub fn rate_limited(retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(ErrorCode::RateLimited, "too many requests")
        }
    }

    /// The ack / HTTP body: `{ success: false, error, code, details?, retryAfterMs? }`.
    pub fn body(&self) -> FailureAck<'_> {
        FailureAck {
            success: false,
            fields: self.fields(),
        }
    }

    /// The `error` event sent when the client gave no ack callback: `{ event, error, code, … }`.
    pub fn event_body<'a>(&'a self, event: &'a str) -> ErrorEvent<'a> {
        ErrorEvent {
            event,
            fields: self.fields(),
        }
    }

    fn fields(&self) -> FailureFields<'_> {
        FailureFields {
            error: &self.error,
            code: self.code,
            details: &self.details,
            retry_after_ms: self.retry_after_ms,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.error)
    }
}

/// A failure ack (§4) and the body of a refused HTTP request (§8).
#[derive(Serialize, JsonSchema)]
pub struct FailureAck<'a> {
    #[schemars(extend("const" = false))]
    success: bool,
    #[serde(flatten)]
    fields: FailureFields<'a>,
}

/// The `error` event: a failure of an event the client sent without an ack callback.
#[derive(Serialize, JsonSchema)]
pub struct ErrorEvent<'a> {
    /// The name of the event that failed.
    event: &'a str,
    #[serde(flatten)]
    fields: FailureFields<'a>,
}

/// What both failure shapes carry after their first key. The keys are optional exactly as
/// §4 says: `details` only when there are some, `retryAfterMs` only for `RATE_LIMITED`.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
struct FailureFields<'a> {
    /// Human-readable; clients branch on `code`, not on this text.
    error: &'a str,
    code: ErrorCode,
    #[serde(skip_serializing_if = "<[Detail]>::is_empty")]
    details: &'a [Detail],
    /// How long to wait before sending again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    retry_after_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ack_body_has_exactly_the_contract_keys() {
        let f = Failure::validation(vec![Detail::new("/content", "is required")]);
        let v = serde_json::to_value(f.body()).expect("serializes");
        assert_eq!(
            v,
            json!({"success": false, "error": "the payload is invalid", "code": "VALIDATION_FAILED",
                   "details": [{"path": "/content", "message": "is required"}]})
        );
    }

    #[test]
    fn error_event_names_the_event_and_carries_retry_after() {
        let v = serde_json::to_value(Failure::rate_limited(1500).event_body("message"))
            .expect("serializes");
        assert_eq!(v["event"], "message");
        assert_eq!(v["retryAfterMs"], 1500);
        assert!(v.get("success").is_none());
    }
}
