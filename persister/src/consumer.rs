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
//! stream order (hence `seq` order) survives the hand-over.

use crate::batch::Persister;
use crate::partition::run_partition;
use crate::writer::Writer;
use async_nats::jetstream::consumer::{AckPolicy, PriorityPolicy, PullConsumer, pull};
use coachwire_shared::subjects::{
    MESSAGES_STREAM, PARTITIONS, PERSISTER_GROUP, partition_filter, persister_consumer,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Consumer timing; tests shorten it, production uses the defaults.
#[derive(Clone, Debug)]
pub struct ConsumerTuning {
    pub ack_wait: Duration,
    pub pinned_ttl: Duration,
    /// Largest batch written in one transaction.
    pub max_batch: usize,
}

impl Default for ConsumerTuning {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(10),
            pinned_ttl: Duration::from_secs(20),
            max_batch: 500,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("declaring consumer {name}: {source}")]
pub struct ConsumerError {
    name: String,
    source: async_nats::Error,
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
    .map_err(|e| ConsumerError {
        name,
        source: e.into(),
    })
}

/// Runs every partition until `shutdown`; returns once each has finished its batch.
pub async fn run(
    persister: Persister,
    tuning: ConsumerTuning,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let mut consumers = Vec::new();
    for partition in 0..PARTITIONS {
        consumers.push(ensure_consumer(&persister.js, partition, &tuning).await?);
    }
    let (writer, writing) = Writer::spawn(persister, shutdown.clone());
    let tracker = TaskTracker::new();
    for consumer in consumers {
        let (writer, tuning, shutdown) = (writer.clone(), tuning.clone(), shutdown.clone());
        tracker.spawn(async move { run_partition(writer, consumer, tuning, shutdown).await });
    }
    drop(writer);
    tracker.close();
    tracker.wait().await;
    if writing.await.is_err() {
        tracing::error!("the writer failed");
    }
    Ok(())
}
