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
use async_nats::jetstream::consumer::{AckPolicy, PriorityPolicy, PullConsumer, pull};
use coachwire_shared::subjects::{
    MESSAGES_STREAM, PARTITIONS, PERSISTER_GROUP, partition_filter, persister_consumer,
};
use futures::StreamExt;
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

/// How long one pull request waits on the server; renewed continuously, well inside
/// `pinned_ttl`, so a live persister never loses its pin.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);
/// Pause before re-opening a pull stream that failed.
const REOPEN_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("declaring consumer {name}: {source}")]
pub struct ConsumerError {
    name: String,
    source: async_nats::Error,
}

/// Creates or updates the partition's durable consumer.
pub async fn ensure_consumer(
    js: &async_nats::jetstream::Context,
    partition: u32,
    tuning: &ConsumerTuning,
) -> Result<PullConsumer, ConsumerError> {
    let name = persister_consumer(partition);
    let err = |source: async_nats::Error| ConsumerError {
        name: name.clone(),
        source,
    };
    let stream = js
        .get_stream(MESSAGES_STREAM)
        .await
        .map_err(|e| err(e.into()))?;
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
    stream
        .create_consumer(config)
        .await
        .map_err(|e| err(e.into()))
}

/// Runs every partition until `shutdown`; returns once each has finished its batch.
pub async fn run(
    persister: Persister,
    tuning: ConsumerTuning,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let tracker = TaskTracker::new();
    for partition in 0..PARTITIONS {
        let consumer = ensure_consumer(&persister.js, partition, &tuning).await?;
        let (persister, tuning, shutdown) = (persister.clone(), tuning.clone(), shutdown.clone());
        tracker.spawn(async move { run_partition(persister, consumer, tuning, shutdown).await });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Pulls batches of whatever is ready (up to `max_batch`) and processes them one at a
/// time; the stream is cut at shutdown between batches, never inside one.
pub async fn run_partition(
    persister: Persister,
    consumer: PullConsumer,
    tuning: ConsumerTuning,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let stream = consumer
            .stream()
            .group(PERSISTER_GROUP)
            .max_messages_per_batch(tuning.max_batch)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await;
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "opening the pull stream failed");
                tokio::time::sleep(REOPEN_DELAY).await;
                continue;
            }
        };
        let mut batches = std::pin::pin!(
            stream
                .ready_chunks(tuning.max_batch)
                .take_until(shutdown.cancelled())
        );
        while let Some(batch) = batches.next().await {
            let messages: Vec<_> = batch
                .into_iter()
                .filter_map(|m| {
                    m.inspect_err(|e| tracing::debug!(error = %e, "pull stream notice"))
                        .ok()
                })
                .collect();
            if !messages.is_empty() {
                persister.process(messages, &shutdown).await;
            }
        }
    }
}
