//! What the persister writes to NATS: persisted events and dead letters.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use coachwire_shared::envelope::MessageEnvelope;
use coachwire_shared::lasting::Lasting;
use coachwire_shared::subjects::{dead_letter_subject, persisted_subject};
use futures::future::try_join_all;
use std::future::IntoFuture;

/// Why a publish failed, with async-nats's kind kept: the kind decides whether trying
/// again can succeed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("encoding a persisted event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("publishing to JetStream failed: {0}")]
    Publish(#[from] jetstream::context::PublishError),
}

impl PublishError {
    /// Transient: a timeout, a lost connection, a stream being elected or recovered, a
    /// full ack window. Permanent: too large for the server, or not encodable.
    pub fn lasting(&self) -> Lasting {
        use jetstream::context::PublishErrorKind as Kind;
        match self {
            PublishError::Encode(_) => Lasting::Permanent,
            PublishError::Publish(e) => match e.kind() {
                Kind::MaxPayloadExceeded | Kind::WrongLastMessageId | Kind::WrongLastSequence => {
                    Lasting::Permanent
                }
                Kind::StreamNotFound
                | Kind::TimedOut
                | Kind::BrokenPipe
                | Kind::MaxAckPending
                | Kind::Other => Lasting::Transient,
            },
        }
    }
}

/// Publishes one persisted event per message and waits for every PubAck. The message id
/// is the `Nats-Msg-Id`, so a batch republished after a crash is deduplicated.
pub async fn publish_persisted(
    js: &jetstream::Context,
    events: &[(MessageEnvelope, Option<HeaderMap>)],
) -> Result<(), PublishError> {
    let mut pending = Vec::with_capacity(events.len());
    for (envelope, headers) in events {
        let payload = serde_json::to_vec(envelope)?;
        let mut message = PublishMessage::build()
            .payload(payload.into())
            .message_id(envelope.event_id().to_string());
        if let Some(headers) = headers {
            message = message.headers(headers.clone());
        }
        let subject = persisted_subject(envelope.message.conversation_id);
        let ack = js.send_publish(subject, message).await?;
        pending.push(ack.into_future());
    }
    try_join_all(pending).await?;
    Ok(())
}

/// Dead-letter header: why the message could not be stored.
pub const ERROR_HEADER: &str = "Coachwire-Error";
/// Dead-letter header: the message's sequence in the `MESSAGES` stream.
pub const STREAM_SEQ_HEADER: &str = "Coachwire-Stream-Seq";
/// Longest reason kept in a dead letter (a header, so bounded).
const MAX_REASON_CHARS: usize = 512;

/// Who writes a dead letter, which decides its `Nats-Msg-Id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Author {
    /// The service, on a delivery: `dlq-{stream_seq}`, so a persister that crashes between
    /// this publish and terminating the delivery re-publishes the same entry, and the
    /// stream drops the copy.
    Service,
    /// An operator command (`replay`, `dlq retry`): unique per failure, since an entry for
    /// the same stream sequence may have been published and removed inside the stream's
    /// duplicate window, which would swallow a re-publish silently.
    Operator,
}

/// Stores a message that cannot be persisted in the dead-letter stream, with the reason
/// and its original stream sequence, for `dlq list` / `dlq retry`.
pub async fn dead_letter(
    js: &jetstream::Context,
    author: Author,
    conversation: &str,
    stream_seq: u64,
    reason: &str,
    payload: bytes::Bytes,
) -> Result<(), PublishError> {
    let id = match author {
        Author::Service => format!("dlq-{stream_seq}"),
        Author::Operator => format!("dlq-{stream_seq}-{}", uuid::Uuid::now_v7()),
    };
    publish_dead_letter(js, conversation, stream_seq, reason, payload, id).await
}

async fn publish_dead_letter(
    js: &jetstream::Context,
    conversation: &str,
    stream_seq: u64,
    reason: &str,
    payload: bytes::Bytes,
    id: String,
) -> Result<(), PublishError> {
    let mut headers = HeaderMap::new();
    // Header values are one line: a multi-line database message would break the header.
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    headers.insert(ERROR_HEADER, reason.as_str());
    headers.insert(STREAM_SEQ_HEADER, stream_seq.to_string().as_str());
    let message = PublishMessage::build()
        .payload(payload)
        .headers(headers)
        .message_id(id);
    js.send_publish(dead_letter_subject(conversation), message)
        .await?
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetstream::context::{PublishError as NatsPublishError, PublishErrorKind as Kind};

    #[test]
    fn only_what_the_same_bytes_would_fail_again_is_permanent() {
        let lasting = |kind| PublishError::from(NatsPublishError::new(kind)).lasting();
        for kind in [
            Kind::MaxPayloadExceeded,
            Kind::WrongLastMessageId,
            Kind::WrongLastSequence,
        ] {
            assert_eq!(lasting(kind), Lasting::Permanent, "{kind}");
        }
        for kind in [
            Kind::StreamNotFound,
            Kind::TimedOut,
            Kind::BrokenPipe,
            Kind::MaxAckPending,
            Kind::Other,
        ] {
            assert_eq!(lasting(kind), Lasting::Transient, "{kind}");
        }
    }
}
