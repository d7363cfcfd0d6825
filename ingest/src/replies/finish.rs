//! The one way a reply ends (§14 rule 3): its final version goes through the durable path
//! as a later version of the message, then its appends are purged from the stream. The
//! version's event id is derived from the message id, so two processes ending the same
//! reply (its author and a node sweeping it up) store one end.

use super::registry::{Reply, Writing};
use super::text::SoFar;
use crate::app::App;
use coachwire_shared::db;
use coachwire_shared::error::Failure;
use coachwire_shared::message::{Message, MessageStatus};
use coachwire_shared::metrics::REPLIES_TOTAL;
use coachwire_shared::subjects::{REPLIES_STREAM, reply_subject};
use std::time::Duration;

/// How long an answer waits for Postgres to say where a reply stands (the end: its
/// creation `seq`, for the ack; past it the ack carries `seq: null`, as a start's may).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);

/// Ends `reply`, which this node writes, with `status`; the caller holds its lock.
pub async fn finish(
    app: &App,
    reply: &mut Reply,
    status: MessageStatus,
) -> Result<Message, Failure> {
    let version = Message {
        content: reply.text.clone(),
        status,
        ..reply.message.clone()
    };
    let version = end(app, version).await?;
    reply.writing = Writing::Ended;
    app.replies.remove(version.id);
    Ok(version)
}

/// Ends a reply nobody writes any more (its node died) as `interrupted`, with the text
/// the stream holds.
pub async fn abandoned(app: &App, start: Message, so_far: SoFar) -> Result<Message, Failure> {
    let version = Message {
        content: so_far.text,
        status: MessageStatus::Interrupted,
        ..start
    };
    end(app, version).await
}

async fn end(app: &App, mut version: Message) -> Result<Message, Failure> {
    app.acceptor.publish_version(&version).await?;
    metrics::counter!(REPLIES_TOTAL, "status" => version.status.as_str()).increment(1);
    if let Ok(Ok(Some(stored))) =
        tokio::time::timeout(LOOKUP_TIMEOUT, db::message_by_id(&app.pool, version.id)).await
    {
        version.seq = stored.seq;
    }
    purge(app, &version);
    Ok(version)
}

/// The appends are in the final version now; a purge that fails leaves them to the
/// stream's age limit.
fn purge(app: &App, version: &Message) {
    let js = app.acceptor.js().clone();
    let subject = reply_subject(version.conversation_id, version.id);
    tokio::spawn(async move {
        let purged = match js.get_stream_no_info(REPLIES_STREAM).await {
            Ok(stream) => stream
                .purge()
                .filter(subject)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = purged {
            tracing::debug!(error = %e, "purging a reply's appends failed");
        }
    });
}
