//! One writer per persister process: the batches every partition has ready go to Postgres
//! together, in one transaction.
//!
//! Why: each partition committing its own batch meant, at a few thousand messages a
//! second, eight tiny transactions at a time of two or three messages each, and Postgres
//! spent its time on per-transaction work (planning, locks, a WAL flush per commit). A
//! single writer takes whatever the partitions have handed over while the previous
//! transaction ran, so batches grow with the load and commits do not.
//!
//! Order is unchanged: partitions own disjoint conversations, each partition's batch
//! stays in stream order inside the combined one, and a partition hands over its next
//! batch only after the writer has committed the previous one.
//!
//! A transaction overlaps the previous one's finish (publishing its persisted events,
//! then acking its deliveries), which a task of its own does, in commit order. Why: a
//! message that arrived while the writer published and acked used to wait for all of it
//! before its transaction could start; at 1000 msg/s that wait was most of the time from
//! ingest's accept to the transaction. One committed batch at most waits for the
//! finisher, so a NATS outage holds the writer back instead of piling up batches.
//! Acks still come after the publishes, so a crash anywhere redelivers what is not done,
//! and storing it again changes nothing.
//!
//! Under load the writer paces itself ([`Pace`]): after a batch of [`LINGER_FROM`]
//! messages or more it waits [`LINGER`] before taking the next batches, so that more
//! partitions have handed theirs over and each cycle covers more messages. Why: every
//! statement, commit, persisted-events message and room broadcast costs about the same
//! whatever its size, and at 3000 msg/s batches of four paid them for few messages. The
//! committed batch is handed to the finisher before the wait, so its events are not held.
//! A small batch means a low rate, where no wait is worth its latency: below the
//! threshold the writer goes on at once. Measured in `docs/benchmarks.md`, "Pacing the
//! writer": CPU per message of the five processes at 3000 msg/s 492 → 348 µs, 1000 msg/s
//! unchanged, send→room p99 at 6000 msg/s about 10 ms longer.

use crate::batch::{Committed, Outcome, Persister, Stage};
use crate::pulled::Pulled;
use async_nats::jetstream;
use coachwire_shared::subjects::PARTITIONS;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

/// Most messages one transaction takes from the partitions' queue.
const MAX_COMBINED: usize = 2_000;
/// A batch this large says messages arrive at about 2000/s or more (six in a cycle of a
/// store and a linger, ~3 ms): enough to fill the next batch while the writer waits. At
/// 1000 msg/s batches hold two or three, so the writer never lingers there.
const LINGER_FROM: usize = 6;
/// The wait under load. 1 ms saved less CPU (387 µs per message at 3000 msg/s); 4 ms
/// saved little more (332) and took send→room p99 at 6000 msg/s past 50 ms.
const LINGER: Duration = Duration::from_millis(2);

/// Whether the writer waits for more before its next batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pace {
    /// A small batch: the rate is low, take the next one as soon as it is handed over.
    AtOnce,
    /// A large batch: the rate is high, let the next one fill for [`LINGER`].
    Linger,
}

impl Pace {
    fn after(batch_size: usize) -> Pace {
        if batch_size >= LINGER_FROM {
            Pace::Linger
        } else {
            Pace::AtOnce
        }
    }
}

/// One partition's batch, in stream order, and who waits for it to be finished.
struct Job {
    partition: String,
    messages: Vec<Pulled>,
    done: oneshot::Sender<()>,
}

/// The writer task ended while partitions still had batches for it.
#[derive(Debug, thiserror::Error)]
#[error("the persister's writer is gone")]
pub struct WriterGone;

/// A partition's handle on the process's writer.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    js: jetstream::Context,
}

impl Writer {
    /// Starts the writer. It runs until every handle is dropped, finishing the batches
    /// in hand; at `shutdown` a batch still waiting on Postgres is abandoned unacked.
    pub fn spawn(persister: Persister, shutdown: CancellationToken) -> (Writer, JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(PARTITIONS as usize);
        let js = persister.js.clone();
        let task = tokio::spawn(write(persister, queue, shutdown));
        (Writer { jobs, js }, task)
    }

    /// Stores, publishes and acks `messages` (one partition's batch, in stream order), or
    /// leaves them unacked for redelivery if the writer is shutting down.
    ///
    /// `Err` when the writer is gone (it panicked): nothing this process pulls can be
    /// stored any more, and the caller must hand its partition to another persister.
    pub async fn write(&self, partition: &str, messages: Vec<Pulled>) -> Result<(), WriterGone> {
        let (done, finished) = oneshot::channel();
        let job = Job {
            partition: partition.to_string(),
            messages,
            done,
        };
        self.jobs.send(job).await.map_err(|_| WriterGone)?;
        finished.await.map_err(|_| WriterGone)
    }

    /// The JetStream context the writer publishes with.
    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }
}

async fn write(persister: Persister, mut queue: mpsc::Receiver<Job>, shutdown: CancellationToken) {
    let (finishing, committed) = mpsc::channel(1);
    let finisher = tokio::spawn(finish(persister.clone(), committed, shutdown.clone()));
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        let mut size = jobs[0].messages.len();
        while size < MAX_COMBINED {
            match queue.try_recv() {
                Ok(job) => {
                    size += job.messages.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // Field values are only computed when the span is enabled (an exporter is set).
        let span = tracing::debug_span!(
            "persist.batch",
            coachwire.partitions = jobs
                .iter()
                .map(|j| j.partition.as_str())
                .collect::<Vec<_>>()
                .join(","),
            coachwire.batch_size = size,
        );
        let mut messages = Vec::with_capacity(size);
        let mut waiting = Vec::with_capacity(jobs.len());
        for job in jobs {
            messages.extend(job.messages);
            waiting.push(job.done);
        }
        // Tests make the writer die here; without fail's `failpoints` feature (which only
        // the tests turn on) this is nothing.
        fail::fail_point!("persister::writer");
        let stage = persister
            .store(messages, &shutdown)
            .instrument(span.clone())
            .await;
        for done in waiting {
            let _ = done.send(());
        }
        // Gives the partitions just released the turn to hand over their next batches, so
        // that the next transaction takes them too instead of only those already queued.
        tokio::task::yield_now().await;
        if let Stage::Committed(parts) = stage
            && finishing.send((parts, span)).await.is_err()
        {
            break;
        }
        if Pace::after(size) == Pace::Linger {
            tokio::time::sleep(LINGER).await;
        }
    }
    drop(finishing);
    // A panic of the finisher is the writer's: the partitions must see the writer gone.
    if let Err(e) = finisher.await
        && let Ok(panic) = e.try_into_panic()
    {
        std::panic::resume_unwind(panic);
    }
}

/// Publishes and acks committed batches in the order they were committed. Once shutdown
/// abandons one, the rest are dropped unacked too (and redelivered): publishing a later
/// batch's events ahead of it would give rooms a conversation's events out of order. It
/// still takes what the writer hands over, so the writer never sees it gone.
async fn finish(
    persister: Persister,
    mut committed: mpsc::Receiver<(Vec<Committed>, Span)>,
    shutdown: CancellationToken,
) {
    let mut abandoned = false;
    while let Some((parts, span)) = committed.recv().await {
        for part in parts {
            if abandoned {
                break;
            }
            let finished = persister.finish(part, &shutdown).instrument(span.clone());
            abandoned = finished.await == Outcome::Abandoned;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_lingers_only_after_a_batch_that_says_the_rate_is_high() {
        assert_eq!(Pace::after(1), Pace::AtOnce);
        assert_eq!(Pace::after(LINGER_FROM - 1), Pace::AtOnce);
        assert_eq!(Pace::after(LINGER_FROM), Pace::Linger);
        assert_eq!(Pace::after(MAX_COMBINED), Pace::Linger);
    }
}
