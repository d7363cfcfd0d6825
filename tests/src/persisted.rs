//! What the `PERSISTED` stream holds, read as events: one stream message carries several
//! events of one conversation (`coachwire_shared::envelope::Persisted`). A batch stored
//! again after a redelivery may be grouped differently from the first time, and then its
//! events are in the stream twice under another `Nats-Msg-Id` (rooms drop the repeats by
//! `seq`), so the events are counted once each.

use anyhow::{Context, Result};
use async_nats::jetstream;
use coachwire_shared::envelope::{Persisted, PersistedEvent};
use coachwire_shared::subjects::PERSISTED_STREAM;
use std::collections::HashSet;

/// Every event in the `PERSISTED` stream once (its first copy), in stream order.
pub async fn persisted_events(js: &jetstream::Context) -> Result<Vec<PersistedEvent>> {
    let mut stream = js.get_stream(PERSISTED_STREAM).await?;
    let state = stream.info().await?.state.clone();
    let mut events = Vec::new();
    if state.messages == 0 {
        return Ok(events);
    }
    for seq in state.first_sequence..=state.last_sequence {
        let raw = stream
            .get_raw_message(seq)
            .await
            .with_context(|| format!("persisted message {seq}"))?;
        let persisted: Persisted = serde_json::from_slice(&raw.payload)
            .with_context(|| format!("persisted message {seq} is not a batch of events"))?;
        events.extend(persisted.events);
    }
    let mut seen = HashSet::new();
    events.retain(|e| seen.insert(e.envelope.event_id()));
    Ok(events)
}
