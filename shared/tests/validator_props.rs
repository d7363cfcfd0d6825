//! Property tests of the `message` payload validator (contract §5): whatever JSON arrives,
//! validation answers without panicking, names each failing field by a JSON pointer, and
//! accepts exactly the payloads the contract allows.

use coachwire_shared::error::Detail;
use coachwire_shared::message::{MAX_CONTENT_CHARS, MAX_IMAGE_URL_CHARS, MessagePayload};
use coachwire_shared::validation::PayloadValidator;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

/// Compiled once: compiling the schema per case would dominate the run time.
static VALIDATOR: LazyLock<PayloadValidator<MessagePayload>> = LazyLock::new(PayloadValidator::new);

const CID: &str = "0191e4f2-7c1a-7cc4-9a55-3b0f1f4b7a10";
const MESSAGE_KEYS: [&str; 5] = [
    "conversationId",
    "content",
    "type",
    "metadata",
    "clientMessageId",
];
const METADATA_KEYS: [&str; 2] = ["imageUrl", "timestamp"];

fn parse(payload: &Value) -> Result<MessagePayload, Vec<Detail>> {
    VALIDATOR.parse(payload)
}

/// RFC 6901: `~` → `~0`, then `/` → `~1`.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// `""`, or `/`-separated segments in which every `~` starts `~0` or `~1`.
fn is_json_pointer(path: &str) -> bool {
    path.is_empty()
        || (path.starts_with('/')
            && path.split('/').all(|segment| {
                let mut chars = segment.chars();
                while let Some(c) = chars.next() {
                    if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                        return false;
                    }
                }
                true
            }))
}

/// The contract's content rule, written from §5 rather than from the implementation.
fn content_is_allowed(s: &str) -> bool {
    let n = s.chars().count();
    (1..=MAX_CONTENT_CHARS).contains(&n)
        && !s.chars().all(char::is_whitespace)
        && !s
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Strings of arbitrary scalar values, control characters included (`any::<String>()`
/// alone draws no control characters).
fn any_chars(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn uuid_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(CID.to_owned()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string().to_uppercase()),
    ]
}

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        any_chars(12),
        "[ \t\r\n\u{0}\u{7}\u{1b}\u{7f}\u{85}\u{a0}\u{2028}\u{feff}a]{0,8}",
        uuid_string(),
        Just("user".to_owned()),
        Just("ai".to_owned()),
        Just("https://cdn.example.com/a.png".to_owned()),
        Just("javascript:alert(1)".to_owned()),
        Just("2026-01-02T03:04:05Z".to_owned()),
    ]
}

/// Keys drawn from the real ones (both levels), RFC 6901 troublemakers, and anything.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(MESSAGE_KEYS.iter().chain(&METADATA_KEYS).collect::<Vec<_>>())
            .prop_map(|k| (*k).to_owned()),
        1 => "[~/a0]{0,4}",
        1 => any::<String>(),
        1 => any_chars(6),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        json_string().prop_map(Value::String),
    ]
}

/// Arbitrary JSON, containers nested at most 6 deep.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid payload with a few entries (at the top or in `metadata`) replaced by arbitrary
/// JSON: most failures of real clients are near misses, which pure noise rarely produces.
fn near_miss() -> impl Strategy<Value = Value> {
    (
        uuid_string(),
        json_string(),
        prop::collection::vec((any::<bool>(), key(), json_value()), 0..4),
    )
        .prop_map(|(cid, content, changes)| {
            let mut payload = json!({
                "conversationId": cid,
                "content": content,
                "type": "user",
                "metadata": {"imageUrl": "https://cdn.example.com/a.png", "timestamp": "2026-01-02T03:04:05Z"},
                "clientMessageId": CID,
            });
            for (in_metadata, k, v) in changes {
                let target = if in_metadata {
                    &mut payload["metadata"]
                } else {
                    &mut payload
                };
                if let Some(map) = target.as_object_mut() {
                    map.insert(k, v);
                }
            }
            payload
        })
}

/// Content candidates around every edge of the rule: empty, blank, control characters,
/// and lengths on both sides of 10000 scalar values (multi-byte ones included).
fn content() -> impl Strategy<Value = String> {
    let long = |c: char| {
        (MAX_CONTENT_CHARS - 2..=MAX_CONTENT_CHARS + 2).prop_map(move |n| c.to_string().repeat(n))
    };
    prop_oneof![
        4 => any::<String>(),
        4 => any_chars(40),
        2 => "[ \t\r\n\u{b}\u{c}\u{a0}\u{1680}\u{2000}\u{2028}\u{3000}]{0,6}",
        2 => "[a \t\r\n\u{0}\u{8}\u{1b}\u{7f}\u{80}\u{9f}]{0,6}",
        1 => long('a'),
        1 => long('😀'),
        1 => long(' '),
        1 => (long('é'), any::<char>()).prop_map(|(s, c)| format!("{c}{s}")),
    ]
}

/// Keys a message payload must refuse.
fn extra_key(allowed: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        any_chars(8),
        "[~/a]{0,6}",
        Just(String::new()),
        prop::sample::select(allowed.to_vec()).prop_map(|k| k.to_uppercase()),
    ]
    .prop_filter("an allowed key", move |k| !allowed.contains(&k.as_str()))
}

fn url_tail() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9/._~%?=&#-]{0,40}", any::<String>()]
}

/// URLs the contract refuses: script/data schemes, relative forms, other schemes, user-info.
fn bad_image_url() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop::sample::select(vec![
                "javascript:",
                "JavaScript:",
                "JAVASCRIPT:",
                " javascript:"
            ]),
            url_tail()
        )
            .prop_map(|(s, t)| format!("{s}{t}")),
        (
            prop::sample::select(vec![
                "data:",
                "DATA:",
                "data:image/png;base64,",
                "data:text/html,"
            ]),
            url_tail()
        )
            .prop_map(|(s, t)| format!("{s}{t}")),
        (
            prop::sample::select(vec![
                "/",
                "./",
                "../",
                "//",
                "?",
                "#",
                "",
                "cdn.example.com/"
            ]),
            "[a-zA-Z0-9/._~-]{0,30}"
        )
            .prop_map(|(s, t)| format!("{s}{t}")),
        (
            prop::sample::select(vec!["ftp://", "FTP://", "ftps://", "file://", "ws://"]),
            host(),
            url_tail()
        )
            .prop_map(|(s, h, t)| format!("{s}{h}/{t}")),
        (
            prop::sample::select(vec!["http://", "https://", "HTTPS://"]),
            prop_oneof![
                "[a-z0-9]{1,8}@",
                "[a-z0-9]{1,8}:[a-z0-9]{0,8}@",
                ":[a-z0-9]{1,8}@",
                "[a-z]{1,5}%40[a-z]{1,5}@",
            ],
            host(),
            "[a-zA-Z0-9/._~-]{0,30}"
        )
            .prop_map(|(s, u, h, p)| format!("{s}{u}{h}/{p}")),
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,15}(\\.[a-z][a-z0-9]{0,10}){0,3}\\.[a-z]{2,6}",
        (any::<u8>(), any::<u8>(), any::<u8>(), 1..255u8)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        "[a-z]{1,10}\\.[a-z]{2,4}:[1-9][0-9]{0,3}",
    ]
}

/// `https://host/path` of 2048 characters or fewer (the limit itself included).
fn good_image_url() -> impl Strategy<Value = String> {
    let path = prop_oneof![
        "[a-zA-Z0-9._~/-]{0,60}",
        "[a-zA-Z0-9._~/-]{0,60}\\?[a-z]{1,5}=[a-zA-Z0-9%]{0,20}",
        "[a-z0-9/é😀]{0,20}",
    ];
    (host(), path, any::<bool>(), 0..=MAX_IMAGE_URL_CHARS).prop_map(|(h, p, pad, len)| {
        let mut url = format!("https://{h}/{p}");
        if pad {
            // Grow towards (or up to) the limit with a harmless path character.
            let n = len.saturating_sub(url.chars().count());
            url.push_str(&"a".repeat(n));
        }
        url
    })
}

fn message_with_image_url(url: &str) -> Value {
    json!({"conversationId": CID, "content": "hi", "metadata": {"imageUrl": url}})
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn any_json_is_answered_and_every_failure_names_fields_by_json_pointer(
        payload in prop_oneof![json_value(), near_miss()]
    ) {
        match parse(&payload) {
            Ok(parsed) => {
                // Only an object of allowed keys can get through.
                let map = payload.as_object().expect("an accepted payload is an object");
                prop_assert!(map.keys().all(|k| MESSAGE_KEYS.contains(&k.as_str())), "{payload}");
                prop_assert_eq!(Some(parsed.content.as_str()), map["content"].as_str());
            }
            Err(details) => {
                prop_assert!(!details.is_empty(), "a refusal without details for {}", payload);
                for d in &details {
                    prop_assert!(is_json_pointer(&d.path), "{:?} for {}", d, payload);
                    // The pointer names a field that exists, or (missing / unknown key) one
                    // whose parent does.
                    let parent = d.path.rsplit_once('/').map_or("", |(p, _)| p);
                    prop_assert!(
                        payload.pointer(&d.path).is_some() || payload.pointer(parent).is_some(),
                        "{:?} points nowhere in {}", d, payload
                    );
                    prop_assert!(!d.message.is_empty(), "{:?}", d);
                }
            }
        }
    }

    #[test]
    fn content_is_accepted_iff_the_contract_allows_it_and_is_kept_byte_for_byte(s in content()) {
        let payload = json!({"conversationId": CID, "content": s});
        match parse(&payload) {
            Ok(parsed) => {
                prop_assert!(content_is_allowed(&s), "accepted {:?} ({} chars)", s, s.chars().count());
                prop_assert_eq!(parsed.content.as_bytes(), s.as_bytes());
            }
            Err(details) => {
                prop_assert!(
                    !content_is_allowed(&s),
                    "refused {:?} ({} chars): {:?}", s, s.chars().count(), details
                );
                prop_assert!(details.iter().all(|d| d.path == "/content"), "{:?}", details);
            }
        }
    }

    #[test]
    fn an_unknown_key_is_named_by_its_own_escaped_pointer(
        k in extra_key(&MESSAGE_KEYS),
        v in leaf(),
    ) {
        let mut payload = json!({"conversationId": CID, "content": "hi"});
        payload[&k] = v;
        let details = parse(&payload).expect_err("an unknown key is refused");
        let pointer = format!("/{}", escape(&k));
        prop_assert!(details.iter().any(|d| d.path == pointer), "{} not in {:?}", pointer, details);
        prop_assert!(details.iter().all(|d| d.path == pointer), "{:?}", details);
    }

    #[test]
    fn an_unknown_metadata_key_is_named_by_its_own_escaped_pointer(
        k in extra_key(&METADATA_KEYS),
        v in leaf(),
    ) {
        let mut payload = json!({"conversationId": CID, "content": "hi", "metadata": {}});
        payload["metadata"][&k] = v;
        let details = parse(&payload).expect_err("an unknown metadata key is refused");
        let pointer = format!("/metadata/{}", escape(&k));
        prop_assert!(details.iter().any(|d| d.path == pointer), "{} not in {:?}", pointer, details);
        prop_assert!(details.iter().all(|d| d.path == pointer), "{:?}", details);
    }

    #[test]
    fn script_data_relative_ftp_and_user_info_image_urls_are_refused(url in bad_image_url()) {
        let details = parse(&message_with_image_url(&url))
            .expect_err(&format!("{url:?} should be refused"));
        prop_assert!(
            details.iter().all(|d| d.path == "/metadata/imageUrl") && !details.is_empty(),
            "{:?}: {:?}", url, details
        );
    }

    #[test]
    fn https_image_urls_up_to_2048_characters_are_accepted(url in good_image_url()) {
        prop_assume!(url.chars().count() <= MAX_IMAGE_URL_CHARS);
        let parsed = parse(&message_with_image_url(&url));
        prop_assert!(parsed.is_ok(), "{:?} ({} chars): {:?}", url, url.chars().count(), parsed.err());
        prop_assert_eq!(parsed.ok().and_then(|p| p.metadata.image_url), Some(url));
    }

    #[test]
    fn image_urls_over_2048_characters_are_refused(extra in 1..64usize, host in host()) {
        let head = format!("https://{host}/");
        let url = format!("{head}{}", "a".repeat(MAX_IMAGE_URL_CHARS + extra - head.len()));
        let details = parse(&message_with_image_url(&url)).expect_err("too long");
        prop_assert!(details.iter().all(|d| d.path == "/metadata/imageUrl"), "{:?}", details);
    }
}

// ---------------------------------------------------------------------------------------
// Plain examples at the edges the properties sample only by chance
// ---------------------------------------------------------------------------------------

#[test]
fn an_image_url_of_exactly_2048_characters_is_accepted_and_2049_refused() {
    let head = "https://cdn.example.com/";
    let at_limit = format!("{head}{}", "a".repeat(MAX_IMAGE_URL_CHARS - head.len()));
    assert!(parse(&message_with_image_url(&at_limit)).is_ok());
    let over = format!("{at_limit}a");
    assert!(parse(&message_with_image_url(&over)).is_err());
}

#[test]
fn content_of_exactly_10000_scalar_values_is_accepted_and_10001_refused() {
    for c in ['a', 'é', '😀'] {
        let at_limit = c.to_string().repeat(MAX_CONTENT_CHARS);
        let parsed = parse(&json!({"conversationId": CID, "content": at_limit})).expect("accepted");
        assert_eq!(parsed.content, at_limit);
        let over = format!("{at_limit}{c}");
        assert!(
            parse(&json!({"conversationId": CID, "content": over})).is_err(),
            "{c}"
        );
    }
}
