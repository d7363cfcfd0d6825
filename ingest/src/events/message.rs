//! `message`: validate → authorize → rate-limit → make durable → ack.

use super::origin;
use crate::accept::{Draft, record_outcome};
use crate::app::{App, AppRef};
use crate::auth::{Principal, Role};
use crate::socket::extract::{JoinedRooms, Payload, Reply};
use crate::socket::order::Ticket;
use coachwire_shared::error::Failure;
use coachwire_shared::message::MessageType;
use coachwire_shared::metrics::ACK_SECONDS;
use coachwire_shared::replies::MessageAck;
use socketioxide::extract::{Extension, SocketRef, State};
use std::time::Instant;
use tracing::{Instrument, field::Empty};

pub async fn handle(
    s: SocketRef,
    State(app): State<AppRef>,
    Extension(principal): Extension<Principal>,
    Extension(joined): Extension<JoinedRooms>,
    turn: Ticket,
    payload: Payload,
    reply: Reply,
) {
    let received = Instant::now();
    let span = tracing::debug_span!(
        "message",
        otel.kind = "server",
        coachwire.conversation_id = Empty,
        coachwire.message_id = Empty,
        coachwire.outcome = Empty,
        coachwire.error_code = Empty,
        otel.status_code = Empty,
    );
    let outcome = async {
        let Some(_inflight) = app.drain.admit() else {
            return Err(Failure::new(
                coachwire_shared::error::ErrorCode::Unavailable,
                "this server is shutting down; retry with the same clientMessageId",
            ));
        };
        send(&s, &app, principal, &joined, turn, payload).await
    }
    .instrument(span.clone())
    .await;
    record_outcome(&span, &outcome);
    reply.send(outcome);
    metrics::histogram!(ACK_SECONDS).record(received.elapsed().as_secs_f64());
}

async fn send(
    s: &SocketRef,
    app: &AppRef,
    principal: Principal,
    joined: &JoinedRooms,
    turn: Ticket,
    payload: Payload,
) -> Result<MessageAck, Failure> {
    principal.ensure_live()?;
    let request = app
        .validators
        .message
        .parse(&payload.json()?)
        .map_err(Failure::validation)?;
    let draft = Draft::try_from(request)?;
    tracing::Span::current().record(
        "coachwire.conversation_id",
        tracing::field::display(draft.conversation),
    );
    authorize(principal, &draft)?;
    limit(app, principal)?;
    if !joined.contains(draft.conversation) {
        return Err(Failure::forbidden());
    }
    app.acceptor
        .accept(principal.user, draft, Some(origin(app, s)), Some(turn))
        .await
}

/// People are message-limited per user (all their sockets on this node together); the AI
/// coach answers everyone and is not.
pub fn limit(app: &App, principal: Principal) -> Result<(), Failure> {
    match principal.role {
        Role::Ai => Ok(()),
        Role::User => app.limits.message(principal.user),
    }
}

/// Only the AI coach writes `type: "ai"`.
pub fn authorize(principal: Principal, draft: &Draft) -> Result<(), Failure> {
    if draft.kind == MessageType::Ai && principal.role != Role::Ai {
        return Err(Failure::new(
            coachwire_shared::error::ErrorCode::Forbidden,
            "only the AI coach may send type \"ai\"",
        ));
    }
    Ok(())
}
