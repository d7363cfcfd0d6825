//! Local delivery: one actor per conversation that has a socket joined on this node.
//!
//! The actor subscribes to the conversation's room subject (so the fanout's events reach
//! this node and no other that lacks the room), keeps the room's `cursor` — the last `seq`
//! emitted here — and handles joins and room events one at a time. That single thread of
//! control is what makes delivery exactly-once and in order per socket (§7.4):
//! - an event with `seq <= cursor` was already emitted (a redelivery) and is dropped;
//! - an event with `seq > cursor + 1` reveals a lost hop: the gap is read from Postgres,
//!   page by page, and emitted first; a gap is waited for, never skipped;
//! - a lost *last* event has no later one to reveal it, so shortly after a room goes quiet,
//!   and whenever the NATS connection was lost or overflowed, the room compares its cursor
//!   with Postgres and catches up;
//! - a join answers `lastSeq = cursor` and adds the socket in the same step, so the socket
//!   receives every message after `lastSeq` exactly once;
//! - a socket whose outgoing buffer is full is disconnected, never silently skipped: its
//!   client reconnects and `sync`s.
//!
//! The actor ends (and unsubscribes) when its last local socket leaves or disconnects.
//!
//! - [`actor`]: the actor's loop and its lifetime in the registry;
//! - [`room`]: the room's state (members, cursor) and the delivery rules above;
//! - [`presence`]: `typing`, `user_joined`, `user_left`, which are relayed, never stored;
//! - [`resync`]: the signal that makes every room catch up after a NATS reconnect;
//! - [`streaming`]: the streamed replies in progress and their text so far (§14).

mod actor;
mod presence;
pub mod resync;
mod room;
mod streaming;

pub use room::Joined;

use crate::replies::Replies;
use actor::{Command, Registry};
use coachwire_shared::envelope::RoomEvent;
use coachwire_shared::error::Failure;
use coachwire_shared::ids::ConversationId;
use coachwire_shared::subjects::room_subject;
use socketioxide::SocketIo;
use socketioxide::socket::Sid;
use sqlx::PgPool;
use tokio::sync::{oneshot, watch};

/// The node's room actors, by conversation.
#[derive(Clone)]
pub struct Rooms {
    registry: Registry,
    nats: async_nats::Client,
    pool: PgPool,
    node: String,
    /// Reads what the `REPLIES` stream holds of a reply (its text so far).
    js: async_nats::jetstream::Context,
    replies: Replies,
    /// Bumped when room events may have been lost on the NATS connection; every actor
    /// watches it and catches up from Postgres.
    resync: watch::Sender<u64>,
}

impl Rooms {
    pub fn new(nats: async_nats::Client, pool: PgPool, node: String, replies: Replies) -> Self {
        Self {
            registry: Registry::default(),
            js: async_nats::jetstream::new(nats.clone()),
            nats,
            pool,
            node,
            replies,
            resync: watch::Sender::new(0),
        }
    }

    /// Makes every room compare its cursor with Postgres and emit what it missed.
    pub fn resync_all(&self) {
        self.resync.send_modify(|generation| *generation += 1);
    }

    /// Joins socket `sid` to the conversation's room, starting the actor if needed. An
    /// actor that died (it never should) is replaced rather than failing the room for good.
    pub async fn join(
        &self,
        io: &SocketIo,
        conversation: ConversationId,
        sid: Sid,
    ) -> Result<Joined, Failure> {
        let (reply, answer) = oneshot::channel();
        let mut command = Command::Join { sid, reply };
        for _ in 0..2 {
            let mut registry = actor::lock(&self.registry);
            let sender = registry
                .entry(conversation)
                .or_insert_with(|| self.spawn(io, conversation));
            let sent = sender.send(command);
            actor::record_size(&registry);
            match sent {
                Ok(()) => break,
                Err(tokio::sync::mpsc::error::SendError(returned)) => {
                    tracing::error!(%conversation, "a room actor had died; starting a new one");
                    registry.remove(&conversation);
                    command = returned;
                }
            }
        }
        answer.await.map_err(|_| Failure::unavailable())?
    }

    pub fn leave(&self, conversation: ConversationId, sid: Sid) {
        let registry = actor::lock(&self.registry);
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

    fn spawn(
        &self,
        io: &SocketIo,
        conversation: ConversationId,
    ) -> tokio::sync::mpsc::UnboundedSender<Command> {
        let room = room::Room::new(
            conversation,
            io.clone(),
            self.pool.clone(),
            self.node.clone(),
            self.js.clone(),
            self.replies.clone(),
        );
        actor::spawn(
            room,
            self.nats.clone(),
            self.registry.clone(),
            self.resync.subscribe(),
        )
    }
}
