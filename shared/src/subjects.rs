//! Stream, subject and consumer names: the one place the services agree on them.

use crate::ids::{ConversationId, MessageId};

/// Accepted messages, written by ingest, read by the persister.
pub const MESSAGES_STREAM: &str = "COACHWIRE_MESSAGES";
/// Ingest publishes here; the stream rewrites it to a partition subject on the way in.
pub const MESSAGES_INPUT: &str = "coachwire.msg.in.*";
/// Number of persister partitions. Per-conversation order needs one active writer per
/// conversation; partitions let several persisters share the work. Changing it re-maps
/// conversations, so it is fixed (8 leaves room for 8 persisters).
pub const PARTITIONS: u32 = 8;
/// Server-side deterministic partitioning by conversation id (nats-server ≥ 2.10).
pub const MESSAGES_PARTITIONED: &str = "coachwire.msg.p.{{partition(8,1)}}.{{wildcard(1)}}";

/// Persisted messages (seq set), written by the persister, read by the fanout.
pub const PERSISTED_STREAM: &str = "COACHWIRE_PERSISTED";
pub const PERSISTED_ALL: &str = "coachwire.persisted.*";

/// Messages the persister could not store after its retries.
pub const DEAD_LETTER_STREAM: &str = "COACHWIRE_DEAD_LETTERS";
pub const DEAD_LETTER_ALL: &str = "coachwire.dlq.>";

/// The priority group whose pinned client is the partition's single active writer.
pub const PERSISTER_GROUP: &str = "persister";
pub const FANOUT_CONSUMER: &str = "fanout";

pub fn message_subject(conversation: ConversationId) -> String {
    format!("coachwire.msg.in.{conversation}")
}

pub fn partition_filter(partition: u32) -> String {
    format!("coachwire.msg.p.{partition}.*")
}

pub fn persister_consumer(partition: u32) -> String {
    format!("persister-p{partition}")
}

pub fn persisted_subject(conversation: ConversationId) -> String {
    format!("coachwire.persisted.{conversation}")
}

pub fn dead_letter_subject(conversation: &str) -> String {
    format!("coachwire.dlq.{conversation}")
}

/// The text of streamed replies between their start and their end (§14): each acked
/// append, on its reply's subject, purged once the reply has ended.
pub const REPLIES_STREAM: &str = "COACHWIRE_REPLIES";
pub const REPLIES_ALL: &str = "coachwire.reply.>";
/// What every reply subject begins with, so a room tells its appends from its events.
pub const REPLY_SUBJECT_PREFIX: &str = "coachwire.reply.";

/// One reply's appends. Rooms subscribe to their conversation's replies with core NATS,
/// so an append reaches every node that holds the room as it is stored.
pub fn reply_subject(conversation: ConversationId, reply: MessageId) -> String {
    format!("{REPLY_SUBJECT_PREFIX}{conversation}.{reply}")
}

/// Every reply of one conversation.
pub fn replies_of(conversation: ConversationId) -> String {
    format!("{REPLY_SUBJECT_PREFIX}{conversation}.*")
}

/// Core-NATS subject of a conversation's room: each ingest node subscribes while it has
/// a socket joined to the conversation, so subject interest routes events to exactly the
/// nodes that need them.
pub fn room_subject(conversation: ConversationId) -> String {
    format!("coachwire.room.{conversation}")
}
