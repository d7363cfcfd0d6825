//! Hostile input through the real binaries with the official socket.io-client: every
//! payload gets `VALIDATION_FAILED` (or the contract's code) naming the failing field, the
//! `messages` table never changes, and the connection stays up for the next attempt.

use coachwire_testkit::js::{Client, Driver, binary, raw_json};
use coachwire_testkit::stack::Stack;
use serde_json::{Value, json};

const V: &str = "VALIDATION_FAILED";

/// One row: which event, what payload, what code, which pointer must be in `details`.
struct Case {
    reason: &'static str,
    event: &'static str,
    payload: Value,
    code: &'static str,
    path: Option<&'static str>,
}

fn case(
    reason: &'static str,
    event: &'static str,
    payload: Value,
    code: &'static str,
    path: Option<&'static str>,
) -> Case {
    Case {
        reason,
        event,
        payload,
        code,
        path,
    }
}

/// A valid message to `c` with `key` set to `value` (or removed, for `Value::Null` on `remove`).
fn with(c: &str, key: &str, value: Value) -> Value {
    let mut payload = json!({"conversationId": c, "content": "hi"});
    payload[key] = value;
    payload
}

fn without(c: &str, key: &str) -> Value {
    let mut payload = json!({"conversationId": c, "content": "hi"});
    payload.as_object_mut().map(|m| m.remove(key));
    payload
}

fn image(c: &str, url: Value) -> Value {
    with(c, "metadata", json!({"imageUrl": url}))
}

fn corpus(c: &str, stranger: &str) -> Vec<Case> {
    let m = "message";
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let deep_metadata = format!(
        r#"{{"conversationId":"{c}","content":"hi","metadata":{{"timestamp":{}}}}}"#,
        nested(200)
    );
    vec![
        case("null payload", m, json!(null), V, Some("")),
        case("array payload", m, json!([]), V, Some("")),
        case("string payload", m, json!("hi"), V, Some("")),
        case("number payload", m, json!(42), V, Some("")),
        case("boolean payload", m, json!(true), V, Some("")),
        case("empty object", m, json!({}), V, Some("/conversationId")),
        case(
            "missing content",
            m,
            without(c, "content"),
            V,
            Some("/content"),
        ),
        case(
            "missing conversationId",
            m,
            without(c, "conversationId"),
            V,
            Some("/conversationId"),
        ),
        case(
            "content number",
            m,
            with(c, "content", json!(7)),
            V,
            Some("/content"),
        ),
        case(
            "content huge number",
            m,
            with(c, "content", json!(1e308)),
            V,
            Some("/content"),
        ),
        case(
            "content null",
            m,
            with(c, "content", json!(null)),
            V,
            Some("/content"),
        ),
        case(
            "content array",
            m,
            with(c, "content", json!(["hi"])),
            V,
            Some("/content"),
        ),
        case(
            "content object",
            m,
            with(c, "content", json!({"text": "hi"})),
            V,
            Some("/content"),
        ),
        case(
            "content empty",
            m,
            with(c, "content", json!("")),
            V,
            Some("/content"),
        ),
        case(
            "content spaces",
            m,
            with(c, "content", json!("    ")),
            V,
            Some("/content"),
        ),
        case(
            "content only invisible format characters",
            m,
            with(c, "content", json!("\u{200B}\u{FEFF} \u{202E}")),
            V,
            Some("/content"),
        ),
        case(
            "content tabs and newlines",
            m,
            with(c, "content", json!("\n\t\r\n")),
            V,
            Some("/content"),
        ),
        case(
            "content unicode spaces",
            m,
            with(c, "content", json!("\u{2003}\u{3000}")),
            V,
            Some("/content"),
        ),
        case(
            "content NUL",
            m,
            with(c, "content", json!("a\u{0}b")),
            V,
            Some("/content"),
        ),
        case(
            "content bell",
            m,
            with(c, "content", json!("ding\u{7}")),
            V,
            Some("/content"),
        ),
        case(
            "content ANSI escape",
            m,
            with(c, "content", json!("\u{1b}[31mred")),
            V,
            Some("/content"),
        ),
        case(
            "content DEL",
            m,
            with(c, "content", json!("a\u{7f}")),
            V,
            Some("/content"),
        ),
        case(
            "content C1 control",
            m,
            with(c, "content", json!("a\u{85}b")),
            V,
            Some("/content"),
        ),
        case(
            "content 10001 chars",
            m,
            with(c, "content", json!("x".repeat(10_001))),
            V,
            Some("/content"),
        ),
        case(
            "content 10001 emoji",
            m,
            with(c, "content", json!("😀".repeat(10_001))),
            V,
            Some("/content"),
        ),
        case(
            "content lone surrogate",
            m,
            raw_json(&format!(r#"{{"conversationId":"{c}","content":"\ud800"}}"#)),
            V,
            Some(""),
        ),
        case(
            "conversationId not a uuid",
            m,
            with(c, "conversationId", json!("not-a-uuid")),
            V,
            Some("/conversationId"),
        ),
        case(
            "conversationId unhyphenated",
            m,
            with(c, "conversationId", json!(c.replace('-', ""))),
            V,
            Some("/conversationId"),
        ),
        case(
            "conversationId braces",
            m,
            with(c, "conversationId", json!(format!("{{{c}}}"))),
            V,
            Some("/conversationId"),
        ),
        case(
            "conversationId urn",
            m,
            with(c, "conversationId", json!(format!("urn:uuid:{c}"))),
            V,
            Some("/conversationId"),
        ),
        case(
            "conversationId trailing space",
            m,
            with(c, "conversationId", json!(format!("{c} "))),
            V,
            Some("/conversationId"),
        ),
        case(
            "conversationId too short",
            m,
            with(c, "conversationId", json!(&c[1..])),
            V,
            Some("/conversationId"),
        ),
        case(
            "conversationId non-hex",
            m,
            with(c, "conversationId", json!(format!("g{}", &c[1..]))),
            V,
            Some("/conversationId"),
        ),
        case(
            "conversationId number",
            m,
            with(c, "conversationId", json!(12345)),
            V,
            Some("/conversationId"),
        ),
        case(
            "conversationId SQL",
            m,
            with(c, "conversationId", json!("' OR 1=1 --")),
            V,
            Some("/conversationId"),
        ),
        case(
            "clientMessageId not a uuid",
            m,
            with(c, "clientMessageId", json!("abc")),
            V,
            Some("/clientMessageId"),
        ),
        case(
            "clientMessageId number",
            m,
            with(c, "clientMessageId", json!(123)),
            V,
            Some("/clientMessageId"),
        ),
        case(
            "clientMessageId object",
            m,
            with(c, "clientMessageId", json!({})),
            V,
            Some("/clientMessageId"),
        ),
        case(
            "type unknown",
            m,
            with(c, "type", json!("admin")),
            V,
            Some("/type"),
        ),
        case(
            "type upper case",
            m,
            with(c, "type", json!("AI")),
            V,
            Some("/type"),
        ),
        case(
            "type null",
            m,
            with(c, "type", json!(null)),
            V,
            Some("/type"),
        ),
        case(
            "type number",
            m,
            with(c, "type", json!(1)),
            V,
            Some("/type"),
        ),
        case(
            "type ai without the role",
            m,
            with(c, "type", json!("ai")),
            "FORBIDDEN",
            None,
        ),
        case(
            "unknown key",
            m,
            with(c, "extra", json!(1)),
            V,
            Some("/extra"),
        ),
        case(
            "unknown key userId (spoofing)",
            m,
            with(c, "userId", json!(c)),
            V,
            Some("/userId"),
        ),
        case(
            "unknown key seq (spoofing)",
            m,
            with(c, "seq", json!(1)),
            V,
            Some("/seq"),
        ),
        case(
            "unknown key __proto__",
            m,
            with(c, "__proto__", json!({"admin": true})),
            V,
            Some("/__proto__"),
        ),
        case(
            "unknown key constructor",
            m,
            with(c, "constructor", json!({})),
            V,
            Some("/constructor"),
        ),
        case(
            "unknown key with slash",
            m,
            with(c, "a/b", json!(1)),
            V,
            Some("/a~1b"),
        ),
        case(
            "unknown key with tilde",
            m,
            with(c, "a~b", json!(1)),
            V,
            Some("/a~0b"),
        ),
        case(
            "metadata null",
            m,
            with(c, "metadata", json!(null)),
            V,
            Some("/metadata"),
        ),
        case(
            "metadata array",
            m,
            with(c, "metadata", json!([])),
            V,
            Some("/metadata"),
        ),
        case(
            "metadata string",
            m,
            with(c, "metadata", json!("x")),
            V,
            Some("/metadata"),
        ),
        case(
            "metadata unknown key",
            m,
            with(c, "metadata", json!({"foo": 1})),
            V,
            Some("/metadata/foo"),
        ),
        case(
            "imageUrl javascript:",
            m,
            image(c, json!("javascript:alert(1)")),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "imageUrl JavaScript: mixed case",
            m,
            image(c, json!("JaVaScRiPt:alert(1)")),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "imageUrl data:",
            m,
            image(c, json!("data:text/html;base64,PHNjcmlwdD4=")),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "imageUrl vbscript:",
            m,
            image(c, json!("vbscript:msgbox(1)")),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "imageUrl relative",
            m,
            image(c, json!("/img/a.png")),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "imageUrl protocol-relative",
            m,
            image(c, json!("//evil.example/a.png")),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "imageUrl user-info",
            m,
            image(c, json!("https://user:pass@evil.example/a.png")),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "imageUrl user only",
            m,
            image(c, json!("https://user@evil.example/a.png")),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "imageUrl ftp",
            m,
            image(c, json!("ftp://files.example/a.png")),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "imageUrl file",
            m,
            image(c, json!("file:///etc/passwd")),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "imageUrl too long",
            m,
            image(
                c,
                json!(format!("https://cdn.example/{}", "a".repeat(2048))),
            ),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "imageUrl number",
            m,
            image(c, json!(5)),
            V,
            Some("/metadata/imageUrl"),
        ),
        case(
            "timestamp words",
            m,
            with(c, "metadata", json!({"timestamp": "yesterday"})),
            V,
            Some("/metadata/timestamp"),
        ),
        case(
            "timestamp number",
            m,
            with(c, "metadata", json!({"timestamp": 1_700_000_000})),
            V,
            Some("/metadata/timestamp"),
        ),
        case(
            "timestamp impossible date",
            m,
            with(c, "metadata", json!({"timestamp": "2024-13-45T99:99:99Z"})),
            V,
            Some("/metadata/timestamp"),
        ),
        case("binary payload", m, binary(b"\x00\x01\x02"), V, Some("")),
        case(
            "binary content",
            m,
            json!({"conversationId": c, "content": binary(b"hi")}),
            V,
            Some(""),
        ),
        case(
            "validation before membership",
            m,
            with(stranger, "content", json!("")),
            V,
            Some("/content"),
        ),
        case("join null", "join_conversation", json!(null), V, Some("")),
        case(
            "join binary",
            "join_conversation",
            binary(b"\x01"),
            V,
            Some(""),
        ),
        case(
            "typing binary inside",
            "typing",
            json!({"conversationId": c, "isTyping": binary(b"1")}),
            V,
            Some(""),
        ),
        case(
            "join bad id",
            "join_conversation",
            json!({"conversationId": "x"}),
            V,
            Some("/conversationId"),
        ),
        case(
            "join extra key",
            "join_conversation",
            json!({"conversationId": c, "extra": 1}),
            V,
            Some("/extra"),
        ),
        case("leave array", "leave_conversation", json!([]), V, Some("")),
        case(
            "typing missing isTyping",
            "typing",
            json!({"conversationId": c}),
            V,
            Some("/isTyping"),
        ),
        case(
            "typing isTyping string",
            "typing",
            json!({"conversationId": c, "isTyping": "yes"}),
            V,
            Some("/isTyping"),
        ),
        case(
            "sync negative afterSeq",
            "sync",
            json!({"conversationId": c, "afterSeq": -1}),
            V,
            Some("/afterSeq"),
        ),
        case(
            "sync afterSeq string",
            "sync",
            json!({"conversationId": c, "afterSeq": "0"}),
            V,
            Some("/afterSeq"),
        ),
        case(
            "sync afterSeq 2^63, past bigint",
            "sync",
            json!({"conversationId": c, "afterSeq": 9_223_372_036_854_775_808u64}),
            V,
            Some("/afterSeq"),
        ),
        case(
            "sync afterSeq 1e300",
            "sync",
            json!({"conversationId": c, "afterSeq": 1e300}),
            V,
            Some("/afterSeq"),
        ),
        case(
            "sync limit zero",
            "sync",
            json!({"conversationId": c, "afterSeq": 0, "limit": 0}),
            V,
            Some("/limit"),
        ),
        case(
            "sync limit 501",
            "sync",
            json!({"conversationId": c, "afterSeq": 0, "limit": 501}),
            V,
            Some("/limit"),
        ),
        case(
            "sync limit fraction",
            "sync",
            json!({"conversationId": c, "afterSeq": 0, "limit": 1.5}),
            V,
            Some("/limit"),
        ),
        case(
            "nesting 200 deep inside metadata",
            m,
            raw_json(&deep_metadata),
            V,
            Some(""),
        ),
        case("nesting 1000 deep", m, raw_json(&nested(1000)), V, Some("")),
    ]
}

async fn still_chats(client: &Client, c: &str) {
    let ack = client
        .emit_ack(
            "message",
            json!({"conversationId": c, "content": "still here"}),
        )
        .await
        .expect("ack");
    assert_eq!(ack["success"], true, "{ack}");
}

#[tokio::test]
async fn sixty_plus_hostile_payloads_are_refused_precisely_and_store_nothing() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let stranger = stack.room().await.expect("another room");
    let driver = Driver::start().await.expect("driver");
    let alice = driver
        .connect("alice", &stack.url(), Some(&room.alice_token))
        .await
        .expect("alice");
    let c = room.id.to_string();
    alice
        .emit_ack("join_conversation", json!({"conversationId": c}))
        .await
        .expect("join");
    let cases = corpus(&c, &stranger.id.to_string());
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for case in &cases {
        let ack = alice
            .emit_ack(case.event, case.payload.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: no answer ({e})", case.reason));
        assert_eq!(ack["success"], false, "{}: {ack}", case.reason);
        assert_eq!(ack["code"], case.code, "{}: {ack}", case.reason);
        if let Some(path) = case.path {
            let paths: Vec<&str> = ack["details"].as_array().map_or(vec![], |d| {
                d.iter().filter_map(|d| d["path"].as_str()).collect()
            });
            assert!(
                paths.contains(&path),
                "{}: expected {path:?} in {paths:?}",
                case.reason
            );
        }
        assert_eq!(
            stack.db.message_count().await.expect("count"),
            0,
            "{} stored something",
            case.reason
        );
    }
    still_chats(&alice, &c).await;
}
