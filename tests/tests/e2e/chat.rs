//! End to end through all three binaries with the official socket.io-client: connect,
//! join, send, receive, delivery receipts, retries, ordering, several ingest nodes.

use coachwire_shared::ids::{ClientMessageId, MessageId};
use coachwire_testkit::js::{ConnectOptions, ConnectOutcome, Driver};
use coachwire_testkit::stack::{Stack, StackOptions, new_user, token};
use serde_json::{Value, json};
use std::time::Duration;

fn send(conversation: impl ToString, content: &str) -> Value {
    json!({"conversationId": conversation.to_string(), "content": content})
}

#[tokio::test]
async fn a_handshake_without_a_valid_token_is_refused_with_unauthorized() {
    let stack = Stack::start().await.expect("stack");
    let driver = Driver::start().await.expect("driver");
    let cases = [
        ("no token", ConnectOptions::default()),
        (
            "garbage",
            ConnectOptions {
                auth: Some(json!({"token": "not.a.jwt"})),
                ..Default::default()
            },
        ),
        (
            "expired",
            ConnectOptions {
                auth: Some(json!({"token": token(new_user(), None, -60)})),
                ..Default::default()
            },
        ),
        (
            "query string",
            ConnectOptions {
                query: Some(json!({"token": token(new_user(), None, 60)})),
                ..Default::default()
            },
        ),
    ];
    for (i, (reason, options)) in cases.into_iter().enumerate() {
        match driver
            .connect_with(&format!("c{i}"), &stack.url(), options)
            .await
            .expect("driver")
        {
            ConnectOutcome::Refused(message) => {
                assert!(message.starts_with("UNAUTHORIZED"), "{reason}: {message}")
            }
            ConnectOutcome::Connected(_) => panic!("{reason}: connected"),
        }
    }
    let header = ConnectOptions {
        extra_headers: Some(
            json!({"Authorization": format!("Bearer {}", token(new_user(), None, 60))}),
        ),
        ..Default::default()
    };
    assert!(matches!(
        driver
            .connect_with("header", &stack.url(), header)
            .await
            .expect("driver"),
        ConnectOutcome::Connected(_)
    ));
}

#[tokio::test]
async fn a_message_reaches_the_other_participant_and_the_sender_gets_message_delivered() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let alice = driver
        .connect("alice", &stack.url(), Some(&room.alice_token))
        .await
        .expect("alice");
    let bob = driver
        .connect("bob", &stack.url(), Some(&room.bob_token))
        .await
        .expect("bob");
    let join = json!({"conversationId": room.id.to_string()});
    let ack = bob
        .emit_ack("join_conversation", join.clone())
        .await
        .expect("join");
    assert_eq!(
        ack,
        json!({"success": true, "conversationId": room.id.to_string(), "lastSeq": 0, "streaming": []})
    );
    alice
        .emit_ack("join_conversation", join)
        .await
        .expect("join");
    let joined = bob.next_event("user_joined").await.expect("user_joined");
    assert_eq!(
        joined,
        json!({"conversationId": room.id.to_string(), "userId": room.alice.to_string()})
    );

    let cmid = uuid::Uuid::new_v4().to_string();
    let mut payload = send(room.id, "hello <b>bob</b> '; DROP TABLE messages; --");
    payload["clientMessageId"] = json!(cmid);
    let ack = alice.emit_ack("message", payload).await.expect("send");
    assert_eq!(ack["success"], true, "{ack}");
    assert_eq!(ack["duplicate"], false);
    let sent = &ack["message"];
    assert_eq!(sent["userId"], room.alice.to_string());
    assert_eq!(sent["type"], "user");

    let received = bob.next_event("message").await.expect("bob receives");
    assert_eq!(received["id"], sent["id"]);
    assert_eq!(
        received["content"],
        "hello <b>bob</b> '; DROP TABLE messages; --"
    );
    assert_eq!(received["seq"], 1);
    assert_eq!(received["createdAt"], sent["createdAt"]);
    let delivered = alice
        .next_event("message_delivered")
        .await
        .expect("receipt");
    assert_eq!(
        delivered,
        json!({"id": sent["id"], "clientMessageId": cmid, "conversationId": room.id.to_string(), "seq": 1, "createdAt": sent["createdAt"]})
    );
    assert!(
        alice
            .try_next_event("message", Duration::from_millis(300))
            .await
            .is_none(),
        "the sender does not get its own message"
    );
    assert_eq!(stack.db.seqs(room.id).await.expect("rows").len(), 1);
}

#[tokio::test]
async fn an_invalid_message_gets_validation_failed_and_stores_nothing() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let alice = stack
        .joined(&driver, "alice", &room.alice_token, room.id)
        .await
        .expect("alice joined");
    let ack = alice
        .emit_ack(
            "message",
            json!({"conversationId": room.id.to_string(), "content": "", "extra": 1}),
        )
        .await
        .expect("ack");
    assert_eq!(ack["success"], false);
    assert_eq!(ack["code"], "VALIDATION_FAILED");
    let mut paths: Vec<&str> = ack["details"]
        .as_array()
        .expect("details")
        .iter()
        .filter_map(|d| d["path"].as_str())
        .collect();
    paths.sort();
    assert_eq!(paths, ["/content", "/extra"]);
    let keys: Vec<&String> = ack.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 4, "success, error, code, details: {ack}");

    alice
        .emit("message", json!({"conversationId": room.id.to_string()}))
        .await
        .expect("emit without ack");
    let error = alice.next_event("error").await.expect("error event");
    assert_eq!(error["event"], "message");
    assert_eq!(error["code"], "VALIDATION_FAILED");
    assert_eq!(error["details"][0]["path"], "/content");
    assert_eq!(stack.db.message_count().await.expect("count"), 0);
}

#[tokio::test]
async fn joining_or_sending_where_you_do_not_belong_is_forbidden_alike() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let mallory = token(new_user(), None, 3600);
    let m = driver
        .connect("mallory", &stack.url(), Some(&mallory))
        .await
        .expect("mallory");
    let not_mine = m
        .emit_ack(
            "join_conversation",
            json!({"conversationId": room.id.to_string()}),
        )
        .await
        .expect("ack");
    let unknown = m
        .emit_ack(
            "join_conversation",
            json!({"conversationId": uuid::Uuid::new_v4().to_string()}),
        )
        .await
        .expect("ack");
    assert_eq!(not_mine["code"], "FORBIDDEN");
    assert_eq!(not_mine, unknown, "existence is not leaked");
    let sync = m
        .emit_ack(
            "sync",
            json!({"conversationId": room.id.to_string(), "afterSeq": 0}),
        )
        .await
        .expect("ack");
    assert_eq!(sync["code"], "FORBIDDEN");

    let alice = driver
        .connect("alice", &stack.url(), Some(&room.alice_token))
        .await
        .expect("alice");
    let unjoined = alice
        .emit_ack("message", send(room.id, "hi"))
        .await
        .expect("ack");
    assert_eq!(unjoined["code"], "FORBIDDEN", "message needs a join first");
    let as_ai = alice
        .emit_ack(
            "join_conversation",
            json!({"conversationId": room.id.to_string()}),
        )
        .await
        .expect("join");
    assert_eq!(as_ai["success"], true);
    let mut ai = send(room.id, "I am the coach");
    ai["type"] = json!("ai");
    assert_eq!(
        alice.emit_ack("message", ai).await.expect("ack")["code"],
        "FORBIDDEN"
    );
    assert_eq!(stack.db.message_count().await.expect("count"), 0);
}

#[tokio::test]
async fn a_retry_with_the_same_client_message_id_is_stored_once_and_acked_as_duplicate() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let alice = stack
        .joined(&driver, "alice", &room.alice_token, room.id)
        .await
        .expect("alice joined");
    let mut payload = send(room.id, "only once");
    payload["clientMessageId"] = json!(uuid::Uuid::new_v4().to_string());
    let first = alice
        .emit_ack("message", payload.clone())
        .await
        .expect("first");
    let second = alice
        .emit_ack("message", payload.clone())
        .await
        .expect("second");
    assert_eq!(
        (first["duplicate"].clone(), second["duplicate"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(first["message"]["id"], second["message"]["id"]);
    assert_eq!(
        first["message"]["createdAt"],
        second["message"]["createdAt"]
    );
    alice
        .next_event("message_delivered")
        .await
        .expect("persisted");
    // After persisting, the answer comes from Postgres (the dedupe window no longer matters).
    let third = alice.emit_ack("message", payload).await.expect("third");
    assert_eq!(third["duplicate"], true);
    assert_eq!(third["message"]["id"], first["message"]["id"]);
    assert_eq!(third["message"]["seq"], 1);
    assert_eq!(stack.db.message_count().await.expect("count"), 1);
}

#[tokio::test]
async fn three_senders_fifty_messages_each_arrive_in_seq_order_at_a_receiver() {
    let stack = Stack::start().await.expect("stack");
    let (alice, bob, carol, dave) = (new_user(), new_user(), new_user(), new_user());
    let conversation = stack
        .db
        .conversation(&[alice, bob, carol, dave])
        .await
        .expect("conversation");
    let driver = Driver::start().await.expect("driver");
    let join = json!({"conversationId": conversation.to_string()});
    let receiver = driver
        .connect("dave", &stack.url(), Some(&token(dave, None, 3600)))
        .await
        .expect("dave");
    receiver
        .emit_ack("join_conversation", join.clone())
        .await
        .expect("join");
    let mut senders = Vec::new();
    for (name, user) in [("alice", alice), ("bob", bob), ("carol", carol)] {
        let client = driver
            .connect(name, &stack.url(), Some(&token(user, None, 3600)))
            .await
            .expect("sender");
        client
            .emit_ack("join_conversation", join.clone())
            .await
            .expect("join");
        senders.push((name, client));
    }
    let sends = senders.iter().map(|(name, client)| {
        let payloads = (0..50)
            .map(|i| send(conversation, &format!("{name}-{i:02}")))
            .collect();
        client.emit_many_ack("message", payloads)
    });
    for acks in futures::future::join_all(sends).await {
        assert!(acks.expect("acks").iter().all(|a| a["success"] == true));
    }
    let received = receiver
        .next_events("message", 150)
        .await
        .expect("150 messages");
    let seqs: Vec<i64> = received.iter().filter_map(|m| m["seq"].as_i64()).collect();
    assert_eq!(
        seqs,
        (1..=150).collect::<Vec<_>>(),
        "every message once, in seq order"
    );
    for (name, _) in &senders {
        let mine: Vec<&str> = received
            .iter()
            .filter_map(|m| m["content"].as_str())
            .filter(|c| c.starts_with(name))
            .collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine.len(), 50);
        assert_eq!(mine, sorted, "{name}'s messages keep their send order");
    }
    assert!(
        receiver
            .try_next_event("message", Duration::from_millis(300))
            .await
            .is_none(),
        "no duplicates"
    );
}

#[tokio::test]
async fn a_client_on_one_ingest_node_reaches_a_client_on_another() {
    let stack = Stack::start_with(StackOptions {
        ingest_nodes: 2,
        ..Default::default()
    })
    .await
    .expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let alice = driver
        .connect("alice", &stack.ingest[0].url(), Some(&room.alice_token))
        .await
        .expect("alice");
    let bob = driver
        .connect("bob", &stack.ingest[1].url(), Some(&room.bob_token))
        .await
        .expect("bob");
    let join = json!({"conversationId": room.id.to_string()});
    bob.emit_ack("join_conversation", join.clone())
        .await
        .expect("join");
    alice
        .emit_ack("join_conversation", join)
        .await
        .expect("join");
    assert_eq!(
        bob.next_event("user_joined").await.expect("presence")["userId"],
        room.alice.to_string()
    );
    for i in 0..20 {
        alice
            .emit_ack("message", send(room.id, &format!("across {i}")))
            .await
            .expect("send");
    }
    let received = bob.next_events("message", 20).await.expect("received");
    let seqs: Vec<i64> = received.iter().filter_map(|m| m["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(
        alice
            .next_events("message_delivered", 20)
            .await
            .expect("receipts")
            .len(),
        20
    );
    alice
        .emit_ack(
            "typing",
            json!({"conversationId": room.id.to_string(), "isTyping": true}),
        )
        .await
        .expect("typing");
    let typing = bob.next_event("typing").await.expect("typing relayed");
    assert_eq!(
        typing,
        json!({"conversationId": room.id.to_string(), "userId": room.alice.to_string(), "isTyping": true})
    );
    assert!(
        alice
            .try_next_event("typing", Duration::from_millis(200))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn clients_that_join_in_the_same_tick_as_connecting_are_always_answered() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    for i in 0..50 {
        let options = ConnectOptions {
            auth: Some(json!({"token": room.alice_token})),
            transports: Some(vec!["websocket".into()]),
            immediate_emits: vec![(
                "join_conversation".into(),
                json!({"conversationId": room.id.to_string()}),
            )],
            ..Default::default()
        };
        let ConnectOutcome::Connected(client) = driver
            .connect_with(&format!("eager{i}"), &stack.url(), options)
            .await
            .expect("driver")
        else {
            panic!("refused");
        };
        let acks = client.immediate_acks(1).await.expect("answered");
        assert_eq!(acks[0]["success"], true, "{}", acks[0]);
        client.disconnect().await.expect("disconnect");
    }
}

#[tokio::test]
async fn sync_pages_through_history_in_seq_order() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, user_id, content, type, seq, created_at) \
         SELECT gen_random_uuid(), $1, $2, 'm' || s, 'user', s, now() FROM generate_series(1, 250) s",
    )
    .bind(room.id)
    .bind(room.alice)
    .execute(&stack.db.pool)
    .await
    .expect("history");
    let driver = Driver::start().await.expect("driver");
    let bob = driver
        .connect("bob", &stack.url(), Some(&room.bob_token))
        .await
        .expect("bob");
    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let page = bob
            .emit_ack(
                "sync",
                json!({"conversationId": room.id.to_string(), "afterSeq": after, "limit": 100}),
            )
            .await
            .expect("sync");
        let seqs: Vec<i64> = page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["seq"].as_i64())
            .collect();
        pages.push(seqs.len());
        after = *seqs.last().expect("non-empty page");
        if page["hasMore"] == false {
            break;
        }
    }
    assert_eq!(pages, [100, 100, 50]);
    assert_eq!(after, 250);
    let default = bob
        .emit_ack(
            "sync",
            json!({"conversationId": room.id.to_string(), "afterSeq": 240}),
        )
        .await
        .expect("sync");
    assert_eq!(default["messages"].as_array().expect("messages").len(), 10);
    assert_eq!(default["hasMore"], false);
    let too_big = bob
        .emit_ack(
            "sync",
            json!({"conversationId": room.id.to_string(), "afterSeq": 0, "limit": 501}),
        )
        .await
        .expect("sync");
    assert_eq!(too_big["details"][0]["path"], "/limit");
}

#[tokio::test]
async fn a_retry_long_after_the_stream_forgot_it_is_still_acked_as_the_stored_duplicate() {
    let stack = Stack::start().await.expect("stack");
    let driver = Driver::start().await.expect("driver");
    let (room, alice) = stack.room_with_alice(&driver).await.expect("alice joined");
    // A UUIDv7 minted 20 minutes ago: its first send was stored, and JetStream's
    // 10-minute duplicate window has long forgotten it.
    let minted = std::time::SystemTime::now() - Duration::from_secs(20 * 60);
    let since = minted
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    let cmid = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        since.as_secs(),
        since.subsec_nanos(),
    ));
    let id = MessageId::derive(room.alice, ClientMessageId(cmid));
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, user_id, content, type, client_message_id, seq, created_at)
         VALUES ($1, $2, $3, 'long ago', 'user', $4, 1, now() - interval '20 minutes')",
    )
    .bind(id.0)
    .bind(room.id.0)
    .bind(room.alice.0)
    .bind(cmid)
    .execute(&stack.db.pool)
    .await
    .expect("the stored first send");
    let mut payload = send(room.id, "long ago");
    payload["clientMessageId"] = json!(cmid.to_string());
    let retry = alice.emit_ack("message", payload).await.expect("ack");
    assert_eq!(retry["duplicate"], true, "{retry}");
    assert_eq!(retry["message"]["id"], id.to_string());
    assert_eq!(
        retry["message"]["seq"], 1,
        "answered from Postgres: {retry}"
    );
    assert_eq!(stack.db.message_count().await.expect("count"), 1);
}
