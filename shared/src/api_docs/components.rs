//! The schemas both documents share, generated from the Rust types into one
//! `components/schemas` map; see [`Components`].

use crate::validation::schema_settings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Where both documents keep their schemas (AsyncAPI 3 and OpenAPI 3.1 agree on it).
const SCHEMAS_PATH: &str = "/components/schemas";
/// Where the schemas of written types wait until [`Components::finish`] has named them.
/// Never present in a finished document.
pub(super) const PENDING_REPLIES_PATH: &str = "/x-pending-replies";
/// Suffix of a written type's schema when it differs from the same type's read schema.
const REPLY_SUFFIX: &str = "Reply";

/// The schemas of one document, generated from the Rust types.
///
/// Two generators, because what the server reads and what it writes are described under
/// different contracts: a request type as it is *deserialized* (exactly the settings of
/// `/schema/message.json`, so `MessagePayload` is that schema, its definitions moved to
/// `components/schemas`), a reply type as it is *serialized* (a key skipped when empty is
/// optional, an `Option` always written is required and nullable).
pub(super) struct Components {
    requests: SchemaGenerator,
    replies: SchemaGenerator,
}

impl Components {
    pub(super) fn new() -> Self {
        let settings = schema_settings();
        Self {
            requests: settings
                .clone()
                .for_deserialize()
                .with(|s| s.definitions_path = SCHEMAS_PATH.into())
                .into_generator(),
            replies: settings
                .for_serialize()
                .with(|s| s.definitions_path = PENDING_REPLIES_PATH.into())
                .into_generator(),
        }
    }

    /// The schema (usually a `$ref`) of `T` as the server reads it.
    pub(super) fn request<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }

    /// The schema (usually a `$ref`) of `T` as the server writes it.
    pub(super) fn reply<T: JsonSchema>(&mut self) -> Value {
        self.replies.subschema_for::<T>().to_value()
    }

    /// Puts every schema under `components/schemas` of `document` and points the reply
    /// references there. A type both read and written (`Metadata`, `MessageType`) whose two
    /// schemas agree is stored once; where they differ (or refer to a type whose schemas
    /// differ), the written one is stored as `<Name>Reply`, so neither is misdescribed.
    pub(super) fn finish(mut self, document: &mut Value) {
        let mut schemas = self.requests.take_definitions(true);
        let mut replies = self.replies.take_definitions(true);
        let renamed = differing_replies(&schemas, &replies);
        let final_name = |name: &str| {
            if renamed.contains(name) {
                format!("{name}{REPLY_SUFFIX}")
            } else {
                name.to_owned()
            }
        };
        for schema in replies.values_mut() {
            retarget(schema, &final_name);
        }
        retarget(document, &final_name);
        for (name, schema) in replies {
            schemas.entry(final_name(&name)).or_insert(schema);
        }
        if let Some(components) = document
            .as_object_mut()
            .map(|d| d.entry("components").or_insert_with(|| Map::new().into()))
            .and_then(Value::as_object_mut)
        {
            components.insert("schemas".into(), schemas.into());
        }
    }
}

/// The names of written types that cannot share the read type's schema: those whose schema
/// differs once their references are read as pointing at the same names, and then, until
/// nothing changes, those that refer to one of them.
fn differing_replies(
    requests: &Map<String, Value>,
    replies: &Map<String, Value>,
) -> BTreeSet<String> {
    let as_shared = |schema: &Value| {
        let mut schema = schema.clone();
        retarget(&mut schema, &|name: &str| name.to_owned());
        schema
    };
    let mut differing: BTreeSet<String> = replies
        .iter()
        .filter(|(name, schema)| requests.get(*name).is_some_and(|r| *r != as_shared(schema)))
        .map(|(name, _)| name.clone())
        .collect();
    let references: BTreeMap<&String, BTreeSet<String>> = replies
        .iter()
        .map(|(name, schema)| (name, pending_references(schema)))
        .collect();
    loop {
        let more: Vec<String> = references
            .iter()
            .filter(|(name, refs)| {
                requests.contains_key(**name)
                    && !differing.contains(**name)
                    && refs.iter().any(|r| differing.contains(r))
            })
            .map(|(name, _)| (*name).clone())
            .collect();
        if more.is_empty() {
            return differing;
        }
        differing.extend(more);
    }
}

/// Rewrites every `$ref` to a pending reply schema into a `components/schemas` reference
/// under the name `rename` gives it.
fn retarget(value: &mut Value, rename: &dyn Fn(&str) -> String) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get_mut("$ref")
                && let Some(name) = pending_name(reference)
            {
                *reference = format!("#{SCHEMAS_PATH}/{}", rename(name));
            }
            map.values_mut().for_each(|v| retarget(v, rename));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| retarget(v, rename)),
        _ => {}
    }
}

/// The pending reply names `value` refers to.
fn pending_references(value: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(name) = map
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(pending_name)
                {
                    found.insert(name.to_owned());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    found
}

fn pending_name(reference: &str) -> Option<&str> {
    reference
        .strip_prefix('#')
        .and_then(|r| r.strip_prefix(PENDING_REPLIES_PATH))
        .and_then(|r| r.strip_prefix('/'))
}

/// A `$ref` to `name` in a document's `section` of `components` (`messages`, `responses` …).
pub(super) fn component_ref(section: &str, name: &str) -> Value {
    serde_json::json!({ "$ref": format!("#/components/{section}/{name}") })
}
