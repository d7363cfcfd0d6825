//! The API documents ingest serves (`/asyncapi.json`, `/openapi.json`): valid by the official
//! validators, naming every event of CONTRACT §4 and every route of §8, and publishing the
//! very `message` schema that `/schema/message.json` serves and validation enforces.

use coachwire_testkit::api_docs;
use coachwire_testkit::stack::Stack;
use reqwest::Method;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// §4 and §14, client → server.
const CLIENT_EVENTS: [&str; 9] = [
    "join_conversation",
    "leave_conversation",
    "message",
    "typing",
    "sync",
    "reply_start",
    "reply_append",
    "reply_end",
    "reply_stop",
];
/// §4 and §14, server → client.
const SERVER_EVENTS: [&str; 9] = [
    "message",
    "message_delivered",
    "user_joined",
    "user_left",
    "typing",
    "reply_delta",
    "message_updated",
    "reply_stop",
    "error",
];
/// §8 on ingest's public port (`/metrics` is on the admin address), and the documents.
const ROUTES: [(&str, &str); 10] = [
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/schema/message.json", "get"),
    ("/api/conversations", "get"),
    ("/api/conversations", "post"),
    ("/api/conversations/{id}/messages", "get"),
    ("/api/conversations/{id}/messages", "post"),
    ("/api/conversations/{id}/participants/me", "delete"),
    ("/asyncapi.json", "get"),
    ("/openapi.json", "get"),
];

/// The three documents, as the first ingest node serves them.
struct Served {
    asyncapi: Value,
    openapi: Value,
    message_schema: Value,
}

async fn served(stack: &Stack) -> Served {
    let mut documents = Vec::new();
    for path in ["/asyncapi.json", "/openapi.json", "/schema/message.json"] {
        let (status, body) = stack
            .api(Method::GET, path, None, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        assert!(body.is_object(), "GET {path} is a JSON object: {body}");
        documents.push(body);
    }
    let [asyncapi, openapi, message_schema] = documents.try_into().expect("three documents");
    Served {
        asyncapi,
        openapi,
        message_schema,
    }
}

/// What a local `$ref` chain starting at `value` ends at in `root`.
fn target<'a>(value: &'a Value, root: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{reference} is local"));
            let next = root
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} resolves"));
            target(next, root)
        }
        None => value,
    }
}

/// `value` with every `$ref` inlined, without the keywords that only place or label a root
/// schema (`$schema`, `$defs`): two schemas are the same if these are equal.
fn resolved(value: &Value, root: &Value) -> Value {
    match target(value, root) {
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "$schema" | "$defs"))
            .map(|(k, v)| (k.clone(), resolved(v, root)))
            .collect::<Map<_, _>>()
            .into(),
        Value::Array(items) => items.iter().map(|v| resolved(v, root)).collect(),
        other => other.clone(),
    }
}

/// The operations of `action` (`send` / `receive`) as (event name, message object, operation).
fn operations<'a>(asyncapi: &'a Value, action: &str) -> Vec<(String, &'a Value, &'a Value)> {
    let mut found = Vec::new();
    let ops = asyncapi["operations"].as_object().expect("operations");
    for op in ops.values().filter(|op| op["action"] == action) {
        for message in op["messages"].as_array().expect("messages") {
            let message = target(message, asyncapi);
            let name = message["name"].as_str().expect("a named event").to_owned();
            found.push((name, message, op));
        }
    }
    found
}

#[tokio::test]
async fn the_served_documents_pass_the_official_asyncapi_and_openapi_validators() {
    let stack = Stack::start().await.expect("stack");
    let docs = served(&stack).await;
    assert_eq!(docs.asyncapi["asyncapi"], "3.0.0");
    assert_eq!(docs.openapi["openapi"], "3.1.0");
    let verdict = api_docs::validate(&docs.asyncapi, &docs.openapi)
        .await
        .expect("the validators ran");
    assert!(verdict.valid, "{:#}", verdict.report);
}

#[tokio::test]
async fn both_documents_publish_the_message_schema_that_validation_enforces() {
    let stack = Stack::start().await.expect("stack");
    let docs = served(&stack).await;
    let enforced = resolved(&docs.message_schema, &docs.message_schema);

    let sent: Vec<_> = operations(&docs.asyncapi, "send")
        .into_iter()
        .filter(|(name, _, _)| name == "message")
        .collect();
    assert_eq!(sent.len(), 1, "one client → server `message` event");
    let (_, message, _) = sent[0];
    assert_eq!(
        resolved(&message["payload"], &docs.asyncapi),
        enforced,
        "AsyncAPI `message` payload"
    );

    let post = &docs.openapi["paths"]["/api/conversations/{id}/messages"]["post"];
    let body = &post["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(
        resolved(body, &docs.openapi),
        enforced,
        "OpenAPI POST …/messages body"
    );
}

#[tokio::test]
async fn the_documents_name_every_event_and_route_of_the_contract() {
    let stack = Stack::start().await.expect("stack");
    let docs = served(&stack).await;

    let names = |action| -> BTreeSet<String> {
        operations(&docs.asyncapi, action)
            .into_iter()
            .map(|(name, _, _)| name)
            .collect()
    };
    let expected = |events: &[&str]| events.iter().map(|e| e.to_string()).collect();
    assert_eq!(names("send"), expected(&CLIENT_EVENTS), "client → server");
    assert_eq!(
        names("receive"),
        expected(&SERVER_EVENTS),
        "server → client"
    );
    for (name, _, op) in operations(&docs.asyncapi, "send") {
        let replies = op["reply"]["messages"].as_array().expect("an ack reply");
        let payloads: Vec<Value> = replies
            .iter()
            .map(|r| resolved(&target(r, &docs.asyncapi)["payload"], &docs.asyncapi))
            .collect();
        assert!(
            payloads
                .iter()
                .any(|p| p["properties"]["success"]["const"] == true),
            "{name}: a success ack"
        );
        assert!(
            payloads.iter().any(|p| {
                p["properties"]["success"]["const"] == false
                    && p["required"]
                        .as_array()
                        .is_some_and(|r| r.contains(&"code".into()))
            }),
            "{name}: the failure body"
        );
    }

    let paths = &docs.openapi["paths"];
    for (path, method) in ROUTES {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    let parameters = |path: &str| -> BTreeSet<String> {
        paths[path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                target(p, &docs.openapi)["name"]
                    .as_str()
                    .expect("name")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        parameters("/api/conversations"),
        expected(&["cursor", "limit"])
    );
    assert_eq!(
        parameters("/api/conversations/{id}/messages"),
        expected(&["afterSeq", "limit"])
    );
    let post = &paths["/api/conversations/{id}/messages"]["post"]["responses"];
    for status in ["202", "400", "401", "403", "413", "429", "500", "503"] {
        let response = target(&post[status], &docs.openapi);
        assert!(response.is_object(), "POST …/messages answers {status}");
    }
    let failure = resolved(
        &target(&post["403"], &docs.openapi)["content"]["application/json"]["schema"],
        &docs.openapi,
    );
    let codes = failure["properties"]["code"].to_string();
    for code in [
        "VALIDATION_FAILED",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "RATE_LIMITED",
        "UNAVAILABLE",
        "INTERNAL",
    ] {
        assert!(
            codes.contains(code),
            "the failure body's codes include {code}: {codes}"
        );
    }
    let scheme = &docs.openapi["components"]["securitySchemes"]["bearerJwt"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"], &scheme["bearerFormat"]),
        (&"http".into(), &"bearer".into(), &"JWT".into())
    );
}
