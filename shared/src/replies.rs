//! What the server says back, other than the message object and failures: the success ack
//! of each client → server event and the presence bodies (§4), and the HTTP bodies (§8).
//!
//! Clients and tests check these keys exactly (§4: "payloads carry exactly the keys shown
//! here"), so a field added or renamed here is a contract change. They derive `JsonSchema`
//! so that the API documents ([`crate::api_docs`]) describe what is serialized, not a copy
//! of it; `skip_serializing_if` fields are documented as optional for that reason.

use crate::ids::{ConversationId, MessageId, Seq, UserId};
use crate::message::{Message, rfc3339_millis};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Page size of `GET /api/conversations` when `limit` is absent (§8).
pub const DEFAULT_CONVERSATIONS_LIMIT: i64 = 50;
/// Largest page of `GET /api/conversations` (§8): a page is one keyset scan of an index, and
/// 200 rows keep that scan and the response small even for the AI coach, which is in every
/// conversation.
pub const MAX_CONVERSATIONS_LIMIT: i64 = 200;

/// `join_conversation` success ack.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinAck {
    #[schemars(extend("const" = true))]
    pub success: bool,
    pub conversation_id: ConversationId,
    /// The conversation's last event `seq` (0 when empty): sync from here.
    pub last_seq: Seq,
    /// Its streamed replies in progress (§14), each with the text so far; `[]` when none.
    pub streaming: Vec<Message>,
}

/// `leave_conversation` success ack.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaveAck {
    #[schemars(extend("const" = true))]
    pub success: bool,
    pub conversation_id: ConversationId,
}

/// `typing` success ack (also when the typing rate is exceeded and nothing is relayed).
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TypingAck {
    #[schemars(extend("const" = true))]
    pub success: bool,
}

/// `message` success ack, and the 202 body of `POST /api/conversations/{id}/messages`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct MessageAck {
    #[schemars(extend("const" = true))]
    pub success: bool,
    /// `seq` may still be null: the ack comes once the queue stored the message.
    pub message: Message,
    /// Whether this `clientMessageId` had been sent before (the original is returned).
    pub duplicate: bool,
}

/// A page of history: the `sync` ack (with `success`) and the body of
/// `GET /api/conversations/{id}/messages` (without).
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    /// Present (true) in the `sync` ack only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "bool", extend("const" = true))]
    pub success: Option<bool>,
    /// New messages with `seq > afterSeq`, ascending, each in its current version.
    pub messages: Vec<Message>,
    /// Later versions of messages (the end of a streamed reply, §14) with `seq > afterSeq`,
    /// ascending by their own `seq`; `[]` when none.
    pub updates: Vec<MessageUpdated>,
    /// Whether events beyond this page exist.
    pub has_more: bool,
}

/// A later version of a message (§14): `message_updated`, and an entry of `updates`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageUpdated {
    pub conversation_id: ConversationId,
    /// This version's own place among the conversation's events (§7.3).
    pub seq: Seq,
    /// The whole new version; `message.seq` stays the message's creation `seq`.
    pub message: Message,
}

/// `reply_append` success ack: the reply's text length after it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AppendAck {
    #[schemars(extend("const" = true))]
    pub success: bool,
    /// In Unicode scalar values.
    pub length: u64,
}

/// `reply_end` success ack: the final version.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct EndAck {
    #[schemars(extend("const" = true))]
    pub success: bool,
    pub message: Message,
}

/// `reply_delta`, to every other socket in the conversation: a piece of a streamed reply's
/// text at `offset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplyDelta {
    pub conversation_id: ConversationId,
    pub id: MessageId,
    pub offset: u64,
    pub text: String,
}

/// `reply_stop`, to the author's sockets in the conversation: who asked it to stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplyStopNotice {
    pub conversation_id: ConversationId,
    pub id: MessageId,
    pub user_id: UserId,
}

/// `user_joined` / `user_left`, to the other sockets in the conversation.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
}

/// `typing` as relayed to the other sockets in the conversation.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypingNotice {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub is_typing: bool,
}

/// A conversation as the HTTP API returns it (`POST` answers 201 with one).
#[derive(Clone, Debug, Serialize, JsonSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: ConversationId,
    pub title: Option<String>,
    pub created_by: UserId,
    /// Everyone in the conversation, its creator included.
    pub participant_ids: Vec<UserId>,
    #[serde(with = "rfc3339_millis")]
    #[schemars(with = "DateTime<Utc>")]
    pub created_at: DateTime<Utc>,
}

/// `GET /api/conversations`: the caller's conversations, newest activity first.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationList {
    pub conversations: Vec<Conversation>,
    /// Opaque; pass it back as `cursor` for the next page. Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn acks_carry_exactly_the_contract_keys() {
        let id = ConversationId(uuid::Uuid::nil());
        let cases = [
            (
                serde_json::to_value(JoinAck {
                    success: true,
                    conversation_id: id,
                    last_seq: Seq(7),
                    streaming: Vec::new(),
                }),
                json!({"success": true, "conversationId": id.to_string(), "lastSeq": 7, "streaming": []}),
            ),
            (
                serde_json::to_value(LeaveAck {
                    success: true,
                    conversation_id: id,
                }),
                json!({"success": true, "conversationId": id.to_string()}),
            ),
            (
                serde_json::to_value(TypingAck { success: true }),
                json!({"success": true}),
            ),
            (
                serde_json::to_value(MessagePage {
                    success: None,
                    messages: Vec::new(),
                    updates: Vec::new(),
                    has_more: false,
                }),
                json!({"messages": [], "updates": [], "hasMore": false}),
            ),
            (
                serde_json::to_value(ConversationList {
                    conversations: Vec::new(),
                    next_cursor: None,
                }),
                json!({"conversations": []}),
            ),
        ];
        for (serialized, expected) in cases {
            assert_eq!(serialized.expect("serializes"), expected);
        }
    }
}
