//! `typing`: relayed to the others in the room, never stored; the excess is dropped.

use super::origin;
use crate::app::AppRef;
use crate::auth::Principal;
use crate::socket::extract::{JoinedRooms, Payload, Reply};
use coachwire_shared::envelope::{Presence, RoomEvent};
use coachwire_shared::error::Failure;
use coachwire_shared::replies::TypingAck;
use socketioxide::extract::{Extension, SocketRef, State};

pub async fn handle(
    s: SocketRef,
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
            .typing
            .parse(&payload.json()?)
            .map_err(Failure::validation)?;
        let conversation = request.conversation_id;
        if !joined.contains(conversation) {
            return Err(Failure::forbidden());
        }
        if app.limits.typing(principal.user) {
            let presence = Presence {
                conversation_id: conversation,
                user_id: principal.user,
                origin: origin(&app, &s),
            };
            let event = RoomEvent::Typing {
                presence,
                is_typing: request.is_typing,
            };
            app.rooms.publish(conversation, &event).await;
        }
        Ok(TypingAck { success: true })
    }
    .await;
    reply.send(outcome);
}
