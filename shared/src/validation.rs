//! Payload validation: a JSON Schema generated from the Rust payload types (schemars),
//! checked with `jsonschema`, plus the rules a schema cannot say (`Rules`).
//!
//! Every failure becomes a [`Detail`] whose `path` names the failing field itself: a
//! missing or unknown key is reported at its own pointer (`/metadata/foo`), not its parent's,
//! which is why `additionalProperties` / `required` errors are rewritten here.

use crate::error::Detail;
use crate::message::{
    ConversationPayload, CreateConversationPayload, MAX_CONTENT_CHARS, MessagePayload,
    ReplyAppendPayload, ReplyEndPayload, ReplyStartPayload, ReplyStopPayload, SyncPayload,
    TypingPayload, UUID_PATTERN,
};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::marker::PhantomData;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Rules beyond the schema, checked on the raw JSON so they report alongside schema errors.
pub trait Rules {
    fn check(_payload: &Value, _details: &mut Vec<Detail>) {}
}

impl Rules for ConversationPayload {}
impl Rules for ReplyStartPayload {}
impl Rules for ReplyEndPayload {}
impl Rules for ReplyStopPayload {}

/// An append becomes part of a message's content, so it has content's character rules;
/// a piece of only whitespace is fine (a reply's words are separated by them).
impl Rules for ReplyAppendPayload {
    fn check(payload: &Value, details: &mut Vec<Detail>) {
        if let Some(text) = payload.get("text").and_then(Value::as_str)
            && text.chars().any(forbidden_control)
        {
            details.push(Detail::new("/text", CONTROL_PROBLEM));
        }
    }
}
impl Rules for TypingPayload {}
impl Rules for SyncPayload {}

/// A title is shown like content, so it follows content's character rules (§8): a NUL
/// would otherwise reach Postgres, which refuses it, and be answered as an outage.
impl Rules for CreateConversationPayload {
    fn check(payload: &Value, details: &mut Vec<Detail>) {
        if let Some(title) = payload.get("title").and_then(Value::as_str)
            && let Some(problem) = content_problem(title)
        {
            details.push(Detail::new("/title", problem));
        }
    }
}

impl Rules for MessagePayload {
    fn check(payload: &Value, details: &mut Vec<Detail>) {
        if let Some(content) = payload.get("content").and_then(Value::as_str)
            && let Some(problem) = content_problem(content)
        {
            details.push(Detail::new("/content", problem));
        }
        let metadata = payload.get("metadata");
        if let Some(url) = metadata
            .and_then(|m| m.get("imageUrl"))
            .and_then(Value::as_str)
            && let Some(problem) = image_url_problem(url)
        {
            details.push(Detail::new("/metadata/imageUrl", problem));
        }
        if let Some(ts) = metadata
            .and_then(|m| m.get("timestamp"))
            .and_then(Value::as_str)
            && chrono::DateTime::parse_from_rfc3339(ts).is_err()
        {
            details.push(Detail::new(
                "/metadata/timestamp",
                "must be an RFC 3339 timestamp",
            ));
        }
    }
}

/// Content is plain text: control characters other than TAB, LF, CR are refused (they
/// corrupt terminals and logs), and so is content with nothing visible in it: only
/// whitespace and Unicode format characters (category Cf: U+200B, U+FEFF, U+202E …), which
/// would show as an empty bubble. Format characters inside visible text are kept (§5).
fn content_problem(content: &str) -> Option<&'static str> {
    if content.chars().any(forbidden_control) {
        return Some(CONTROL_PROBLEM);
    }
    if !content.is_empty() && content.chars().all(invisible) {
        return Some("must not be only whitespace or invisible format characters");
    }
    None
}

const CONTROL_PROBLEM: &str = "must not contain control characters other than TAB, LF and CR";

/// NUL and the other control characters but TAB, LF and CR.
fn forbidden_control(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

fn invisible(c: char) -> bool {
    c.is_whitespace() || c.general_category() == GeneralCategory::Format
}

/// Only absolute `http(s)` URLs without user-info: `javascript:`/`data:` URLs execute or
/// smuggle content, relative ones resolve against whatever page renders them, and
/// `user:pass@` is a phishing classic. The raw text is checked, not just what the `url`
/// crate makes of it, because the raw text is what is stored and rendered: lenient parsing
/// forgives `https:host`, `https://@host`, spaces and backslashes that other parsers read
/// differently.
fn image_url_problem(raw: &str) -> Option<&'static str> {
    let lower = raw.to_ascii_lowercase();
    let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    else {
        return Some("must be an absolute http or https URL");
    };
    if raw
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Some("must not contain whitespace, control characters or backslashes");
    }
    if rest
        .split(['/', '?', '#'])
        .next()
        .is_some_and(|authority| authority.contains('@'))
    {
        return Some("must not contain user-info");
    }
    match url::Url::parse(raw) {
        Ok(url) if url.host_str().is_some_and(|h| !h.is_empty()) => None,
        Ok(_) => Some("must name a host"),
        Err(_) => Some("must be an absolute http or https URL"),
    }
}

/// The settings every schema of ours is generated with: the served `/schema/…` documents
/// (through [`PayloadValidator`]) and the components of the API documents
/// ([`crate::api_docs`]), which only move the definitions under `components/schemas`. One
/// function, so the published payload schemas cannot drift from what is enforced.
pub fn schema_settings() -> SchemaSettings {
    SchemaSettings::draft2020_12()
}

/// A compiled schema for payload type `T`, and the typed parse that follows it.
pub struct PayloadValidator<T> {
    schema: Value,
    validator: jsonschema::Validator,
    payload: PhantomData<fn() -> T>,
}

impl<T: JsonSchema + DeserializeOwned + Rules> PayloadValidator<T> {
    /// Compiles the schema of `T`. Panics only if schemars emits a schema jsonschema cannot
    /// compile, a programming error caught by the unit tests below.
    pub fn new() -> Self {
        let schema = schema_settings()
            .into_generator()
            .into_root_schema_for::<T>()
            .to_value();
        let validator = jsonschema::validator_for(&schema).expect("a generated schema compiles");
        Self {
            schema,
            validator,
            payload: PhantomData,
        }
    }

    /// The JSON Schema, as served at `/schema/…`.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Validates `payload` against the schema and `T`'s rules, then builds `T`.
    pub fn parse(&self, payload: &Value) -> Result<T, Vec<Detail>> {
        let mut details: Vec<Detail> = Vec::new();
        for error in self.validator.iter_errors(payload) {
            details.extend(details_of(error.instance_path().as_str(), error.kind()));
        }
        T::check(payload, &mut details);
        if !details.is_empty() {
            details.dedup_by(|a, b| a.path == b.path && a.message == b.message);
            return Err(details);
        }
        serde_path_to_error::deserialize(payload)
            .map_err(|e| vec![Detail::new(pointer(e.path()), "is out of range")])
    }
}

impl<T: JsonSchema + DeserializeOwned + Rules> Default for PayloadValidator<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Client-facing messages, written here rather than taken from jsonschema, whose texts
/// quote the offending value (which may be 64 KiB of someone's content).
fn details_of(path: &str, kind: &ValidationErrorKind) -> Vec<Detail> {
    let one = |message: String| vec![Detail::new(path, message)];
    match kind {
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|key| Detail::new(child(path, key), "is not allowed"))
            .collect(),
        ValidationErrorKind::Required { property } => {
            let key = property.as_str().unwrap_or_default();
            vec![Detail::new(child(path, key), "is required")]
        }
        ValidationErrorKind::Type { kind } => one(format!("must be {}", type_name(kind))),
        ValidationErrorKind::MinLength { limit: 1 } => one("must not be empty".into()),
        ValidationErrorKind::MinLength { limit } => {
            one(format!("must be at least {limit} characters"))
        }
        ValidationErrorKind::MaxLength { limit } if *limit == MAX_CONTENT_CHARS as u64 => one(
            format!("must be at most {limit} characters (Unicode scalar values)"),
        ),
        ValidationErrorKind::MaxLength { limit } => {
            one(format!("must be at most {limit} characters"))
        }
        ValidationErrorKind::Pattern { pattern } if pattern == UUID_PATTERN => {
            one("must be a UUID in hyphenated 8-4-4-4-12 form".into())
        }
        ValidationErrorKind::Enum { options } => one(format!("must be one of {options}")),
        ValidationErrorKind::Minimum { limit } => one(format!("must be at least {limit}")),
        ValidationErrorKind::Maximum { limit } => one(format!("must be at most {limit}")),
        ValidationErrorKind::MaxItems { limit } => one(format!("must have at most {limit} items")),
        other => one(format!("is invalid ({})", other.keyword())),
    }
}

fn type_name(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => format!("of type {t}"),
        TypeKind::Multiple(set) => {
            let names: Vec<String> = set.iter().map(|t| t.to_string()).collect();
            format!("of type {}", names.join(" or "))
        }
    }
}

/// The JSON pointer of the field serde refused after the schema passed it: only a value
/// the schema cannot bound, such as an integer past `i64` (`afterSeq: 2^63`, `1e300`).
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .fold(String::new(), |parent, segment| match segment {
            Segment::Map { key } => child(&parent, key),
            Segment::Seq { index } => format!("{parent}/{index}"),
            Segment::Enum { .. } | Segment::Unknown => parent,
        })
}

/// `parent` + one JSON-pointer segment (RFC 6901 escaping).
fn child(parent: &str, key: &str) -> String {
    format!("{parent}/{}", key.replace('~', "~0").replace('/', "~1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CID: &str = "0191e4f2-7c1a-7cc4-9a55-3b0f1f4b7a10";

    fn paths(v: Value) -> Vec<String> {
        let validator = PayloadValidator::<MessagePayload>::new();
        match validator.parse(&v) {
            Ok(_) => vec![],
            Err(d) => d.into_iter().map(|d| d.path).collect(),
        }
    }

    #[test]
    fn a_minimal_message_is_valid() {
        assert!(paths(json!({"conversationId": CID, "content": "hi"})).is_empty());
    }

    #[test]
    fn each_failure_names_its_own_field() {
        let table = [
            (json!({"content": "hi"}), "/conversationId", "missing key"),
            (
                json!({"conversationId": CID, "content": "hi", "x": 1}),
                "/x",
                "unknown key",
            ),
            (
                json!({"conversationId": CID, "content": "hi", "metadata": {"foo": 1}}),
                "/metadata/foo",
                "unknown metadata key",
            ),
            (
                json!({"conversationId": "abc", "content": "hi"}),
                "/conversationId",
                "not a uuid",
            ),
            (
                json!({"conversationId": CID, "content": ""}),
                "/content",
                "empty",
            ),
            (
                json!({"conversationId": CID, "content": " \n\t"}),
                "/content",
                "whitespace",
            ),
            (
                json!({"conversationId": CID, "content": "\u{200B}\u{FEFF} \u{202E}"}),
                "/content",
                "only format characters and spaces",
            ),
            (
                json!({"conversationId": CID, "content": "a\u{0}b"}),
                "/content",
                "NUL",
            ),
            (
                json!({"conversationId": CID, "content": "a\u{85}b"}),
                "/content",
                "C1 control",
            ),
            (
                json!({"conversationId": CID, "content": 5}),
                "/content",
                "wrong type",
            ),
            (
                json!({"conversationId": CID, "content": "hi", "type": "bot"}),
                "/type",
                "bad type",
            ),
            (
                json!({"conversationId": CID, "content": "hi", "metadata": {"imageUrl": "javascript:alert(1)"}}),
                "/metadata/imageUrl",
                "javascript url",
            ),
            (
                json!({"conversationId": CID, "content": "hi", "metadata": {"imageUrl": "https://u:p@x.io/a.png"}}),
                "/metadata/imageUrl",
                "user-info",
            ),
            (
                json!({"conversationId": CID, "content": "hi", "metadata": {"imageUrl": "/a.png"}}),
                "/metadata/imageUrl",
                "relative url",
            ),
            (
                json!({"conversationId": CID, "content": "hi", "metadata": {"timestamp": "yesterday"}}),
                "/metadata/timestamp",
                "bad timestamp",
            ),
            (
                json!({"conversationId": CID, "content": "hi", "clientMessageId": "1"}),
                "/clientMessageId",
                "bad cmid",
            ),
            (
                json!({"conversationId": CID, "content": "hi", "metadata": {"imageUrl": "https://@host.io/x"}}),
                "/metadata/imageUrl",
                "empty user-info",
            ),
            (
                json!({"conversationId": CID, "content": "hi", "metadata": {"imageUrl": "https:host.io/x"}}),
                "/metadata/imageUrl",
                "no slashes after the scheme",
            ),
            (
                json!({"conversationId": CID, "content": "hi", "metadata": {"imageUrl": "https://host.io\\\\@evil.com/"}}),
                "/metadata/imageUrl",
                "backslash confusion",
            ),
            (
                json!({"conversationId": CID, "content": "hi", "metadata": {"imageUrl": " https://host.io/x"}}),
                "/metadata/imageUrl",
                "leading space",
            ),
            (json!([1, 2]), "", "array instead of object"),
            (json!(null), "", "null instead of object"),
        ];
        for (payload, path, reason) in table {
            assert_eq!(paths(payload), vec![path.to_string()], "{reason}");
        }
    }

    #[test]
    fn format_characters_inside_visible_text_are_kept() {
        for content in ["\u{200B}hi", "a\u{FEFF}b", "\u{202E}gnp.exe", "hi \u{2060}"] {
            assert!(
                paths(json!({"conversationId": CID, "content": content})).is_empty(),
                "{content:?}"
            );
        }
    }

    #[test]
    fn content_length_counts_scalar_values_not_bytes() {
        let emoji = "😀".repeat(MAX_CONTENT_CHARS);
        assert!(paths(json!({"conversationId": CID, "content": emoji})).is_empty());
        let long = "a".repeat(MAX_CONTENT_CHARS + 1);
        assert_eq!(
            paths(json!({"conversationId": CID, "content": long})),
            vec!["/content"]
        );
    }

    #[test]
    fn a_number_past_bigint_is_named_by_its_own_pointer() {
        let validator = PayloadValidator::<SyncPayload>::new();
        for after in [json!(9_223_372_036_854_775_808u64), json!(1e300)] {
            let details = validator
                .parse(&json!({"conversationId": CID, "afterSeq": after}))
                .expect_err("past bigint");
            let paths: Vec<&str> = details.iter().map(|d| d.path.as_str()).collect();
            assert_eq!(paths, ["/afterSeq"], "{after}");
        }
        validator
            .parse(&json!({"conversationId": CID, "afterSeq": i64::MAX}))
            .expect("the largest bigint is a valid afterSeq");
    }

    #[test]
    fn a_title_follows_the_character_rules_of_content() {
        let validator = PayloadValidator::<CreateConversationPayload>::new();
        let table = [
            (json!("a\u{0}b"), Some("/title"), "NUL"),
            (json!("a\u{1b}[31m"), Some("/title"), "escape sequence"),
            (json!(" \u{200B} "), Some("/title"), "nothing visible"),
            (json!("t".repeat(201)), Some("/title"), "201 scalar values"),
            (
                json!("😀".repeat(200)),
                None,
                "200 scalar values of 4 bytes",
            ),
            (json!("Risk\tplan"), None, "a tab is kept"),
            (json!(null), None, "no title"),
        ];
        for (title, path, reason) in table {
            let got = validator
                .parse(&json!({"title": title, "participantIds": []}))
                .err()
                .map(|d| d[0].path.clone());
            assert_eq!(got.as_deref(), path, "{reason}");
        }
    }

    #[test]
    fn every_payload_schema_compiles() {
        PayloadValidator::<ConversationPayload>::new();
        PayloadValidator::<TypingPayload>::new();
        PayloadValidator::<SyncPayload>::new();
        PayloadValidator::<CreateConversationPayload>::new();
        PayloadValidator::<ReplyStartPayload>::new();
        PayloadValidator::<ReplyEndPayload>::new();
        PayloadValidator::<ReplyStopPayload>::new();
    }

    #[test]
    fn an_append_has_content_s_characters_and_lengths() {
        let validator = PayloadValidator::<ReplyAppendPayload>::new();
        let append = |offset: Value, text: Value| {
            validator
                .parse(&json!({"conversationId": CID, "id": CID, "offset": offset, "text": text}))
                .err()
                .map(|d| d[0].path.clone())
        };
        assert_eq!(
            append(json!(0), json!(" ")),
            None,
            "a space is a piece of text"
        );
        assert_eq!(append(json!(3), json!("😀".repeat(2000))), None);
        assert_eq!(append(json!(0), json!("a\u{0}")).as_deref(), Some("/text"));
        assert_eq!(append(json!(0), json!("")).as_deref(), Some("/text"));
        assert_eq!(
            append(json!(0), json!("x".repeat(2001))).as_deref(),
            Some("/text")
        );
        assert_eq!(append(json!(-1), json!("x")).as_deref(), Some("/offset"));
    }
}
