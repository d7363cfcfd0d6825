//! §7.5: while NATS is down, `message` is answered `UNAVAILABLE`, never a false success;
//! once it is back, the client's retry with the same `clientMessageId` is stored once.

use coachwire_testkit::js::Driver;
use coachwire_testkit::stack::Stack;
use serde_json::json;
use std::time::Duration;

/// Longer than ingest's PubAck timeout (5 s), so the answer is ingest's, not the client's.
const ACK_WAIT: Duration = Duration::from_secs(12);

#[tokio::test]
async fn a_message_sent_while_nats_is_down_is_unavailable_and_its_retry_is_stored_once() {
    let mut stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let alice = stack
        .joined(&driver, "alice", &room.alice_token, room.id)
        .await
        .expect("alice joined");
    let payload = json!({"conversationId": room.id.to_string(), "content": "through the outage",
                         "clientMessageId": uuid::Uuid::now_v7().to_string()});

    stack.nats_server().kill().await;
    let during = alice
        .emit_ack_within("message", vec![payload.clone()], ACK_WAIT)
        .await
        .expect("answered");
    assert_eq!(during["success"], false, "no false success: {during}");
    assert_eq!(during["code"], "UNAVAILABLE", "{during}");

    stack.nats_server().restart().await.expect("nats back");
    let mut retried = json!(null);
    for _ in 0..40 {
        retried = alice
            .emit_ack_within("message", vec![payload.clone()], ACK_WAIT)
            .await
            .expect("answered");
        if retried["success"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        retried["success"], true,
        "the retry succeeds once NATS is back: {retried}"
    );
    alice
        .next_event("message_delivered")
        .await
        .expect("persisted after the outage");
    let again = alice.emit_ack("message", payload).await.expect("answered");
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        stack.db.message_count().await.expect("count"),
        1,
        "stored exactly once"
    );
}
