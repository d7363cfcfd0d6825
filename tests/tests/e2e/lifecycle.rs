//! Process behaviour: readiness, graceful SIGTERM, one-line configuration errors, the
//! gap fill that keeps delivery exactly-once and in order when a NATS hop loses an event,
//! and a message's later version travelling the whole pipeline as an event of its own.

use coachwire_shared::envelope::{MessageEnvelope, Persisted, PersistedEvent, RoomEvent, Version};
use coachwire_shared::ids::{MessageId, Seq};
use coachwire_shared::message::{Message, MessageStatus, MessageType, Metadata, now_millis};
use coachwire_shared::subjects::{message_subject, room_subject};
use coachwire_testkit::js::Driver;
use coachwire_testkit::stack::{Stack, bin_dir};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn every_service_exits_zero_on_sigterm_within_ten_seconds() {
    let mut stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let alice = stack
        .joined(&driver, "alice", &room.alice_token, room.id)
        .await
        .expect("alice joined");
    let within = Duration::from_secs(10);
    for service in stack.services_mut() {
        let status = service.terminate(within).await.expect("exits in time");
        assert!(status.success(), "{} exited with {status}", service.name);
    }
    assert!(
        alice.disconnected().await.is_ok(),
        "sockets are closed on shutdown"
    );
}

#[tokio::test]
async fn bad_configuration_exits_non_zero_with_one_line() {
    let cases = [
        (
            "coachwire-ingest",
            vec![
                ("COACHWIRE_LISTEN", "not-an-address"),
                ("COACHWIRE_JWT_SECRET", "x"),
            ],
        ),
        (
            "coachwire-ingest",
            vec![("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
        ),
        (
            "coachwire-persister",
            vec![("COACHWIRE_ADMIN_LISTEN", "::nonsense")],
        ),
        ("coachwire-fanout", vec![("COACHWIRE_STREAM_REPLICAS", "9")]),
    ];
    for (binary, env) in cases {
        let output = tokio::process::Command::new(bin_dir().join(binary))
            .env_remove("COACHWIRE_JWT_SECRET")
            .envs(env.clone())
            .output()
            .await
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{binary} {env:?} exited 0");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{binary} {env:?}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_node_that_misses_an_event_fills_the_gap_from_postgres_and_never_repeats() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let bob = stack
        .joined(&driver, "bob", &room.bob_token, room.id)
        .await
        .expect("bob joined");

    // seq 1 and its later version, seq 2, are persisted, but their room events "are
    // lost"; seq 3's arrives.
    let message = |seq: i64, content: &str| Message {
        id: MessageId::generate(),
        conversation_id: room.id,
        user_id: room.alice,
        content: content.into(),
        kind: MessageType::User,
        metadata: Metadata::default(),
        client_message_id: None,
        seq: Some(Seq(seq)),
        status: MessageStatus::Complete,
        created_at: now_millis(),
    };
    let (lost, arrived) = (message(1, "lost on the way"), message(3, "arrived"));
    let lost_version = Message {
        id: lost.id.later_version(),
        seq: Some(Seq(2)),
        ..lost.clone()
    };
    for m in [&lost, &lost_version, &arrived] {
        let version_of = (m.id != lost.id && m.id != arrived.id).then_some(lost.id);
        sqlx::query("INSERT INTO messages (id, conversation_id, user_id, content, type, seq, created_at, version_of) VALUES ($1, $2, $3, $4, 'user', $5, $6, $7)")
            .bind(m.id)
            .bind(m.conversation_id)
            .bind(m.user_id)
            .bind(&m.content)
            .bind(m.seq)
            .bind(m.created_at)
            .bind(version_of)
            .execute(&stack.db.pool)
            .await
            .expect("insert");
    }
    let nats = async_nats::connect(stack.nats_url()).await.expect("nats");
    let event = RoomEvent::Messages(Persisted {
        events: vec![PersistedEvent::untraced(MessageEnvelope {
            message: arrived,
            origin: None,
            version: None,
        })],
    });
    let payload = serde_json::to_vec(&event).expect("json");
    for _ in 0..2 {
        nats.publish(room_subject(room.id), payload.clone().into())
            .await
            .expect("publish");
    }
    nats.flush().await.expect("flush");

    let received = bob.next_events("message", 2).await.expect("two messages");
    assert_eq!(received[0]["content"], "lost on the way");
    assert_eq!(received[0]["seq"], 1);
    assert_eq!(received[1]["seq"], 3);
    let filled = bob
        .next_event("message_updated")
        .await
        .expect("the version");
    assert_eq!(
        filled["seq"], 2,
        "a later version is filled like any event: {filled}"
    );
    assert_eq!(filled["message"]["id"], lost.id.to_string());
    assert!(
        bob.try_next_event("message", Duration::from_millis(300))
            .await
            .is_none(),
        "the repeat is dropped"
    );
}

#[tokio::test]
async fn the_token_command_prints_a_token_the_server_accepts_with_its_role() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let output = tokio::process::Command::new(bin_dir().join("coachwire-ingest"))
        .env("COACHWIRE_JWT_SECRET", coachwire_testkit::stack::JWT_SECRET)
        .args([
            "token",
            "--user",
            &room.alice.to_string(),
            "--role",
            "ai",
            "--ttl",
            "5m",
        ])
        .output()
        .await
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let driver = Driver::start().await.expect("driver");
    let coach = stack
        .joined(&driver, "coach", &token, room.id)
        .await
        .expect("coach joined");
    let payload =
        serde_json::json!({"conversationId": room.id.to_string(), "content": "hi", "type": "ai"});
    let ack = coach.emit_ack("message", payload).await.expect("ack");
    assert_eq!(
        ack["message"]["type"], "ai",
        "the role reached the server: {ack}"
    );
    assert_eq!(ack["message"]["userId"], room.alice.to_string());
}

#[tokio::test]
async fn every_service_answers_health_readiness_and_metrics() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let path = format!("/api/conversations/{}/messages", room.id);
    let body = serde_json::json!({"content": "counted"});
    let (status, _) = stack
        .api(
            reqwest::Method::POST,
            &path,
            Some(&room.alice_token),
            Some(body),
        )
        .await
        .expect("post");
    assert_eq!(status, 202);
    for service in stack.services() {
        for base in [service.url(), service.admin_url()] {
            for route in ["/healthz", "/readyz"] {
                let response = stack
                    .http
                    .get(format!("{base}{route}"))
                    .send()
                    .await
                    .expect("get");
                assert_eq!(response.status(), 200, "{} {base}{route}", service.name);
            }
        }
    }
    let public = stack
        .http
        .get(format!("{}/metrics", stack.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(
        public.status(),
        404,
        "ingest's metrics are for operators, not on the public port"
    );
    let metrics = |url: String| {
        let http = stack.http.clone();
        async move {
            http.get(format!("{url}/metrics"))
                .send()
                .await
                .expect("get")
                .text()
                .await
                .expect("text")
        }
    };
    let ingest = metrics(stack.ingest[0].admin_url()).await;
    assert!(
        ingest.contains(r#"coachwire_messages_total{outcome="accepted"} 1"#),
        "{ingest}"
    );
    let mut persister = String::new();
    for _ in 0..200 {
        persister = metrics(stack.persisters[0].admin_url()).await;
        if persister.contains("coachwire_persisted_total 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        persister.contains("coachwire_persisted_total 1"),
        "{persister}"
    );
    assert!(
        persister.contains("coachwire_persist_batch_size_bucket"),
        "{persister}"
    );
    assert!(
        persister.contains(r#"coachwire_consumer_pending{consumer="persister-p"#),
        "{persister}"
    );
    for service in stack.services() {
        let text = metrics(service.admin_url()).await;
        assert!(
            text.contains(r#"coachwire_db_pool_connections{state="idle"}"#),
            "{}: {text}",
            service.name
        );
    }
}

/// A streamed reply's start and end (§14), published to the `MESSAGES` stream as ingest
/// publishes any event: the end is a later version of the start's message.
async fn publish_event(js: &async_nats::jetstream::Context, envelope: &MessageEnvelope) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", envelope.event_id().to_string().as_str());
    let payload = serde_json::to_vec(envelope).expect("json");
    js.publish_with_headers(
        message_subject(envelope.message.conversation_id),
        headers,
        payload.into(),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");
}

#[tokio::test]
async fn a_later_version_reaches_every_socket_as_message_updated_in_seq_order_and_sync_has_it() {
    let stack = Stack::start().await.expect("stack");
    let driver = Driver::start().await.expect("driver");
    let (room, alice) = stack.room_with_alice(&driver).await.expect("room");
    let start = Message {
        id: MessageId::generate(),
        conversation_id: room.id,
        user_id: room.bob,
        content: String::new(),
        kind: MessageType::Ai,
        metadata: Metadata::default(),
        client_message_id: None,
        seq: None,
        status: MessageStatus::Streaming,
        created_at: now_millis(),
    };
    let end = Message {
        content: "Wait for the print.".into(),
        status: MessageStatus::Cancelled,
        ..start.clone()
    };
    let nats = async_nats::connect(stack.nats_url()).await.expect("nats");
    let js = async_nats::jetstream::new(nats);
    let creation = MessageEnvelope {
        message: start.clone(),
        origin: None,
        version: None,
    };
    let later = MessageEnvelope {
        message: end,
        origin: None,
        version: Some(Version::default()),
    };
    publish_event(&js, &creation).await;
    alice.send(room.id, "meanwhile").await.expect("send");
    publish_event(&js, &later).await;
    publish_event(&js, &later).await;

    let created = alice.next_event("message").await.expect("the start");
    assert_eq!(
        (created["seq"].clone(), created["status"].clone()),
        (json!(1), json!("streaming"))
    );
    let updated = alice.next_event("message_updated").await.expect("the end");
    assert_eq!(
        updated["seq"], 3,
        "its own seq, after alice's message: {updated}"
    );
    assert_eq!(updated["conversationId"], room.id.to_string());
    assert_eq!(
        updated["message"]["seq"], 1,
        "the reply stands where it began"
    );
    assert_eq!(updated["message"]["status"], "cancelled");
    assert_eq!(updated["message"]["content"], "Wait for the print.");
    assert!(
        alice
            .try_next_event("message_updated", Duration::from_millis(300))
            .await
            .is_none(),
        "the end is emitted once"
    );

    let page = alice
        .emit_ack(
            "sync",
            json!({"conversationId": room.id.to_string(), "afterSeq": 0}),
        )
        .await
        .expect("sync");
    assert_eq!(
        page["messages"][0]["status"], "cancelled",
        "in its current version"
    );
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["updates"][0]["seq"], 3);
    assert_eq!(page["updates"][0]["message"], page["messages"][0]);
    let late = driver
        .connect("late", &stack.url(), Some(&room.bob_token))
        .await
        .expect("bob");
    let joined = late.join(room.id).await.expect("join");
    assert_eq!(joined["lastSeq"], 3, "lastSeq counts every event");
}

/// Regression (the soak: an ingest node restarted while Postgres was read-only exited on
/// its migrations, "cannot execute CREATE TABLE in a read-only transaction", and one
/// restarted while Postgres was paused exited too). A start-up now waits for a database
/// that cannot serve yet, and goes on once it can.
#[tokio::test]
async fn a_start_up_waits_for_a_read_only_database_and_goes_on_once_it_is_writable() {
    use coachwire_testkit::db::{Access, TestDb};
    let db = TestDb::new().await.expect("db");
    db.set_access(Access::ReadOnly).await.expect("read-only");
    let url = db.url.clone();
    let mut starting =
        tokio::spawn(async move { coachwire_shared::db::connect_and_migrate(&url, 2).await });
    let early = tokio::time::timeout(Duration::from_secs(2), &mut starting).await;
    assert!(early.is_err(), "it must wait, not give up: {early:?}");
    db.set_access(Access::ReadWrite).await.expect("writable");
    let pool = starting
        .await
        .expect("join")
        .expect("connected and migrated once writable");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("a query");
    assert_eq!(one, 1);
}

/// Regression (the 30-minute soak: a fanout restarted as all three NATS nodes were killed
/// exited after 10 s, "no connection to NATS … within 10 s", while the cluster took
/// 14.6 s to come back). A start-up waits longer than that for NATS.
#[tokio::test]
async fn a_start_up_waits_out_a_nats_restart_longer_than_a_cluster_s_elections() {
    let mut server = coachwire_testkit::nats_server::NatsServer::start()
        .await
        .expect("nats-server");
    server.kill().await;
    let url = server.url();
    let mut connecting =
        tokio::spawn(async move { coachwire_shared::nats::connect(&url, "waiting").await });
    let early = tokio::time::timeout(Duration::from_secs(15), &mut connecting).await;
    assert!(early.is_err(), "it must still be waiting: {early:?}");
    server.restart().await.expect("nats-server back");
    let client = connecting
        .await
        .expect("join")
        .expect("connected once NATS is back");
    assert!(!client.server_info().version.is_empty());
}
