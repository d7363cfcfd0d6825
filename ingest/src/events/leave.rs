//! `leave_conversation`: idempotent; others hear `user_left` only if the socket was in.

use super::origin;
use crate::app::AppRef;
use crate::auth::Principal;
use crate::socket::extract::{JoinedRooms, Payload, Reply};
use coachwire_shared::envelope::{Presence, RoomEvent};
use coachwire_shared::error::Failure;
use coachwire_shared::replies::LeaveAck;
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
            .conversation
            .parse(&payload.json()?)
            .map_err(Failure::validation)?;
        let conversation = request.conversation_id;
        app.limits.control(principal, s.id)?;
        if joined.remove(conversation) {
            app.rooms.leave(conversation, s.id);
            if app.limits.presence(principal.user, conversation) {
                let presence = Presence {
                    conversation_id: conversation,
                    user_id: principal.user,
                    origin: origin(&app, &s),
                };
                app.rooms
                    .publish(conversation, &RoomEvent::UserLeft(presence))
                    .await;
            }
        }
        Ok(LeaveAck {
            success: true,
            conversation_id: conversation,
        })
    }
    .await;
    reply.send(outcome);
}
