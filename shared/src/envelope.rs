//! What travels through NATS between the services.
//!
//! `MessageEnvelope` is the payload of both streams: on `MESSAGES` its `seq` is `None`
//! (accepted by ingest), on `PERSISTED` it is set (stored by the persister). `RoomEvent`
//! is what a node receives on a conversation's room subject and emits to its local room.

use crate::ids::{ConversationId, UserId};
use crate::message::Message;
use serde::{Deserialize, Serialize};

/// The socket a message or presence event came from, so the node that holds it can skip
/// it in broadcasts and send it `message_delivered`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The ingest node's id (random per process).
    pub node: String,
    /// The Socket.IO socket id on that node.
    pub sid: String,
}

/// A message on its way through the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEnvelope {
    pub message: Message,
    /// `None` for messages sent over HTTP.
    pub origin: Option<Origin>,
}

/// Presence and typing, which are never stored: they go node to node over core NATS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub origin: Origin,
}

/// Everything a node may receive on a room subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoomEvent {
    /// A persisted message (`seq` set), routed by the fanout.
    Message(MessageEnvelope),
    Typing {
        presence: Presence,
        is_typing: bool,
    },
    UserJoined(Presence),
    UserLeft(Presence),
    /// The user left the conversation for good (`DELETE …/participants/me`): every node
    /// takes that user's sockets out of its room, then tells the rest `user_left`.
    Departed(Presence),
}
