//! Prometheus metrics (§10): the names in one place, and the recorder installed once.

use crate::subjects::{MESSAGES_STREAM, PERSISTED_STREAM};
use futures::StreamExt;
use metrics_exporter_prometheus::PrometheusBuilder;
pub use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::OnceLock;

pub const MESSAGES_TOTAL: &str = "coachwire_messages_total";
pub const ACK_SECONDS: &str = "coachwire_ack_seconds";
pub const PERSISTED_TOTAL: &str = "coachwire_persisted_total";
pub const PERSIST_BATCH_SIZE: &str = "coachwire_persist_batch_size";
pub const END_TO_END_SECONDS: &str = "coachwire_end_to_end_seconds";
pub const CONNECTIONS: &str = "coachwire_connections";
pub const RATE_LIMITED_TOTAL: &str = "coachwire_rate_limited_total";
pub const CONSUMER_PENDING: &str = "coachwire_consumer_pending";
pub const JOINED_ROOMS: &str = "coachwire_joined_rooms";
pub const DB_POOL_CONNECTIONS: &str = "coachwire_db_pool_connections";
pub const CONSUMER_REDELIVERED_TOTAL: &str = "coachwire_consumer_redelivered_total";
pub const DEAD_LETTERS_TOTAL: &str = "coachwire_dead_letters_total";
pub const REPLIES_TOTAL: &str = "coachwire_replies_total";
pub const REPLY_APPENDS_TOTAL: &str = "coachwire_reply_appends_total";
pub const REPLIES_STREAMING: &str = "coachwire_replies_streaming";

/// Every name above: what dashboards and alert rules may refer to.
pub const ALL: &[&str] = &[
    MESSAGES_TOTAL,
    ACK_SECONDS,
    PERSISTED_TOTAL,
    PERSIST_BATCH_SIZE,
    END_TO_END_SECONDS,
    CONNECTIONS,
    RATE_LIMITED_TOTAL,
    CONSUMER_PENDING,
    JOINED_ROOMS,
    DB_POOL_CONNECTIONS,
    CONSUMER_REDELIVERED_TOTAL,
    DEAD_LETTERS_TOTAL,
    REPLIES_TOTAL,
    REPLY_APPENDS_TOTAL,
    REPLIES_STREAMING,
];

/// Latency buckets in seconds: sub-millisecond acks up to multi-second outages.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder (once per process) and returns the handle `/metrics` renders.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(PERSIST_BATCH_SIZE.into()),
                        BATCH_BUCKETS,
                    )
                })
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Shows `name` (with `labels`) at 0 from startup: a counter that appears only at its
/// first increment hides that increment from `increase()`, and the alert on it never fires.
pub fn start_at_zero(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(key, value)| metrics::Label::new(*key, *value))
        .collect();
    metrics::counter!(name, labels).increment(0);
}

/// After each batch pulled from a durable consumer: how many of it were redeliveries.
pub fn record_pulled(consumer: &str, batch: &[async_nats::jetstream::Message]) {
    let redelivered = batch
        .iter()
        .filter_map(|m| m.info().ok())
        .filter(|i| i.delivered > 1)
        .count();
    record_redelivered(consumer, redelivered);
}

/// [`record_pulled`] for a caller that has already read each delivery's count.
pub fn record_redelivered(consumer: &str, redelivered: usize) {
    // Incremented by 0 too, so that each consumer's series exists (at 0) from its first
    // pull and a dashboard shows 0 rather than "No data" until the first redelivery.
    metrics::counter!(CONSUMER_REDELIVERED_TOTAL, "consumer" => consumer.to_string())
        .increment(redelivered as u64);
}

/// Each durable consumer's backlog (messages not yet delivered plus delivered but not yet
/// acked), read from the server when `/metrics` is scraped. Read there, not by the
/// consumer's own process, the number is right exactly when it matters: while that
/// process is down or stuck. Every service reports every consumer; alert on the maximum
/// per consumer.
pub async fn record_consumers(nats: &async_nats::Client) {
    let js = async_nats::jetstream::new(nats.clone());
    for name in [MESSAGES_STREAM, PERSISTED_STREAM] {
        let Ok(stream) = js.get_stream_no_info(name).await else {
            continue;
        };
        let mut consumers = stream.consumers();
        while let Some(Ok(info)) = consumers.next().await {
            if info.config.durable_name.is_none() {
                continue;
            }
            let backlog = info.num_pending + info.num_ack_pending as u64;
            metrics::gauge!(CONSUMER_PENDING, "consumer" => info.name).set(backlog as f64);
        }
    }
}

/// The pool's connections by state, read when `/metrics` is scraped.
pub fn record_pool(pool: &sqlx::PgPool) {
    let idle = pool.num_idle() as f64;
    let size = f64::from(pool.size());
    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
    metrics::gauge!(DB_POOL_CONNECTIONS, "state" => "used").set((size - idle).max(0.0));
}
