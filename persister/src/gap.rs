//! A batch that follows a gap in the consumer's deliveries, completed from the stream.
//!
//! Why: after a gap (at start, after another persister held the partition, after a
//! broken connection) earlier messages of the partition may still be outstanding: with a
//! persister that crashed, was paused or lost its pin, or sent into a connection that
//! broke. The server hands them over again only after their holder NAKs them or their
//! `ack_wait` passes, and not necessarily before the newer messages it already sent here;
//! writing the newer ones first would store them out of stream order.
//!
//! This used to wait until the consumer's own count of pending messages said that every
//! outstanding one had come here. That count is the consumer's state, kept by the NATS
//! servers, and after a whole cluster is killed at once it can be wrong in a way that
//! lets a batch through while an older message is still due: the 30-minute soak stored
//! messages out of order that way (`docs/reliability.md`, item 12). The stream itself is
//! the source of truth (`sync_interval: always`). So the batch is made of the stream's
//! messages on the partition from just above the consumer's ack floor up to the batch's
//! newest, read in order: the ones delivered here are written as deliveries (and acked),
//! the rest as read from the stream. Those already written come back as the duplicates
//! they are and change nothing; the rest are written in stream order. Nothing waits for
//! another holder, so nothing can wait for ever.
//!
//! The ack floor is a safe place to start: every message at or below it was acked, and a
//! message is acked only once it is stored. A consumer state that rolled back only lowers
//! the floor, which makes the read longer, never wrong. So is the newest position this
//! process wrote the partition up to, when it is higher: every batch it wrote reached it
//! without a gap, which is what a batch that follows is checked for too.

use crate::pulled::Pulled;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::context::{ConsumerInfoError, GetStreamError};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{RawMessageError, RawMessageErrorKind, Stream};
use async_nats::jetstream::{self, AckKind, Message};
use coachwire_shared::subjects::MESSAGES_STREAM;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Pause before reading the stream again after a failure (a stream leader being elected).
const RETRY_READ: Duration = Duration::from_millis(200);
/// How often a batch waiting on those retries keeps its deliveries alive.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// How completing a batch ended.
pub enum Filled {
    /// The partition's messages from above the ack floor to the batch's newest, in stream
    /// order.
    Ready(Vec<Pulled>),
    /// Shutdown came while the stream could not be read: the batch, to hand back.
    Shutdown(Vec<Message>),
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("reading the consumer's ack floor: {0}")]
    Floor(#[from] ConsumerInfoError),
    #[error("naming the stream: {0}")]
    Stream(#[from] GetStreamError),
    #[error("reading the stream: {0}")]
    Message(#[from] RawMessageError),
    /// The stream's leader answered without the batch's newest message (see [`walk`]).
    #[error("the stream's leader has not applied message {0} yet (its next was {1:?})")]
    Behind(u64, Option<u64>),
}

/// Completes `batch` (deliveries of the partition `consumer` reads) from the stream,
/// retrying until the stream can be read or `shutdown`. `written` is the newest position
/// this process wrote the partition up to (everything before it is stored), if any: the
/// read starts above it when that is higher than the ack floor.
///
/// Why: a message read from the stream has no delivery to ack, so the ack floor stays
/// below it until the consumer's own delivery of it comes back, an `ack_wait` later.
/// Every batch with a redelivery is completed meanwhile (see `first_deliveries_only` in
/// `crate::partition`), and reading each time from that floor re-read what was already
/// written: after a NATS node was killed under load, Postgres caught up in 2.9 and 8.1 s
/// reading from the floor, and in 0.005–1.2 s (three runs) reading from here.
pub async fn complete_from_stream(
    js: &jetstream::Context,
    consumer: &PullConsumer,
    batch: Vec<Message>,
    written: Option<u64>,
    ack_wait: Duration,
    shutdown: &CancellationToken,
) -> Filled {
    let newest = batch.iter().filter_map(stream_sequence).max().unwrap_or(0);
    let progress_every = PROGRESS_EVERY.min(ack_wait / 3);
    let mut last_progress = Instant::now();
    loop {
        match read_partition(js, consumer, newest, written).await {
            Ok(read) => return Filled::Ready(merge(batch, read)),
            Err(e) => {
                tracing::warn!(error = %e, "completing a batch from the stream failed; retrying")
            }
        }
        if last_progress.elapsed() >= progress_every {
            for message in &batch {
                let _ = message.ack_with(AckKind::Progress).await;
            }
            last_progress = Instant::now();
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Filled::Shutdown(batch),
            _ = tokio::time::sleep(RETRY_READ) => {}
        }
    }
}

/// Whether the stream agrees that a batch (its stream `positions`) whose deliveries follow
/// the last ones written here has nothing of the partition missing before it: the
/// partition's first message after `last_written` must be the batch's first new one.
///
/// Why the deliveries are not enough: their numbers are the consumer's state, and a
/// consumer leader that moves (a node lost, a cluster's second round of elections) to a
/// replica with older state numbers deliveries again from there, without this process's
/// connection breaking. Another persister can then hold an older message under numbers
/// this process already saw, while the next number comes here and seems to follow. One
/// read of the stream per batch tells; the rest of the batch cannot hide a gap, since the
/// consumer delivers in stream order and what went elsewhere under the old numbers came
/// before it. `false` (a gap) also when the stream cannot answer: the batch is then
/// completed from it, which retries.
///
/// The read is a direct get, which any replica may answer, not a request to the stream's
/// leader as [`read_partition`] makes: it is the cheaper of the two for the servers, and
/// this runs for every batch. A replica's answer is as good as the leader's here. A
/// replica applies the stream in order, so one that holds the batch's first new message
/// holds everything before it and answers exactly as the leader would; one that does not
/// hold it yet cannot name it, and the batch is then completed from the stream (through
/// the leader), as after any gap.
pub async fn continues_in_stream(
    js: &jetstream::Context,
    consumer: &PullConsumer,
    last_written: Option<u64>,
    positions: impl Iterator<Item = u64>,
) -> bool {
    let Some(last) = last_written else {
        return false;
    };
    let first_new = positions.filter(|&position| position > last).min();
    let Some(first_new) = first_new else {
        return true;
    };
    let Ok(stream) = js.get_stream_no_info(MESSAGES_STREAM).await else {
        return false;
    };
    let filter = consumer.cached_info().config.filter_subject.as_str();
    stream
        .direct_get_next_for_subject(filter, Some(last + 1))
        .await
        .is_ok_and(|message| message.sequence == first_new)
}

/// The partition's (`filter`'s) first message at or after `from`, through the stream's
/// leader (not a direct get, which any replica may answer).
async fn next_of_partition(
    stream: &Stream<()>,
    filter: &str,
    from: u64,
) -> Result<StreamMessage, RawMessageError> {
    stream
        .raw_message_builder()
        .sequence(from)
        .next_by_subject(filter)
        .send()
        .await
}

/// The partition's messages in the stream after the consumer's ack floor (or after
/// `written`, if higher), up to `newest`.
async fn read_partition(
    js: &jetstream::Context,
    consumer: &PullConsumer,
    newest: u64,
    written: Option<u64>,
) -> Result<Vec<StreamMessage>, ReadError> {
    let stream = js.get_stream_no_info(MESSAGES_STREAM).await?;
    let info = consumer.get_info().await?;
    let filter = &info.config.filter_subject;
    let floor = info.ack_floor.stream_sequence.max(written.unwrap_or(0));
    tracing::debug!(
        consumer = %info.name,
        ack_floor = info.ack_floor.stream_sequence,
        ?written,
        newest,
        "completing a batch from the stream"
    );
    walk(floor, newest, |from| {
        next_of_partition(&stream, filter, from)
    })
    .await
}

/// The partition's messages from `floor + 1` to `newest`, one `next` (the first at or
/// after a position) at a time. `newest` is a message of the batch, so the stream holds
/// it: an answer that does not reach it (nothing found before it, or a later message in
/// its place) comes from a leader that has not applied the stream that far yet (just
/// elected after a crash), and what it returned may lack older messages too. That is an
/// error, retried; a leader that does reach `newest` has applied everything before it
/// (a stream applies its log in order).
async fn walk<F, Fut>(floor: u64, newest: u64, mut next: F) -> Result<Vec<StreamMessage>, ReadError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<StreamMessage, RawMessageError>>,
{
    let mut read = Vec::new();
    let mut from = floor + 1;
    while from <= newest {
        match next(from).await {
            Ok(message) if message.sequence <= newest => {
                from = message.sequence + 1;
                read.push(message);
            }
            Ok(message) => return Err(ReadError::Behind(newest, Some(message.sequence))),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {
                return Err(ReadError::Behind(newest, None));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(read)
}

/// One entry per stream position, in stream order: a delivery where there is one (of two
/// deliveries of one message, redelivered after its `ack_wait`, the newest: it is pending
/// once, and writing both would store and publish it twice), else what was read.
fn merge(delivered: Vec<Message>, read: Vec<StreamMessage>) -> Vec<Pulled> {
    let filled = read.len();
    let mut by_position: BTreeMap<u64, Pulled> = read
        .into_iter()
        .map(|m| (m.sequence, Pulled::Read(m)))
        .collect();
    let mut unplaced = Vec::new();
    let mut delivered: Vec<(u64, Message)> = delivered
        .into_iter()
        .map(|m| (m.info().map_or(0, |i| i.consumer_sequence), m))
        .collect();
    delivered.sort_unstable_by_key(|(delivery, _)| *delivery);
    for (_, message) in delivered {
        match stream_sequence(&message) {
            Some(position) => {
                by_position.insert(position, Pulled::Delivered(message));
            }
            // Malformed: decoding dead-letters it, ahead of the rest.
            None => unplaced.push(Pulled::Delivered(message)),
        }
    }
    let read_only = by_position
        .values()
        .filter(|p| matches!(p, Pulled::Read(_)))
        .count();
    if read_only > 0 {
        tracing::info!(
            read_only,
            read = filled,
            "a batch after a gap was completed from the stream"
        );
    }
    unplaced.extend(by_position.into_values());
    unplaced
}

/// A delivery's position in the stream (`None` if its reply subject is malformed).
fn stream_sequence(message: &Message) -> Option<u64> {
    message.info().ok().map(|i| i.stream_sequence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::consumer::pull;
    use coachwire_testkit::nats_server::NatsServer;
    use futures::StreamExt;

    /// A stream's leader that has applied the partition's messages `held`: `next` answers
    /// the first at or after a position, as `next_by_subject` does.
    fn leader(
        held: &[u64],
    ) -> impl FnMut(u64) -> std::future::Ready<Result<StreamMessage, RawMessageError>> {
        let held = held.to_vec();
        move |from| {
            std::future::ready(
                held.iter()
                    .find(|&&seq| seq >= from)
                    .map(|&sequence| StreamMessage {
                        subject: "coachwire.msg.p.0.c".into(),
                        sequence,
                        headers: async_nats::HeaderMap::new(),
                        payload: bytes::Bytes::new(),
                        time: async_nats::datetime::DateTime::UNIX_EPOCH,
                    })
                    .ok_or_else(|| RawMessageError::new(RawMessageErrorKind::NoMessageFound)),
            )
        }
    }

    async fn positions(floor: u64, newest: u64, held: &[u64]) -> Result<Vec<u64>, ReadError> {
        let read = walk(floor, newest, leader(held)).await?;
        Ok(read.iter().map(|m| m.sequence).collect())
    }

    /// The soak's inversions after whole-cluster crashes: a just-elected leader that had
    /// not applied the stream as far as the batch answered "nothing after 5", and the
    /// batch (holding 9) was written without 7. Only an answer that reaches the batch's
    /// newest message is complete.
    #[tokio::test]
    async fn the_stream_is_read_up_to_the_batch_s_newest_message_or_not_at_all() {
        let all = [3, 5, 7, 9, 12];
        assert_eq!(positions(2, 9, &all).await.expect("read"), vec![3, 5, 7, 9]);
        assert_eq!(
            positions(9, 9, &all).await.expect("read"),
            Vec::<u64>::new()
        );
        assert!(matches!(
            positions(2, 9, &[3, 5]).await,
            Err(ReadError::Behind(9, None))
        ));
        assert!(matches!(
            positions(2, 9, &[3, 5, 12]).await,
            Err(ReadError::Behind(9, Some(12)))
        ));
    }

    /// A message left unacked past `ack_wait` comes back: a batch can then hold two
    /// deliveries of it, and keeps the newer one only.
    #[tokio::test]
    async fn a_redelivered_message_is_written_once_as_its_newest_delivery() {
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
        let kept: Vec<(u64, u64)> = merge(batch, Vec::new())
            .iter()
            .map(|p| match p {
                Pulled::Delivered(m) => {
                    let info = m.info().expect("info");
                    (info.stream_sequence, info.consumer_sequence)
                }
                Pulled::Read(m) => panic!("nothing was read: {}", m.sequence),
            })
            .collect();
        let streams: Vec<u64> = kept.iter().map(|k| k.0).collect();
        assert_eq!(streams, vec![1, 2], "each message once: {kept:?}");
        assert!(kept.iter().all(|k| k.1 > 2), "its redelivery: {kept:?}");
    }
}
