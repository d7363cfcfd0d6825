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
//! Every batch is written in stream order. A batch that follows a gap in the consumer's
//! deliveries (at start, after another persister held the partition, after a broken
//! connection) is first completed from the stream, so that no older message of the
//! partition still outstanding elsewhere can be written after it ([`crate::gap`]). A
//! renewed connection counts as a gap even when the delivery counter seems to run on (see
//! [`Seen`]).
//!
//! At shutdown the partition is handed back at once rather than after timeouts: what was
//! pulled but not processed is NAKed (else it would wait `ack_wait`), and the pin is
//! released (else the next persister would wait `pinned_ttl`).

use crate::gap::{Filled, complete_from_stream, continues_in_stream};
use crate::pulled::Pulled;
use crate::settings::ConsumerTuning;
use crate::writer::Writer;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use coachwire_shared::subjects::{MESSAGES_STREAM, PERSISTER_GROUP};
use futures::{FutureExt, StreamExt};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Pause before re-opening a pull stream that failed.
const REOPEN_DELAY: Duration = Duration::from_secs(1);
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
        tuning.clone(),
        deliveries,
        shutdown.clone(),
    ));
    let mut pin = None;
    let mut last_seen: Option<Seen> = None;
    // The newest stream position this loop wrote: everything of the partition up to it
    // is written.
    let mut last_written: Option<u64> = None;
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
        let mut pairs: Vec<(Delivery, Message)> =
            batch.into_iter().map(|m| (Delivery::of(&m), m)).collect();
        pairs.sort_by_key(|(delivery, _)| delivery.number);
        let deliveries: Vec<Delivery> = pairs.iter().map(|(delivery, _)| *delivery).collect();
        let numbers = || deliveries.iter().map(|d| d.number);
        let positions = || deliveries.iter().filter_map(|d| d.position);
        let follows = first_deliveries_only(&deliveries)
            && deliveries_follow(last_seen, connects, numbers())
            && continues_in_stream(writer.js(), &consumer, last_written, positions()).await;
        log_batch(
            &consumer,
            &deliveries,
            follows,
            last_written,
            pin.as_deref(),
        );
        last_seen = numbers()
            .max()
            .map(|delivery| Seen { delivery, connects })
            .or(last_seen);
        let redelivered = deliveries.iter().filter(|d| d.times > 1).count();
        coachwire_shared::metrics::record_redelivered(&consumer.cached_info().name, redelivered);
        // A completed batch ends at the newest delivery too: the stream is read up to it.
        let newest = positions().max();
        let batch: Vec<Pulled> = if follows {
            pairs.sort_by_key(|(delivery, _)| delivery.position);
            pairs
                .into_iter()
                .map(|(_, m)| Pulled::Delivered(m))
                .collect()
        } else {
            let batch = pairs.into_iter().map(|(_, m)| m).collect();
            let completed = complete_from_stream(
                writer.js(),
                &consumer,
                batch,
                last_written,
                tuning.ack_wait,
                &shutdown,
            );
            match completed.await {
                Filled::Ready(batch) => batch,
                Filled::Shutdown(batch) => {
                    hand_back(batch).await;
                    break;
                }
            }
        };
        last_written = newest.max(last_written);
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
    tuning: ConsumerTuning,
    deliveries: mpsc::Sender<Message>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let stream = consumer
            .stream()
            .group(PERSISTER_GROUP)
            .max_messages_per_batch(tuning.max_batch)
            .expires(tuning.pull_expires())
            .heartbeat(tuning.pull_expires() / 5)
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

/// What a batch was judged on, for whoever must reconstruct an order anomaly.
fn log_batch(
    consumer: &PullConsumer,
    deliveries: &[Delivery],
    follows: bool,
    last_written: Option<u64>,
    pin: Option<&str>,
) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let numbers: Vec<u64> = deliveries.iter().map(|d| d.number).collect();
    let positions: Vec<u64> = deliveries.iter().filter_map(|d| d.position).collect();
    tracing::debug!(
        consumer = %consumer.cached_info().name,
        deliveries = ?numbers,
        ?positions,
        follows,
        ?last_written,
        ?pin,
        "pulled a batch"
    );
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

/// What the loop judges a delivery on, read once: `Message::info` parses the reply
/// subject each time it is called, and every rule below needs some of it.
#[derive(Clone, Copy, Debug)]
struct Delivery {
    /// The consumer's delivery counter, which counts every delivery (redeliveries too);
    /// 0 when the reply subject is malformed.
    number: u64,
    /// Its position in the stream; `None` when the reply subject is malformed.
    position: Option<u64>,
    /// How many times the message was delivered (1: the first time; 0 when malformed).
    times: i64,
}

impl Delivery {
    fn of(message: &Message) -> Delivery {
        match message.info() {
            Ok(info) => Delivery {
                number: info.consumer_sequence,
                position: Some(info.stream_sequence),
                times: info.delivered,
            },
            Err(_) => Delivery {
                number: 0,
                position: None,
                times: 0,
            },
        }
    }
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
/// reconnect nothing is assumed: the next batch is completed from the stream
/// ([`crate::gap`]), as the first batch after a start is.
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

/// Whether no message of the batch was delivered before. A redelivery means a holder
/// failed or a consumer leader moved, and then the batch's first message following the
/// last one written proves nothing about the rest: a leader that took over with older
/// state redelivers old messages and goes on with new ones under numbers that follow,
/// while a message between them is still held by the client the old leader gave it to.
/// Writing such a batch skipped that message (the short soak, `docs/reliability.md`
/// item 12, with one NATS node stalled); it is completed from the stream instead. A
/// first delivery cannot hide a gap that way: a leader delivers new messages in stream
/// order, and one it gave elsewhere leaves a gap in the numbers seen here.
fn first_deliveries_only(deliveries: &[Delivery]) -> bool {
    deliveries.iter().all(|delivery| delivery.times == 1)
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
}
