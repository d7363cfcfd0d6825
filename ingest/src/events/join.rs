//! `join_conversation`: participation check, the socket's room limit (§6), then the node's
//! room for this conversation.

use super::{db_unavailable, origin};
use crate::app::{App, AppRef};
use crate::auth::{Principal, Role};
use crate::socket::extract::{Admission, JoinedRooms, Payload, Reply};
use coachwire_shared::db;
use coachwire_shared::envelope::{Presence, RoomEvent};
use coachwire_shared::error::{ErrorCode, Failure};
use coachwire_shared::replies::JoinAck;
use socketioxide::SocketIo;
use socketioxide::extract::{Extension, SocketRef, State};

pub async fn handle(
    s: SocketRef,
    io: SocketIo,
    State(app): State<AppRef>,
    Extension(principal): Extension<Principal>,
    Extension(joined): Extension<JoinedRooms>,
    payload: Payload,
    reply: Reply,
) {
    let outcome = async {
        principal.ensure_live()?;
        let request = app
            .validators
            .conversation
            .parse(&payload.json()?)
            .map_err(Failure::validation)?;
        let conversation = request.conversation_id;
        app.limits.control(principal, s.id)?;
        let allowed = db::is_participant(&app.pool, conversation, principal.user)
            .await
            .map_err(db_unavailable)?;
        if !allowed {
            return Err(Failure::forbidden());
        }
        let admission = joined.admit(conversation, rooms_limit(&app, principal));
        if admission == Admission::Full {
            return Err(Failure::new(
                ErrorCode::RateLimited,
                "this socket has joined as many conversations as it may; leave one first",
            ));
        }
        let room = app.rooms.join(&io, conversation, s.id).await;
        if admission == Admission::Added && room.is_err() {
            joined.remove(conversation);
        }
        let room = room?;
        if room.newly && app.limits.presence(principal.user, conversation) {
            let presence = Presence {
                conversation_id: conversation,
                user_id: principal.user,
                origin: origin(&app, &s),
            };
            app.rooms
                .publish(conversation, &RoomEvent::UserJoined(presence))
                .await;
        }
        Ok(JoinAck {
            success: true,
            conversation_id: conversation,
            last_seq: room.last_seq,
            streaming: room.streaming,
        })
    }
    .await;
    reply.send(outcome);
}

/// The AI coach takes part in every conversation, so only people's sockets are capped.
fn rooms_limit(app: &App, principal: Principal) -> Option<usize> {
    match principal.role {
        Role::Ai => None,
        Role::User => app.limits.rooms_per_socket,
    }
}
