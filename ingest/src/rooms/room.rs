//! One conversation's room on this node: who is in it, the last `seq` emitted to it (the
//! cursor), and the rules that make each member's stream complete, ordered and free of
//! repeats (see the module doc of [`super`]).

use super::presence;
use super::streaming::Streaming;
use crate::auth::Principal;
use crate::replies::Replies;
use crate::socket::extract::JoinedRooms;
use chrono::Utc;
use coachwire_shared::db;
use coachwire_shared::envelope::{MessageEnvelope, PersistedEvent, ReplyAppended, RoomEvent};
use coachwire_shared::error::Failure;
use coachwire_shared::ids::{ConversationId, Seq, UserId};
use coachwire_shared::message::{Message, MessageDelivered, MessageStatus};
use coachwire_shared::metrics::END_TO_END_SECONDS;
use coachwire_shared::replies::{MessageUpdated, ReplyDelta};
use coachwire_shared::subjects::REPLY_SUBJECT_PREFIX;
use coachwire_shared::telemetry::propagation;
use serde_json::value::RawValue;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::{SendError, SocketError, SocketIo};
use sqlx::PgPool;
use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;
use tracing::Instrument;

/// Messages read from Postgres per query while filling a gap: a long outage's gap is
/// emitted in bounded steps rather than loaded whole.
const GAP_PAGE: i64 = 200;
const GAP_FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// A gap is waited for, never skipped (§7.4): retries go on at this pace while Postgres is
/// down, and the room resumes once it answers.
const GAP_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long a stored message is given to arrive through the fanout before a room that
/// has not seen it treats its event as lost.
pub(super) const SETTLED_AFTER: Duration = Duration::from_secs(1);

/// Whether a catch-up left rows too fresh to judge.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CatchUp {
    Done,
    Again,
}

/// The answer to a join: where the socket's stream of events starts.
#[derive(Clone, Debug)]
pub struct Joined {
    pub last_seq: Seq,
    /// `false` when the socket was already in the room (no `user_joined` then).
    pub newly: bool,
    /// The replies in progress with their text so far; the socket gets every delta after.
    pub streaming: Vec<Message>,
}

pub(super) struct Room {
    conversation: ConversationId,
    io: SocketIo,
    pool: PgPool,
    node: String,
    /// The Socket.IO room name, used for presence broadcasts.
    name: String,
    cursor: Seq,
    members: HashSet<Sid>,
    streaming: Streaming,
    /// This node's replies, told when someone asks one of them to stop.
    replies: Replies,
}

impl Room {
    pub(super) fn new(
        conversation: ConversationId,
        io: SocketIo,
        pool: PgPool,
        node: String,
        js: async_nats::jetstream::Context,
        replies: Replies,
    ) -> Self {
        Self {
            conversation,
            io,
            pool,
            node,
            name: conversation.to_string(),
            cursor: Seq::ZERO,
            members: HashSet::new(),
            streaming: Streaming::new(js),
            replies,
        }
    }

    pub(super) fn conversation(&self) -> ConversationId {
        self.conversation
    }

    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Where the room starts: its last event, and the replies in progress then.
    pub(super) async fn load(&mut self) -> Result<(), sqlx::Error> {
        self.cursor = db::last_seq(&self.pool, self.conversation).await?;
        for reply in crate::queries::streaming_in(&self.pool, self.conversation).await? {
            self.streaming.track(&reply).await;
        }
        Ok(())
    }

    pub(super) fn join(&mut self, sid: Sid) -> Result<Joined, Failure> {
        let socket = crate::socket::connected(&self.io, sid).ok_or_else(Failure::internal)?;
        socket.join(self.name.clone());
        let newly = self.members.insert(sid);
        Ok(Joined {
            last_seq: self.cursor,
            newly,
            streaming: self.streaming.in_progress(),
        })
    }

    pub(super) fn leave(&mut self, sid: Sid) {
        if self.members.remove(&sid)
            && let Some(socket) = crate::socket::connected(&self.io, sid)
        {
            socket.leave(self.name.clone());
        }
    }

    async fn on_append(&mut self, payload: &[u8]) {
        let appended: ReplyAppended = match serde_json::from_slice(payload) {
            Ok(appended) => appended,
            Err(e) => return tracing::warn!(error = %e, "undecodable reply append"),
        };
        let author = Some(&appended.origin)
            .filter(|o| o.node == self.node)
            .and_then(|o| Sid::from_str(&o.sid).ok());
        if let Some(delta) = self.streaming.on_append(&appended).await {
            self.emit_delta(&delta, author);
        }
    }

    /// Emits a piece of a reply's text to every member but its author.
    fn emit_delta(&mut self, delta: &ReplyDelta, author: Option<Sid>) {
        match serde_json::value::to_raw_value(delta) {
            Ok(payload) => self.emit_to_members("reply_delta", &payload, author),
            Err(e) => tracing::error!(error = %e, "unserializable delta"),
        }
    }

    /// Emits `event` to each member but `except`, one emit per member (so a full queue is
    /// known per socket) of a payload serialized once; members whose socket is gone leave.
    fn emit_to_members(&mut self, event: &str, payload: &RawValue, except: Option<Sid>) {
        let members: Vec<Sid> = self.members.iter().copied().collect();
        for sid in members.into_iter().filter(|sid| Some(*sid) != except) {
            match crate::socket::connected(&self.io, sid) {
                Some(socket) => self.send_or_drop(sid, socket.emit(event, payload)),
                None => {
                    self.members.remove(&sid);
                }
            }
        }
    }

    /// After an event was emitted: a reply that started is followed (its stored text goes
    /// out as one delta), one that ended is no longer.
    async fn follow(&mut self, envelope: &MessageEnvelope, author: Option<Sid>) {
        let message = &envelope.message;
        match envelope.version {
            Some(_) => self.streaming.ended(message.id),
            None if message.status == MessageStatus::Streaming => {
                if let Some(delta) = Box::pin(self.streaming.track(message)).await {
                    self.emit_delta(&delta, author);
                }
            }
            None => {}
        }
    }

    /// `user` is no longer a participant (§8): each of their sockets here leaves the room
    /// as if it had sent `leave_conversation`, so it neither hears nor sends to it again.
    fn depart(&mut self, user: UserId) {
        let io = &self.io;
        let sockets: Vec<SocketRef> = self
            .members
            .iter()
            .filter_map(|sid| crate::socket::connected(io, *sid))
            .filter(|s| {
                s.extensions
                    .get::<Principal>()
                    .is_some_and(|p| p.user == user)
            })
            .collect();
        for socket in sockets {
            if let Some(joined) = socket.extensions.get::<JoinedRooms>() {
                joined.remove(self.conversation);
            }
            self.leave(socket.id);
        }
    }

    /// Drops members whose socket is gone without a leave (a join that raced a disconnect).
    pub(super) fn prune(&mut self) {
        let io = &self.io;
        self.members
            .retain(|sid| crate::socket::connected(io, *sid).is_some());
    }

    pub(super) fn disconnect_all(&mut self) {
        for sid in self.members.drain() {
            crate::socket::evict::disconnect(&self.io, sid);
        }
    }

    /// An event on the room subject, or a stored append on one of its reply subjects.
    pub(super) async fn on_event(&mut self, subject: &str, payload: &[u8]) {
        if subject.starts_with(REPLY_SUBJECT_PREFIX) {
            return self.on_append(payload).await;
        }
        match serde_json::from_slice(payload) {
            Ok(RoomEvent::Messages(persisted)) => {
                for event in persisted.events {
                    self.on_persisted(event).await;
                    // Lets the sockets' writers drain between the events of a batch.
                    tokio::task::yield_now().await;
                }
            }
            Ok(RoomEvent::ReplyStop(notice)) => self.replies.stop(&self.io, notice),
            Ok(RoomEvent::Departed(departed)) => {
                self.depart(departed.user_id);
                let event = RoomEvent::Departed(departed);
                presence::emit(&self.io, &self.name, &self.node, event).await
            }
            Ok(other) => presence::emit(&self.io, &self.name, &self.node, other).await,
            Err(e) => tracing::warn!(error = %e, "undecodable room event"),
        }
    }

    /// One persisted event, in its message's trace.
    async fn on_persisted(&mut self, event: PersistedEvent) {
        let envelope = event.envelope;
        let span = tracing::debug_span!(
            "room.emit",
            otel.kind = "consumer",
            messaging.system = "nats",
            coachwire.conversation_id = %self.conversation,
            coachwire.message_id = %envelope.message.id,
            coachwire.seq = envelope.event_seq().map(|seq| seq.0),
            coachwire.node = %self.node,
            coachwire.members = self.members.len(),
        );
        propagation::continue_from_fields(&span, &event.trace);
        self.deliver(envelope).instrument(span).await
    }

    /// Emits what Postgres has held beyond the cursor for [`SETTLED_AFTER`]: the tail a
    /// lost event would hide. Rows newer than that are most likely still on their way
    /// through the fanout, with the origin that lets their sender get `message_delivered`;
    /// [`CatchUp::Again`] asks for another look once they have settled.
    pub(super) async fn catch_up(&mut self) -> Result<CatchUp, sqlx::Error> {
        let (settled, newest) =
            crate::queries::seqs_beyond(&self.pool, self.conversation, self.cursor, SETTLED_AFTER)
                .await?;
        if let Some(settled) = settled {
            tracing::info!(conversation = %self.conversation, cursor = %self.cursor, %settled, "room caught up a lost tail");
            self.fill_to(settled).await;
        }
        Ok(match newest {
            Some(newest) if newest > self.cursor => CatchUp::Again,
            _ => CatchUp::Done,
        })
    }

    async fn deliver(&mut self, envelope: MessageEnvelope) {
        let Some(seq) = envelope.event_seq() else {
            return;
        };
        if seq <= self.cursor {
            return;
        }
        if seq > self.cursor.next() {
            // Boxed, as every rare path that queries: an actor's future is as large as its
            // largest await, and an idle room would otherwise hold a query's state.
            Box::pin(self.fill_to(Seq(seq.0 - 1))).await;
        }
        // Only a creation has a sender to skip and tell `message_delivered`; a later
        // version goes to every member, its author's sockets included (§14).
        let sender_sid = match envelope.version {
            None => envelope.origin.as_ref().filter(|o| o.node == self.node),
            Some(_) => None,
        }
        .and_then(|o| Sid::from_str(&o.sid).ok());
        self.emit_event(&envelope, sender_sid);
        self.follow(&envelope, sender_sid).await;
        if let Some(sid) = sender_sid
            && let Some(socket) = crate::socket::connected(&self.io, sid)
        {
            let delivered = MessageDelivered {
                id: envelope.message.id,
                client_message_id: envelope.message.client_message_id,
                conversation_id: envelope.message.conversation_id,
                seq,
                created_at: envelope.message.created_at,
            };
            self.send_or_drop(sid, socket.emit("message_delivered", &delivered));
        }
    }

    /// Emits every event up to `target` from Postgres, a page at a time, retrying until
    /// Postgres answers: the rows exist, since the persister publishes only after commit.
    async fn fill_to(&mut self, target: Seq) {
        let mut backoff = GAP_FIRST_BACKOFF;
        while self.cursor < target {
            let want = (target.0 - self.cursor.0).min(GAP_PAGE);
            match db::events_after(&self.pool, self.conversation, self.cursor, want).await {
                Ok((page, _)) if !page.is_empty() => {
                    for event in page.into_iter().filter(|e| e.seq() <= Some(target)) {
                        let envelope = event.into_envelope(None);
                        self.emit_event(&envelope, None);
                        self.follow(&envelope, None).await;
                    }
                    backoff = GAP_FIRST_BACKOFF;
                    continue;
                }
                Ok(_) => {
                    tracing::warn!(conversation = %self.conversation, cursor = %self.cursor, %target, "gap not in Postgres yet; waiting")
                }
                Err(e) => tracing::warn!(error = %e, "gap fill failed; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(GAP_MAX_BACKOFF);
        }
    }

    /// Emits one event to each member but `except` (the sender, which gets
    /// `message_delivered`): a creation as `message`, a later version as `message_updated`.
    /// Each member gets its own emit (so a full queue is known per socket), but the event
    /// is serialized once for all of them.
    fn emit_event(&mut self, envelope: &MessageEnvelope, except: Option<Sid>) {
        let Some(seq) = envelope.event_seq() else {
            return;
        };
        let message = &envelope.message;
        let (event, payload) = match envelope.version {
            None => ("message", serde_json::value::to_raw_value(message)),
            Some(_) => {
                let update = MessageUpdated {
                    conversation_id: message.conversation_id,
                    seq,
                    message: message.clone(),
                };
                ("message_updated", serde_json::value::to_raw_value(&update))
            }
        };
        match payload {
            Ok(payload) => self.emit_to_members(event, &payload, except),
            Err(e) => return tracing::error!(error = %e, "unserializable event"),
        }
        self.cursor = self.cursor.max(seq);
        if envelope.version.is_none() {
            let age = (Utc::now() - message.created_at)
                .to_std()
                .unwrap_or_default();
            metrics::histogram!(END_TO_END_SECONDS).record(age.as_secs_f64());
        }
    }

    /// A socket that cannot take another packet is disconnected rather than skipped
    /// (§7.4): its client reconnects and syncs from the last `seq` it saw.
    fn send_or_drop(&mut self, sid: Sid, sent: Result<(), SendError>) {
        match sent {
            Ok(()) => {}
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                tracing::info!(conversation = %self.conversation, %sid, "socket too slow for its room; disconnecting it");
                self.members.remove(&sid);
                crate::socket::evict::disconnect(&self.io, sid);
            }
            Err(SendError::Socket(SocketError::Closed)) => {
                self.members.remove(&sid);
            }
            Err(e) => tracing::error!(error = %e, "emit failed"),
        }
    }
}
