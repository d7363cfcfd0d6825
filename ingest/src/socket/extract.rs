//! Extractors every event handler takes: the raw payload, and the way to answer.
//!
//! socketioxide's `Data<T>` skips the handler (no ack ever) when decoding fails, and its
//! `AckSender` silently drops answers to clients that gave no callback; these two fix both
//! so that every event gets an answer the contract describes.

use coachwire_shared::error::{Detail, Failure};
use coachwire_shared::ids::ConversationId;
use serde::Serialize;
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::Socket;
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

/// The event's first argument as JSON, or the `VALIDATION_FAILED` it deserves: binary
/// attachments, and anything a strict JSON decoder refuses (lone surrogates, nesting past
/// serde_json's 128 levels), never reach a handler's logic.
pub struct Payload(pub Result<serde_json::Value, Failure>);

impl FromMessageParts<LocalAdapter> for Payload {
    type Error = Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let has_binary = match v {
            Value::Str(_, Some(binaries)) => !binaries.is_empty(),
            Value::Str(_, None) => false,
            Value::Bytes(_) => true,
        };
        if has_binary {
            return Ok(Payload(Err(invalid("binary attachments are not accepted"))));
        }
        let Ok(TryData(decoded)) = TryData::<serde_json::Value>::from_message_parts(s, v, ack_id);
        Ok(Payload(decoded.map_err(|_| {
            invalid(
                "is not valid JSON (lone surrogate, nesting deeper than 128 levels, or no payload)",
            )
        })))
    }
}

fn invalid(message: &str) -> Failure {
    Failure::validation(vec![Detail::new("", message)])
}

impl Payload {
    /// The JSON value, or the failure to answer with.
    pub fn json(self) -> Result<serde_json::Value, Failure> {
        self.0
    }
}

/// Answers an event: through the ack callback if the client gave one, else failures go to
/// the socket as an `error` event (`{ event, error, code, … }`) and successes are dropped.
pub struct Reply {
    socket: SocketRef,
    io: SocketIo,
    ack: AckSender,
    wants_ack: bool,
    event: String,
}

impl FromMessageParts<LocalAdapter> for Reply {
    type Error = Infallible;

    fn from_message_parts(
        s: &Arc<Socket<LocalAdapter>>,
        v: &mut Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let Ok(socket) = SocketRef::from_message_parts(s, v, ack_id);
        let Ok(ack) = AckSender::from_message_parts(s, v, ack_id);
        let Ok(io) = SocketIo::from_message_parts(s, v, ack_id);
        let event = Event::from_message_parts(s, v, ack_id)
            .map(|e| e.0)
            .unwrap_or_default();
        Ok(Reply {
            socket,
            io,
            ack,
            wants_ack: ack_id.is_some(),
            event,
        })
    }
}

impl Reply {
    /// Sends the outcome. An `UNAUTHORIZED` answer (the token expired mid-connection) is
    /// followed by a disconnect (§3).
    pub fn send<T: Serialize>(self, outcome: Result<T, Failure>) {
        let expired = matches!(&outcome, Err(f) if f.code == coachwire_shared::error::ErrorCode::Unauthorized);
        let sent = match (&outcome, self.wants_ack) {
            (Ok(body), true) => self.ack.send(body),
            (Err(failure), true) => self.ack.send(&failure.body()),
            (Err(failure), false) => self.socket.emit("error", &failure.event_body(&self.event)),
            (Ok(_), false) => Ok(()),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, event = %self.event, "could not answer");
        }
        if expired {
            crate::socket::evict::disconnect(&self.io, self.socket.id);
        }
    }
}

/// The conversations this socket has joined: `message` and `typing` need it (§4).
#[derive(Clone, Default)]
pub struct JoinedRooms(Arc<Mutex<HashSet<ConversationId>>>);

/// What [`JoinedRooms::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Counted now: undo with [`JoinedRooms::remove`] if the join fails.
    Added,
    AlreadyJoined,
    /// The socket holds its limit of rooms (§6).
    Full,
}

impl JoinedRooms {
    pub fn contains(&self, c: ConversationId) -> bool {
        self.lock().contains(&c)
    }

    /// Counts `c` as joined unless that would take the socket past `limit` rooms. Checked
    /// and inserted under one lock, so concurrent joins of one socket cannot overshoot.
    pub fn admit(&self, c: ConversationId, limit: Option<usize>) -> Admission {
        let mut joined = self.lock();
        if joined.contains(&c) {
            Admission::AlreadyJoined
        } else if limit.is_some_and(|limit| joined.len() >= limit) {
            Admission::Full
        } else {
            joined.insert(c);
            Admission::Added
        }
    }

    pub fn remove(&self, c: ConversationId) -> bool {
        self.lock().remove(&c)
    }

    pub fn take_all(&self) -> Vec<ConversationId> {
        self.lock().drain().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<ConversationId>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
