//! The room actor's loop: one task per conversation joined on this node, handling joins,
//! leaves, room events and catch-up checks one at a time, and leaving the registry when
//! its last socket is gone.

use super::room::{CatchUp, Joined, Room, SETTLED_AFTER};
use coachwire_shared::error::Failure;
use coachwire_shared::ids::ConversationId;
use coachwire_shared::metrics::JOINED_ROOMS;
use coachwire_shared::subjects::{replies_of, room_subject};
use futures::StreamExt;
use socketioxide::socket::Sid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};

/// Quiet time after an event before the room checks Postgres for a lost tail: long enough
/// that a burst costs one query, short enough that a lost last message shows within seconds.
const TAIL_CHECK_AFTER: Duration = Duration::from_millis(1500);
/// Pause before checking again when a catch-up failed (Postgres down).
const TAIL_RETRY_AFTER: Duration = Duration::from_secs(2);
/// How often members whose socket vanished without a leave are dropped (a join that raced
/// its socket's disconnect), so an abandoned room ends and unsubscribes.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

pub(super) enum Command {
    Join {
        sid: Sid,
        reply: oneshot::Sender<Result<Joined, Failure>>,
    },
    Leave {
        sid: Sid,
    },
}

pub(super) type Registry = Arc<Mutex<HashMap<ConversationId, mpsc::UnboundedSender<Command>>>>;

/// Publishes how many rooms have an actor on this node (`coachwire_joined_rooms`); called
/// under the registry lock after every change, so the gauge is never stale.
pub(super) fn record_size(registry: &HashMap<ConversationId, mpsc::UnboundedSender<Command>>) {
    metrics::gauge!(JOINED_ROOMS).set(registry.len() as f64);
}

/// Locks the registry, ignoring poisoning: it holds only senders, valid whatever panicked.
pub(super) fn lock(
    registry: &Registry,
) -> MutexGuard<'_, HashMap<ConversationId, mpsc::UnboundedSender<Command>>> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the actor of `room`; the returned sender is what the registry keeps.
pub(super) fn spawn(
    room: Room,
    nats: async_nats::Client,
    registry: Registry,
    resync: watch::Receiver<u64>,
) -> mpsc::UnboundedSender<Command> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(room, nats, rx, registry, resync));
    tx
}

async fn run(
    mut room: Room,
    nats: async_nats::Client,
    mut commands: mpsc::UnboundedReceiver<Command>,
    registry: Registry,
    mut resync: watch::Receiver<u64>,
) {
    // The rare awaits that query are boxed: the actor's future, which every joined room
    // holds while idle, is as large as its largest await.
    let mut events = match Box::pin(start(&mut room, &nats)).await {
        Ok(subscriber) => subscriber,
        Err(failure) => return fail_pending(room.conversation(), commands, &registry, failure),
    };
    resync.mark_unchanged();
    let mut tail_check: Option<Instant> = None;
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Join { sid, reply }) => { let _ = reply.send(room.join(sid)); }
                Some(Command::Leave { sid }) => room.leave(sid),
                None => return,
            },
            event = events.next() => match event {
                Some(event) => {
                    room.on_event(event.subject.as_str(), &event.payload).await;
                    tail_check = Some(Instant::now() + TAIL_CHECK_AFTER);
                }
                None => return retire_now(&mut room, &registry),
            },
            () = sleep_until(tail_check.unwrap_or_else(Instant::now)), if tail_check.is_some() => {
                tail_check = match Box::pin(room.catch_up()).await {
                    Ok(CatchUp::Done) => None,
                    Ok(CatchUp::Again) => Some(Instant::now() + SETTLED_AFTER),
                    Err(e) => {
                        tracing::warn!(error = %e, "room catch-up failed; retrying");
                        Some(Instant::now() + TAIL_RETRY_AFTER)
                    }
                };
            }
            Ok(()) = resync.changed() => tail_check = Some(Instant::now()),
            _ = prune.tick() => room.prune(),
        }
        if room.is_empty() && retire(room.conversation(), &registry, &commands) {
            return;
        }
    }
}

/// The room subject's events and the conversation's reply appends, as one stream.
type Subscriptions = futures::stream::Select<async_nats::Subscriber, async_nats::Subscriber>;

/// Subscribes first and reads `lastSeq` and the replies in progress second: anything
/// persisted or appended after the read arrives on the subscriptions, anything before it
/// is at or below the cursor, or in the text read.
async fn start(room: &mut Room, nats: &async_nats::Client) -> Result<Subscriptions, Failure> {
    let events = nats
        .subscribe(room_subject(room.conversation()))
        .await
        .map_err(|_| Failure::unavailable())?;
    let appends = nats
        .subscribe(replies_of(room.conversation()))
        .await
        .map_err(|_| Failure::unavailable())?;
    nats.flush().await.map_err(|_| Failure::unavailable())?;
    room.load().await.map_err(|_| Failure::unavailable())?;
    Ok(futures::stream::select(events, appends))
}

fn fail_pending(
    conversation: ConversationId,
    mut commands: mpsc::UnboundedReceiver<Command>,
    registry: &Registry,
    failure: Failure,
) {
    let mut registry = lock(registry);
    registry.remove(&conversation);
    record_size(&registry);
    while let Ok(command) = commands.try_recv() {
        if let Command::Join { reply, .. } = command {
            let _ = reply.send(Err(failure.clone()));
        }
    }
}

/// Ends the actor unless a join slipped in; decided under the registry lock, which
/// joins also take to send, so no command is lost.
fn retire(
    conversation: ConversationId,
    registry: &Registry,
    commands: &mpsc::UnboundedReceiver<Command>,
) -> bool {
    let mut registry = lock(registry);
    if !commands.is_empty() {
        return false;
    }
    registry.remove(&conversation);
    record_size(&registry);
    true
}

/// The subscription ended (the NATS client is closing): disconnect the members, whose
/// clients reconnect and sync, rather than leave them joined to a room that hears nothing.
fn retire_now(room: &mut Room, registry: &Registry) {
    let mut registry = lock(registry);
    registry.remove(&room.conversation());
    record_size(&registry);
    drop(registry);
    room.disconnect_all();
}
