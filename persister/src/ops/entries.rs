//! A dead letter as the operator commands see it: the original `MESSAGES` payload, with
//! the reason and the original stream sequence in headers
//! (`crate::nats::dead_letter`). Read from the dead-letter stream by
//! sequence; named by its message id or its original stream sequence (an undecodable
//! payload has no id).

use super::connect;
use super::error::{Doing, OpsError};
use crate::nats::{ERROR_HEADER, STREAM_SEQ_HEADER};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use coachwire_shared::envelope::MessageEnvelope;
use coachwire_shared::ids::ConversationId;
use coachwire_shared::subjects::DEAD_LETTER_ALL;
use serde::Serialize;
use std::str::FromStr;
use uuid::Uuid;

/// How an operator names a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryRef {
    Id(Uuid),
    StreamSeq(u64),
}

impl FromStr for EntryRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(seq) = s.parse::<u64>() {
            return Ok(Self::StreamSeq(seq));
        }
        coachwire_shared::ids::MessageId::parse(s)
            .map(|id| Self::Id(id.0))
            .ok_or_else(|| format!("{s:?} is neither a message id (UUID) nor a stream sequence"))
    }
}

impl std::fmt::Display for EntryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::StreamSeq(seq) => seq.fmt(f),
        }
    }
}

/// One dead letter as read from the stream.
pub struct Entry {
    /// Its own sequence in the dead-letter stream (what `delete_message` takes).
    pub dlq_seq: u64,
    /// The conversation part of its subject, reused when it is dead-lettered again.
    pub subject_conversation: String,
    pub stream_seq: u64,
    pub reason: String,
    pub failed_at: DateTime<Utc>,
    pub payload: Bytes,
    pub envelope: Option<MessageEnvelope>,
}

impl Entry {
    fn from_message(message: StreamMessage) -> Self {
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
        let envelope = serde_json::from_slice::<MessageEnvelope>(&message.payload).ok();
        Self {
            dlq_seq: message.sequence,
            subject_conversation: message
                .subject
                .as_str()
                .rsplit('.')
                .next()
                .unwrap_or("unknown")
                .to_string(),
            stream_seq: header(STREAM_SEQ_HEADER)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            reason: header(ERROR_HEADER).unwrap_or_default(),
            failed_at: connect::to_chrono(message.time),
            payload: message.payload,
            envelope,
        }
    }

    pub fn id(&self) -> String {
        match &self.envelope {
            Some(e) => e.message.id.to_string(),
            None => self.stream_seq.to_string(),
        }
    }

    pub fn matches(&self, wanted: EntryRef) -> bool {
        match wanted {
            EntryRef::Id(id) => self.envelope.as_ref().is_some_and(|e| e.message.id.0 == id),
            EntryRef::StreamSeq(seq) => self.stream_seq == seq,
        }
    }

    pub fn listed(&self) -> Listed {
        Listed {
            id: self.id(),
            conversation_id: self
                .envelope
                .as_ref()
                .map(|e| e.message.conversation_id)
                .or_else(|| ConversationId::parse(&self.subject_conversation)),
            stream_seq: self.stream_seq,
            reason: self.reason.clone(),
            failed_at: self.failed_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }
}

/// Reads entries oldest first, at most `limit`. Reads by sequence (skipping deleted ones)
/// from the stream leader, so an entry this process just removed is never listed.
pub async fn read_entries(stream: &Stream, limit: Option<usize>) -> Result<Vec<Entry>, OpsError> {
    let mut entries = Vec::new();
    let mut next = 1;
    while limit.is_none_or(|l| entries.len() < l) {
        let read = stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(DEAD_LETTER_ALL)
            .send()
            .await;
        match read {
            Ok(message) => {
                next = message.sequence + 1;
                entries.push(Entry::from_message(message));
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(e).doing("reading the dead letters"),
        }
    }
    Ok(entries)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    pub id: String,
    pub conversation_id: Option<ConversationId>,
    pub stream_seq: u64,
    pub reason: String,
    pub failed_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_named_by_uuid_or_by_stream_sequence() {
        let id = "0190f0c2-5d7e-7c3a-8b1e-2f4a5b6c7d8e";
        let table: &[(&str, Option<EntryRef>, &str)] = &[
            (
                "42",
                Some(EntryRef::StreamSeq(42)),
                "an original stream sequence",
            ),
            (
                id,
                Some(EntryRef::Id(Uuid::parse_str(id).expect("uuid"))),
                "a message id",
            ),
            ("-1", None, "sequences are positive"),
            (
                "0190f0c25d7e7c3a8b1e2f4a5b6c7d8e",
                None,
                "ids are hyphenated",
            ),
            ("poison", None, "neither"),
        ];
        for (input, expected, reason) in table {
            assert_eq!(
                input.parse::<EntryRef>().ok(),
                *expected,
                "{input}: {reason}"
            );
        }
    }
}
