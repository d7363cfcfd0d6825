//! Ends the replies nobody else will (§14 rule 3), so none stays `streaming`:
//! - on this node, each second: a reply stopped longer than the stop grace ago ends
//!   `cancelled`; one without an append for the idle time ends `interrupted`;
//! - on every node, four times per idle time: a reply Postgres still shows `streaming`,
//!   written by no socket here, whose text this node has seen stay the same for 1.5 idle
//!   times was left by a node that died; it ends `interrupted` with every append the
//!   stream holds. Quiet is measured on this node's monotonic clock, never by comparing
//!   wall clocks: a node whose clock runs minutes ahead would otherwise end every other
//!   node's live replies. Sighted within a quarter idle time of its last append, such a
//!   reply ends within twice the idle time of it (§14 rule 3).

use super::finish::{abandoned, finish};
use super::text;
use crate::app::AppRef;
use crate::settings::ReplySettings;
use coachwire_shared::ids::MessageId;
use coachwire_shared::message::MessageStatus;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often this node's replies are checked for idleness and stop grace.
const REAP_EVERY: Duration = Duration::from_millis(250);

pub async fn run(app: AppRef, shutdown: CancellationToken) {
    let settings = app.reply_settings.clone();
    let mut reap = tokio::time::interval(REAP_EVERY);
    let mut sweep = tokio::time::interval(settings.idle() / SWEEPS_PER_IDLE);
    let mut sightings = Sightings::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reap.tick() => reap_here(&app, &settings).await,
            _ = sweep.tick() => sweep_abandoned(&app, &settings, &mut sightings).await,
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

/// Sweeps per idle time; with [`QUIET_IDLES`] they bound the end at twice the idle time.
const SWEEPS_PER_IDLE: u32 = 4;
/// How long (in idle times) a reply nobody here writes must be seen not to grow.
const QUIET_IDLES: f64 = 1.5;

/// What this node last saw of each reply other nodes write: its length, and since when
/// (this node's monotonic clock) it has stayed that long.
type Sightings = HashMap<MessageId, (u64, Instant)>;

async fn sweep_abandoned(app: &AppRef, settings: &ReplySettings, sightings: &mut Sightings) {
    let quiet_for = settings.idle().mul_f64(QUIET_IDLES);
    let streaming = match crate::queries::streaming_everywhere(&app.pool).await {
        Ok(streaming) => streaming,
        Err(e) => return tracing::warn!(error = %e, "looking for abandoned replies failed"),
    };
    let elsewhere: Vec<_> = streaming
        .into_iter()
        .filter(|m| !app.replies.contains(m.id))
        .collect();
    sightings.retain(|id, _| elsewhere.iter().any(|m| m.id == *id));
    for start in elsewhere {
        let so_far = match text::so_far(app.acceptor.js(), start.conversation_id, start.id).await {
            Ok(so_far) => so_far,
            Err(e) => {
                tracing::warn!(error = %e, "reading an abandoned reply failed");
                continue;
            }
        };
        let (length, since) = sightings
            .entry(start.id)
            .or_insert((so_far.length, Instant::now()));
        if *length != so_far.length {
            (*length, *since) = (so_far.length, Instant::now());
            continue;
        }
        if since.elapsed() < quiet_for {
            continue;
        }
        tracing::info!(reply = %start.id, "ending a reply its node left streaming");
        match abandoned(app, start, so_far).await {
            Ok(ended) => drop(sightings.remove(&ended.id)),
            Err(failure) => {
                tracing::warn!(error = %failure.error, "ending an abandoned reply failed; retrying")
            }
        }
    }
}
