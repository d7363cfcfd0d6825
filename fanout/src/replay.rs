//! `coachwire-fanout replay` (§12): re-emits persisted messages from Postgres to their
//! conversation's room, for when rooms missed events the fanout never saw (a restored
//! backup, a lost delivery).
//!
//! Re-emitting is safe because of what the nodes already do: each room keeps a cursor
//! and drops every event with `seq <= cursor`, so a socket that had a message never sees
//! it twice, and one that missed it gets it in `seq` order. The events are published
//! exactly as the router publishes them ([`router::room_event`]), with no origin: their
//! senders had their acks long ago.

use crate::router;
use coachwire_shared::db;
use coachwire_shared::envelope::PersistedEvent;
use coachwire_shared::ids::{ConversationId, Seq};
use serde::Serialize;
use sqlx::PgPool;

/// Rows read and published per round trip: large enough to stream quickly, small
/// enough that a long conversation never sits in memory whole.
const PAGE: i64 = 500;

/// The inclusive `seq` range to re-emit; `to: None` runs to the conversation's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqRange {
    from: Seq,
    to: Option<Seq>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("--from-seq must be 1 or more (got {0})")]
    FromBelowOne(i64),
    #[error("--to-seq {to} is below --from-seq {from}")]
    Reversed { from: i64, to: i64 },
}

impl SeqRange {
    pub fn new(from: i64, to: Option<i64>) -> Result<Self, RangeError> {
        if from < 1 {
            return Err(RangeError::FromBelowOne(from));
        }
        if let Some(to) = to
            && to < from
        {
            return Err(RangeError::Reversed { from, to });
        }
        Ok(Self {
            from: Seq(from),
            to: to.map(Seq),
        })
    }

    fn contains(&self, seq: Seq) -> bool {
        seq >= self.from && self.to.is_none_or(|to| seq <= to)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading messages from Postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("encoding a room event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("publishing to the room: {0}")]
    Publish(#[from] async_nats::PublishError),
    #[error("flushing to NATS: {0}")]
    Flush(#[from] async_nats::client::FlushError),
}

/// What a replay did (`--json` prints it as is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Room events published (one per message in the range).
    pub emitted: u64,
}

/// Publishes every persisted message of `conversation` in `range` to its room, in `seq`
/// order, and returns once NATS has them all (flushed).
pub async fn replay(
    pool: &PgPool,
    nats: &async_nats::Client,
    conversation: ConversationId,
    range: SeqRange,
) -> Result<ReplayReport, ReplayError> {
    let mut after = Seq(range.from.0 - 1);
    let mut emitted = 0;
    loop {
        let (page, has_more) = db::events_after(pool, conversation, after, PAGE).await?;
        for event in page {
            let seq = event.seq().unwrap_or(after);
            if !range.contains(seq) {
                nats.flush().await?;
                return Ok(ReplayReport { emitted });
            }
            after = seq;
            let event = PersistedEvent::untraced(event.into_envelope(None));
            let (subject, payload) = router::room_event(conversation, vec![event])?;
            nats.publish(subject, payload.into()).await?;
            emitted += 1;
        }
        // Flushing per page bounds what waits in the client's buffer.
        nats.flush().await?;
        if !has_more {
            return Ok(ReplayReport { emitted });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let cases = [
            (1, None, Ok(()), "from the start to the end"),
            (5, Some(5), Ok(()), "a single message"),
            (5, Some(9), Ok(()), "a closed range"),
            (0, None, Err(RangeError::FromBelowOne(0)), "seq starts at 1"),
            (-3, Some(2), Err(RangeError::FromBelowOne(-3)), "negative"),
            (
                9,
                Some(5),
                Err(RangeError::Reversed { from: 9, to: 5 }),
                "reversed",
            ),
        ];
        for (from, to, expected, reason) in cases {
            assert_eq!(SeqRange::new(from, to).map(|_| ()), expected, "{reason}");
        }
    }

    #[test]
    fn a_range_contains_its_ends() {
        let closed = SeqRange::new(3, Some(5)).expect("valid");
        let open = SeqRange::new(3, None).expect("valid");
        assert!(!closed.contains(Seq(2)));
        assert!(closed.contains(Seq(3)));
        assert!(closed.contains(Seq(5)));
        assert!(!closed.contains(Seq(6)));
        assert!(open.contains(Seq(i64::MAX)));
    }
}
