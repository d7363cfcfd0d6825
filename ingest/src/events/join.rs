//! `join_conversation`: participation check, then the node's room for this conversation.

use super::{conversation_id, db_unavailable, origin};
use crate::app::AppRef;
use crate::auth::Principal;
use crate::socket::extract::{JoinedRooms, Payload, Reply};
use coachwire_shared::db;
use coachwire_shared::envelope::{Presence, RoomEvent};
use coachwire_shared::error::Failure;
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
        let conversation = conversation_id(&request.conversation_id)?;
        let allowed = db::is_participant(&app.pool, conversation, principal.user)
            .await
            .map_err(db_unavailable)?;
        if !allowed {
            return Err(Failure::forbidden());
        }
        let room = app.rooms.join(&io, conversation, s.id).await?;
        joined.insert(conversation);
        if room.newly {
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
        })
    }
    .await;
    reply.send(outcome);
}
