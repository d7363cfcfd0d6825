//! The OpenAPI 3.1 document of the HTTP routes on ingest's public port (§8).
//!
//! Each route lists the failures it can answer, each as the §4 failure body under the §8
//! status of its code ([`ErrorCode::http_status`]), plus 413 for a body over 64 KiB. The
//! probes and the documents themselves need no token; the `/api` routes need the bearer JWT.

use super::components::{Components, component_ref};
use crate::error::{ErrorCode, FailureAck};
use crate::health::Readiness;
use crate::message::{
    CreateConversationPayload, DEFAULT_SYNC_LIMIT, MAX_SYNC_LIMIT, MessagePayload, UUID_PATTERN,
};
use crate::replies::{
    Conversation, ConversationList, DEFAULT_CONVERSATIONS_LIMIT, MAX_CONVERSATIONS_LIMIT,
    MessageAck, MessagePage,
};
use ErrorCode::{Forbidden, Internal, RateLimited, Unauthorized, Unavailable, ValidationFailed};
use serde_json::{Map, Value, json};

/// The response of a body larger than 64 KiB: it is refused before it is read further.
const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
/// The response of a body that did not arrive within its deadline.
const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";

/// The document, built from the types in [`crate::message`], [`crate::replies`],
/// [`crate::health`] and [`crate::error`].
pub fn openapi() -> Value {
    let mut c = Components::new();
    let failure = c.reply::<FailureAck<'static>>();
    let mut paths = unauthenticated(&mut c);
    paths.insert("/api/conversations".into(), conversations(&mut c));
    paths.insert("/api/conversations/{id}/messages".into(), messages(&mut c));
    paths.insert(
        "/api/conversations/{id}/participants/me".into(),
        leave_for_good(),
    );
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "coachwire HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP routes on coachwire ingest's public port, next to \
                Socket.IO (CONTRACT §8; the events are described by `/asyncapi.json`). \
                Failures carry `{ success: false, error, code, details?, retryAfterMs? }`; \
                clients branch on `code`.",
        },
        "servers": [{
            "url": "/",
            "description": "The ingest node serving this document (default \
                `COACHWIRE_LISTEN` 127.0.0.1:3000).",
        }],
        "security": [{ "bearerJwt": [] }],
        "paths": paths,
        "components": {
            "responses": failure_responses(&failure),
            "securitySchemes": {
                "bearerJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`Authorization: Bearer <token>`: `sub` is the user id, \
                        `exp` is required, `role` is `user` (default) or `ai`.",
                },
            },
        },
    });
    c.finish(&mut document);
    document
}

/// The probes and the documents ingest serves about itself: no token needed.
fn unauthenticated(c: &mut Components) -> Map<String, Value> {
    let readiness = json_content(&c.reply::<Readiness>());
    let ok = json!({ "type": "string", "const": "ok" });
    let routes = json!({
        "/healthz": { "get": public(
            "healthz",
            "200 while the process runs.",
            json!({ "200": {
                "description": "The process runs.",
                "content": { "text/plain": { "schema": ok } },
            } }),
        ) },
        "/readyz": { "get": public(
            "readyz",
            "Whether this node can do its job: NATS connected. Postgres is reported but does \
             not fail readiness, since ingest keeps accepting messages while it is down.",
            json!({
                "200": { "description": "Ready.", "content": readiness },
                "503": { "description": "Not ready; `reason` says why.", "content": readiness },
            }),
        ) },
        "/schema/message.json": { "get": document_route(
            "messageSchema",
            "The JSON Schema (draft 2020-12) of the `message` payload, as validation enforces it.",
        ) },
        "/asyncapi.json": { "get": document_route(
            "asyncapi",
            "The AsyncAPI 3.0 document of the Socket.IO events.",
        ) },
        "/openapi.json": { "get": document_route("openapi", "This document.") },
    });
    match routes {
        Value::Object(routes) => routes,
        _ => Map::new(),
    }
}

/// `GET` and `POST /api/conversations`.
fn conversations(c: &mut Components) -> Value {
    let (default, max) = (DEFAULT_CONVERSATIONS_LIMIT, MAX_CONVERSATIONS_LIMIT);
    json!({
        "get": {
            "operationId": "listConversations",
            "summary": "The caller's conversations, newest activity first.",
            "parameters": [
                query_integer("limit", "Page size.", 1, max, default),
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "The `nextCursor` of the previous page.",
                    "schema": { "type": "string" },
                },
            ],
            "responses": responses(
                "200",
                "One page; `nextCursor` is absent on the last.",
                c.reply::<ConversationList>(),
                &[ValidationFailed, Unauthorized, Unavailable, Internal],
                false,
            ),
        },
        "post": {
            "operationId": "createConversation",
            "summary": "Create a conversation; the caller is always a participant.",
            "requestBody": request_body(c.request::<CreateConversationPayload>()),
            "responses": responses(
                "201",
                "Created; `participantIds` lists everyone, the caller included.",
                c.reply::<Conversation>(),
                &[ValidationFailed, Unauthorized, RateLimited, Unavailable, Internal],
                true,
            ),
        },
    })
}

/// The `{id}` of the conversation routes.
fn conversation_id_parameter() -> Value {
    json!({
        "name": "id",
        "in": "path",
        "required": true,
        "description": "The conversation id (a malformed one is 400 at `/conversationId`).",
        "schema": { "type": "string", "pattern": UUID_PATTERN },
    })
}

/// `DELETE /api/conversations/{id}/participants/me`.
fn leave_for_good() -> Value {
    let mut responses = Map::new();
    responses.insert(
        "204".into(),
        json!({ "description": "The caller is no longer a participant: the conversation \
            left their listing, their sockets left its room, the others got `user_left`." }),
    );
    for code in [
        ValidationFailed,
        Unauthorized,
        Forbidden,
        Unavailable,
        Internal,
    ] {
        responses.insert(
            code.http_status().to_string(),
            component_ref("responses", code.as_str()),
        );
    }
    json!({
        "parameters": [conversation_id_parameter()],
        "delete": {
            "operationId": "leaveConversation",
            "summary": "Leave the conversation for good (403 if not a participant).",
            "responses": responses,
        },
    })
}

/// `GET` and `POST /api/conversations/{id}/messages`.
fn messages(c: &mut Components) -> Value {
    json!({
        "parameters": [conversation_id_parameter()],
        "get": {
            "operationId": "listMessages",
            "summary": "Persisted messages with seq > afterSeq, ascending, as the `sync` \
                event (participants only).",
            "parameters": [
                query_integer("afterSeq", "Only messages after this seq.", 0, i64::MAX, 0),
                query_integer("limit", "Page size.", 1, MAX_SYNC_LIMIT, DEFAULT_SYNC_LIMIT),
            ],
            "responses": responses(
                "200",
                "One page; `hasMore` says whether another follows.",
                c.reply::<MessagePage>(),
                &[ValidationFailed, Unauthorized, Forbidden, Unavailable, Internal],
                false,
            ),
        },
        "post": {
            "operationId": "postMessage",
            "summary": "Send a message as the `message` event does (participants only; no \
                join needed). `conversationId` may be left out of the body; if given it \
                must equal the path's.",
            "requestBody": request_body(c.request::<MessagePayload>()),
            "responses": responses(
                "202",
                "Stored by the durable queue: the `message` success ack.",
                c.reply::<MessageAck>(),
                // Every code: this route runs the whole accept path.
                &ErrorCode::ALL,
                true,
            ),
        },
    })
}

/// A route that needs no token.
fn public(operation_id: &str, summary: &str, responses: Value) -> Value {
    json!({
        "operationId": operation_id,
        "summary": summary,
        "security": [],
        "responses": responses,
    })
}

/// One of the JSON documents ingest serves about itself.
fn document_route(operation_id: &str, summary: &str) -> Value {
    public(
        operation_id,
        summary,
        json!({ "200": {
            "description": summary,
            "content": { "application/json": { "schema": { "type": "object" } } },
        } }),
    )
}

fn query_integer(name: &str, description: &str, min: i64, max: i64, default: i64) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": { "type": "integer", "minimum": min, "maximum": max, "default": default },
    })
}

fn request_body(schema: Value) -> Value {
    json!({ "required": true, "content": json_content(&schema) })
}

fn json_content(schema: &Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// The success response, then one reference per failure the route can answer.
fn responses(
    status: &str,
    description: &str,
    schema: Value,
    failures: &[ErrorCode],
    takes_a_body: bool,
) -> Value {
    let mut responses = Map::new();
    responses.insert(
        status.into(),
        json!({ "description": description, "content": json_content(&schema) }),
    );
    for code in failures {
        responses.insert(
            code.http_status().to_string(),
            component_ref("responses", code.as_str()),
        );
    }
    if takes_a_body {
        responses.insert("413".into(), component_ref("responses", PAYLOAD_TOO_LARGE));
        responses.insert("408".into(), component_ref("responses", REQUEST_TIMEOUT));
    }
    responses.into()
}

/// One response per code, named by the code, all with the failure body.
fn failure_responses(failure: &Value) -> Value {
    let mut responses: Map<String, Value> = ErrorCode::ALL
        .iter()
        .map(|code| {
            let response = json!({
                "description": format!("{}: {}", code.as_str(), meaning(*code)),
                "content": json_content(failure),
            });
            (code.as_str().to_owned(), response)
        })
        .collect();
    responses.insert(
        PAYLOAD_TOO_LARGE.into(),
        json!({
            "description": "The body is larger than 64 KiB (code `VALIDATION_FAILED`).",
            "content": json_content(failure),
        }),
    );
    responses.insert(
        REQUEST_TIMEOUT.into(),
        json!({
            "description": "The body did not arrive within 10 s (code `VALIDATION_FAILED`).",
            "content": json_content(failure),
        }),
    );
    responses.into()
}

/// What a code tells the client, for the response descriptions.
fn meaning(code: ErrorCode) -> &'static str {
    match code {
        ValidationFailed => {
            "the body or a parameter is invalid; `details` names each field by its JSON pointer"
        }
        Unauthorized => "the bearer token is missing, malformed, badly signed or expired",
        Forbidden => {
            "not a participant of this conversation (an unknown one answers the same), or \
             `type: \"ai\"` without the `ai` role"
        }
        RateLimited => "too many messages or conversations created; retry after `retryAfterMs`",
        Unavailable => {
            "the durable queue or the database could not confirm; retry (a message with the \
             same `clientMessageId`)"
        }
        Internal => "an unexpected server error",
    }
}
