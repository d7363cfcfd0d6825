//! The one error vocabulary clients see: stable codes, a short text, and field details.

use serde::{Serialize, Serializer, ser::SerializeMap};
use std::fmt;

/// The wire codes of the contract (§4). Each maps to one HTTP status (§8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Detail {
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
    pub fn body(&self) -> FailureBody<'_> {
        FailureBody {
            failure: self,
            event: None,
        }
    }

    /// The `error` event sent when the client gave no ack callback: `{ event, error, code, … }`.
    pub fn event_body<'a>(&'a self, event: &'a str) -> FailureBody<'a> {
        FailureBody {
            failure: self,
            event: Some(event),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.error)
    }
}

/// Serializes a [`Failure`] in one of its two wire shapes.
pub struct FailureBody<'a> {
    failure: &'a Failure,
    event: Option<&'a str>,
}

impl Serialize for FailureBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let f = self.failure;
        let mut map = serializer.serialize_map(None)?;
        match self.event {
            Some(event) => map.serialize_entry("event", event)?,
            None => map.serialize_entry("success", &false)?,
        }
        map.serialize_entry("error", &f.error)?;
        map.serialize_entry("code", &f.code)?;
        if !f.details.is_empty() {
            map.serialize_entry("details", &f.details)?;
        }
        if let Some(ms) = f.retry_after_ms {
            map.serialize_entry("retryAfterMs", &ms)?;
        }
        map.end()
    }
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
