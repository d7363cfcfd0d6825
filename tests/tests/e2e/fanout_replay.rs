//! `coachwire-fanout replay` (§12): rows the room never heard of (a restored backup, a
//! lost delivery) reach joined sockets once replayed, exactly once and in order, and a
//! replay of what sockets already had shows them nothing.

use coachwire_shared::envelope::RoomEvent;
use coachwire_shared::ids::{ConversationId, MessageId, UserId};
use coachwire_shared::subjects::room_subject;
use coachwire_testkit::js::Driver;
use coachwire_testkit::stack::{Stack, bin_dir};
use futures::StreamExt;
use serde_json::{Value, json};
use std::process::Output;
use std::time::Duration;

/// Long enough for a published room event to reach a socket on loopback many times over.
const QUIET: Duration = Duration::from_millis(700);
/// Longer than the quiet time after which a node checks Postgres for a lost tail
/// (1.5 s in `ingest/src/rooms/actor.rs`), so that check has run and found nothing new.
const PAST_TAIL_CHECK: Duration = Duration::from_millis(2500);

async fn replay(stack: &Stack, args: &[&str]) -> Output {
    tokio::process::Command::new(bin_dir().join("coachwire-fanout"))
        .env("DATABASE_URL", &stack.db.url)
        .env("NATS_URL", stack.nats_url())
        .env("RUST_LOG", "off")
        .arg("replay")
        .args(args)
        .output()
        .await
        .expect("runs (build the workspace first)")
}

/// Runs a replay with `--json` and returns `emitted`.
async fn replay_json(stack: &Stack, conversation: ConversationId, range: &[&str]) -> u64 {
    let id = conversation.to_string();
    let mut args = vec!["--conversation", id.as_str(), "--json"];
    args.extend_from_slice(range);
    let output = replay(stack, &args).await;
    assert!(
        output.status.success(),
        "replay {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(
        report.as_object().map(|o| o.len()),
        Some(1),
        "only `emitted`: {report}"
    );
    report["emitted"].as_u64().expect("emitted is a count")
}

/// Inserts a persisted row the way a restored backup leaves it: no room event ever sent.
async fn insert_row(stack: &Stack, conversation: ConversationId, user: UserId, seq: i64) {
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, user_id, content, type, seq, created_at) \
         VALUES ($1, $2, $3, $4, 'user', $5, now())",
    )
    .bind(MessageId::generate())
    .bind(conversation)
    .bind(user)
    .bind(format!("restored {seq}"))
    .bind(seq)
    .execute(&stack.db.pool)
    .await
    .expect("insert");
}

#[tokio::test]
async fn replayed_rows_reach_a_joined_socket_once_in_order_and_a_second_replay_adds_nothing() {
    let stack = Stack::start().await.expect("stack");
    let driver = Driver::start().await.expect("driver");
    let (room, alice, bob) = stack.room_with_pair(&driver).await.expect("alice and bob");

    // The normal path first: seq 1 and 2 reach bob through the fanout.
    for content in ["one", "two"] {
        alice.send(room.id, content).await.expect("sent");
    }
    let live = bob.next_events("message", 2).await.expect("live messages");
    assert_eq!(
        (live[0]["seq"].clone(), live[1]["seq"].clone()),
        (json!(1), json!(2))
    );

    // Once the node's tail check after seq 2 has run, rows 3..=5 appear in Postgres
    // without any room event: nothing tells the node, so nobody hears of them.
    assert!(
        bob.try_next_event("message", PAST_TAIL_CHECK)
            .await
            .is_none()
    );
    for seq in 3..=5 {
        insert_row(&stack, room.id, room.alice, seq).await;
    }
    assert!(
        bob.try_next_event("message", PAST_TAIL_CHECK)
            .await
            .is_none(),
        "rows written behind the fanout's back are not delivered by themselves"
    );

    // Replaying from the start publishes all five, in order, on the room subject...
    let nats = async_nats::connect(stack.nats_url()).await.expect("nats");
    let mut room_events = nats
        .subscribe(room_subject(room.id))
        .await
        .expect("subscribe");
    nats.flush().await.expect("subscription registered");
    assert_eq!(replay_json(&stack, room.id, &["--from-seq", "1"]).await, 5);
    let mut published = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(QUIET, room_events.next()).await {
        match serde_json::from_slice(&event.payload).expect("a room event") {
            RoomEvent::Messages(persisted) => {
                for event in persisted.events {
                    let envelope = event.envelope;
                    assert!(envelope.origin.is_none(), "replayed events have no origin");
                    published.push(envelope.message.seq.map(|s| s.0));
                }
            }
            other => panic!("replay published {other:?}"),
        }
    }
    assert_eq!(published, [1, 2, 3, 4, 5].map(Some));

    // ...and the sockets, which had 1 and 2 (alice as their sender), get only 3..=5.
    for client in [&bob, &alice] {
        let replayed = client.next_events("message", 3).await.expect("replayed");
        let seqs: Vec<&Value> = replayed.iter().map(|m| &m["seq"]).collect();
        assert_eq!(seqs, [&json!(3), &json!(4), &json!(5)]);
        assert_eq!(replayed[0]["content"], "restored 3");
        assert!(
            client.try_next_event("message", QUIET).await.is_none(),
            "no repeat after the first replay"
        );
    }

    // The whole range again, and a closed sub-range: counted, but nothing new to see.
    assert_eq!(replay_json(&stack, room.id, &["--from-seq", "1"]).await, 5);
    assert_eq!(
        replay_json(&stack, room.id, &["--from-seq", "2", "--to-seq", "4"]).await,
        3
    );
    for client in [&alice, &bob] {
        assert!(
            client.try_next_event("message", QUIET).await.is_none(),
            "a second replay delivers nothing new"
        );
    }

    // Live traffic continues after the replayed seqs.
    alice.send(room.id, "six").await.expect("sent");
    let six = bob.next_event("message").await.expect("live again");
    assert_eq!(six["seq"], 6);
}

#[tokio::test]
async fn replay_reports_in_words_without_json_and_refuses_a_reversed_range() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    for seq in 1..=2 {
        insert_row(&stack, room.id, room.alice, seq).await;
    }
    let id = room.id.to_string();

    let words = replay(&stack, &["--conversation", &id, "--from-seq", "2"]).await;
    assert!(words.status.success());
    let text = String::from_utf8_lossy(&words.stdout);
    assert!(text.starts_with("emitted 1 message"), "{text}");

    let reversed = replay(
        &stack,
        &["--conversation", &id, "--from-seq", "5", "--to-seq", "2"],
    )
    .await;
    assert_eq!(reversed.status.code(), Some(2), "bad arguments exit 2");
    let stderr = String::from_utf8_lossy(&reversed.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("coachwire-fanout: error: --to-seq 2 is below --from-seq 5"),
        "{stderr}"
    );

    let bad_id = replay(&stack, &["--conversation", "nope", "--from-seq", "1"]).await;
    assert_eq!(bad_id.status.code(), Some(2), "a malformed id exits 2");

    let no_db = tokio::process::Command::new(bin_dir().join("coachwire-fanout"))
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("NATS_URL", stack.nats_url())
        .args(["replay", "--conversation", &id, "--from-seq", "1"])
        .output()
        .await
        .expect("runs");
    assert_eq!(no_db.status.code(), Some(1), "a failure exits 1");
    let stderr = String::from_utf8_lossy(&no_db.stderr);
    assert!(stderr.starts_with("coachwire-fanout: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
