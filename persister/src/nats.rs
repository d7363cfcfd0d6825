//! What the persister writes to NATS: persisted events and dead letters.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use coachwire_shared::envelope::MessageEnvelope;
use coachwire_shared::subjects::{dead_letter_subject, persisted_subject};
use futures::future::try_join_all;
use std::future::IntoFuture;

/// Headers carried over from the accepted message (the trace context) to what follows it.
pub const PROPAGATED_HEADERS: &[&str] = &["traceparent", "tracestate"];

#[derive(Debug, thiserror::Error)]
#[error("publishing to JetStream failed: {0}")]
pub struct PublishError(String);

/// Publishes one persisted event per message and waits for every PubAck. The message id
/// is the `Nats-Msg-Id`, so a batch republished after a crash is deduplicated.
pub async fn publish_persisted(
    js: &jetstream::Context,
    events: &[(MessageEnvelope, Option<HeaderMap>)],
) -> Result<(), PublishError> {
    let mut pending = Vec::with_capacity(events.len());
    for (envelope, headers) in events {
        let payload = serde_json::to_vec(envelope).map_err(|e| PublishError(e.to_string()))?;
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .message_id(envelope.message.id.to_string());
        if let Some(headers) = headers {
            message = message.headers(headers.clone());
        }
        let subject = persisted_subject(envelope.message.conversation_id);
        let ack = js
            .send_publish(subject, message)
            .await
            .map_err(|e| PublishError(e.to_string()))?;
        pending.push(ack.into_future());
    }
    try_join_all(pending)
        .await
        .map_err(|e| PublishError(e.to_string()))?;
    Ok(())
}

/// Keeps only the trace headers of an incoming message.
pub fn propagated(headers: Option<&HeaderMap>) -> Option<HeaderMap> {
    let headers = headers?;
    let mut out = HeaderMap::new();
    for name in PROPAGATED_HEADERS {
        if let Some(value) = headers.get(*name) {
            out.insert(*name, value.clone());
        }
    }
    Some(out)
}

/// Stores a message that cannot be persisted in the dead-letter stream, with the reason
/// and its original stream sequence, for `dlq list` / `dlq retry`.
pub async fn dead_letter(
    js: &jetstream::Context,
    conversation: &str,
    stream_seq: u64,
    reason: &str,
    payload: bytes::Bytes,
) -> Result<(), PublishError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Coachwire-Error",
        reason.chars().take(512).collect::<String>().as_str(),
    );
    headers.insert("Coachwire-Stream-Seq", stream_seq.to_string().as_str());
    let message = PublishMessage::build()
        .payload(payload)
        .headers(headers)
        .message_id(format!("dlq-{stream_seq}"));
    js.send_publish(dead_letter_subject(conversation), message)
        .await
        .map_err(|e| PublishError(e.to_string()))?
        .await
        .map_err(|e| PublishError(e.to_string()))?;
    Ok(())
}
