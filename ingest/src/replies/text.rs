//! A reply's text so far as the `REPLIES` stream holds it: its acked appends, read in
//! stream order and joined by offset. For a room that was not listening from the start,
//! and for ending a reply whose node is gone.

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use coachwire_shared::envelope::ReplyAppended;
use coachwire_shared::ids::{ConversationId, MessageId};
use coachwire_shared::subjects::{REPLIES_STREAM, reply_subject};

/// A reply's text, and its length in Unicode scalar values (what offsets count).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SoFar {
    pub text: String,
    pub length: u64,
}

impl SoFar {
    /// Adds a delta at `offset`; returns the part that was new (none for a repeat, and
    /// `None` for a delta past the end, which shows a piece was missed).
    pub fn add(&mut self, offset: u64, text: &str) -> Option<String> {
        if offset > self.length {
            return None;
        }
        let overlap = usize::try_from(self.length - offset).unwrap_or(usize::MAX);
        let new: String = text.chars().skip(overlap).collect();
        self.length += new.chars().count() as u64;
        self.text.push_str(&new);
        Some(new)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("reading a reply's text from the stream failed: {0}")]
pub struct ReadError(String);

/// Reads every append of the reply from the stream.
pub async fn so_far(
    js: &jetstream::Context,
    conversation: ConversationId,
    reply: MessageId,
) -> Result<SoFar, ReadError> {
    let stream = js
        .get_stream_no_info(REPLIES_STREAM)
        .await
        .map_err(|e| ReadError(e.to_string()))?;
    let subject = reply_subject(conversation, reply);
    let mut so_far = SoFar::default();
    let mut next = 1;
    loop {
        let message = match stream
            .direct_get_next_for_subject(subject.as_str(), Some(next))
            .await
        {
            Ok(message) => message,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(so_far),
            Err(e) => return Err(ReadError(e.to_string())),
        };
        next = message.sequence + 1;
        if let Ok(appended) = serde_json::from_slice::<ReplyAppended>(&message.payload) {
            so_far.add(appended.delta.offset, &appended.delta.text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_join_by_offset_and_a_repeat_or_a_gap_changes_nothing() {
        let mut so_far = SoFar::default();
        assert_eq!(so_far.add(0, "Hé").as_deref(), Some("Hé"));
        assert_eq!(so_far.add(2, "llo").as_deref(), Some("llo"));
        assert_eq!(so_far.add(0, "Hé").as_deref(), Some(""), "a repeat");
        assert_eq!(
            so_far.add(3, "lo w").as_deref(),
            Some(" w"),
            "an overlap adds its tail"
        );
        assert_eq!(so_far.add(9, "x"), None, "a gap");
        assert_eq!((so_far.text.as_str(), so_far.length), ("Héllo w", 7));
    }
}
