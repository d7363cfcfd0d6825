//! Helpers the persister test files share: messages as ingest would accept them, a
//! JetStream context on a private server, and consumer timing short enough for tests.

use async_nats::jetstream;
use coachwire_persister::settings::ConsumerTuning;
use coachwire_shared::envelope::MessageEnvelope;
use coachwire_shared::ids::{ConversationId, MessageId, UserId};
use coachwire_shared::message::{Message, MessageStatus, MessageType, Metadata, now_millis};
use coachwire_testkit::nats_server::NatsServer;
use std::time::Duration;

/// An accepted message (no `seq` yet) from `user` in `conversation`.
pub fn message(conversation: ConversationId, user: UserId, content: &str) -> MessageEnvelope {
    MessageEnvelope {
        message: Message {
            id: MessageId::generate(),
            conversation_id: conversation,
            user_id: user,
            content: content.into(),
            kind: MessageType::User,
            metadata: Metadata::default(),
            client_message_id: None,
            seq: None,
            status: MessageStatus::Complete,
            created_at: now_millis(),
        },
        origin: None,
        version: None,
    }
}

pub fn user() -> UserId {
    UserId(uuid::Uuid::new_v4())
}

/// Redeliveries after 1 s and hand-overs after 2 s, instead of production's 10 s and 20 s.
pub fn fast_tuning() -> ConsumerTuning {
    ConsumerTuning {
        ack_wait: Duration::from_secs(1),
        pinned_ttl: Duration::from_secs(2),
        max_batch: 50,
    }
}

/// A client of `server` as "test", and a JetStream context with the streams declared.
pub async fn jetstream_on(server: &NatsServer) -> (async_nats::Client, jetstream::Context) {
    let client = coachwire_shared::nats::connect(&server.url(), "test")
        .await
        .expect("connect");
    let js = jetstream::new(client.clone());
    coachwire_shared::nats::ensure_streams(&js, 1)
        .await
        .expect("streams");
    (client, js)
}
