//! Ends the replies nobody else will (§14 rule 3), so none stays `streaming`:
//! - on this node, each second: a reply stopped longer than the stop grace ago ends
//!   `cancelled`; one without an append for the idle time ends `interrupted`;
//! - on every node, once per idle time: a reply Postgres still shows `streaming` whose last
//!   append (or start) is more than twice the idle time old was left by a node that died;
//!   it ends `interrupted` with every append the stream holds.

use super::finish::{abandoned, finish};
use super::text;
use crate::app::AppRef;
use crate::settings::ReplySettings;
use coachwire_shared::message::MessageStatus;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often this node's replies are checked for idleness and stop grace.
const REAP_EVERY: Duration = Duration::from_millis(250);

pub async fn run(app: AppRef, shutdown: CancellationToken) {
    let settings = app.reply_settings.clone();
    let mut reap = tokio::time::interval(REAP_EVERY);
    let mut sweep = tokio::time::interval(settings.idle());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reap.tick() => reap_here(&app, &settings).await,
            _ = sweep.tick() => sweep_abandoned(&app, &settings).await,
        }
    }
}

async fn reap_here(app: &AppRef, settings: &ReplySettings) {
    for (_, held) in app.replies.all() {
        let mut reply = held.lock().await;
        if reply.writing == super::Writing::Ended {
            continue;
        }
        let status = if reply
            .stopped_at
            .is_some_and(|at| at.elapsed() >= settings.stop_grace())
        {
            MessageStatus::Cancelled
        } else if reply.last_append.elapsed() >= settings.idle() {
            MessageStatus::Interrupted
        } else {
            continue;
        };
        if let Err(failure) = finish(app, &mut reply, status).await {
            tracing::warn!(error = %failure.error, "ending an idle or stopped reply failed; retrying");
        }
    }
}

async fn sweep_abandoned(app: &AppRef, settings: &ReplySettings) {
    let stale_after = settings.idle() * 2;
    let stale = match crate::db::streaming_since(&app.pool, stale_after).await {
        Ok(stale) => stale,
        Err(e) => return tracing::warn!(error = %e, "looking for abandoned replies failed"),
    };
    for start in stale.into_iter().filter(|m| !app.replies.contains(m.id)) {
        let so_far = match text::so_far(app.acceptor.js(), start.conversation_id, start.id).await {
            Ok(so_far) => so_far,
            Err(e) => {
                tracing::warn!(error = %e, "reading an abandoned reply failed");
                continue;
            }
        };
        let quiet_since = so_far
            .last_append
            .and_then(|at| chrono::DateTime::from_timestamp(at.unix_timestamp(), 0))
            .unwrap_or(start.created_at);
        let abandoned_for = (chrono::Utc::now() - quiet_since)
            .to_std()
            .unwrap_or_default();
        if abandoned_for < stale_after {
            continue;
        }
        tracing::info!(reply = %start.id, "ending a reply its node left streaming");
        if let Err(failure) = abandoned(app, start, so_far).await {
            tracing::warn!(error = %failure.error, "ending an abandoned reply failed; retrying");
        }
    }
}
