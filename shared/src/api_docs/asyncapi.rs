//! The AsyncAPI 3.0 document of the Socket.IO events (§4).
//!
//! AsyncAPI has no Socket.IO binding, so the mapping is stated here once and in the
//! document's description: the server is the Engine.IO endpoint (`ws`, path `/socket.io/`),
//! the one channel is the namespace `/`, a message's `name` is the event name, its payload
//! is the event's first argument, and the optional ack callback is the operation's `reply`
//! (the success ack or the failure body). Operations are written from the client's side:
//! `send` is client → server, `receive` is server → client.

use super::components::{Components, component_ref};
use crate::error::{ErrorEvent, FailureAck};
use crate::message::{
    ConversationPayload, Message, MessageDelivered, MessagePayload, ReplyAppendPayload,
    ReplyEndPayload, ReplyStartPayload, ReplyStopPayload, SyncPayload, TypingPayload,
};
use crate::replies::{
    AppendAck, EndAck, JoinAck, LeaveAck, Membership, MessageAck, MessagePage, MessageUpdated,
    ReplyDelta, ReplyStopNotice, TypingAck, TypingNotice,
};
use serde_json::{Map, Value, json};

/// The one channel: Socket.IO's default namespace.
const CHANNEL: &str = "namespace";
/// The failure body every ack may be instead of the success ack.
const FAILURE_ACK: &str = "ack.failure";

/// A client → server event: its payload, and the success ack its callback receives.
struct ClientEvent {
    name: &'static str,
    summary: &'static str,
    payload: Value,
    ack: Value,
}

/// A server → client event.
struct ServerEvent {
    name: &'static str,
    summary: &'static str,
    payload: Value,
}

/// Component messages and operations, filled event by event.
#[derive(Default)]
struct Events {
    messages: Map<String, Value>,
    operations: Map<String, Value>,
}

/// The document, built from the types in [`crate::message`], [`crate::replies`] and
/// [`crate::error`].
pub fn asyncapi() -> Value {
    let mut components = Components::new();
    let mut events = Events::default();
    events.failure_ack(components.reply::<FailureAck<'static>>());
    for event in client_events(&mut components) {
        events.send(event);
    }
    for event in server_events(&mut components) {
        events.receive(event);
    }
    let channel_messages: Map<String, Value> = events
        .messages
        .keys()
        .map(|key| (key.clone(), component_ref("messages", key)))
        .collect();
    let mut document = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "coachwire Socket.IO API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": DESCRIPTION,
        },
        "defaultContentType": "application/json",
        "servers": { "ingest": server() },
        "channels": {
            CHANNEL: {
                "address": "/",
                "title": "Socket.IO namespace /",
                "description": "Every event travels in the default namespace. An event's \
                    payload is its first argument; a client → server event may carry an ack \
                    callback, whose first argument is the reply.",
                "servers": [{ "$ref": "#/servers/ingest" }],
                "messages": channel_messages,
            },
        },
        "operations": events.operations,
        "components": {
            "messages": events.messages,
            "securitySchemes": { "jwt": security_scheme() },
        },
    });
    components.finish(&mut document);
    document
}

const DESCRIPTION: &str = "The Socket.IO events of coachwire's ingest (CONTRACT §4). \
    Operations are written from the client's side: `send` is an event the client emits (its \
    `reply` is what the optional ack callback receives: the success ack or the failure body), \
    `receive` an event the server emits to it. Without an ack callback, a refused event is \
    answered with the `error` event instead. `message` and `typing` need the socket to have \
    joined the conversation; `join_conversation` and `sync` need participation; a malformed \
    payload is `VALIDATION_FAILED` before any other check.";

impl Events {
    /// The failure body, which every `send` operation's reply lists after its success ack.
    fn failure_ack(&mut self, payload: Value) {
        self.messages.insert(
            FAILURE_ACK.into(),
            json!({
                "title": "failure ack",
                "summary": "What any ack callback receives instead of the success ack when \
                    the event is refused.",
                "contentType": "application/json",
                "payload": payload,
            }),
        );
    }

    fn send(&mut self, event: ClientEvent) {
        let key = format!("send.{}", event.name);
        let ack = format!("ack.{}", event.name);
        self.operations.insert(
            format!("send_{}", event.name),
            json!({
                "action": "send",
                "channel": channel_ref(),
                "summary": event.summary,
                "messages": [channel_message_ref(&key)],
                "reply": {
                    "channel": channel_ref(),
                    "messages": [channel_message_ref(&ack), channel_message_ref(FAILURE_ACK)],
                },
            }),
        );
        let message = event_message(event.name, event.summary, event.payload);
        self.messages.insert(key, message);
        self.messages
            .insert(ack, ack_message(event.name, event.ack));
    }

    fn receive(&mut self, event: ServerEvent) {
        let key = format!("receive.{}", event.name);
        self.operations.insert(
            format!("receive_{}", event.name),
            json!({
                "action": "receive",
                "channel": channel_ref(),
                "summary": event.summary,
                "messages": [channel_message_ref(&key)],
            }),
        );
        let message = event_message(event.name, event.summary, event.payload);
        self.messages.insert(key, message);
    }
}

/// The Engine.IO endpoint. AsyncAPI needs a host; the document cannot know the deployment's,
/// so it names ingest's default listen address and says so.
fn server() -> Value {
    json!({
        "host": "localhost:3000",
        "protocol": "ws",
        "pathname": "/socket.io/",
        "title": "An ingest node",
        "description": "Socket.IO v4 (Engine.IO protocol 4) at path `/socket.io/`, namespace \
            `/`. Clients connect with socket.io-client, `io(url, { auth: { token } })`, over \
            HTTP long-polling or WebSocket. The host is ingest's default `COACHWIRE_LISTEN`; \
            use your deployment's. Packets over 64 KiB are refused.",
        "security": [component_ref("securitySchemes", "jwt")],
    })
}

fn security_scheme() -> Value {
    json!({
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT (`sub`: the user id, `exp`; optional `role`: `user` or `ai`) in \
            the handshake `auth` payload as `{ token }`, or as an `Authorization: Bearer` \
            header. A query-string token is refused. A refused handshake is a `connect_error` \
            whose message starts with `UNAUTHORIZED` or `RATE_LIMITED`; after `exp`, every \
            event is refused with `UNAUTHORIZED` and the socket is disconnected.",
    })
}

fn client_events(c: &mut Components) -> [ClientEvent; 9] {
    [
        ClientEvent {
            name: "join_conversation",
            summary: "Join a conversation's room (participants only); the ack carries its \
                last seq.",
            payload: c.request::<ConversationPayload>(),
            ack: c.reply::<JoinAck>(),
        },
        ClientEvent {
            name: "leave_conversation",
            summary: "Leave a conversation's room; leaving one never joined succeeds and \
                tells nobody.",
            payload: c.request::<ConversationPayload>(),
            ack: c.reply::<LeaveAck>(),
        },
        ClientEvent {
            name: "message",
            summary: "Send a chat message; the success ack means the durable queue stored \
                it. Retry with the same clientMessageId after UNAVAILABLE.",
            payload: c.request::<MessagePayload>(),
            ack: c.reply::<MessageAck>(),
        },
        ClientEvent {
            name: "typing",
            summary: "Tell the others in the conversation whether you are typing \
                (rate-limited; the excess is acked and dropped).",
            payload: c.request::<TypingPayload>(),
            ack: c.reply::<TypingAck>(),
        },
        ClientEvent {
            name: "sync",
            summary: "Fetch persisted messages with seq > afterSeq, ascending, at most \
                limit (1–500, default 100).",
            payload: c.request::<SyncPayload>(),
            ack: c.reply::<MessagePage>(),
        },
        ClientEvent {
            name: "reply_start",
            summary: "The AI coach (role ai, joined) starts a streamed reply: a message of \
                type ai, status streaming, no text yet, with its seq taken now.",
            payload: c.request::<ReplyStartPayload>(),
            ack: c.reply::<MessageAck>(),
        },
        ClientEvent {
            name: "reply_append",
            summary: "The reply's author adds text at offset (the length so far, in \
                Unicode scalar values); acked once stored. A retry inside the text changes \
                nothing; a gap is VALIDATION_FAILED at /offset with the current length.",
            payload: c.request::<ReplyAppendPayload>(),
            ack: c.reply::<AppendAck>(),
        },
        ClientEvent {
            name: "reply_end",
            summary: "The reply's author ends it (complete or failed; cancelled after a \
                reply_stop): the final version is stored with its own seq.",
            payload: c.request::<ReplyEndPayload>(),
            ack: c.reply::<EndAck>(),
        },
        ClientEvent {
            name: "reply_stop",
            summary: "Any joined participant asks the author to stop a reply; one no \
                longer streaming is acked and nothing happens.",
            payload: c.request::<ReplyStopPayload>(),
            ack: c.reply::<TypingAck>(),
        },
    ]
}

fn server_events(c: &mut Components) -> [ServerEvent; 9] {
    [
        ServerEvent {
            name: "message",
            summary: "A persisted message (seq set), to every joined socket but the \
                sender's, in seq order with no gap.",
            payload: c.reply::<Message>(),
        },
        ServerEvent {
            name: "message_delivered",
            summary: "To the socket that sent a message, once it is persisted.",
            payload: c.reply::<MessageDelivered>(),
        },
        ServerEvent {
            name: "user_joined",
            summary: "Another user's socket joined the conversation.",
            payload: c.reply::<Membership>(),
        },
        ServerEvent {
            name: "user_left",
            summary: "Another user's socket left the conversation.",
            payload: c.reply::<Membership>(),
        },
        ServerEvent {
            name: "typing",
            summary: "Another user in the conversation started or stopped typing.",
            payload: c.reply::<TypingNotice>(),
        },
        ServerEvent {
            name: "reply_delta",
            summary: "A piece of a streamed reply's text at offset, to every joined socket \
                but the author's, in offset order; drop what overlaps the text you have.",
            payload: c.reply::<ReplyDelta>(),
        },
        ServerEvent {
            name: "message_updated",
            summary: "A later version of a message (the end of a streamed reply), with \
                its own seq, in seq order with the messages around it.",
            payload: c.reply::<MessageUpdated>(),
        },
        ServerEvent {
            name: "reply_stop",
            summary: "To the reply's author: a participant asked it to stop.",
            payload: c.reply::<ReplyStopNotice>(),
        },
        ServerEvent {
            name: "error",
            summary: "A refused event that was sent without an ack callback.",
            payload: c.reply::<ErrorEvent<'static>>(),
        },
    ]
}

fn event_message(name: &str, summary: &str, payload: Value) -> Value {
    json!({
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/json",
        "payload": payload,
    })
}

fn ack_message(event: &str, payload: Value) -> Value {
    json!({
        "title": format!("{event} ack"),
        "summary": format!("What the `{event}` ack callback receives on success."),
        "contentType": "application/json",
        "payload": payload,
    })
}

fn channel_ref() -> Value {
    json!({ "$ref": format!("#/channels/{CHANNEL}") })
}

fn channel_message_ref(key: &str) -> Value {
    json!({ "$ref": format!("#/channels/{CHANNEL}/messages/{key}") })
}
