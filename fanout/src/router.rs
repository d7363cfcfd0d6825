//! The fanout loop: pull a batch of persisted messages (each several events of one
//! conversation), publish each to its room subject, flush, then ack. A crash before the ack republishes; nodes drop what they already
//! emitted (`seq <= cursor`), so at-least-once here is exactly-once at the socket.

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, Message};
use coachwire_shared::envelope::{MessageEnvelope, Persisted, PersistedEvent, RoomEvent};
use coachwire_shared::ids::ConversationId;
use coachwire_shared::nats::{self, DeclareError};
use coachwire_shared::subjects::{FANOUT_CONSUMER, PERSISTED_STREAM, room_subject};
use coachwire_shared::telemetry::propagation;
use futures::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Span;

/// Events per batch between flushes.
const MAX_BATCH: usize = 500;
const ACK_WAIT: Duration = Duration::from_secs(10);
const REOPEN_DELAY: Duration = Duration::from_secs(1);

/// Creates or updates the shared durable consumer, retrying while the cluster settles
/// or other fanouts declare it at the same moment. New deployments start at new events:
/// history is what `sync` and `coachwire-fanout replay` are for.
pub async fn ensure_consumer(js: &jetstream::Context) -> Result<PullConsumer, DeclareError> {
    let config = pull::Config {
        durable_name: Some(FANOUT_CONSUMER.into()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        deliver_policy: DeliverPolicy::New,
        max_ack_pending: 10_000,
        ..Default::default()
    };
    let what = format!("consumer {FANOUT_CONSUMER} on {PERSISTED_STREAM}");
    nats::declare(&what, || {
        js.create_consumer_on_stream(config.clone(), PERSISTED_STREAM)
    })
    .await
}

/// The room subject and payload that deliver `events` (of one conversation, in `seq`
/// order) to the nodes holding it: the one encoding both the router and `replay` publish.
pub fn room_event(
    conversation: ConversationId,
    events: Vec<PersistedEvent>,
) -> Result<(String, Vec<u8>), serde_json::Error> {
    let subject = room_subject(conversation);
    let payload = serde_json::to_vec(&RoomEvent::Messages(Persisted { events }))?;
    Ok((subject, payload))
}

/// Routes until `shutdown`, finishing the batch in hand.
pub async fn run(nats: async_nats::Client, consumer: PullConsumer, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let stream = match consumer
            .stream()
            .max_messages_per_batch(MAX_BATCH)
            .messages()
            .await
        {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "opening the pull stream failed");
                tokio::time::sleep(REOPEN_DELAY).await;
                continue;
            }
        };
        let mut batches = std::pin::pin!(
            stream
                .ready_chunks(MAX_BATCH)
                .take_until(shutdown.cancelled())
        );
        while let Some(batch) = batches.next().await {
            let messages: Vec<Message> = batch.into_iter().filter_map(Result::ok).collect();
            route_batch(&nats, &messages).await;
        }
    }
}

/// The span of one event's routing, continuing the message's trace.
fn route_span(event: &PersistedEvent) -> Span {
    let envelope = &event.envelope;
    let span = tracing::debug_span!(
        "fanout.route",
        otel.kind = "producer",
        messaging.system = "nats",
        coachwire.conversation_id = %envelope.message.conversation_id,
        coachwire.message_id = %envelope.message.id,
        coachwire.seq = envelope.event_seq().map(|seq| seq.0),
    );
    propagation::continue_from_fields(&span, &event.trace);
    span
}

/// A `PERSISTED` message: a batch of events, or a single envelope as persisters wrote
/// them before batching (06868f8), which a stream may still hold after an upgrade.
fn decode(payload: &[u8]) -> Option<Persisted> {
    serde_json::from_slice::<Persisted>(payload)
        .ok()
        .or_else(|| {
            let envelope = serde_json::from_slice::<MessageEnvelope>(payload).ok()?;
            Some(Persisted {
                events: vec![PersistedEvent::untraced(envelope)],
            })
        })
}

/// The room message of a persisted one, with each event under a span of its own (kept
/// open until the publish) whose context the room's `room.emit` continues; `None` for an
/// empty one.
fn routed(persisted: Persisted) -> Option<(String, Vec<u8>, Vec<Span>)> {
    let conversation = persisted.conversation()?;
    let (events, spans): (Vec<PersistedEvent>, Vec<Span>) = persisted
        .events
        .into_iter()
        .map(|event| {
            let span = route_span(&event);
            let trace = propagation::trace_context(&span);
            (PersistedEvent { trace, ..event }, span)
        })
        .unzip();
    let (subject, payload) = room_event(conversation, events).ok()?;
    Some((subject, payload, spans))
}

/// Publishes a batch to the room subjects (one room message per persisted one) and acks
/// it once the server has it all.
pub async fn route_batch(nats: &async_nats::Client, messages: &[Message]) {
    coachwire_shared::metrics::record_pulled(FANOUT_CONSUMER, messages);
    for message in messages {
        // Dropped, not retried: the same bytes would fail again. It is acked below with
        // the rest of the batch.
        let Some((subject, payload, _spans)) = decode(&message.payload).and_then(routed) else {
            tracing::error!("undecodable persisted message; dropping it");
            continue;
        };
        if let Err(e) = nats.publish(subject, payload.into()).await {
            tracing::warn!(error = %e, "room publish failed; the event will be redelivered");
            return;
        }
    }
    if let Err(e) = nats.flush().await {
        tracing::warn!(error = %e, "flush failed; the batch will be redelivered");
        return;
    }
    for message in messages {
        let _ = message.ack().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVELOPE: &str = r#"{"message": {"id": "0193a4c0-0000-7000-8000-000000000001",
        "conversationId": "0193a4c0-0000-7000-8000-000000000002",
        "userId": "0193a4c0-0000-7000-8000-000000000003", "content": "hi", "type": "user",
        "metadata": {}, "clientMessageId": null, "seq": 7,
        "createdAt": "2026-12-07T12:00:00.000Z"}, "origin": null}"#;

    #[test]
    fn a_batch_and_a_single_envelope_of_before_batching_both_decode() {
        let single = decode(ENVELOPE.as_bytes()).expect("a single envelope");
        assert_eq!(single.events.len(), 1);
        let batch = serde_json::to_vec(&Persisted {
            events: vec![single.events[0].clone(), single.events[0].clone()],
        })
        .expect("encodes");
        let decoded = decode(&batch).expect("a batch");
        assert_eq!(decoded.events.len(), 2);
        assert_eq!(decoded.events[1].envelope.event_seq().map(|s| s.0), Some(7));
        assert!(decode(b"{\"neither\": 1}").is_none());
    }
}
