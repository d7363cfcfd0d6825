//! `reply_start`, `reply_append`, `reply_end`, `reply_stop` (§14): the AI coach's streamed
//! reply. The start and the end take the durable path of messages; appends are stored in
//! the `REPLIES` stream before their ack and reach the rooms from there
//! (`crate::replies`).

use super::origin;
use crate::accept::{Draft, count_outcome};
use crate::app::{App, AppRef};
use crate::auth::{Principal, Role};
use crate::replies::finish::{LOOKUP_TIMEOUT, finish};
use crate::replies::{Reply, Writing};
use crate::socket::extract::{JoinedRooms, Payload, Reply as Answer};
use crate::socket::order::Ticket;
use async_nats::jetstream::message::PublishMessage;
use coachwire_shared::db;
use coachwire_shared::envelope::{ReplyAppended, RoomEvent};
use coachwire_shared::error::{Detail, ErrorCode, Failure};
use coachwire_shared::ids::{ConversationId, MessageId};
use coachwire_shared::message::{EndStatus, MAX_CONTENT_CHARS, MessageStatus};
use coachwire_shared::metrics::REPLY_APPENDS_TOTAL;
use coachwire_shared::replies::{
    AppendAck, EndAck, MessageAck, ReplyDelta, ReplyStopNotice, TypingAck,
};
use coachwire_shared::subjects::reply_subject;
use socketioxide::extract::{Extension, SocketRef, State};
use tokio::sync::OwnedMutexGuard;

pub async fn start(
    s: SocketRef,
    State(app): State<AppRef>,
    Extension(principal): Extension<Principal>,
    Extension(joined): Extension<JoinedRooms>,
    turn: Ticket,
    payload: Payload,
    answer: Answer,
) {
    let outcome = async {
        principal.ensure_live()?;
        let request = app
            .validators
            .reply_start
            .parse(&payload.json()?)
            .map_err(Failure::validation)?;
        let draft = Draft::try_from(request)?;
        if principal.role != Role::Ai {
            return Err(Failure::new(
                ErrorCode::Forbidden,
                "only the AI coach streams replies",
            ));
        }
        if !joined.contains(draft.conversation) {
            return Err(Failure::forbidden());
        }
        let ack = app
            .acceptor
            .accept(principal.user, draft, Some(origin(&app, &s)), Some(turn))
            .await?;
        let ack = if ack.duplicate {
            as_it_stands(&app, ack).await
        } else {
            ack
        };
        if ack.message.status == MessageStatus::Streaming {
            app.replies.insert(Reply::new(ack.message.clone(), s.id));
        }
        Ok::<MessageAck, Failure>(ack)
    }
    .await;
    count_outcome(&outcome);
    answer.send(outcome);
}

/// A retried start answers the reply as it stands: while it is written here, as started
/// (it stays registered); otherwise as stored, which after its end is the final version,
/// and an ended reply is not registered again, so it takes no more appends. The stream's
/// copy of the start, which the duplicate ack carries, says `streaming` forever.
///
/// Left open: a retry on another node in the milliseconds between an end's PubAck and its
/// row, or while Postgres does not answer, reads `streaming` and registers the reply; its
/// appends are then acked, and its end is the end already stored (one per message).
async fn as_it_stands(app: &App, mut ack: MessageAck) -> MessageAck {
    if app.replies.get(ack.message.id).is_some() {
        return ack;
    }
    let lookup = db::message_by_id(&app.pool, ack.message.id);
    if let Ok(Ok(Some(stored))) = tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
        ack.message = stored;
    }
    ack
}

pub async fn append(
    s: SocketRef,
    State(app): State<AppRef>,
    Extension(principal): Extension<Principal>,
    payload: Payload,
    answer: Answer,
) {
    let outcome = async {
        principal.ensure_live()?;
        let request = app
            .validators
            .reply_append
            .parse(&payload.json()?)
            .map_err(Failure::validation)?;
        let mut reply = written_here(&app, &s, request.conversation_id, request.id).await?;
        ensure_not_idle(&app, &reply)?;
        app.limits.append(reply.message.id)?;
        let text = appended_text(&reply, request.offset, &request.text)?;
        if !text.is_empty() {
            publish_append(&app, &s, &reply, &text).await?;
            reply.length += text.chars().count() as u64;
            reply.text.push_str(&text);
            reply.last_append = tokio::time::Instant::now();
            metrics::counter!(REPLY_APPENDS_TOTAL).increment(1);
        }
        Ok(AppendAck {
            success: true,
            length: reply.length,
        })
    }
    .await;
    answer.send(outcome);
}

/// What `offset`/`text` add to `reply`: nothing for a retry wholly inside the text so far,
/// the new tail for one that overlaps its end; a gap or an overlong text is refused.
fn appended_text(reply: &Reply, offset: u64, text: &str) -> Result<String, Failure> {
    if reply.writing == Writing::Ended {
        return Err(ended());
    }
    if offset > reply.length {
        return Err(Failure::validation(vec![Detail::new(
            "/offset",
            format!(
                "starts past the end: the text so far is {} long; resend from there",
                reply.length
            ),
        )]));
    }
    let overlap = usize::try_from(reply.length - offset).unwrap_or(usize::MAX);
    let new: String = text.chars().skip(overlap).collect();
    let total = reply.length + new.chars().count() as u64;
    if total > MAX_CONTENT_CHARS as u64 {
        return Err(Failure::validation(vec![Detail::new(
            "/text",
            format!("the reply would be longer than {MAX_CONTENT_CHARS} characters"),
        )]));
    }
    Ok(new)
}

/// Stores the append in the `REPLIES` stream (the rooms hear it there) and waits for the
/// PubAck: an acked append is in the final text whatever crashes (§14 rule 4).
async fn publish_append(
    app: &App,
    s: &SocketRef,
    reply: &Reply,
    text: &str,
) -> Result<(), Failure> {
    let appended = ReplyAppended {
        delta: ReplyDelta {
            conversation_id: reply.conversation(),
            id: reply.message.id,
            offset: reply.length,
            text: text.to_string(),
        },
        origin: origin(app, s),
    };
    let payload = serde_json::to_vec(&appended).map_err(|_| Failure::internal())?;
    let message = PublishMessage::build()
        .payload(payload.into())
        .message_id(format!("{}:{}", reply.message.id, reply.length));
    let subject = reply_subject(reply.conversation(), reply.message.id);
    let pending = app
        .acceptor
        .js()
        .send_publish(subject, message)
        .await
        .map_err(|_| Failure::unavailable())?;
    pending.await.map_err(|_| Failure::unavailable())?;
    Ok(())
}

pub async fn end(
    s: SocketRef,
    State(app): State<AppRef>,
    Extension(principal): Extension<Principal>,
    payload: Payload,
    answer: Answer,
) {
    let outcome = async {
        principal.ensure_live()?;
        let request = app
            .validators
            .reply_end
            .parse(&payload.json()?)
            .map_err(Failure::validation)?;
        let mut reply = written_here(&app, &s, request.conversation_id, request.id).await?;
        if reply.writing == Writing::Ended {
            return Err(ended());
        }
        ensure_not_idle(&app, &reply)?;
        let status = match (reply.stopped_at, request.status) {
            (Some(_), _) => MessageStatus::Cancelled,
            (None, EndStatus::Complete) => MessageStatus::Complete,
            (None, EndStatus::Failed) => MessageStatus::Failed,
        };
        if status == MessageStatus::Complete && reply.length == 0 {
            return Err(Failure::validation(vec![Detail::new(
                "/status",
                "a reply without text cannot be complete",
            )]));
        }
        let message = finish(&app, &mut reply, status).await?;
        Ok(EndAck {
            success: true,
            message,
        })
    }
    .await;
    answer.send(outcome);
}

pub async fn stop(
    s: SocketRef,
    State(app): State<AppRef>,
    Extension(principal): Extension<Principal>,
    Extension(joined): Extension<JoinedRooms>,
    payload: Payload,
    answer: Answer,
) {
    let outcome = async {
        principal.ensure_live()?;
        let request = app
            .validators
            .reply_stop
            .parse(&payload.json()?)
            .map_err(Failure::validation)?;
        let (conversation, id) = (request.conversation_id, request.id);
        if !joined.contains(conversation) {
            return Err(Failure::forbidden());
        }
        app.limits.control(principal, s.id)?;
        let notice = ReplyStopNotice {
            conversation_id: conversation,
            id,
            user_id: principal.user,
        };
        // The node writing the reply hears it in its room and tells the author; a reply
        // no longer streaming is nobody's, and nothing happens (§14).
        app.rooms
            .publish(conversation, &RoomEvent::ReplyStop(notice))
            .await;
        Ok(TypingAck { success: true })
    }
    .await;
    answer.send(outcome);
}

/// The reply `id` of `conversation` that socket `s` writes, locked: its appends and its
/// end happen one at a time. Any other reply is `FORBIDDEN`.
async fn written_here(
    app: &App,
    s: &SocketRef,
    conversation: ConversationId,
    id: MessageId,
) -> Result<OwnedMutexGuard<Reply>, Failure> {
    let held = app.replies.written_by(id, s.id).ok_or_else(not_yours)?;
    let reply = held.lock_owned().await;
    if reply.conversation() != conversation {
        return Err(not_yours());
    }
    Ok(reply)
}

/// A reply quiet for the idle time has ended `interrupted` (§14 rule 3), whether or not
/// the reaper got to it yet: after this node was paused, another node may already have
/// stored that end, and an append acked now would be missing from it.
fn ensure_not_idle(app: &App, reply: &Reply) -> Result<(), Failure> {
    if reply.last_append.elapsed() >= app.reply_settings.idle() {
        return Err(ended());
    }
    Ok(())
}

fn not_yours() -> Failure {
    Failure::new(ErrorCode::Forbidden, "not a reply this socket is writing")
}

fn ended() -> Failure {
    Failure::validation(vec![Detail::new("/id", "the reply has ended")])
}
