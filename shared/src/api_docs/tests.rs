use super::components::{Components, PENDING_REPLIES_PATH};
use super::{asyncapi, openapi};
use crate::error::{Detail, Failure};
use crate::ids::{ClientMessageId, ConversationId, MessageId, Seq, UserId};
use crate::message::{
    Message, MessageDelivered, MessagePayload, MessageStatus, MessageType, Metadata,
};
use crate::replies::{
    Conversation, ConversationList, JoinAck, Membership, MessageAck, MessagePage, TypingNotice,
};
use crate::validation::PayloadValidator;
use serde::Serialize;
use serde_json::json;
use serde_json::{Map, Value};

/// `value` with every local `$ref` replaced by what it points at in `root`, and the
/// keywords that only locate or label a root schema dropped.
fn resolved(value: &Value, root: &Value) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                let target = root
                    .pointer(reference.trim_start_matches('#'))
                    .unwrap_or_else(|| panic!("{reference} resolves"));
                return resolved(target, root);
            }
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "$schema" | "$defs"))
                .map(|(k, v)| (k.clone(), resolved(v, root)))
                .collect::<Map<_, _>>()
                .into()
        }
        Value::Array(items) => items.iter().map(|v| resolved(v, root)).collect(),
        other => other.clone(),
    }
}

/// A validator for the component `name` of `document`, references and all.
fn component_validator(document: &Value, name: &str) -> jsonschema::Validator {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": { "schemas": document["components"]["schemas"].clone() },
    });
    jsonschema::validator_for(&schema).expect("the document's schemas compile")
}

fn sample_message() -> Message {
    Message {
        id: MessageId(uuid::Uuid::now_v7()),
        conversation_id: ConversationId(uuid::Uuid::now_v7()),
        user_id: UserId(uuid::Uuid::new_v4()),
        content: "hi".into(),
        kind: MessageType::User,
        metadata: Metadata {
            image_url: Some("https://example.com/a.png".into()),
            timestamp: None,
        },
        client_message_id: Some(ClientMessageId(uuid::Uuid::now_v7())),
        seq: Some(Seq(3)),
        status: MessageStatus::Complete,
        created_at: crate::message::now_millis(),
    }
}

#[test]
fn both_documents_are_stable_objects_with_their_spec_versions() {
    let (asyncapi_doc, openapi_doc) = (asyncapi(), openapi());
    assert!(asyncapi_doc.is_object() && openapi_doc.is_object());
    assert_eq!(asyncapi_doc["asyncapi"], "3.0.0");
    assert_eq!(openapi_doc["openapi"], "3.1.0");
    let text = |v: &Value| serde_json::to_string(v).expect("serializes");
    assert_eq!(
        text(&asyncapi_doc),
        text(&asyncapi()),
        "AsyncAPI is deterministic"
    );
    assert_eq!(
        text(&openapi_doc),
        text(&openapi()),
        "OpenAPI is deterministic"
    );
}

#[test]
fn every_reference_resolves_and_no_placeholder_is_left() {
    for document in [asyncapi(), openapi()] {
        let text = serde_json::to_string(&document).expect("serializes");
        assert!(!text.contains(PENDING_REPLIES_PATH), "{text}");
        resolved(&document, &document);
    }
}

#[test]
fn the_documented_message_payload_is_the_served_schema() {
    let served = PayloadValidator::<MessagePayload>::new().schema().clone();
    let served = resolved(&served, &served);
    for document in [asyncapi(), openapi()] {
        let component = &document["components"]["schemas"]["MessagePayload"];
        assert_eq!(resolved(component, &document), served);
    }
}

#[test]
fn what_the_server_writes_matches_what_the_documents_say() {
    let message = sample_message();
    let failure = Failure::validation(vec![Detail::new("/content", "is required")]);
    let limited = Failure::rate_limited(1500);
    let conversation = Conversation {
        id: message.conversation_id,
        title: None,
        created_by: message.user_id,
        participant_ids: vec![message.user_id],
        created_at: message.created_at,
    };
    let samples: Vec<(&str, Value)> = vec![
        ("Message", to_value(&message)),
        (
            "Message",
            to_value(&Message {
                seq: None,
                client_message_id: None,
                metadata: Metadata::default(),
                ..message.clone()
            }),
        ),
        (
            "MessageDelivered",
            to_value(&MessageDelivered {
                id: message.id,
                client_message_id: message.client_message_id,
                conversation_id: message.conversation_id,
                seq: Seq(3),
                created_at: message.created_at,
            }),
        ),
        (
            "MessageAck",
            to_value(&MessageAck {
                success: true,
                message: message.clone(),
                duplicate: false,
            }),
        ),
        (
            "JoinAck",
            to_value(&JoinAck {
                success: true,
                conversation_id: message.conversation_id,
                last_seq: Seq::ZERO,
                streaming: Vec::new(),
            }),
        ),
        (
            "MessagePage",
            to_value(&MessagePage {
                success: Some(true),
                messages: vec![message.clone()],
                updates: Vec::new(),
                has_more: true,
            }),
        ),
        (
            "Membership",
            to_value(&Membership {
                conversation_id: message.conversation_id,
                user_id: message.user_id,
            }),
        ),
        (
            "TypingNotice",
            to_value(&TypingNotice {
                conversation_id: message.conversation_id,
                user_id: message.user_id,
                is_typing: true,
            }),
        ),
        ("FailureAck", to_value(&failure.body())),
        ("FailureAck", to_value(&limited.body())),
        ("ErrorEvent", to_value(&limited.event_body("message"))),
        ("Conversation", to_value(&conversation)),
        (
            "ConversationList",
            to_value(&ConversationList {
                conversations: vec![conversation.clone()],
                next_cursor: Some("opaque".into()),
            }),
        ),
    ];
    for document in [asyncapi(), openapi()] {
        for (name, sample) in &samples {
            if document["components"]["schemas"].get(*name).is_none() {
                continue;
            }
            let errors: Vec<String> = component_validator(&document, name)
                .iter_errors(sample)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{name} {sample}: {errors:?}");
        }
    }
}

#[test]
fn a_wrong_key_is_caught_by_the_documented_schema() {
    let document = openapi();
    let mut ack = to_value(&Failure::internal().body());
    ack["success"] = json!(true);
    assert!(!component_validator(&document, "FailureAck").is_valid(&ack));
    let mut page = to_value(&MessagePage {
        success: None,
        messages: Vec::new(),
        updates: Vec::new(),
        has_more: false,
    });
    page.as_object_mut().expect("object").remove("hasMore");
    assert!(!component_validator(&document, "MessagePage").is_valid(&page));
}

#[test]
fn a_type_written_differently_than_it_is_read_gets_its_own_reply_schema() {
    #[derive(Serialize, serde::Deserialize, schemars::JsonSchema)]
    struct Note {
        text: Option<String>,
    }
    #[derive(Serialize, schemars::JsonSchema)]
    struct Wrapper {
        note: Note,
    }
    let mut components = Components::new();
    let read = components.request::<Note>();
    let written = components.reply::<Wrapper>();
    let mut document = json!({ "read": read, "written": written });
    components.finish(&mut document);
    let schemas = &document["components"]["schemas"];
    assert_eq!(document["read"]["$ref"], "#/components/schemas/Note");
    assert_eq!(document["written"]["$ref"], "#/components/schemas/Wrapper");
    assert_eq!(
        schemas["Wrapper"]["properties"]["note"]["$ref"],
        "#/components/schemas/NoteReply"
    );
    assert_eq!(
        schemas["Note"].get("required"),
        None,
        "read: text may be left out"
    );
    assert_eq!(
        schemas["NoteReply"]["required"],
        json!(["text"]),
        "written: always there"
    );
}

fn to_value(value: &impl Serialize) -> Value {
    serde_json::to_value(value).expect("serializes")
}
