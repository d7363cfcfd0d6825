//! One batch from the stream, start to finish: decode → store → publish → ack.
//!
//! The two halves can run apart: [`Persister::store`] commits the rows and returns
//! [`Committed`] parts, and [`Persister::finish`] publishes their persisted events and acks
//! them. The writer overlaps the next batch's transaction with the previous batch's
//! finish ([`crate::writer`]); [`Persister::process`] runs both in turn.
//!
//! Acks come last: a crash anywhere before them redelivers the batch, and every step is
//! idempotent (the store by message id, the persisted events by `Nats-Msg-Id`).
//! Retriable failures (Postgres down) are retried with backoff for as long as it takes,
//! with `Progress` acks so the server does not redeliver meanwhile; a batch that fails for
//! its data is split into single messages, and a single message that still fails is
//! dead-lettered so it never blocks the messages behind it.

use crate::nats::{Author, PublishError, dead_letter, publish_persisted};
use crate::pulled::Pulled;
use crate::store::{Incoming, Row, StoreError, Stored, store_on};
use async_nats::jetstream::{self, AckKind};
use coachwire_shared::envelope::PersistedEvent;
use coachwire_shared::lasting::Lasting;
use coachwire_shared::metrics::{DEAD_LETTERS_TOTAL, PERSIST_BATCH_SIZE, PERSISTED_TOTAL};
use coachwire_shared::telemetry::propagation;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{Span, field::Empty};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Below the consumer's ack wait, so a batch stuck on an outage is never redelivered.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// One message of a batch: its delivery, what it decoded to, and its span in the
/// message's own trace (a child of the ingest's publish). The batch's span, the caller's,
/// links to each of them, and each links back to it.
struct Delivery {
    message: Pulled,
    incoming: Incoming,
    span: Span,
}

/// How storing a batch (retried through the database's faults) ended.
enum StoreAttempt {
    Stored(Vec<Stored>),
    /// Refused for what is in it: retrying cannot fix it.
    Refused(StoreError),
    ShutDown,
}

/// How isolating a failed batch ended.
enum Isolated {
    /// The messages that stored alone, one part each, in stream order; the rest are
    /// dead-lettered.
    Stored(Vec<Committed>),
    /// Every message failed with this same error: retry the batch, bury nothing.
    AllFailedAlike(StoreError),
    ShutDown,
}

/// Rows committed in one transaction, with the deliveries they came from: what is left
/// is to publish their persisted events and ack the deliveries ([`Persister::finish`]).
pub struct Committed {
    deliveries: Vec<Delivery>,
    stored: Vec<Stored>,
}

/// How the store half of a batch ended.
pub enum Stage {
    /// Committed, in the order the parts must be finished (a batch that had to be
    /// isolated is one part per message).
    Committed(Vec<Committed>),
    /// Shutdown came first; nothing acked, the server will redeliver.
    Abandoned,
}

/// The wait between retries of one step: from [`FIRST_BACKOFF`], doubling up to
/// [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(FIRST_BACKOFF)
    }
}

/// How a wait between retries ended.
#[derive(PartialEq, Eq)]
enum Waited {
    Elapsed,
    ShutDown,
}

impl Backoff {
    /// Waits the current backoff (unless shutdown comes first), then doubles it.
    async fn wait(&mut self, shutdown: &CancellationToken) -> Waited {
        tokio::select! {
            _ = shutdown.cancelled() => return Waited::ShutDown,
            _ = tokio::time::sleep(self.0) => {}
        }
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        Waited::Elapsed
    }
}

/// How publishing persisted events (retried through NATS's faults) ended.
enum Published {
    All,
    /// The server can never take one of them (too large): retrying cannot fix it.
    Refused(PublishError),
    ShutDown,
}

/// What the persister needs to process batches.
#[derive(Clone)]
pub struct Persister {
    pub pool: PgPool,
    pub js: jetstream::Context,
    /// The connection batches are stored on, kept from one batch to the next. Why: sqlx
    /// pings a connection when the pool hands it out and again when it comes back, two
    /// round trips to Postgres around every batch's one. It is given back after a failure,
    /// so that the pool drops it if it is broken.
    held: Arc<Mutex<Option<PoolConnection<Postgres>>>>,
}

/// How a batch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, published and acked (`fresh` rows were new).
    Done { fresh: usize },
    /// Shutdown came first; nothing acked, the server will redeliver.
    Abandoned,
}

impl Persister {
    pub fn new(pool: PgPool, js: jetstream::Context) -> Persister {
        Persister {
            pool,
            js,
            held: Arc::default(),
        }
    }

    /// Stores `batch` on the held connection (taken from the pool first if there is none).
    async fn store_held(&self, batch: &[Incoming]) -> Result<Vec<Stored>, StoreError> {
        let mut held = self.held.lock().await;
        let conn = match held.as_mut() {
            Some(conn) => conn,
            None => held.insert(self.pool.acquire().await?),
        };
        let stored = store_on(conn, batch).await;
        if stored.is_err() {
            *held = None;
        }
        stored
    }

    /// Processes one batch (in stream order): stores it, then finishes each committed
    /// part. Public so tests can step the persister.
    pub async fn process(&self, messages: Vec<Pulled>, shutdown: &CancellationToken) -> Outcome {
        let Stage::Committed(parts) = self.store(messages, shutdown).await else {
            return Outcome::Abandoned;
        };
        let mut fresh = 0;
        for part in parts {
            match self.finish(part, shutdown).await {
                Outcome::Done { fresh: n } => fresh += n,
                Outcome::Abandoned => return Outcome::Abandoned,
            }
        }
        Outcome::Done { fresh }
    }

    /// The store half of a batch (in stream order): decodes it, dead-letters what cannot
    /// be decoded, and commits the rest, retrying the database's faults for as long as it
    /// takes and isolating poison messages.
    pub async fn store(&self, messages: Vec<Pulled>, shutdown: &CancellationToken) -> Stage {
        let size = messages.len();
        let mut decoded = Vec::with_capacity(size);
        for message in messages {
            match decode(&message) {
                Ok(incoming) => {
                    let span = message_span(&message, &incoming, size);
                    decoded.push(Delivery {
                        message,
                        incoming,
                        span,
                    });
                }
                Err(reason) => self.bury(&message, "unknown", &reason).await,
            }
        }
        metrics::histogram!(PERSIST_BATCH_SIZE).record(decoded.len() as f64);
        let mut backoff = Backoff::default();
        loop {
            match self.store_retrying(&decoded, shutdown).await {
                StoreAttempt::Stored(stored) => {
                    let part = Committed {
                        deliveries: decoded,
                        stored,
                    };
                    return Stage::Committed(vec![part]);
                }
                StoreAttempt::Refused(_) => {}
                StoreAttempt::ShutDown => return Stage::Abandoned,
            }
            match self.isolate(&mut decoded, shutdown).await {
                Isolated::Stored(parts) => return Stage::Committed(parts),
                Isolated::ShutDown => return Stage::Abandoned,
                Isolated::AllFailedAlike(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.0, "every message of a batch failed the same way: a fault of the database, not of the messages; retrying")
                }
            }
            if backoff.wait(shutdown).await == Waited::ShutDown {
                return Stage::Abandoned;
            }
        }
    }

    /// Stores each message of a failed batch alone; the ones that still fail are poison,
    /// unless every message of the batch failed with the same error: that is the database
    /// refusing everything (a trigger, a broken column), and dead-lettering the whole
    /// batch would bury good messages, so the batch is retried instead (`decoded` is
    /// left whole for it).
    async fn isolate(&self, decoded: &mut Vec<Delivery>, shutdown: &CancellationToken) -> Isolated {
        let mut stored = Vec::new();
        let mut failed = Vec::new();
        for (i, one) in decoded.iter().enumerate() {
            match self
                .store_retrying(std::slice::from_ref(one), shutdown)
                .await
            {
                StoreAttempt::Stored(rows) => stored.push((i, rows)),
                StoreAttempt::Refused(e) => failed.push((i, e)),
                StoreAttempt::ShutDown => return Isolated::ShutDown,
            }
        }
        let alike = failed
            .windows(2)
            .all(|w| w[0].1.signature() == w[1].1.signature());
        if decoded.len() > 1
            && failed.len() == decoded.len()
            && alike
            && let Some((_, e)) = failed.pop()
        {
            return Isolated::AllFailedAlike(e);
        }
        let mut poison = failed.into_iter().peekable();
        let mut rows = stored.into_iter().peekable();
        let mut parts = Vec::new();
        for (i, delivery) in std::mem::take(decoded).into_iter().enumerate() {
            if let Some((_, e)) = poison.next_if(|(at, _)| *at == i) {
                self.bury_poison(&delivery, &e).await;
            } else if let Some((_, stored)) = rows.next_if(|(at, _)| *at == i) {
                parts.push(Committed {
                    deliveries: vec![delivery],
                    stored,
                });
            }
        }
        Isolated::Stored(parts)
    }

    /// Dead-letters a message that cannot be stored, even alone.
    async fn bury_poison(&self, delivery: &Delivery, e: &StoreError) {
        let conversation = delivery
            .incoming
            .envelope
            .message
            .conversation_id
            .to_string();
        delivery.span.record("coachwire.outcome", "dead_lettered");
        delivery.span.record("otel.status_code", "error");
        self.bury(&delivery.message, &conversation, &e.to_string())
            .await;
    }

    /// Stores `messages`, retrying what a retry can fix (the database's faults) for as
    /// long as it takes.
    async fn store_retrying(
        &self,
        messages: &[Delivery],
        shutdown: &CancellationToken,
    ) -> StoreAttempt {
        let batch: Vec<Incoming> = messages.iter().map(|d| d.incoming.clone()).collect();
        let mut backoff = Backoff::default();
        let mut last_progress = tokio::time::Instant::now();
        loop {
            let writes = write_spans(messages);
            match self.store_held(&batch).await {
                Ok(stored) => return StoreAttempt::Stored(stored),
                Err(e) if !e.is_retriable() => {
                    failed(&writes);
                    return StoreAttempt::Refused(e);
                }
                Err(e) => {
                    failed(&writes);
                    tracing::warn!(error = %e, retry_in = ?backoff.0, "storing a batch failed; retrying")
                }
            }
            drop(writes);
            if last_progress.elapsed() >= PROGRESS_EVERY {
                for delivery in messages {
                    let _ = delivery.message.ack_with(AckKind::Progress).await;
                }
                last_progress = tokio::time::Instant::now();
            }
            if backoff.wait(shutdown).await == Waited::ShutDown {
                return StoreAttempt::ShutDown;
            }
        }
    }

    /// The finish half of a batch: publishes a committed part's persisted events, then
    /// acks its deliveries. Publishing is retried like storing. Parts must be finished in
    /// the order they were committed, or rooms would see a conversation's events out of
    /// order.
    pub async fn finish(&self, part: Committed, shutdown: &CancellationToken) -> Outcome {
        let Committed {
            deliveries: messages,
            stored,
        } = part;
        let fresh = stored.iter().filter(|s| s.row == Row::New).count();
        let mut publishes = Vec::with_capacity(stored.len());
        let mut events = Vec::with_capacity(stored.len());
        for (stored, delivery) in stored.into_iter().zip(&messages) {
            record_stored(&delivery.span, &stored);
            let publish = tracing::debug_span!(
                parent: &delivery.span,
                "persisted.publish",
                otel.kind = "producer",
                messaging.system = "nats",
            );
            events.push(PersistedEvent {
                envelope: stored.envelope,
                trace: propagation::trace_context(&publish),
            });
            publishes.push(publish);
        }
        match self.publish_retrying(&events, shutdown).await {
            Published::All => {}
            Published::ShutDown => return Outcome::Abandoned,
            Published::Refused(e) => {
                // The rows are committed: the rooms read what the persisted hop cannot
                // carry from Postgres (§7.4), so the batch is done, not stuck. One event
                // the server can never take refuses the whole batch, so the others go
                // one by one, in order, and only that one is left to Postgres.
                tracing::error!(error = %e, "a persisted event cannot be published; rooms will read it from Postgres");
                for event in &events {
                    let one = std::slice::from_ref(event);
                    if let Published::ShutDown = self.publish_retrying(one, shutdown).await {
                        return Outcome::Abandoned;
                    }
                }
            }
        }
        drop(publishes);
        for delivery in &messages {
            tracing::debug!(parent: &delivery.span, "persisted and acked");
            if let Err(e) = delivery.message.ack_with(AckKind::Ack).await {
                tracing::warn!(error = %e, "ack failed; the message will be redelivered and deduplicated");
            }
        }
        metrics::counter!(PERSISTED_TOTAL).increment(fresh as u64);
        Outcome::Done { fresh }
    }

    /// Publishes `events`, retrying what a retry can fix (a timeout, a stream being
    /// elected) for as long as it takes.
    async fn publish_retrying(
        &self,
        events: &[PersistedEvent],
        shutdown: &CancellationToken,
    ) -> Published {
        let mut backoff = Backoff::default();
        loop {
            let e = match publish_persisted(&self.js, events).await {
                Ok(()) => return Published::All,
                Err(e) if e.lasting() == Lasting::Permanent => return Published::Refused(e),
                Err(e) => e,
            };
            tracing::warn!(error = %e, retry_in = ?backoff.0, "publishing persisted events failed; retrying");
            if backoff.wait(shutdown).await == Waited::ShutDown {
                return Published::ShutDown;
            }
        }
    }

    /// Dead-letters a message and terminates its delivery.
    async fn bury(&self, message: &Pulled, conversation: &str, reason: &str) {
        let stream_seq = message.stream_sequence().unwrap_or(0);
        tracing::error!(stream_seq, reason, "dead-lettering a message");
        match dead_letter(
            &self.js,
            Author::Service,
            conversation,
            stream_seq,
            reason,
            message.payload().clone(),
        )
        .await
        {
            Ok(()) => {
                metrics::counter!(DEAD_LETTERS_TOTAL).increment(1);
                let _ = message.ack_with(AckKind::Term).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "dead-lettering failed; leaving it for redelivery")
            }
        }
    }
}

/// The span of one message's handling here, continuing the trace its headers carry.
fn message_span(message: &Pulled, incoming: &Incoming, batch_size: usize) -> Span {
    let span = tracing::debug_span!(
        parent: None,
        "persist",
        otel.kind = "consumer",
        messaging.system = "nats",
        coachwire.conversation_id = %incoming.envelope.message.conversation_id,
        coachwire.message_id = %incoming.envelope.message.id,
        coachwire.batch_size = batch_size,
        coachwire.seq = Empty,
        coachwire.outcome = Empty,
        otel.status_code = Empty,
    );
    propagation::continue_from_nats(&span, message.headers());
    propagation::link_both(&span, &Span::current());
    span
}

/// One span per message for a batch's Postgres transaction: each message's trace shows
/// the write it was part of, with the batch's true timing.
fn write_spans(messages: &[Delivery]) -> Vec<Span> {
    messages
        .iter()
        .map(|delivery| {
            tracing::debug_span!(
                parent: &delivery.span,
                "postgres.write",
                otel.kind = "client",
                db.system.name = "postgresql",
                db.operation.name = "store_batch",
                coachwire.batch_size = messages.len(),
                otel.status_code = Empty,
            )
        })
        .collect()
}

fn failed(spans: &[Span]) {
    for span in spans {
        span.record("otel.status_code", "error");
    }
}

fn record_stored(span: &Span, stored: &Stored) {
    if let Some(seq) = stored.envelope.event_seq() {
        span.record("coachwire.seq", seq.0);
    }
    span.record(
        "coachwire.outcome",
        match stored.row {
            Row::New => "stored",
            Row::Existing => "duplicate",
        },
    );
}

fn decode(message: &Pulled) -> Result<Incoming, String> {
    let stream_seq = message
        .stream_sequence()
        .ok_or("its delivery does not say where it is in the stream")?;
    Incoming::decode(stream_seq, message.payload())
}
