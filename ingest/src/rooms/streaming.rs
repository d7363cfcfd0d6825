//! The streamed replies in progress in one room (§14): their text so far, so that a
//! socket joining mid-reply gets it in its join ack and then every delta after it, each
//! piece once and in offset order.
//!
//! A room hears appends on its conversation's reply subjects as they are stored. It
//! learns of a reply from its start (`message`, status `streaming`) or, when the room
//! opens, from Postgres; either way it reads what the `REPLIES` stream already holds, so
//! appends made before the room was listening are not missed. Deltas of a reply it does
//! not know yet are left to that read; a delta past the end shows a lost piece and makes
//! it read again.

use crate::replies::text::{self, SoFar};
use async_nats::jetstream;
use coachwire_shared::envelope::ReplyAppended;
use coachwire_shared::ids::{ConversationId, MessageId};
use coachwire_shared::message::Message;
use coachwire_shared::replies::ReplyDelta;
use std::collections::HashMap;

struct Tracked {
    message: Message,
    so_far: SoFar,
}

pub(super) struct Streaming {
    js: jetstream::Context,
    tracked: HashMap<MessageId, Tracked>,
}

impl Streaming {
    pub(super) fn new(js: jetstream::Context) -> Self {
        Self {
            js,
            tracked: HashMap::new(),
        }
    }

    /// Starts following `message`, a reply in progress; returns the text already stored
    /// as one delta from offset 0, for the sockets that got only its start.
    pub(super) async fn track(&mut self, message: &Message) -> Option<ReplyDelta> {
        if self.tracked.contains_key(&message.id) {
            return None;
        }
        let so_far = self.read(message.conversation_id, message.id).await;
        let delta = (!so_far.text.is_empty()).then(|| ReplyDelta {
            conversation_id: message.conversation_id,
            id: message.id,
            offset: 0,
            text: so_far.text.clone(),
        });
        self.tracked.insert(
            message.id,
            Tracked {
                message: message.clone(),
                so_far,
            },
        );
        delta
    }

    /// The reply ended: it is no longer in progress.
    pub(super) fn ended(&mut self, id: MessageId) {
        self.tracked.remove(&id);
    }

    /// What a stored append adds for this room's sockets: its new part, the pieces a gap
    /// hid (read again), or nothing (a repeat, or a reply the room does not know yet).
    pub(super) async fn on_append(&mut self, appended: &ReplyAppended) -> Option<ReplyDelta> {
        let delta = &appended.delta;
        let tracked = self.tracked.get_mut(&delta.id)?;
        let before = tracked.so_far.length;
        let new = match tracked.so_far.add(delta.offset, &delta.text) {
            Some(new) => new,
            None => {
                let reread = Box::pin(self.read(delta.conversation_id, delta.id)).await;
                let tracked = self.tracked.get_mut(&delta.id)?;
                let missing: String = reread
                    .text
                    .chars()
                    .skip(usize::try_from(before).unwrap_or(usize::MAX))
                    .collect();
                tracked.so_far = reread;
                missing
            }
        };
        (!new.is_empty()).then_some(ReplyDelta {
            conversation_id: delta.conversation_id,
            id: delta.id,
            offset: before,
            text: new,
        })
    }

    /// The replies in progress, each with its text so far (the join ack's `streaming`).
    pub(super) fn in_progress(&self) -> Vec<Message> {
        let mut replies: Vec<Message> = self
            .tracked
            .values()
            .map(|t| Message {
                content: t.so_far.text.clone(),
                ..t.message.clone()
            })
            .collect();
        replies.sort_by_key(|m| m.seq);
        replies
    }

    /// What the stream holds; an unreadable stream counts as no text yet, and the next
    /// delta's gap reads it again.
    async fn read(&self, conversation: ConversationId, id: MessageId) -> SoFar {
        text::so_far(&self.js, conversation, id)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "reading a reply's text failed"))
            .unwrap_or_default()
    }
}
