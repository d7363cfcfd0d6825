//! One partition's loop: a puller that never stops pulling, and a loop that hands what it
//! pulled to the process's [`Writer`] one batch at a time.
//!
//! Why two tasks: the partition is pinned to this persister only while it keeps pulling
//! (`pinned_ttl`). A writer stuck on a Postgres outage holds its batch (kept alive by
//! `Progress` acks); if pulling stopped meanwhile, the pin would lapse and another
//! persister would store the next messages before this one stores the batch it holds,
//! breaking stream order. So the puller runs on its own, forwarding deliveries into a
//! channel that is larger than the consumer's `max_ack_pending` (it never blocks), and the
//! pin stays as long as this process is alive and connected.
//!
//! A batch that follows a gap in the consumer's deliveries (at start, after another
//! persister held the partition, after a broken connection) waits until every message
//! outstanding on the partition has come here, and every batch is written in stream order
//! (see [`Held`]). A renewed connection counts as a gap even when the delivery counter
//! seems to run on (see [`Seen`]).
//!
//! At shutdown the partition is handed back at once rather than after timeouts: what was
//! pulled but not processed is NAKed (else it would wait `ack_wait`), and the pin is
//! released (else the next persister would wait `pinned_ttl`).

use crate::settings::ConsumerTuning;
use crate::writer::Writer;
use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::{AckKind, Message};
use coachwire_shared::subjects::{MESSAGES_STREAM, PERSISTER_GROUP};
use futures::{FutureExt, StreamExt};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long one pull request waits on the server; renewed continuously, well inside
/// `pinned_ttl`, so a live persister never loses its pin.
pub const PULL_EXPIRES: Duration = Duration::from_secs(5);
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// Pause before re-opening a pull stream that failed.
const REOPEN_DELAY: Duration = Duration::from_secs(1);
/// How often a held batch re-reads the consumer's state, and keeps itself alive.
const HOLD_RECHECK: Duration = Duration::from_millis(100);
const HOLD_PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// The header with which the server tells a pulling client it is the pinned one.
const PIN_ID_HEADER: &str = "Nats-Pin-Id";

/// How a partition's loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PartitionEnd {
    /// Shutdown: the batch in hand was finished, the rest handed back.
    Shutdown,
    /// The process's writer died: everything pulled was handed back and the pin released,
    /// so another persister takes the partition at once.
    WriterGone,
}

/// Runs the partition until `shutdown`, finishing the batch in hand, or until the
/// process's writer is gone.
pub async fn run_partition(
    writer: Writer,
    consumer: PullConsumer,
    tuning: ConsumerTuning,
    shutdown: CancellationToken,
) -> PartitionEnd {
    let mut end = PartitionEnd::Shutdown;
    // Stops the puller at shutdown, or earlier when the writer is gone.
    let shutdown = shutdown.child_token();
    // Deliveries outstanding are bounded by max_ack_pending (2 × max_batch): with room for
    // them all, the puller's sends never wait.
    let (deliveries, mut pulled) = mpsc::channel(tuning.max_batch * 2 + 1);
    let puller = tokio::spawn(pull(
        consumer.clone(),
        tuning.max_batch,
        deliveries,
        shutdown.clone(),
    ));
    let mut pin = None;
    let mut last_seen: Option<Seen> = None;
    let connection = writer.js().client().statistics();
    loop {
        let first = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            first = pulled.recv() => match first {
                Some(first) => first,
                None => break,
            },
        };
        let mut batch = vec![first];
        take_ready(&mut pulled, &mut batch, tuning.max_batch);
        pin = batch.iter().rev().find_map(pin_id).or(pin);
        // Read before the batch is judged: a reconnect after this read shows up next time.
        let connects = connection.connects.load(Ordering::Relaxed);
        // `info()` parses each message's reply subject: once per message, not per compare.
        batch.sort_by_cached_key(delivery_sequence);
        if !deliveries_follow(last_seen, connects, batch.iter().map(delivery_sequence)) {
            let held = Held {
                consumer: &consumer,
                pulled: &mut pulled,
                batch: &mut batch,
            };
            match held.wait_until_sole_holder(&tuning, &shutdown).await {
                Hold::Write => {}
                Hold::Yield => {
                    // Its messages go to the pinned persister, which writes them in order
                    // with what it holds; whatever comes here next follows a gap again.
                    hand_back(batch).await;
                    last_seen = None;
                    continue;
                }
                Hold::Shutdown => {
                    hand_back(batch).await;
                    break;
                }
            }
        }
        last_seen = batch
            .iter()
            .map(delivery_sequence)
            .max()
            .map(|delivery| Seen { delivery, connects })
            .or(last_seen);
        batch.sort_by_cached_key(stream_sequence);
        coachwire_shared::metrics::record_pulled(&consumer.cached_info().name, &batch);
        if writer
            .write(&consumer.cached_info().name, batch)
            .await
            .is_err()
        {
            tracing::error!(
                consumer = %consumer.cached_info().name,
                "the writer is gone; handing the partition back"
            );
            end = PartitionEnd::WriterGone;
            shutdown.cancel();
            break;
        }
    }
    if puller.await.is_err() {
        tracing::error!("a partition's puller failed");
    }
    pulled.close();
    let mut unprocessed = Vec::new();
    while let Some(message) = pulled.recv().await {
        unprocessed.push(message);
    }
    hand_back(unprocessed).await;
    if let Some(pin) = pin {
        unpin(writer.js(), &consumer, &pin).await;
    }
    end
}

/// Pulls until `shutdown` (re-opening the pull stream if it ends), forwarding every
/// delivery; at shutdown NAKs what the client had already received.
async fn pull(
    consumer: PullConsumer,
    max_batch: usize,
    deliveries: mpsc::Sender<Message>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let stream = consumer
            .stream()
            .group(PERSISTER_GROUP)
            .max_messages_per_batch(max_batch)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await;
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "opening the pull stream failed");
                tokio::time::sleep(REOPEN_DELAY).await;
                continue;
            }
        };
        loop {
            let item = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                item = stream.next() => item,
            };
            match item {
                Some(Ok(message)) => {
                    if deliveries.send(message).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "pull stream notice"),
                None => break,
            }
        }
        if shutdown.is_cancelled() {
            let mut buffered = Vec::new();
            while let Some(Some(item)) = stream.next().now_or_never() {
                buffered.extend(item.ok());
            }
            hand_back(buffered).await;
        }
    }
}

/// Moves what is already pulled into `batch`, up to `max` messages.
fn take_ready(pulled: &mut mpsc::Receiver<Message>, batch: &mut Vec<Message>, max: usize) {
    while batch.len() < max {
        match pulled.try_recv() {
            Ok(message) => batch.push(message),
            Err(_) => break,
        }
    }
}

fn stream_sequence(message: &Message) -> u64 {
    message.info().map_or(0, |i| i.stream_sequence)
}

/// The consumer's delivery counter, which counts every delivery (redeliveries too).
fn delivery_sequence(message: &Message) -> u64 {
    message.info().map_or(0, |i| i.consumer_sequence)
}

/// The newest delivery this partition wrote, and on which of the client's connections
/// (async-nats counts every connect) it was known to be the newest.
///
/// Why the connection: the delivery counter is the consumer's state, kept by the NATS
/// servers. A server that crashes (a whole cluster killed at once) can come back with
/// that state rolled back to before its last deliveries, and then number new deliveries
/// again from there. The counter can then seem to run on from what this process saw while
/// a delivery it never received (sent into the broken connection, or to another
/// persister under the same numbers) is still pending; writing past it stored messages
/// out of stream order (the 30-minute soak, `docs/reliability.md` item 12). So after a
/// reconnect nothing is assumed: the next batch is held until the consumer's own count of
/// pending messages shows that all of them are here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    delivery: u64,
    connects: u64,
}

/// Whether `deliveries` (a batch's delivery numbers, ascending) continue what was last
/// `seen` on the same connection (`connects`), without a gap. A gap means deliveries went
/// elsewhere: to another persister before the partition was pinned here, or into a
/// connection that broke (a NATS node lost) — those messages are still outstanding and
/// come back only after their `ack_wait`. So does the first batch, since nothing is known
/// yet, and the first after a reconnect (see [`Seen`]).
fn deliveries_follow(
    seen: Option<Seen>,
    connects: u64,
    deliveries: impl IntoIterator<Item = u64>,
) -> bool {
    let Some(seen) = seen.filter(|s| s.connects == connects) else {
        return false;
    };
    (seen.delivery + 1..)
        .zip(deliveries)
        .all(|(expected, d)| d == expected)
}

/// A batch that follows a gap in the deliveries (see [`deliveries_follow`]).
///
/// Why wait: earlier messages of this partition may still be outstanding elsewhere (with
/// a persister that crashed, was paused or lost its pin, or lost in a broken connection).
/// The server hands them over only once their holder acks or NAKs them or their
/// `ack_wait` has passed, and not necessarily before the new messages it already sent
/// here; writing the new ones first would store them out of stream order. So the batch is
/// held (kept alive by progress acks) until the consumer's ack-pending count shows that
/// everything outstanding is here, and then written in stream order.
///
/// The wait has no deadline: writing after one broke order whenever the earlier messages
/// took longer to come back (a whole NATS cluster restarting, then its elections, then
/// `ack_wait`), and the soak saw it. What could make it endless is two persisters each
/// holding what the other waits for, after the pin moved while both held batches; so a
/// holder that sees the pin with another persister yields instead ([`Hold::Yield`]).
struct Held<'a> {
    consumer: &'a PullConsumer,
    pulled: &'a mut mpsc::Receiver<Message>,
    batch: &'a mut Vec<Message>,
}

/// How holding a batch ended.
#[derive(Debug, PartialEq, Eq)]
enum Hold {
    /// Everything outstanding on the partition is in the batch: write it.
    Write,
    /// The partition is pinned to another persister: hand the batch back to it.
    Yield,
    Shutdown,
}

/// How long a hold goes before it is logged as a warning (then again as long again).
const HOLD_WARN_AFTER: Duration = Duration::from_secs(30);

impl Held<'_> {
    async fn wait_until_sole_holder(
        self,
        tuning: &ConsumerTuning,
        shutdown: &CancellationToken,
    ) -> Hold {
        let began = Instant::now();
        let mut warn_at = began + HOLD_WARN_AFTER;
        let mut last_progress = Instant::now();
        // Past ack_wait the held messages would come back here a second time.
        let progress_every = HOLD_PROGRESS_EVERY.min(tuning.ack_wait / 3);
        loop {
            take_ready(self.pulled, self.batch, usize::MAX);
            keep_newest_deliveries(self.batch);
            // The newest delivery carries the pin this persister holds now.
            let ours = self
                .batch
                .iter()
                .max_by_key(|m| delivery_sequence(m))
                .and_then(pin_id);
            match self.consumer.clone().info().await {
                Ok(info) if pinned_elsewhere(info, ours.as_deref()) => return Hold::Yield,
                Ok(info) if info.num_ack_pending <= self.batch.len() => return Hold::Write,
                Ok(info) => tracing::debug!(
                    pending = info.num_ack_pending,
                    held = self.batch.len(),
                    "earlier messages are still with a previous holder; waiting"
                ),
                Err(e) => tracing::warn!(error = %e, "reading the consumer's state failed"),
            }
            if Instant::now() >= warn_at {
                tracing::warn!(
                    held = self.batch.len(),
                    waited = ?began.elapsed(),
                    "earlier messages of this partition have not come back yet; still holding"
                );
                warn_at = Instant::now() + HOLD_WARN_AFTER;
            }
            if last_progress.elapsed() >= progress_every {
                for message in self.batch.iter() {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
                last_progress = Instant::now();
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Hold::Shutdown,
                _ = tokio::time::sleep(HOLD_RECHECK) => {}
            }
        }
    }
}

/// Keeps one delivery of each message, its newest: a message redelivered while held (its
/// `ack_wait` passed) arrives twice but is pending once, so counting both would write
/// too early, and writing both would store and publish it twice.
fn keep_newest_deliveries(batch: &mut Vec<Message>) {
    batch.sort_by_cached_key(|m| std::cmp::Reverse(delivery_sequence(m)));
    let mut seen = HashSet::with_capacity(batch.len());
    batch.retain(|m| seen.insert(stream_sequence(m)));
}

/// Whether the server shows the partition pinned to a client other than `ours`.
fn pinned_elsewhere(info: &consumer::Info, ours: Option<&str>) -> bool {
    let Some(ours) = ours else {
        return false;
    };
    info.priority_groups.iter().any(|g| {
        g.group == PERSISTER_GROUP && g.pinned_client_id.as_deref().is_some_and(|p| p != ours)
    })
}

fn pin_id(message: &Message) -> Option<String> {
    let headers = message.headers.as_ref()?;
    Some(headers.get(PIN_ID_HEADER)?.as_str().to_string())
}

/// NAKs messages pulled but not processed, so they are redelivered now, not after ack_wait.
async fn hand_back(messages: Vec<Message>) {
    let mut handed_back = 0;
    for message in messages {
        if message.ack_with(AckKind::Nak(None)).await.is_ok() {
            handed_back += 1;
        }
    }
    if handed_back > 0 {
        tracing::info!(handed_back, "returned unprocessed messages at shutdown");
    }
}

/// Releases the partition if this process still holds it (never another persister's pin).
async fn unpin(js: &async_nats::jetstream::Context, consumer: &PullConsumer, pin: &str) {
    let mut consumer = consumer.clone();
    let Ok(info) = consumer.info().await else {
        return;
    };
    let ours = info
        .priority_groups
        .iter()
        .any(|g| g.group == PERSISTER_GROUP && g.pinned_client_id.as_deref() == Some(pin));
    if !ours {
        return;
    }
    let name = info.name.clone();
    let released = match js.get_stream(MESSAGES_STREAM).await {
        Ok(stream) => stream.unpin_consumer(&name, PERSISTER_GROUP).await.is_ok(),
        Err(_) => false,
    };
    tracing::debug!(consumer = %name, released, "unpinning at shutdown");
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::{self, consumer::pull};
    use coachwire_testkit::nats_server::NatsServer;

    #[test]
    fn deliveries_follow_only_without_a_gap_and_on_the_same_connection() {
        let seen = Some(Seen {
            delivery: 7,
            connects: 1,
        });
        assert!(deliveries_follow(seen, 1, [8, 9, 10]));
        assert!(!deliveries_follow(seen, 1, [9, 10]), "8 went elsewhere");
        assert!(!deliveries_follow(seen, 1, [7, 8]), "numbered again");
        assert!(!deliveries_follow(None, 1, [1]), "nothing seen yet");
        assert!(
            !deliveries_follow(seen, 2, [8, 9]),
            "the counter runs on, but over a new connection"
        );
    }

    /// A message left unacked past `ack_wait` comes back: the batch then holds two
    /// deliveries of it, and keeps the newer one only.
    #[tokio::test]
    async fn a_redelivered_message_is_held_once_as_its_newest_delivery() {
        let server = NatsServer::start().await.expect("nats-server");
        let client = async_nats::connect(server.url()).await.expect("connect");
        let js = jetstream::new(client);
        js.create_stream(jetstream::stream::Config {
            name: "HELD".into(),
            subjects: vec!["held".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
        for payload in ["a", "b"] {
            js.publish("held", payload.into())
                .await
                .expect("publish")
                .await
                .expect("puback");
        }
        let consumer: PullConsumer = js
            .create_consumer_on_stream(
                pull::Config {
                    durable_name: Some("held".into()),
                    ack_wait: Duration::from_millis(500),
                    ..Default::default()
                },
                "HELD",
            )
            .await
            .expect("consumer");
        let mut messages = consumer.messages().await.expect("pull");
        let mut batch = Vec::new();
        // "a" and "b", then both again once their ack_wait has passed.
        while batch.len() < 4 {
            batch.push(
                messages
                    .next()
                    .await
                    .expect("a delivery")
                    .expect("delivery"),
            );
        }
        keep_newest_deliveries(&mut batch);
        let mut kept: Vec<(u64, u64)> = batch
            .iter()
            .map(|m| (stream_sequence(m), delivery_sequence(m)))
            .collect();
        kept.sort_unstable();
        let streams: Vec<u64> = kept.iter().map(|k| k.0).collect();
        assert_eq!(streams, vec![1, 2], "each message once: {kept:?}");
        assert!(kept.iter().all(|k| k.1 > 2), "its redelivery: {kept:?}");
    }
}
