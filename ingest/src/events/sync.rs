//! `sync`: persisted messages after a seq, for reconnecting clients (§7.4).

use super::db_unavailable;
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

/// A page goes out as one ack packet. Past this many bytes of JSON it ends early with
/// `hasMore` (`limit` is a maximum), so that every packet in a socket's outgoing queue is
/// small and the queue is bounded in bytes, not only in packets (startup.rs,
/// `SOCKET_BUFFER_PACKETS`): 500 messages of 10,000 emoji would be a 20 MB packet.
pub const MAX_PAGE_BYTES: usize = 256 * 1024;

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
        let conversation = request.conversation_id;
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
    let mut bytes = 0;
    for (i, event) in events.into_iter().enumerate() {
        bytes += encoded_len(&event);
        if i > 0 && bytes > MAX_PAGE_BYTES {
            page.has_more = true;
            break;
        }
        match event {
            StoredEvent::Created(message) => page.messages.push(message),
            StoredEvent::Updated(update) => page.updates.push(update),
        }
    }
    Ok(page)
}

/// The event's size as JSON, counted without building the string.
fn encoded_len(event: &StoredEvent) -> usize {
    let mut counter = ByteCounter(0);
    let written = match event {
        StoredEvent::Created(message) => serde_json::to_writer(&mut counter, message),
        StoredEvent::Updated(update) => serde_json::to_writer(&mut counter, update),
    };
    // Serializing a stored message cannot fail; if it did, it would not be sent either.
    written.map_or(0, |()| counter.0)
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
