//! Local delivery: one actor per conversation that has a socket joined on this node.
//!
//! The actor subscribes to the conversation's room subject (so the fanout's events reach
//! this node and no other that lacks the room), keeps the room's `cursor` — the last `seq`
//! emitted here — and handles joins and room events one at a time. That single thread of
//! control is what makes delivery exactly-once and in order per socket:
//! - an event with `seq <= cursor` was already emitted (a redelivery) and is dropped;
//! - an event with `seq > cursor + 1` reveals a lost hop: the gap is read from Postgres
//!   and emitted first;
//! - a join answers `lastSeq = cursor` and joins the Socket.IO room in the same step, so
//!   the socket receives every message after `lastSeq` exactly once.
//!
//! The actor ends (and unsubscribes) when its last local socket leaves.

use chrono::Utc;
use coachwire_shared::db;
use coachwire_shared::envelope::{MessageEnvelope, Presence, RoomEvent};
use coachwire_shared::error::Failure;
use coachwire_shared::ids::{ConversationId, Seq};
use coachwire_shared::message::{Message, MessageDelivered};
use coachwire_shared::metrics::END_TO_END_SECONDS;
use coachwire_shared::subjects::room_subject;
use futures::StreamExt;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::socket::Sid;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How often a gap fill is retried against Postgres before emitting past it (clients then
/// see the gap in `seq` and `sync`): a room must not stall forever on a database outage.
const GAP_FILL_ATTEMPTS: u32 = 5;
const GAP_FILL_BACKOFF: Duration = Duration::from_millis(200);

enum Command {
    Join {
        sid: Sid,
        reply: oneshot::Sender<Result<Joined, Failure>>,
    },
    Leave {
        sid: Sid,
    },
}

/// The answer to a join: where the socket's stream of messages starts.
#[derive(Clone, Copy, Debug)]
pub struct Joined {
    pub last_seq: Seq,
    /// `false` when the socket was already in the room (no `user_joined` then).
    pub newly: bool,
}

type Registry = Arc<Mutex<HashMap<ConversationId, mpsc::UnboundedSender<Command>>>>;

/// The node's room actors, by conversation.
#[derive(Clone)]
pub struct Rooms {
    registry: Registry,
    nats: async_nats::Client,
    pool: PgPool,
    node: String,
}

impl Rooms {
    pub fn new(nats: async_nats::Client, pool: PgPool, node: String) -> Self {
        Self {
            registry: Registry::default(),
            nats,
            pool,
            node,
        }
    }

    /// Joins socket `sid` to the conversation's room, starting the actor if needed.
    pub async fn join(
        &self,
        io: &SocketIo,
        conversation: ConversationId,
        sid: Sid,
    ) -> Result<Joined, Failure> {
        let (reply, answer) = oneshot::channel();
        {
            let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            let sender = registry
                .entry(conversation)
                .or_insert_with(|| self.spawn(io, conversation));
            if sender.send(Command::Join { sid, reply }).is_err() {
                return Err(Failure::internal());
            }
        }
        answer.await.map_err(|_| Failure::unavailable())?
    }

    pub fn leave(&self, conversation: ConversationId, sid: Sid) {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = registry.get(&conversation) {
            let _ = sender.send(Command::Leave { sid });
        }
    }

    /// Publishes presence or typing to every node with the room (including this one).
    pub async fn publish(&self, conversation: ConversationId, event: &RoomEvent) {
        let Ok(payload) = serde_json::to_vec(event) else {
            return;
        };
        if let Err(e) = self
            .nats
            .publish(room_subject(conversation), payload.into())
            .await
        {
            tracing::warn!(error = %e, "presence publish failed");
        }
    }

    fn spawn(&self, io: &SocketIo, conversation: ConversationId) -> mpsc::UnboundedSender<Command> {
        let (tx, rx) = mpsc::unbounded_channel();
        let actor = RoomActor {
            conversation,
            io: io.clone(),
            pool: self.pool.clone(),
            node: self.node.clone(),
            room: conversation.to_string(),
            cursor: Seq::ZERO,
            members: HashSet::new(),
        };
        tokio::spawn(actor.run(self.nats.clone(), rx, self.registry.clone()));
        tx
    }
}

struct RoomActor {
    conversation: ConversationId,
    io: SocketIo,
    pool: PgPool,
    node: String,
    room: String,
    cursor: Seq,
    members: HashSet<Sid>,
}

impl RoomActor {
    async fn run(
        mut self,
        nats: async_nats::Client,
        mut commands: mpsc::UnboundedReceiver<Command>,
        registry: Registry,
    ) {
        let mut events = match self.start(&nats).await {
            Ok(subscriber) => subscriber,
            Err(failure) => return self.fail_pending(commands, registry, failure),
        };
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Join { sid, reply }) => { let _ = reply.send(self.join(sid)); }
                    Some(Command::Leave { sid }) => {
                        self.leave(sid);
                        if self.members.is_empty() && self.retire(&registry, &commands) { return; }
                    }
                    None => return,
                },
                Some(event) = events.next() => self.on_event(&event.payload).await,
            }
        }
    }

    /// Subscribes first and reads `lastSeq` second: anything persisted after the read
    /// arrives on the subscription, anything before it is at or below the cursor.
    async fn start(
        &mut self,
        nats: &async_nats::Client,
    ) -> Result<async_nats::Subscriber, Failure> {
        let subscriber = nats
            .subscribe(room_subject(self.conversation))
            .await
            .map_err(|_| Failure::unavailable())?;
        nats.flush().await.map_err(|_| Failure::unavailable())?;
        self.cursor = db::last_seq(&self.pool, self.conversation)
            .await
            .map_err(|_| Failure::unavailable())?;
        Ok(subscriber)
    }

    fn fail_pending(
        self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        registry: Registry,
        failure: Failure,
    ) {
        let mut registry = registry.lock().unwrap_or_else(|p| p.into_inner());
        registry.remove(&self.conversation);
        while let Ok(command) = commands.try_recv() {
            if let Command::Join { reply, .. } = command {
                let _ = reply.send(Err(failure.clone()));
            }
        }
    }

    /// Ends the actor unless a join slipped in; decided under the registry lock, which
    /// joins also take to send, so no command is lost.
    fn retire(&self, registry: &Registry, commands: &mpsc::UnboundedReceiver<Command>) -> bool {
        let mut registry = registry.lock().unwrap_or_else(|p| p.into_inner());
        if !commands.is_empty() {
            return false;
        }
        registry.remove(&self.conversation);
        true
    }

    fn join(&mut self, sid: Sid) -> Result<Joined, Failure> {
        let socket = self.io.get_socket(sid).ok_or_else(Failure::internal)?;
        socket.join(self.room.clone());
        let newly = self.members.insert(sid);
        Ok(Joined {
            last_seq: self.cursor,
            newly,
        })
    }

    fn leave(&mut self, sid: Sid) {
        if self.members.remove(&sid)
            && let Some(socket) = self.io.get_socket(sid)
        {
            socket.leave(self.room.clone());
        }
    }

    async fn on_event(&mut self, payload: &[u8]) {
        let event: RoomEvent = match serde_json::from_slice(payload) {
            Ok(event) => event,
            Err(e) => return tracing::warn!(error = %e, "undecodable room event"),
        };
        match event {
            RoomEvent::Message(envelope) => self.deliver(envelope).await,
            RoomEvent::Typing {
                presence,
                is_typing,
            } => {
                let body = json!({"conversationId": presence.conversation_id, "userId": presence.user_id, "isTyping": is_typing});
                self.emit_presence("typing", &presence, body).await;
            }
            RoomEvent::UserJoined(presence) => {
                let body =
                    json!({"conversationId": presence.conversation_id, "userId": presence.user_id});
                self.emit_presence("user_joined", &presence, body).await;
            }
            RoomEvent::UserLeft(presence) => {
                let body =
                    json!({"conversationId": presence.conversation_id, "userId": presence.user_id});
                self.emit_presence("user_left", &presence, body).await;
            }
        }
    }

    async fn emit_presence(&self, event: &str, presence: &Presence, body: serde_json::Value) {
        let mut target = self.io.to(self.room.clone());
        if presence.origin.node == self.node {
            target = target.except(presence.origin.sid.clone());
        }
        if let Err(e) = target.emit(event, &body).await {
            tracing::debug!(error = %e, event, "presence emit incomplete");
        }
    }

    async fn deliver(&mut self, envelope: MessageEnvelope) {
        let Some(seq) = envelope.message.seq else {
            return;
        };
        if seq <= self.cursor {
            return;
        }
        if seq > self.cursor.next() {
            self.fill_gap(seq).await;
        }
        let sender = envelope.origin.filter(|o| o.node == self.node);
        self.emit_message(&envelope.message, sender.as_ref().map(|o| o.sid.as_str()))
            .await;
        if let Some(sid) = sender.and_then(|o| Sid::from_str(&o.sid).ok())
            && let Some(socket) = self.io.get_socket(sid)
        {
            let delivered = MessageDelivered {
                id: envelope.message.id,
                client_message_id: envelope.message.client_message_id,
                conversation_id: envelope.message.conversation_id,
                seq,
                created_at: envelope.message.created_at,
            };
            let _ = socket.emit("message_delivered", &delivered);
        }
    }

    /// Emits the messages between the cursor and `next` from Postgres.
    async fn fill_gap(&mut self, next: Seq) {
        let missing = next.0 - self.cursor.0 - 1;
        for attempt in 1..=GAP_FILL_ATTEMPTS {
            match db::messages_after(&self.pool, self.conversation, self.cursor, missing).await {
                Ok((messages, _)) => {
                    tracing::info!(conversation = %self.conversation, missing, "filled a seq gap from Postgres");
                    for message in messages.iter().filter(|m| m.seq < Some(next)) {
                        self.emit_message(message, None).await;
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "gap fill failed");
                    tokio::time::sleep(GAP_FILL_BACKOFF * attempt).await;
                }
            }
        }
    }

    async fn emit_message(&mut self, message: &Message, except_sid: Option<&str>) {
        let mut target = self.io.to(self.room.clone());
        if let Some(sid) = except_sid {
            target = target.except(sid.to_string());
        }
        if let Err(e) = target.emit("message", message).await {
            tracing::warn!(error = %e, "room emit incomplete; affected clients will sync the gap");
        }
        if let Some(seq) = message.seq {
            self.cursor = self.cursor.max(seq);
        }
        let age = (Utc::now() - message.created_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!(END_TO_END_SECONDS).record(age.as_secs_f64());
    }
}
