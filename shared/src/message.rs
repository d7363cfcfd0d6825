//! The wire types of the contract (§4): the message object, and every client payload.
//!
//! The payload structs are the source of the JSON Schemas ([`crate::validation`]): their
//! serde attributes (`deny_unknown_fields`, defaults) and schemars attributes (patterns,
//! lengths) *are* the structural rules; the rest lives in `validation::rules`.

use crate::ids::{ClientMessageId, ConversationId, MessageId, Seq, UserId};
use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Hyphenated UUID, either case (see `ids::parse_canonical_uuid`).
pub const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
/// Longest `content`, in Unicode scalar values (§5).
pub const MAX_CONTENT_CHARS: usize = 10_000;
/// Longest `metadata.imageUrl` (§5).
pub const MAX_IMAGE_URL_CHARS: usize = 2048;
/// Most participants of one conversation, the creator included (§8).
pub const MAX_PARTICIPANTS: usize = 1000;
/// `sync` / HTTP page size bounds (§4).
pub const MAX_SYNC_LIMIT: i64 = 500;
pub const DEFAULT_SYNC_LIMIT: i64 = 100;

/// Who wrote a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    #[default]
    User,
    /// Only a token with `role: "ai"` may send these.
    Ai,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::User => "user",
            MessageType::Ai => "ai",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(MessageType::User),
            "ai" => Some(MessageType::Ai),
            _ => None,
        }
    }
}

/// Where a message stands (§4): `complete` for every ordinary message; the others belong
/// to streamed replies (§14), `streaming` until the reply ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    #[default]
    Complete,
    Streaming,
    Cancelled,
    Interrupted,
    Failed,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Complete => "complete",
            MessageStatus::Streaming => "streaming",
            MessageStatus::Cancelled => "cancelled",
            MessageStatus::Interrupted => "interrupted",
            MessageStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            MessageStatus::Complete,
            MessageStatus::Streaming,
            MessageStatus::Cancelled,
            MessageStatus::Interrupted,
            MessageStatus::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }
}

/// `metadata` of a message: at most these two keys (§5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// An absolute `http`/`https` URL without user-info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub image_url: Option<String>,
    /// An RFC 3339 timestamp chosen by the client, stored as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// The `message` event payload (and the body of `POST …/messages`).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "coachwire message payload")]
pub struct MessagePayload {
    #[schemars(with = "String", regex(pattern = UUID_PATTERN))]
    pub conversation_id: ConversationId,
    /// Plain text, 1–10000 Unicode scalar values, not only whitespace, no control
    /// characters but TAB, LF and CR.
    #[schemars(length(min = 1, max = 10000))]
    pub content: String,
    #[serde(default, rename = "type")]
    pub kind: MessageType,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    #[schemars(with = "Option<String>", regex(pattern = UUID_PATTERN))]
    pub client_message_id: Option<ClientMessageId>,
}

/// `join_conversation` / `leave_conversation` payload.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConversationPayload {
    #[schemars(with = "String", regex(pattern = UUID_PATTERN))]
    pub conversation_id: ConversationId,
}

/// `typing` payload.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TypingPayload {
    #[schemars(with = "String", regex(pattern = UUID_PATTERN))]
    pub conversation_id: ConversationId,
    pub is_typing: bool,
}

/// `sync` payload.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncPayload {
    #[schemars(with = "String", regex(pattern = UUID_PATTERN))]
    pub conversation_id: ConversationId,
    #[schemars(range(min = 0))]
    pub after_seq: i64,
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

/// Longest `text` of one `reply_append`, in Unicode scalar values (§14).
pub const MAX_APPEND_CHARS: usize = 2000;

/// `reply_start`: the AI coach begins a streamed reply (§14).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplyStartPayload {
    #[schemars(with = "String", regex(pattern = UUID_PATTERN))]
    pub conversation_id: ConversationId,
    #[serde(default)]
    #[schemars(with = "Option<String>", regex(pattern = UUID_PATTERN))]
    pub client_message_id: Option<ClientMessageId>,
    #[serde(default)]
    pub metadata: Metadata,
}

/// `reply_append`: the next piece of a reply's text, at `offset` (the length of the text
/// already sent, in Unicode scalar values).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplyAppendPayload {
    #[schemars(with = "String", regex(pattern = UUID_PATTERN))]
    pub conversation_id: ConversationId,
    #[schemars(with = "String", regex(pattern = UUID_PATTERN))]
    pub id: MessageId,
    #[schemars(range(min = 0, max = 10000))]
    pub offset: u64,
    /// 1–2000 Unicode scalar values, no control characters but TAB, LF and CR.
    #[schemars(length(min = 1, max = 2000))]
    pub text: String,
}

/// How the author ends a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndStatus {
    Complete,
    Failed,
}

/// `reply_end`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplyEndPayload {
    #[schemars(with = "String", regex(pattern = UUID_PATTERN))]
    pub conversation_id: ConversationId,
    #[schemars(with = "String", regex(pattern = UUID_PATTERN))]
    pub id: MessageId,
    pub status: EndStatus,
}

/// `reply_stop`: any participant asks the author to stop.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplyStopPayload {
    #[schemars(with = "String", regex(pattern = UUID_PATTERN))]
    pub conversation_id: ConversationId,
    #[schemars(with = "String", regex(pattern = UUID_PATTERN))]
    pub id: MessageId,
}

/// `POST /api/conversations` body.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateConversationPayload {
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub title: Option<String>,
    #[schemars(length(max = 1000))]
    pub participant_ids: Vec<ParticipantId>,
}

/// A UUID string inside `participantIds`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ParticipantId(#[schemars(regex(pattern = UUID_PATTERN))] pub String);

/// The message object of the contract, as acked, emitted and returned by `sync`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub content: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
    pub metadata: Metadata,
    pub client_message_id: Option<ClientMessageId>,
    /// The position of its creation among the conversation's events (§7.3); null until
    /// persisted.
    pub seq: Option<Seq>,
    /// Envelopes written before the field existed carry none: they are ordinary messages.
    #[serde(default)]
    pub status: MessageStatus,
    /// When ingest accepted the message (RFC 3339 UTC, milliseconds).
    #[serde(with = "rfc3339_millis")]
    #[schemars(with = "DateTime<Utc>")]
    pub created_at: DateTime<Utc>,
}

/// `message_delivered`, to the sending socket once the message is persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageDelivered {
    pub id: MessageId,
    pub client_message_id: Option<ClientMessageId>,
    pub conversation_id: ConversationId,
    pub seq: Seq,
    #[serde(with = "rfc3339_millis")]
    #[schemars(with = "DateTime<Utc>")]
    pub created_at: DateTime<Utc>,
}

/// Timestamps on the wire: RFC 3339 UTC with milliseconds (`2026-01-02T03:04:05.678Z`),
/// what JavaScript's `Date#toISOString` prints and parses.
pub mod rfc3339_millis {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// The current time at the wire's precision, so what ingest acks equals what Postgres returns.
pub fn now_millis() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn message_serializes_with_contract_keys_and_millisecond_time() {
        let m = Message {
            id: MessageId(Uuid::nil()),
            conversation_id: ConversationId(Uuid::nil()),
            user_id: UserId(Uuid::nil()),
            content: "hi".into(),
            kind: MessageType::Ai,
            metadata: Metadata::default(),
            client_message_id: None,
            seq: None,
            status: MessageStatus::Complete,
            created_at: DateTime::from_timestamp_millis(1_700_000_000_123).expect("valid"),
        };
        let v = serde_json::to_value(&m).expect("serializes");
        let mut keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "clientMessageId",
                "content",
                "conversationId",
                "createdAt",
                "id",
                "metadata",
                "seq",
                "status",
                "type",
                "userId"
            ]
        );
        assert_eq!(v["createdAt"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["metadata"], serde_json::json!({}));
        assert_eq!(v["type"], "ai");
        assert_eq!(v["status"], "complete");
    }

    #[test]
    fn an_envelope_written_before_status_existed_reads_as_complete() {
        let old = serde_json::json!({
            "id": Uuid::nil(), "conversationId": Uuid::nil(), "userId": Uuid::nil(),
            "content": "hi", "type": "user", "metadata": {}, "clientMessageId": null,
            "seq": null, "createdAt": "2026-01-02T03:04:05.678Z"
        });
        let message: Message = serde_json::from_value(old).expect("decodes");
        assert_eq!(message.status, MessageStatus::Complete);
        for status in [
            "complete",
            "streaming",
            "cancelled",
            "interrupted",
            "failed",
        ] {
            assert_eq!(
                MessageStatus::parse(status).map(MessageStatus::as_str),
                Some(status)
            );
        }
    }
}
