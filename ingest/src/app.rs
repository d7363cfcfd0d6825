//! The state every handler shares, built once at start-up.

use crate::accept::Acceptor;
use crate::auth::Verifier;
use crate::limits::Limits;
use crate::replies::Replies;
use crate::rooms::Rooms;
use crate::settings::ReplySettings;
use coachwire_shared::health::Probe;
use coachwire_shared::message::{
    ConversationPayload, CreateConversationPayload, MessagePayload, ReplyAppendPayload,
    ReplyEndPayload, ReplyStartPayload, ReplyStopPayload, SyncPayload, TypingPayload,
};
use coachwire_shared::validation::PayloadValidator;
use sqlx::PgPool;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

/// One compiled schema per payload type.
#[derive(Default)]
pub struct Validators {
    pub message: PayloadValidator<MessagePayload>,
    pub conversation: PayloadValidator<ConversationPayload>,
    pub typing: PayloadValidator<TypingPayload>,
    pub sync: PayloadValidator<SyncPayload>,
    pub create_conversation: PayloadValidator<CreateConversationPayload>,
    pub reply_start: PayloadValidator<ReplyStartPayload>,
    pub reply_append: PayloadValidator<ReplyAppendPayload>,
    pub reply_end: PayloadValidator<ReplyEndPayload>,
    pub reply_stop: PayloadValidator<ReplyStopPayload>,
}

pub struct App {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub acceptor: Acceptor,
    pub verifier: Verifier,
    pub limits: Limits,
    pub rooms: Rooms,
    /// The streamed replies this node's sockets are writing (§14).
    pub replies: Replies,
    pub reply_settings: ReplySettings,
    pub validators: Validators,
    /// This process's id in `Origin`s, so fanned-out events find their sender's node.
    pub node: String,
    pub probe: Probe,
    pub drain: Drain,
}

/// Lets shutdown wait for every `message` ack in flight (§1: finish in-flight work): each
/// handler holds a token from receipt to ack, and once draining starts new messages are
/// refused with `UNAVAILABLE`, so their clients retry on another node.
#[derive(Default)]
pub struct Drain {
    inflight: TaskTracker,
    draining: CancellationToken,
}

impl Drain {
    /// A token held until the ack is sent; `None` once draining has begun. The token is
    /// taken before the check, so a handler either counts for [`Drain::finish`] or sees
    /// the drain.
    pub fn admit(&self) -> Option<TaskTrackerToken> {
        let token = self.inflight.token();
        (!self.draining.is_cancelled()).then_some(token)
    }

    /// Refuses new messages and waits for the admitted ones to be acked.
    pub async fn finish(&self) {
        self.draining.cancel();
        self.inflight.close();
        self.inflight.wait().await;
    }
}

/// Handlers take the app by cheap clone (socketioxide's `State` needs `Clone`).
pub type AppRef = Arc<App>;
