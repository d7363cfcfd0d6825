//! Garbage at the Engine.IO / Socket.IO framing level over a plain WebSocket, while
//! hundreds of half-open connections sit on the server: the offender is refused or
//! ignored, strict-JSON failures are answered, and a well-behaved pair keeps chatting.

use coachwire_testkit::js::Driver;
use coachwire_testkit::repo_root;
use coachwire_testkit::stack::Stack;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn framing_garbage_is_refused_and_other_clients_keep_chatting() {
    let mut stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let mut attacker = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/js/raw_frames.mjs"))
        .args([stack.url(), room.alice_token.clone(), room.id.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(attacker.stdout.take().expect("stdout")).lines();
    let mut outcomes: HashMap<String, Value> = HashMap::new();
    while let Some(line) = lines.next_line().await.expect("read") {
        let outcome: Value = serde_json::from_str(&line).expect("json line");
        let name = outcome["name"].as_str().unwrap_or_default().to_string();
        let last = name == "half-open connections held";
        outcomes.insert(name, outcome);
        if last {
            break;
        }
    }
    assert_eq!(outcomes.len(), 18, "every scenario ran: {outcomes:?}");
    for name in [
        "lone surrogate with ack",
        "huge number with ack",
        "nesting 20000 deep with ack",
    ] {
        let outcome = &outcomes[name];
        assert_eq!(
            outcome["acks"][0]["code"], "VALIDATION_FAILED",
            "{name}: {outcome}"
        );
        assert_eq!(outcome["closed"], false, "{name}: the connection stays up");
    }
    assert_eq!(
        outcomes["frame over 64 KiB"]["closed"], true,
        "an oversized frame closes that connection"
    );

    // With the half-open connections still held, a well-behaved pair chats as usual.
    let driver = Driver::start().await.expect("driver");
    let alice = driver
        .connect("alice", &stack.url(), Some(&room.alice_token))
        .await
        .expect("alice");
    let bob = driver
        .connect("bob", &stack.url(), Some(&room.bob_token))
        .await
        .expect("bob");
    for client in [&alice, &bob] {
        client.join(room.id).await.expect("join");
    }
    let ack = alice
        .emit_ack(
            "message",
            json!({"conversationId": room.id.to_string(), "content": "unbothered"}),
        )
        .await
        .expect("send");
    assert_eq!(ack["success"], true, "{ack}");
    assert_eq!(
        bob.next_event("message").await.expect("received")["content"],
        "unbothered"
    );
    drop(attacker.stdin.take());
    let _ = attacker.wait().await;
    assert!(stack.ingest[0].is_running(), "ingest survived");
    assert_eq!(
        stack.db.message_count().await.expect("count"),
        1,
        "garbage stored nothing"
    );
}
