//! Streamed replies (§14) through the real binaries with the official socket.io-client:
//! deltas in order and once on every node, the text so far for a late joiner, every way a
//! reply ends, and the refusals.

use coachwire_shared::ids::{ConversationId, UserId};
use coachwire_testkit::js::{Client, Driver};
use coachwire_testkit::stack::{INGEST, ServiceEnv, Stack, StackOptions, new_user, token};
use serde_json::{Value, json};
use std::time::Duration;

/// Idle time of the tests that wait for an idle or abandoned reply to end.
const SHORT_IDLE: &str = "1000";
/// Idle time of the others: longer than any pause between their steps.
const LONG_IDLE: &str = "10000";

/// Short timers, so that idle and stopped replies end within a test's patience.
fn timers(ingest_nodes: usize, idle_ms: &str) -> StackOptions {
    StackOptions {
        ingest_nodes,
        ..StackOptions::with_env(&[
            ("COACHWIRE_REPLY_IDLE_MS", idle_ms),
            ("COACHWIRE_REPLY_STOP_GRACE_MS", "300"),
        ])
    }
}

/// A conversation of two people and the coach.
struct Room {
    id: ConversationId,
    alice: UserId,
    bob: UserId,
    coach: UserId,
}

async fn room(stack: &Stack) -> Room {
    let (alice, bob, coach) = (new_user(), new_user(), new_user());
    let id = stack
        .db
        .conversation(&[alice, bob, coach])
        .await
        .expect("room");
    Room {
        id,
        alice,
        bob,
        coach,
    }
}

async fn joined(driver: &Driver, name: &str, url: &str, token: &str, room: &Room) -> Client {
    let client = driver.connect(name, url, Some(token)).await.expect(name);
    client.join(room.id).await.expect("join");
    client
}

/// The coach and alice, each joined on the first ingest node.
async fn coach_and_alice(stack: &Stack, driver: &Driver, room: &Room) -> (Client, Client) {
    let url = stack.url();
    let coach_token = token(room.coach, Some("ai"), 3600);
    let coach = joined(driver, "coach", &url, &coach_token, room).await;
    let alice = joined(driver, "alice", &url, &token(room.alice, None, 3600), room).await;
    (coach, alice)
}

async fn start(coach: &Client, room: &Room) -> String {
    let ack = coach
        .emit_ack(
            "reply_start",
            json!({"conversationId": room.id.to_string()}),
        )
        .await
        .expect("ack");
    assert_eq!(ack["success"], true, "{ack}");
    assert_eq!(ack["message"]["status"], "streaming");
    assert_eq!(ack["message"]["content"], "");
    assert_eq!(ack["message"]["type"], "ai");
    ack["message"]["id"].as_str().expect("id").to_string()
}

/// Longer than the server's 5 s wait for a PubAck, so an outage is answered, not timed out.
const OUTAGE_ACK_WAIT: Duration = Duration::from_secs(15);

async fn append(coach: &Client, room: &Room, id: &str, offset: u64, text: &str) -> Value {
    let payload =
        json!({"conversationId": room.id.to_string(), "id": id, "offset": offset, "text": text});
    coach
        .emit_ack_within("reply_append", vec![payload], OUTAGE_ACK_WAIT)
        .await
        .expect("ack")
}

async fn end(coach: &Client, room: &Room, id: &str, status: &str) -> Value {
    let payload = json!({"conversationId": room.id.to_string(), "id": id, "status": status});
    coach
        .emit_ack_within("reply_end", vec![payload], OUTAGE_ACK_WAIT)
        .await
        .expect("ack")
}

/// Reads `reply_delta`s until the text is `expected`: each must start exactly where the
/// text so far ends (in order, nothing twice, no gap).
async fn text_from_deltas(client: &Client, id: &str, mut text: String, expected: &str) -> String {
    while text != expected {
        let delta = client.next_event("reply_delta").await.expect("a delta");
        assert_eq!(delta["id"], id);
        let offset = delta["offset"].as_u64().expect("offset");
        assert_eq!(
            offset,
            text.chars().count() as u64,
            "in offset order, once each: {delta} after {text:?}"
        );
        text.push_str(delta["text"].as_str().expect("text"));
    }
    text
}

#[tokio::test]
async fn a_reply_streams_to_every_node_in_order_and_a_late_joiner_gets_the_text_so_far() {
    let stack = Stack::start_with(timers(2, LONG_IDLE))
        .await
        .expect("stack");
    let room = room(&stack).await;
    let driver = Driver::start().await.expect("driver");
    let urls = stack.urls();
    let coach_token = token(room.coach, Some("ai"), 3600);
    let coach = joined(&driver, "coach", &urls[0], &coach_token, &room).await;
    let alice_token = token(room.alice, None, 3600);
    let alice = joined(&driver, "alice", &urls[1], &alice_token, &room).await;

    let id = start(&coach, &room).await;
    let started = alice.next_event("message").await.expect("the start");
    assert_eq!(
        (started["id"].as_str(), started["status"].as_str()),
        (Some(id.as_str()), Some("streaming"))
    );
    let mut length = 0;
    for piece in ["Size ", "it ", "small."] {
        let ack = append(&coach, &room, &id, length, piece).await;
        length += piece.chars().count() as u64;
        assert_eq!(ack, json!({"success": true, "length": length}));
    }
    let seen = text_from_deltas(&alice, &id, String::new(), "Size it small.").await;

    let bob = joined(
        &driver,
        "bob",
        &urls[0],
        &token(room.bob, None, 3600),
        &room,
    )
    .await;
    let join = bob
        .emit_ack(
            "join_conversation",
            json!({"conversationId": room.id.to_string()}),
        )
        .await
        .expect("join");
    assert_eq!(join["streaming"][0]["id"], id.as_str(), "{join}");
    assert_eq!(join["streaming"][0]["content"], "Size it small.");
    assert_eq!(join["streaming"][0]["status"], "streaming");

    assert_eq!(
        append(&coach, &room, &id, length, " Then wait.").await["length"],
        25
    );
    text_from_deltas(&alice, &id, seen, "Size it small. Then wait.").await;
    text_from_deltas(
        &bob,
        &id,
        "Size it small.".into(),
        "Size it small. Then wait.",
    )
    .await;
    assert!(
        coach
            .try_next_event("reply_delta", Duration::from_millis(200))
            .await
            .is_none(),
        "the author gets no deltas of its own text"
    );

    let ended = end(&coach, &room, &id, "complete").await;
    assert_eq!(ended["message"]["status"], "complete", "{ended}");
    assert_eq!(ended["message"]["content"], "Size it small. Then wait.");
    for client in [&alice, &bob, &coach] {
        let updated = client.next_event("message_updated").await.expect("the end");
        assert_eq!(updated["seq"], 2, "{updated}");
        assert_eq!(
            updated["message"]["seq"], 1,
            "the reply stands where it began"
        );
        assert_eq!(updated["message"]["content"], "Size it small. Then wait.");
    }
    let page = alice
        .emit_ack(
            "sync",
            json!({"conversationId": room.id.to_string(), "afterSeq": 0}),
        )
        .await
        .expect("sync");
    assert_eq!(page["messages"][0]["status"], "complete");
    assert_eq!(page["updates"][0]["seq"], 2);
    assert_eq!(
        stack.db.message_count().await.expect("count"),
        2,
        "the start and its end"
    );
}

#[tokio::test]
async fn only_the_coach_starts_only_its_socket_writes_and_bad_appends_change_nothing() {
    let stack = Stack::start_with(timers(1, LONG_IDLE))
        .await
        .expect("stack");
    let room = room(&stack).await;
    let driver = Driver::start().await.expect("driver");
    let (coach, alice) = coach_and_alice(&stack, &driver, &room).await;
    let refused = alice
        .emit_ack(
            "reply_start",
            json!({"conversationId": room.id.to_string()}),
        )
        .await
        .expect("ack");
    assert_eq!(refused["code"], "FORBIDDEN", "{refused}");

    let id = start(&coach, &room).await;
    assert_eq!(
        append(&alice, &room, &id, 0, "mine").await["code"],
        "FORBIDDEN"
    );
    let gap = append(&coach, &room, &id, 3, "x").await;
    assert_eq!(gap["code"], "VALIDATION_FAILED", "{gap}");
    assert_eq!(gap["details"][0]["path"], "/offset");
    assert!(
        gap["details"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is 0 long"))
    );
    let empty = end(&coach, &room, &id, "complete").await;
    assert_eq!(empty["details"][0]["path"], "/status", "{empty}");
    assert_eq!(append(&coach, &room, &id, 0, "Hold.").await["length"], 5);
    assert_eq!(
        append(&coach, &room, &id, 0, "Hold.").await,
        json!({"success": true, "length": 5}),
        "a retry wholly inside the text changes nothing"
    );
    let nul = append(&coach, &room, &id, 5, "a\u{0}").await;
    assert_eq!(nul["details"][0]["path"], "/text", "{nul}");
    let mut length = 5;
    for _ in 0..4 {
        length = append(&coach, &room, &id, length, &"x".repeat(2000)).await["length"]
            .as_u64()
            .expect("length");
    }
    let over = append(&coach, &room, &id, length, &"x".repeat(2000)).await;
    assert_eq!(
        over["details"][0]["path"], "/text",
        "past 10000 in all: {over}"
    );
    let failed = end(&coach, &room, &id, "failed").await;
    assert_eq!(failed["message"]["status"], "failed");
    assert_eq!(
        failed["message"]["content"].as_str().map(str::len),
        Some(8005)
    );
    assert_ne!(
        append(&coach, &room, &id, length, "late").await["success"],
        true
    );

    let fast = start(&coach, &room).await;
    let burst = vec![
        json!({"conversationId": room.id.to_string(), "id": fast, "offset": 0, "text": "x"});
        80
    ];
    let acks = coach
        .emit_many_ack("reply_append", burst)
        .await
        .expect("acks");
    let limited: Vec<&Value> = acks
        .iter()
        .filter(|a| a["code"] == "RATE_LIMITED")
        .collect();
    assert!(
        limited.len() >= 20 && limited.iter().all(|a| a["retryAfterMs"].as_u64().is_some()),
        "80 appends at once: past 50 a second they wait ({} refused)",
        limited.len()
    );
}

/// `reply_start` with `clientMessageId`, asserting success; returns the ack.
async fn start_as(coach: &Client, room: &Room, client_message_id: &str) -> Value {
    let payload =
        json!({"conversationId": room.id.to_string(), "clientMessageId": client_message_id});
    let ack = coach.emit_ack("reply_start", payload).await.expect("ack");
    assert_eq!(ack["success"], true, "{ack}");
    ack
}

#[tokio::test]
async fn a_reply_start_retried_with_its_client_message_id_answers_the_same_reply() {
    let stack = Stack::start_with(timers(1, LONG_IDLE))
        .await
        .expect("stack");
    let room = room(&stack).await;
    let driver = Driver::start().await.expect("driver");
    let (coach, alice) = coach_and_alice(&stack, &driver, &room).await;
    // A UUIDv7 (caught in JetStream's duplicate window) and a UUIDv4 (in Postgres, as
    // the coach's ids derived from the message they answer are).
    for cmid in [uuid::Uuid::now_v7(), uuid::Uuid::new_v4()].map(|id| id.to_string()) {
        let first = start_as(&coach, &room, &cmid).await;
        assert_eq!(first["duplicate"], false, "{first}");
        let id = first["message"]["id"].as_str().expect("id").to_string();
        let streaming = start_as(&coach, &room, &cmid).await;
        assert_eq!(streaming["duplicate"], true, "{streaming}");
        assert_eq!(streaming["message"]["id"], id.as_str());

        assert_eq!(append(&coach, &room, &id, 0, "done").await["length"], 4);
        let ended = end(&coach, &room, &id, "complete").await;
        assert_eq!(ended["success"], true, "{ended}");
        let updated = alice
            .next_event("message_updated")
            .await
            .expect("stored end");
        assert_eq!(updated["message"]["id"], id.as_str());
        // Retried after its end, the start answers the reply as it now stands, and the
        // ended reply takes no more appends.
        let after_end = start_as(&coach, &room, &cmid).await;
        assert_eq!(after_end["duplicate"], true, "{after_end}");
        assert_eq!(after_end["message"]["id"], id.as_str());
        assert_eq!(after_end["message"]["status"], "complete", "{after_end}");
        assert_eq!(after_end["message"]["content"], "done");
        let late = append(&coach, &room, &id, 4, " again").await;
        assert_eq!(
            late["success"], false,
            "an ended reply took an append: {late}"
        );
    }
    // Each reply once: its own row and the row of its one later version (its end).
    let stored = stack.db.seqs(room.id).await.expect("rows");
    assert_eq!(stored.len(), 4, "one reply per clientMessageId: {stored:?}");
    // A reply's start is a message: it counts like one (a start and two retries each).
    let scrape = reqwest::get(format!("{}/metrics", stack.ingest[0].admin_url()))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    for (outcome, count) in [("accepted", "2"), ("duplicate", "4")] {
        let series = format!(r#"coachwire_messages_total{{outcome="{outcome}"}} {count}"#);
        assert!(scrape.lines().any(|l| l == series), "{series}\n{scrape}");
    }
}

/// Regression (the soak, seed 1796467281870442571: 24 replies left `streaming`): a start
/// retried on a node that does not write the reply registers it from its stored row,
/// `seq` and all, and the end published from that carried the `seq`, which the persister
/// refuses in an accepted event: the end was dead-lettered and the reply never ended.
#[tokio::test]
async fn a_reply_started_again_on_another_node_after_its_start_was_stored_ends_there() {
    let stack = Stack::start_with(timers(2, LONG_IDLE))
        .await
        .expect("stack");
    let room = room(&stack).await;
    let driver = Driver::start().await.expect("driver");
    let (coach, alice) = coach_and_alice(&stack, &driver, &room).await;
    let cmid = uuid::Uuid::new_v4().to_string();
    let id = start_as(&coach, &room, &cmid).await["message"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let started = alice.next_event("message").await.expect("stored start");
    assert_eq!(started["id"], id.as_str(), "{started}");

    let urls = stack.urls();
    let coach_token = token(room.coach, Some("ai"), 3600);
    let again = joined(&driver, "coach-again", &urls[1], &coach_token, &room).await;
    let retried = start_as(&again, &room, &cmid).await;
    assert_eq!(retried["duplicate"], true, "{retried}");
    assert_eq!(
        retried["message"]["seq"], started["seq"],
        "read from its row"
    );
    assert_eq!(append(&again, &room, &id, 0, "done").await["length"], 4);
    let ended = end(&again, &room, &id, "complete").await;
    assert_eq!(ended["success"], true, "{ended}");
    let updated = alice
        .next_event("message_updated")
        .await
        .expect("the end is stored");
    assert_eq!(updated["message"]["id"], id.as_str());
    assert_eq!(updated["message"]["status"], "complete");
    assert_eq!(updated["message"]["content"], "done");
}

#[tokio::test]
async fn a_room_that_opens_mid_reply_reads_the_text_so_far_from_the_stream() {
    let stack = Stack::start_with(timers(2, LONG_IDLE))
        .await
        .expect("stack");
    let room = room(&stack).await;
    let driver = Driver::start().await.expect("driver");
    let urls = stack.urls();
    let coach_token = token(room.coach, Some("ai"), 3600);
    let coach = joined(&driver, "coach", &urls[0], &coach_token, &room).await;
    let id = start(&coach, &room).await;
    let length = append(&coach, &room, &id, 0, "Wait for ").await["length"]
        .as_u64()
        .expect("acked");
    // Alice is the first socket of this conversation on the other node: its room opens
    // now, after the start and the first append.
    let alice = driver
        .connect("alice", &urls[1], Some(&token(room.alice, None, 3600)))
        .await
        .expect("alice");
    let join = alice.join(room.id).await.expect("join");
    assert_eq!(join["streaming"][0]["id"], id.as_str(), "{join}");
    assert_eq!(join["streaming"][0]["content"], "Wait for ");
    append(&coach, &room, &id, length, "the close.").await;
    text_from_deltas(&alice, &id, "Wait for ".into(), "Wait for the close.").await;
}

#[tokio::test]
async fn a_stopped_reply_ends_cancelled_whether_its_author_ends_it_or_the_grace_runs_out() {
    let stack = Stack::start_with(timers(1, LONG_IDLE))
        .await
        .expect("stack");
    let room = room(&stack).await;
    let driver = Driver::start().await.expect("driver");
    let url = stack.url();
    let coach = joined(
        &driver,
        "coach",
        &url,
        &token(room.coach, Some("ai"), 3600),
        &room,
    )
    .await;
    let bob = joined(&driver, "bob", &url, &token(room.bob, None, 3600), &room).await;
    let stop = |id: &str| json!({"conversationId": room.id.to_string(), "id": id});

    let id = start(&coach, &room).await;
    append(&coach, &room, &id, 0, "Buy the").await;
    assert_eq!(
        bob.emit_ack("reply_stop", stop(&id)).await.expect("ack")["success"],
        true
    );
    let notice = coach
        .next_event("reply_stop")
        .await
        .expect("the author hears it");
    assert_eq!(
        notice,
        json!({"conversationId": room.id.to_string(), "id": id, "userId": room.bob.to_string()})
    );
    let ended = end(&coach, &room, &id, "complete").await;
    assert_eq!(ended["message"]["status"], "cancelled", "{ended}");
    assert_eq!(ended["message"]["content"], "Buy the");

    let second = start(&coach, &room).await;
    append(&coach, &room, &second, 0, "Sell").await;
    bob.emit_ack("reply_stop", stop(&second))
        .await
        .expect("ack");
    coach
        .next_event("reply_stop")
        .await
        .expect("the author hears it");
    let updates: Vec<Value> = bob
        .next_events("message_updated", 2)
        .await
        .expect("two ends");
    assert_eq!(updates[1]["message"]["id"], second.as_str());
    assert_eq!(
        updates[1]["message"]["status"], "cancelled",
        "the grace ran out"
    );
    assert_eq!(updates[1]["message"]["content"], "Sell");
    let again = bob
        .emit_ack("reply_stop", stop(&second))
        .await
        .expect("ack");
    assert_eq!(
        again["success"], true,
        "a reply no longer streaming: nothing happens"
    );
}

#[tokio::test]
async fn a_reply_whose_author_goes_or_falls_silent_ends_interrupted_with_every_acked_append() {
    let stack = Stack::start_with(timers(1, SHORT_IDLE))
        .await
        .expect("stack");
    let room = room(&stack).await;
    let driver = Driver::start().await.expect("driver");
    let url = stack.url();
    let coach_token = token(room.coach, Some("ai"), 3600);
    let alice = joined(
        &driver,
        "alice",
        &url,
        &token(room.alice, None, 3600),
        &room,
    )
    .await;

    let coach = joined(&driver, "coach", &url, &coach_token, &room).await;
    let gone = start(&coach, &room).await;
    append(&coach, &room, &gone, 0, "Half a thought").await;
    coach.disconnect().await.expect("disconnect");
    let updated = alice.next_event("message_updated").await.expect("the end");
    assert_eq!(updated["message"]["id"], gone.as_str());
    assert_eq!(updated["message"]["status"], "interrupted");
    assert_eq!(updated["message"]["content"], "Half a thought");

    let coach = joined(&driver, "coach-2", &url, &coach_token, &room).await;
    let quiet = start(&coach, &room).await;
    append(&coach, &room, &quiet, 0, "And then").await;
    let updated = alice
        .next_event("message_updated")
        .await
        .expect("the idle end");
    assert_eq!(updated["message"]["id"], quiet.as_str());
    assert_eq!(updated["message"]["status"], "interrupted", "idle past 1 s");
    assert_eq!(updated["message"]["content"], "And then");
}

#[tokio::test]
async fn a_reply_whose_ingest_node_is_killed_ends_interrupted_on_another_node() {
    let mut stack = Stack::start_with(timers(2, SHORT_IDLE))
        .await
        .expect("stack");
    let room = room(&stack).await;
    let driver = Driver::start().await.expect("driver");
    let urls = stack.urls();
    let coach = joined(
        &driver,
        "coach",
        &urls[0],
        &token(room.coach, Some("ai"), 3600),
        &room,
    )
    .await;
    let alice = joined(
        &driver,
        "alice",
        &urls[1],
        &token(room.alice, None, 3600),
        &room,
    )
    .await;
    let id = start(&coach, &room).await;
    let mut length = 0;
    for piece in ["Every ", "acked ", "append ", "stays."] {
        length = append(&coach, &room, &id, length, piece).await["length"]
            .as_u64()
            .expect("acked");
    }
    stack.ingest[0].kill().await.expect("kill -9");
    let updated = alice.next_event("message_updated").await.expect("swept up");
    assert_eq!(updated["message"]["id"], id.as_str());
    assert_eq!(updated["message"]["status"], "interrupted");
    assert_eq!(updated["message"]["content"], "Every acked append stays.");
}

/// Appends `pieces` from `length` on, retrying each until it is acked (as a client retries
/// `UNAVAILABLE` with the same offset); returns the new length.
async fn append_all(
    coach: &Client,
    room: &Room,
    id: &str,
    mut length: u64,
    pieces: &[&str],
) -> u64 {
    for piece in pieces {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ack = append(coach, room, id, length, piece).await;
            if ack["success"] == true {
                length = ack["length"].as_u64().expect("length");
                break;
            }
            assert_eq!(ack["code"], "UNAVAILABLE", "only an outage refuses: {ack}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "NATS never came back"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    length
}

#[tokio::test]
async fn a_persister_killed_mid_reply_stores_its_end_once_with_contiguous_seqs() {
    let mut stack = Stack::start_with(timers(1, LONG_IDLE))
        .await
        .expect("stack");
    let room = room(&stack).await;
    let driver = Driver::start().await.expect("driver");
    let (coach, alice) = coach_and_alice(&stack, &driver, &room).await;
    let id = start(&coach, &room).await;
    alice
        .next_event("message")
        .await
        .expect("the start is stored");
    let length = append_all(&coach, &room, &id, 0, &["Scale ", "in "]).await;
    stack.persisters[0].kill().await.expect("kill -9");
    append_all(&coach, &room, &id, length, &["slowly."]).await;
    assert_eq!(end(&coach, &room, &id, "complete").await["success"], true);
    stack.persisters[0].restart().await.expect("persister back");
    // The restarted persister takes its partitions once the dead one's pins expire.
    let updated = alice
        .try_next_event("message_updated", Duration::from_secs(60))
        .await
        .expect("the end, once the persister is back");
    assert_eq!(updated["message"]["content"], "Scale in slowly.");
    let rows = stack.db.seqs(room.id).await.expect("rows");
    let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2], "the start and its end, once each");
}

#[tokio::test]
async fn nats_restarted_mid_reply_loses_no_acked_append() {
    let mut stack = Stack::start_with(timers(1, LONG_IDLE))
        .await
        .expect("stack");
    let room = room(&stack).await;
    let driver = Driver::start().await.expect("driver");
    let (coach, alice) = coach_and_alice(&stack, &driver, &room).await;
    let id = start(&coach, &room).await;
    let length = append_all(&coach, &room, &id, 0, &["Before ", "the "]).await;
    stack.nats_server().kill().await;
    let refused = append(&coach, &room, &id, length, "outage ").await;
    assert_eq!(
        refused["code"], "UNAVAILABLE",
        "never a false success: {refused}"
    );
    stack.nats_server().restart().await.expect("nats back");
    append_all(&coach, &room, &id, length, &["restart."]).await;
    let ended = loop {
        let ack = end(&coach, &room, &id, "complete").await;
        if ack["success"] == true {
            break ack;
        }
        assert_eq!(ack["code"], "UNAVAILABLE", "{ack}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ended["message"]["content"], "Before the restart.");
    let updated = alice.next_event("message_updated").await.expect("the end");
    assert_eq!(updated["message"]["content"], "Before the restart.");
}

/// Where Debian's `faketime` package puts its library (the soak's skew fault uses it too).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[tokio::test]
async fn a_node_whose_clock_runs_ahead_does_not_end_a_reply_another_node_is_writing() {
    // Node 1's wall clock is 5 minutes ahead; the reply lives on node 0 for over twice the
    // idle time. Judged by wall clocks, node 1 would find it abandoned long ago.
    let mut options = timers(2, SHORT_IDLE);
    options.service_env.push(ServiceEnv {
        binary: INGEST,
        index: 1,
        env: [
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", "+5m"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    });
    let stack = Stack::start_with(options).await.expect("stack");
    let room = room(&stack).await;
    let driver = Driver::start().await.expect("driver");
    let urls = stack.urls();
    let coach_token = token(room.coach, Some("ai"), 3600);
    let coach = joined(&driver, "coach", &urls[0], &coach_token, &room).await;
    let alice = joined(
        &driver,
        "alice",
        &urls[1],
        &token(room.alice, None, 3600),
        &room,
    )
    .await;
    let id = start(&coach, &room).await;
    let pieces: Vec<String> = (0..12).map(|i| format!("piece {i}. ")).collect();
    let mut length = 0;
    for piece in &pieces {
        let ack = append(&coach, &room, &id, length, piece).await;
        assert_eq!(ack["success"], true, "still streaming: {ack}");
        length = ack["length"].as_u64().expect("length");
        // A steady writer, well inside the 1 s idle time: 12 pieces span 3 s.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ended = end(&coach, &room, &id, "complete").await;
    assert_eq!(ended["success"], true, "{ended}");
    let updated = alice.next_event("message_updated").await.expect("the end");
    assert_eq!(updated["message"]["status"], "complete", "{updated}");
    assert_eq!(updated["message"]["content"], pieces.concat());
}
