//! The pull side: one durable consumer per partition, one loop per consumer.
//!
//! Per-conversation order needs a single active writer per partition. Every persister
//! pulls every partition through the priority group [`PERSISTER_GROUP`] with the
//! `PinnedClient` policy, so the server hands each partition to one of them and moves it
//! only after the pinned client has been silent for `pinned_ttl`.
//!
//! Why `ack_wait < pinned_ttl`: when a persister dies with unacked messages, they become
//! due for redelivery before the partition is pinned to the next persister, and the
//! server serves redeliveries before new messages, so the next writer sees them first and
//! stream order (hence `seq` order) survives the hand-over. Order does not rest on that
//! alone: the next writer's first batch follows a gap and is completed from the stream
//! ([`crate::gap`]), so it cannot be written ahead of an older message still outstanding.

use crate::batch::Persister;
use crate::partition::{PartitionEnd, run_partition};
use crate::settings::ConsumerTuning;
use crate::writer::Writer;
use async_nats::jetstream::consumer::{AckPolicy, PriorityPolicy, PullConsumer, pull};
use coachwire_shared::nats::DeclareError;
use coachwire_shared::subjects::{
    MESSAGES_STREAM, PARTITIONS, PERSISTER_GROUP, partition_filter, persister_consumer,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// `DeclareError` names the consumer, and keeps whether the server refused it or the
    /// patience ran out.
    #[error(transparent)]
    Declare(#[from] DeclareError),
    /// The process's writer died (a panic). Its partitions were handed back at once, so
    /// that their pins pass to another persister, and the process must end.
    #[error("the writer died; every partition was handed back to the other persisters")]
    WriterDied,
}

/// Creates or updates the partition's durable consumer, retrying while the cluster settles
/// or other persisters declare it at the same moment.
pub async fn ensure_consumer(
    js: &async_nats::jetstream::Context,
    partition: u32,
    tuning: &ConsumerTuning,
) -> Result<PullConsumer, ConsumerError> {
    let name = persister_consumer(partition);
    let config = pull::Config {
        durable_name: Some(name.clone()),
        filter_subject: partition_filter(partition),
        ack_policy: AckPolicy::Explicit,
        ack_wait: tuning.ack_wait,
        max_ack_pending: i64::try_from(tuning.max_batch * 2).unwrap_or(1000),
        priority_groups: vec![PERSISTER_GROUP.into()],
        priority_policy: PriorityPolicy::PinnedClient,
        priority_timeout: tuning.pinned_ttl,
        ..Default::default()
    };
    let what = format!("{name} on stream {MESSAGES_STREAM}");
    coachwire_shared::nats::declare(&what, || {
        js.create_consumer_on_stream(config.clone(), MESSAGES_STREAM)
    })
    .await
    .map_err(ConsumerError::from)
}

/// Runs every partition until `shutdown`; returns once each has finished its batch.
///
/// If the writer dies first, every partition is handed back at once (batches NAKed, pins
/// released) and the error says so: a process that can no longer store anything must not
/// keep its pins, or no other persister would take its partitions.
pub async fn run(
    persister: Persister,
    tuning: ConsumerTuning,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let mut consumers = Vec::new();
    for partition in 0..PARTITIONS {
        consumers.push(ensure_consumer(&persister.js, partition, &tuning).await?);
    }
    let (writer, mut writing) = Writer::spawn(persister, shutdown.clone());
    let partitions = shutdown.child_token();
    let mut running = JoinSet::new();
    for consumer in consumers {
        let (writer, tuning) = (writer.clone(), tuning.clone());
        running.spawn(run_partition(writer, consumer, tuning, partitions.clone()));
    }
    drop(writer);
    let mut writer_ended = false;
    let mut died = false;
    loop {
        tokio::select! {
            ended = running.join_next() => match ended {
                None => break,
                Some(Ok(PartitionEnd::Shutdown)) => {}
                Some(Ok(PartitionEnd::WriterGone)) => died = true,
                Some(Err(e)) => tracing::error!(error = %e, "a partition's loop failed"),
            },
            // The writer ends by itself once every partition has dropped its handle; it
            // died if it ended by a panic.
            result = &mut writing, if !writer_ended => {
                writer_ended = true;
                died |= result.is_err();
            }
        }
        if died && !partitions.is_cancelled() {
            tracing::error!("the writer died; handing every partition back and exiting");
            partitions.cancel();
        }
    }
    if !writer_ended && writing.await.is_err() {
        tracing::error!("the writer failed");
    }
    match died {
        true => Err(ConsumerError::WriterDied),
        false => Ok(()),
    }
}
