//! The state every handler shares, built once at start-up.

use crate::accept::Acceptor;
use crate::auth::Verifier;
use crate::limits::Limits;
use crate::rooms::Rooms;
use coachwire_shared::health::Probe;
use coachwire_shared::message::{
    ConversationPayload, CreateConversationPayload, MessagePayload, SyncPayload, TypingPayload,
};
use coachwire_shared::validation::PayloadValidator;
use sqlx::PgPool;
use std::sync::Arc;

/// One compiled schema per payload type.
#[derive(Default)]
pub struct Validators {
    pub message: PayloadValidator<MessagePayload>,
    pub conversation: PayloadValidator<ConversationPayload>,
    pub typing: PayloadValidator<TypingPayload>,
    pub sync: PayloadValidator<SyncPayload>,
    pub create_conversation: PayloadValidator<CreateConversationPayload>,
}

pub struct App {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub acceptor: Acceptor,
    pub verifier: Verifier,
    pub limits: Limits,
    pub rooms: Rooms,
    pub validators: Validators,
    /// This process's id in `Origin`s, so fanned-out events find their sender's node.
    pub node: String,
    pub probe: Probe,
}

/// Handlers take the app by cheap clone (socketioxide's `State` needs `Clone`).
pub type AppRef = Arc<App>;
