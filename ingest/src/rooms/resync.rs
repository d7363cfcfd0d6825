//! Makes every room catch up from Postgres after the NATS connection was re-established:
//! core-NATS room events published while this node was disconnected are gone, and a room
//! whose lost event was its last would otherwise never notice (§7.4).
//!
//! The client counts its (re)connections; watching that counter catches every reconnect,
//! even one that completes between two looks.

use super::Rooms;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the connection counter is read: a reconnect is acted on within this.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Runs until `shutdown`.
pub async fn on_reconnect(nats: async_nats::Client, rooms: Rooms, shutdown: CancellationToken) {
    let statistics = nats.statistics();
    let mut seen = statistics.connects.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let connects = statistics.connects.load(Ordering::Relaxed);
        if connects != seen {
            seen = connects;
            tracing::info!(connects, "NATS reconnected; rooms catch up from Postgres");
            rooms.resync_all();
        }
    }
}
