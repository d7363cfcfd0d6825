//! The durable path of a message: id → (already stored?) → publish → PubAck → ack.
//!
//! "Already stored?" is a Postgres lookup, asked only where JetStream's duplicate window
//! cannot answer: for a `clientMessageId` that is not a recent UUIDv7. A recent one is a
//! first send or a retry inside the window, and the stream's deduplication answers it
//! without a round trip to Postgres on the ack path.
//!
//! Each caller awaits only its own PubAck: publishes from all sockets are pipelined on one
//! connection, so a slow ack never holds up another socket. A PubAck that does not come in
//! time answers `UNAVAILABLE` (the message may still be stored: the client's retry with the
//! same `clientMessageId` is deduplicated by JetStream and, after its window, by Postgres).

use crate::socket::order::Ticket;
use async_nats::jetstream::{self, message::PublishMessage};
use coachwire_shared::db;
use coachwire_shared::envelope::{MessageEnvelope, Origin, Version};
use coachwire_shared::error::{Detail, ErrorCode, Failure};
use coachwire_shared::ids::{ClientMessageId, ConversationId, MessageId, UserId};
use coachwire_shared::message::{
    Message, MessagePayload, MessageStatus, MessageType, Metadata, ReplyStartPayload, now_millis,
};
use coachwire_shared::metrics::MESSAGES_TOTAL;
use coachwire_shared::nats::DUPLICATE_WINDOW;
use coachwire_shared::replies::MessageAck;
use coachwire_shared::subjects::{MESSAGES_STREAM, message_subject};
use coachwire_shared::telemetry::propagation;
use sqlx::PgPool;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tracing::{Instrument, Span, field::Empty};

/// A retry lookup must not stall the send path when Postgres is slow or down (§7.5: ingest
/// keeps accepting then); JetStream's duplicate window still catches recent retries.
const STORED_LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);
/// A retry whose `clientMessageId` (a UUIDv7) was minted less than this long ago is
/// caught by JetStream's duplicate window, which counts from the first publish, after the
/// minting; half the window leaves room for a client clock minutes ahead of ours.
const CAUGHT_BY_THE_STREAM: Duration = Duration::from_secs(DUPLICATE_WINDOW.as_secs() / 2);
/// How long lookups are skipped after one failed: short enough that lookups resume within
/// seconds of Postgres coming back.
const LOOKUP_PAUSE: Duration = Duration::from_secs(2);

/// A validated `message` (or `reply_start`) payload with its ids parsed.
#[derive(Clone, Debug)]
pub struct Draft {
    pub conversation: ConversationId,
    pub content: String,
    pub kind: MessageType,
    pub metadata: Metadata,
    pub client_message_id: Option<ClientMessageId>,
    pub status: MessageStatus,
}

impl TryFrom<MessagePayload> for Draft {
    type Error = Failure;

    fn try_from(p: MessagePayload) -> Result<Self, Failure> {
        Ok(Draft {
            conversation: p.conversation_id,
            content: p.content,
            kind: p.kind,
            metadata: p.metadata,
            client_message_id: p.client_message_id,
            status: MessageStatus::Complete,
        })
    }
}

impl TryFrom<ReplyStartPayload> for Draft {
    type Error = Failure;

    /// A streamed reply starts as an AI message with no text yet (§14).
    fn try_from(p: ReplyStartPayload) -> Result<Self, Failure> {
        Ok(Draft {
            conversation: p.conversation_id,
            content: String::new(),
            kind: MessageType::Ai,
            metadata: p.metadata,
            client_message_id: p.client_message_id,
            status: MessageStatus::Streaming,
        })
    }
}

pub struct Acceptor {
    js: jetstream::Context,
    pool: PgPool,
    lookups: Breaker,
}

impl Acceptor {
    pub fn new(js: jetstream::Context, pool: PgPool) -> Self {
        Self {
            js,
            pool,
            lookups: Breaker::default(),
        }
    }

    /// Makes `draft` durable on behalf of `author`; `origin` is the sending socket, if any.
    pub async fn accept(
        &self,
        author: UserId,
        draft: Draft,
        origin: Option<Origin>,
        turn: Option<Ticket>,
    ) -> Result<MessageAck, Failure> {
        let id = match draft.client_message_id {
            Some(cmid) => MessageId::derive(author, cmid),
            None => MessageId::generate(),
        };
        Span::current().record("coachwire.message_id", tracing::field::display(id));
        let conversation = draft.conversation;
        if draft
            .client_message_id
            .is_some_and(|cmid| !cmid.minted_within(CAUGHT_BY_THE_STREAM, SystemTime::now()))
            && let Some(stored) = self.stored(id).await
        {
            return retry_of(stored, conversation);
        }
        let envelope = MessageEnvelope {
            message: Message {
                id,
                conversation_id: draft.conversation,
                user_id: author,
                content: draft.content,
                kind: draft.kind,
                metadata: draft.metadata,
                client_message_id: draft.client_message_id,
                seq: None,
                status: draft.status,
                created_at: now_millis(),
            },
            origin,
            version: None,
        };
        let ack = self.publish(&envelope, turn).await?;
        if ack.duplicate {
            let original = match self.original(ack.sequence).await {
                Some(original) => Some(original),
                None => self.stored(id).await,
            };
            return retry_of(original.unwrap_or(envelope.message), conversation);
        }
        Ok(outcome(envelope.message, false))
    }

    /// Makes a later version of a message durable (the end of a streamed reply, §14). A
    /// copy already in the stream (another process ended the same reply) is the same end.
    pub async fn publish_version(&self, version: &Message) -> Result<(), Failure> {
        let envelope = MessageEnvelope {
            // As accepted, an event carries no seq (the persister assigns it and refuses
            // one that has it); a reply registered from its stored row has its start's.
            message: Message {
                seq: None,
                ..version.clone()
            },
            origin: None,
            version: Some(Version::default()),
        };
        self.publish(&envelope, None).await.map(drop)
    }

    /// The JetStream context the path publishes with, for the streamed replies' appends.
    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    /// Publishes once it is `turn`'s turn, releases the turn as soon as the publish is
    /// queued, then awaits only this message's PubAck.
    async fn publish(
        &self,
        envelope: &MessageEnvelope,
        turn: Option<Ticket>,
    ) -> Result<jetstream::publish::PublishAck, Failure> {
        let subject = message_subject(envelope.message.conversation_id);
        let span = tracing::debug_span!(
            "jetstream.publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %subject,
            coachwire.message_id = %envelope.message.id,
            otel.status_code = Empty,
        );
        let payload = serde_json::to_vec(envelope).map_err(|_| Failure::internal())?;
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .message_id(envelope.event_id().to_string());
        if let Some(headers) = propagation::nats_headers(&span) {
            message = message.headers(headers);
        }
        async {
            if let Some(turn) = &turn {
                turn.wait_turn().await;
            }
            let pending = self.js.send_publish(subject, message).await.map_err(|e| {
                tracing::warn!(error = %e, "publish failed");
                Failure::unavailable()
            })?;
            drop(turn);
            pending.await.map_err(|e| {
                tracing::warn!(error = %e, "no PubAck");
                Failure::unavailable()
            })
        }
        .instrument(span.clone())
        .await
        .inspect_err(|_| {
            span.record("otel.status_code", "error");
        })
    }

    /// The message as already persisted, if it is (a retry after the duplicate window).
    /// While Postgres is failing the lookup is skipped altogether, so sends keep their
    /// normal latency instead of each waiting out the lookup's timeout (§7.5).
    async fn stored(&self, id: MessageId) -> Option<Message> {
        let probe = self.lookups.admit()?;
        match tokio::time::timeout(STORED_LOOKUP_TIMEOUT, db::message_by_id(&self.pool, id)).await {
            Ok(Ok(found)) => {
                probe.succeeded();
                found
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "retry lookup failed; relying on the stream's dedupe");
                probe.failed();
                None
            }
            Err(_) => {
                probe.failed();
                None
            }
        }
    }

    /// The first copy of a duplicate still in the stream, so every retry acks the same
    /// `createdAt` as the first send.
    async fn original(&self, sequence: u64) -> Option<Message> {
        let stream = self.js.get_stream_no_info(MESSAGES_STREAM).await.ok()?;
        let raw = stream.direct_get(sequence).await.ok()?;
        serde_json::from_slice::<MessageEnvelope>(&raw.payload)
            .ok()
            .map(|e| e.message)
    }
}

/// A circuit breaker for retry lookups: after one fails, lookups stop for
/// [`LOOKUP_PAUSE`]; then a single probe is let through while the others still skip, and
/// its success closes the breaker. A Postgres outage so costs one slow send per pause
/// rather than every send. What a skipped lookup would have caught, JetStream's duplicate
/// window (10 min) still catches, and past it the persister's primary key: the message is
/// stored once either way.
#[derive(Default)]
struct Breaker(Mutex<Circuit>);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Circuit {
    #[default]
    Closed,
    Open {
        until: Instant,
    },
    Probing,
}

/// Permission for one lookup; report how it went.
#[must_use]
struct Trial<'a> {
    breaker: &'a Breaker,
}

impl Breaker {
    /// `None` when this lookup must be skipped.
    fn admit(&self) -> Option<Trial<'_>> {
        let mut circuit = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match *circuit {
            Circuit::Closed => {}
            Circuit::Open { until } if Instant::now() >= until => *circuit = Circuit::Probing,
            Circuit::Open { .. } | Circuit::Probing => return None,
        }
        Some(Trial { breaker: self })
    }

    fn set(&self, to: Circuit) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Trial<'_> {
    fn succeeded(self) {
        self.breaker.set(Circuit::Closed);
    }

    fn failed(self) {
        self.breaker.set(Circuit::Open {
            until: Instant::now() + LOOKUP_PAUSE,
        });
    }
}

/// Records how a request for `span` ended: its outcome, the error code of a refusal, and
/// an error status only for the server's own failures (a refusal is the client's).
/// How a send was answered: the label of `coachwire_messages_total` and of its span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Accepted,
    /// A retry of a message already accepted (§7.2).
    Duplicate,
    /// The client's fault: validation, auth, limits.
    Rejected,
    /// The server's: NATS did not confirm, Postgres could not answer, or a bug. The client
    /// retries with the same `clientMessageId`.
    Unavailable,
}

impl SendOutcome {
    pub const ALL: [SendOutcome; 4] = [
        SendOutcome::Accepted,
        SendOutcome::Duplicate,
        SendOutcome::Rejected,
        SendOutcome::Unavailable,
    ];

    pub fn of(answer: &Result<MessageAck, Failure>) -> SendOutcome {
        match answer {
            Ok(ack) if ack.duplicate => SendOutcome::Duplicate,
            Ok(_) => SendOutcome::Accepted,
            Err(f) if matches!(f.code, ErrorCode::Unavailable | ErrorCode::Internal) => {
                SendOutcome::Unavailable
            }
            Err(_) => SendOutcome::Rejected,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SendOutcome::Accepted => "accepted",
            SendOutcome::Duplicate => "duplicate",
            SendOutcome::Rejected => "rejected",
            SendOutcome::Unavailable => "unavailable",
        }
    }
}

/// Counts a send's answer: socket, HTTP and streamed-reply starts alike.
pub fn count_outcome(answer: &Result<MessageAck, Failure>) -> SendOutcome {
    let outcome = SendOutcome::of(answer);
    metrics::counter!(MESSAGES_TOTAL, "outcome" => outcome.label()).increment(1);
    outcome
}

/// Counts a send's answer and records it on its span.
pub fn record_outcome(span: &Span, answer: &Result<MessageAck, Failure>) {
    let outcome = count_outcome(answer);
    span.record("coachwire.outcome", outcome.label());
    if let Err(failure) = answer {
        span.record("coachwire.error_code", failure.code.as_str());
        if outcome == SendOutcome::Unavailable {
            span.record("otel.status_code", "error");
        }
    }
    tracing::debug!(parent: span, "answered");
}

/// The answer to a send whose id was already used: a retry if it went to the same
/// conversation (§7.2); otherwise the client reused a `clientMessageId`, which would make
/// the second conversation's message vanish behind the first, so it is refused.
fn retry_of(first: Message, conversation: ConversationId) -> Result<MessageAck, Failure> {
    if first.conversation_id != conversation {
        return Err(Failure::validation(vec![Detail::new(
            "/clientMessageId",
            "was already used for a message in another conversation",
        )]));
    }
    Ok(outcome(first, true))
}

fn outcome(message: Message, duplicate: bool) -> MessageAck {
    MessageAck {
        success: true,
        message,
        duplicate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failed_lookup_pauses_lookups_then_lets_one_probe_through() {
        let breaker = Breaker::default();
        assert!(breaker.admit().is_some_and(|p| {
            p.failed();
            true
        }));
        assert!(breaker.admit().is_none(), "paused after a failure");
        tokio::time::advance(LOOKUP_PAUSE).await;
        let probe = breaker.admit().expect("one probe after the pause");
        assert!(breaker.admit().is_none(), "only one probe at a time");
        probe.failed();
        assert!(breaker.admit().is_none(), "a failed probe pauses again");
        tokio::time::advance(LOOKUP_PAUSE).await;
        breaker.admit().expect("the next probe").succeeded();
        for _ in 0..3 {
            breaker
                .admit()
                .expect("closed again: every lookup runs")
                .succeeded();
        }
    }
}
