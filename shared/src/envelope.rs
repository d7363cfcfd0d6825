//! What travels through NATS between the services.
//!
//! `MessageEnvelope` is the payload of both streams: on `MESSAGES` its `seq` is `None`
//! (accepted by ingest), on `PERSISTED` it is set (stored by the persister). It carries one
//! event of a message (§7.3): its creation, or with `version` a later version of it (the
//! end of a streamed reply, §14), whose own `seq` follows every event before it.
//! `RoomEvent` is what a node receives on a conversation's room subject and emits to its
//! local room.
//!
//! Persisted events travel in [`Persisted`] batches: one NATS message per conversation
//! per persister transaction, on the `PERSISTED` stream and again on the room subject.
//! Each hop's cost (a stored stream message, its PubAck, a delivery, an ack, a room
//! publish) is paid once per batch instead of once per message; each event keeps its own
//! trace context, so a message's trace still runs through every hop.

use crate::ids::{ConversationId, MessageId, Seq, UserId};
use crate::message::Message;
use crate::replies::{ReplyDelta, ReplyStopNotice};
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

/// A message event on its way through the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEnvelope {
    /// The message as of this event: for a later version, the whole new version, whose
    /// `seq` is still the creation's.
    pub message: Message,
    /// `None` for messages sent over HTTP.
    pub origin: Option<Origin>,
    /// Set for a later version of the message; `None` for its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
}

/// An acked append, as stored in the `REPLIES` stream and seen by every room (§14).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyAppended {
    pub delta: ReplyDelta,
    /// The author's socket, which gets no delta of its own text.
    pub origin: Origin,
}

/// A later version of a message (§14).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// This version's own place among the conversation's events; `None` until persisted.
    pub seq: Option<Seq>,
}

impl MessageEnvelope {
    /// The event's place in its conversation (§7.3), once persisted.
    pub fn event_seq(&self) -> Option<Seq> {
        match self.version {
            Some(version) => version.seq,
            None => self.message.seq,
        }
    }

    /// The id of the event: the message's for its creation, a derived one for a later
    /// version. It is the `Nats-Msg-Id` on both streams and the row's primary key, so the
    /// two events of one message are never taken for duplicates of each other.
    pub fn event_id(&self) -> MessageId {
        match self.version {
            Some(_) => self.message.id.later_version(),
            None => self.message.id,
        }
    }
}

/// One persisted event and the trace context of the span that handed it on (W3C
/// `traceparent`/`tracestate`; empty when tracing is off).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedEvent {
    #[serde(flatten)]
    pub envelope: MessageEnvelope,
    #[serde(default, skip_serializing_if = "TraceContext::is_empty")]
    pub trace: TraceContext,
}

impl PersistedEvent {
    /// An event handed on outside any trace (an operator's replay or retry).
    pub fn untraced(envelope: MessageEnvelope) -> PersistedEvent {
        PersistedEvent {
            envelope,
            trace: TraceContext::new(),
        }
    }
}

/// A trace context as text fields (see `telemetry::propagation`).
pub type TraceContext = std::collections::BTreeMap<String, String>;

/// Persisted events of one conversation in `seq` order: the payload of a `PERSISTED`
/// stream message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub events: Vec<PersistedEvent>,
}

impl Persisted {
    /// The conversation of the events (all of them share it); `None` when empty.
    pub fn conversation(&self) -> Option<ConversationId> {
        self.events
            .first()
            .map(|e| e.envelope.message.conversation_id)
    }
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
    /// Persisted events of the conversation (`seq` set, ascending), routed by the fanout.
    Messages(Persisted),
    Typing {
        presence: Presence,
        is_typing: bool,
    },
    UserJoined(Presence),
    UserLeft(Presence),
    /// Someone asked a streamed reply to stop: the node holding it tells its author.
    ReplyStop(ReplyStopNotice),
    /// The user left the conversation for good (`DELETE …/participants/me`): every node
    /// takes that user's sockets out of its room, then tells the rest `user_left`.
    Departed(Presence),
}
