//! `sync`: persisted messages after a seq, for reconnecting clients (§7.4).

use super::{conversation_id, db_unavailable};
use crate::app::AppRef;
use crate::auth::Principal;
use crate::socket::extract::{Payload, Reply};
use coachwire_shared::db::{self, StoredEvent};
use coachwire_shared::error::Failure;
use coachwire_shared::ids::{ConversationId, Seq, UserId};
use coachwire_shared::message::DEFAULT_SYNC_LIMIT;
use coachwire_shared::replies::MessagePage;
use socketioxide::extract::{Extension, SocketRef, State};
use sqlx::PgPool;

pub async fn handle(
    s: SocketRef,
    State(app): State<AppRef>,
    Extension(principal): Extension<Principal>,
    payload: Payload,
    reply: Reply,
) {
    let outcome = async {
        principal.ensure_live()?;
        let request = app
            .validators
            .sync
            .parse(&payload.json()?)
            .map_err(Failure::validation)?;
        let conversation = conversation_id(&request.conversation_id)?;
        app.limits.control(principal, s.id)?;
        let limit = request.limit.unwrap_or(DEFAULT_SYNC_LIMIT);
        let mut page = history(
            &app.pool,
            principal.user,
            conversation,
            Seq(request.after_seq),
            limit,
        )
        .await?;
        page.success = Some(true);
        Ok(page)
    }
    .await;
    reply.send(outcome);
}

/// Participation check, then one page; shared with `GET …/messages`.
pub async fn history(
    pool: &PgPool,
    user: UserId,
    conversation: ConversationId,
    after: Seq,
    limit: i64,
) -> Result<MessagePage, Failure> {
    if !db::is_participant(pool, conversation, user)
        .await
        .map_err(db_unavailable)?
    {
        return Err(Failure::forbidden());
    }
    let (events, has_more) = db::events_after(pool, conversation, after, limit)
        .await
        .map_err(db_unavailable)?;
    let mut page = MessagePage {
        success: None,
        messages: Vec::new(),
        updates: Vec::new(),
        has_more,
    };
    for event in events {
        match event {
            StoredEvent::Created(message) => page.messages.push(message),
            StoredEvent::Updated(update) => page.updates.push(update),
        }
    }
    Ok(page)
}
