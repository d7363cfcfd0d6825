//! What the persister writes to NATS: persisted events and dead letters.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use coachwire_shared::envelope::PersistedEvent;
use coachwire_shared::ids::ConversationId;
use coachwire_shared::lasting::Lasting;
use coachwire_shared::subjects::{dead_letter_subject, persisted_subject};
use futures::future::try_join_all;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
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

/// Largest payload of one `PERSISTED` message: well below the server's `max_payload`
/// (1 MiB by default), so a batch of long messages is split rather than refused.
const MAX_PERSISTED_BYTES: usize = 256 * 1024;

/// Most events in one `PERSISTED` message. A room emits a message's events to its
/// sockets in one go, and a socket's queue holds 128 packets (ingest's
/// `SOCKET_BUFFER_PACKETS`): a burst must leave room for the rest of its traffic.
const MAX_PERSISTED_EVENTS: usize = 32;

/// Publishes `events` (in stream order) as one `PERSISTED` message per conversation,
/// split where one would pass [`MAX_PERSISTED_BYTES`] or [`MAX_PERSISTED_EVENTS`], and
/// waits for every PubAck. Each
/// message's `Nats-Msg-Id` names its first and last event, so a batch republished alike
/// after a crash is deduplicated; one grouped differently is dropped by the rooms
/// (`seq <= cursor`).
pub async fn publish_persisted(
    js: &jetstream::Context,
    events: &[PersistedEvent],
) -> Result<(), PublishError> {
    let mut pending = Vec::new();
    for (conversation, batch) in batches(events)? {
        let message = PublishMessage::build()
            .payload(batch.payload.into())
            .message_id(batch.id);
        let ack = js
            .send_publish(persisted_subject(conversation), message)
            .await?;
        pending.push(ack.into_future());
    }
    try_join_all(pending).await?;
    Ok(())
}

/// One `PERSISTED` message, encoded.
struct Batch {
    id: String,
    payload: Vec<u8>,
}

/// The encoding of [`Persisted`](coachwire_shared::envelope::Persisted) from events encoded one by one (to measure them).
#[derive(Serialize)]
struct Encoded<'a> {
    events: &'a [Box<RawValue>],
}

/// `events` grouped by conversation (stream order kept within each) and cut into
/// messages of at most [`MAX_PERSISTED_EVENTS`] and [`MAX_PERSISTED_BYTES`] (an event
/// larger than that alone).
fn batches(events: &[PersistedEvent]) -> Result<Vec<(ConversationId, Batch)>, PublishError> {
    let mut groups: BTreeMap<ConversationId, Vec<&PersistedEvent>> = BTreeMap::new();
    for event in events {
        let conversation = event.envelope.message.conversation_id;
        groups.entry(conversation).or_default().push(event);
    }
    let mut batches = Vec::new();
    for (conversation, group) in groups {
        let mut encoded: Vec<Box<RawValue>> = Vec::new();
        let (mut bytes, mut first) = (0, 0);
        for (i, event) in group.iter().enumerate() {
            let raw = serde_json::value::to_raw_value(event)?;
            let full = bytes + raw.get().len() > MAX_PERSISTED_BYTES
                || encoded.len() == MAX_PERSISTED_EVENTS;
            if !encoded.is_empty() && full {
                batches.push((conversation, batch(&group[first..i], &encoded)?));
                (encoded, bytes, first) = (Vec::new(), 0, i);
            }
            bytes += raw.get().len() + 1;
            encoded.push(raw);
        }
        batches.push((conversation, batch(&group[first..], &encoded)?));
    }
    Ok(batches)
}

fn batch(events: &[&PersistedEvent], encoded: &[Box<RawValue>]) -> Result<Batch, PublishError> {
    let id = |event: Option<&&PersistedEvent>| {
        event
            .map(|e| e.envelope.event_id().to_string())
            .unwrap_or_default()
    };
    Ok(Batch {
        id: format!("{}..{}", id(events.first()), id(events.last())),
        payload: serde_json::to_vec(&Encoded { events: encoded })?,
    })
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

    use coachwire_shared::envelope::Persisted;
    use coachwire_shared::ids::MessageId;
    use coachwire_shared::message::now_millis;

    /// An event as it arrives from the stream (its wire form).
    fn event(conversation: ConversationId, content: &str) -> PersistedEvent {
        let envelope = serde_json::json!({
            "message": {
                "id": MessageId::generate(), "conversationId": conversation,
                "userId": conversation, "content": content, "type": "user", "metadata": {},
                "clientMessageId": null, "seq": null, "createdAt": now_millis(),
            },
            "origin": null,
        });
        PersistedEvent::untraced(serde_json::from_value(envelope).expect("an envelope"))
    }

    fn decoded(batch: &Batch) -> Vec<String> {
        let persisted: Persisted = serde_json::from_slice(&batch.payload).expect("decodes");
        persisted
            .events
            .into_iter()
            .map(|e| e.envelope.message.content)
            .collect()
    }

    #[test]
    fn events_go_out_one_message_per_conversation_in_stream_order() {
        let (a, b) = (
            ConversationId(uuid::Uuid::new_v4()),
            ConversationId(uuid::Uuid::new_v4()),
        );
        let events = [
            event(a, "a1"),
            event(b, "b1"),
            event(a, "a2"),
            event(a, "a3"),
        ];
        let batches = batches(&events).expect("encodes");
        assert_eq!(batches.len(), 2);
        for (conversation, batch) in &batches {
            let expected: &[&str] = if *conversation == a {
                &["a1", "a2", "a3"]
            } else {
                &["b1"]
            };
            assert_eq!(decoded(batch), expected);
        }
        let (_, of_a) = batches.iter().find(|(c, _)| *c == a).expect("a's batch");
        let ids = format!(
            "{}..{}",
            events[0].envelope.event_id(),
            events[3].envelope.event_id()
        );
        assert_eq!(of_a.id, ids, "the id names its first and last event");
    }

    #[test]
    fn a_batch_past_the_byte_bound_is_split_and_nothing_is_lost() {
        let a = ConversationId(uuid::Uuid::new_v4());
        let long = "x".repeat(MAX_PERSISTED_BYTES / 3);
        let events: Vec<_> = (0..7).map(|_| event(a, &long)).collect();
        let split = batches(&events).expect("encodes");
        assert_eq!(
            split.len(),
            4,
            "two events fit under the bound, three do not"
        );
        for (_, batch) in &split {
            assert!(
                batch.payload.len() <= MAX_PERSISTED_BYTES,
                "{}",
                batch.payload.len()
            );
        }
        let contents: usize = split.iter().map(|(_, b)| decoded(b).len()).sum();
        assert_eq!(contents, 7);
        let many: Vec<_> = (0..MAX_PERSISTED_EVENTS + 1)
            .map(|_| event(a, "m"))
            .collect();
        let cut = batches(&many).expect("encodes");
        let sizes: Vec<usize> = cut.iter().map(|(_, b)| decoded(b).len()).collect();
        assert_eq!(sizes, [MAX_PERSISTED_EVENTS, 1]);
        let huge = [event(a, &"y".repeat(MAX_PERSISTED_BYTES))];
        let alone = batches(&huge).expect("encodes");
        assert_eq!(alone.len(), 1, "an event over the bound goes alone");
    }

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
