//! Presence and typing, relayed to the Socket.IO room and never stored: a lost one costs
//! nothing, so they are broadcast to the room (excluding their origin socket) as is.

use coachwire_shared::envelope::{Presence, RoomEvent};
use coachwire_shared::replies::{Membership, TypingNotice};
use serde::Serialize;
use socketioxide::SocketIo;

/// Emits a presence event to the local room `room`, except its origin socket.
pub(super) async fn emit(io: &SocketIo, room: &str, node: &str, event: RoomEvent) {
    match event {
        RoomEvent::Typing {
            presence,
            is_typing,
        } => {
            let body = TypingNotice {
                conversation_id: presence.conversation_id,
                user_id: presence.user_id,
                is_typing,
            };
            broadcast(io, room, node, "typing", &presence, &body).await;
        }
        RoomEvent::UserJoined(presence) => {
            let body = membership(&presence);
            broadcast(io, room, node, "user_joined", &presence, &body).await;
        }
        RoomEvent::UserLeft(presence) | RoomEvent::Departed(presence) => {
            let body = membership(&presence);
            broadcast(io, room, node, "user_left", &presence, &body).await;
        }
        RoomEvent::Messages(_) | RoomEvent::ReplyStop(_) => {}
    }
}

fn membership(presence: &Presence) -> Membership {
    Membership {
        conversation_id: presence.conversation_id,
        user_id: presence.user_id,
    }
}

async fn broadcast<T: Serialize>(
    io: &SocketIo,
    room: &str,
    node: &str,
    event: &str,
    presence: &Presence,
    body: &T,
) {
    let mut target = io.to(room.to_string());
    if presence.origin.node == node {
        target = target.except(presence.origin.sid.clone());
    }
    if let Err(e) = target.emit(event, body).await {
        tracing::debug!(error = %e, event, "presence emit incomplete");
    }
}
