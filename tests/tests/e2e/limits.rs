//! Rate limits (§6) and token lifetime (§3), configured through the contract's variables.

use coachwire_testkit::js::{ConnectOptions, ConnectOutcome, Driver};
use coachwire_testkit::stack::{Stack, StackOptions, token};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn messages_past_the_per_user_limit_are_refused_with_retry_after_and_not_stored() {
    let stack = Stack::start_with(StackOptions::with_env(&[
        ("COACHWIRE_MESSAGE_LIMIT", "3"),
        ("COACHWIRE_MESSAGE_WINDOW_MS", "60000"),
    ]))
    .await
    .expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let join = json!({"conversationId": room.id.to_string()});
    let first = driver
        .connect("tab1", &stack.url(), Some(&room.alice_token))
        .await
        .expect("tab1");
    let second = driver
        .connect("tab2", &stack.url(), Some(&room.alice_token))
        .await
        .expect("tab2");
    for tab in [&first, &second] {
        tab.emit_ack("join_conversation", join.clone())
            .await
            .expect("join");
    }
    let send =
        |n: usize| json!({"conversationId": room.id.to_string(), "content": format!("m{n}")});
    for n in 0..3 {
        assert_eq!(
            first.emit_ack("message", send(n)).await.expect("ack")["success"],
            true
        );
    }
    let refused = second.emit_ack("message", send(3)).await.expect("ack");
    assert_eq!(
        refused["code"], "RATE_LIMITED",
        "all of a user's sockets share the budget: {refused}"
    );
    assert!(
        refused["retryAfterMs"]
            .as_u64()
            .is_some_and(|ms| ms > 0 && ms <= 20_000),
        "{refused}"
    );

    let coach = stack.room().await.expect("coach room");
    let ai_token = token(coach.alice, Some("ai"), 3600);
    let ai = driver
        .connect("coach", &stack.url(), Some(&ai_token))
        .await
        .expect("ai");
    ai.emit_ack(
        "join_conversation",
        json!({"conversationId": coach.id.to_string()}),
    )
    .await
    .expect("join");
    for n in 0..6 {
        let payload = json!({"conversationId": coach.id.to_string(), "content": format!("advice {n}"), "type": "ai"});
        assert_eq!(
            ai.emit_ack("message", payload).await.expect("ack")["success"],
            true,
            "the AI coach is not limited"
        );
    }
    let (status, body) = stack
        .api(
            Method::POST,
            &format!("/api/conversations/{}/messages", room.id),
            Some(&room.alice_token),
            Some(json!({"content": "http"})),
        )
        .await
        .expect("http");
    assert_eq!((status, body["code"].as_str()), (429, Some("RATE_LIMITED")));
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE conversation_id = $1")
            .bind(room.id)
            .fetch_one(&stack.db.pool)
            .await
            .expect("count");
    assert!(stored <= 3, "refused messages are not stored ({stored})");
}

#[tokio::test]
async fn handshakes_past_the_per_ip_limit_get_connect_error_rate_limited() {
    let stack = Stack::start_with(StackOptions::with_env(&[
        ("COACHWIRE_CONNECTION_LIMIT", "2"),
        ("COACHWIRE_CONNECTION_WINDOW_MS", "60000"),
        ("COACHWIRE_TRUST_PROXY", "true"),
    ]))
    .await
    .expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let from = |ip: &str| ConnectOptions {
        auth: Some(json!({"token": room.alice_token})),
        extra_headers: Some(json!({"X-Forwarded-For": ip})),
        transports: Some(vec!["websocket".into()]),
        ..Default::default()
    };
    for i in 0..2 {
        let outcome = driver
            .connect_with(&format!("ok{i}"), &stack.url(), from("203.0.113.7"))
            .await
            .expect("driver");
        assert!(
            matches!(outcome, ConnectOutcome::Connected(_)),
            "{outcome:?}"
        );
    }
    match driver
        .connect_with("third", &stack.url(), from("203.0.113.7"))
        .await
        .expect("driver")
    {
        ConnectOutcome::Refused(message) => {
            assert!(message.starts_with("RATE_LIMITED"), "{message}")
        }
        ConnectOutcome::Connected(_) => panic!("the third handshake from one IP was admitted"),
    }
    let other_ip = driver
        .connect_with("other", &stack.url(), from("198.51.100.9"))
        .await
        .expect("driver");
    assert!(
        matches!(other_ip, ConnectOutcome::Connected(_)),
        "another client IP has its own budget"
    );
}

#[tokio::test]
async fn x_forwarded_for_is_ignored_unless_the_proxy_is_trusted() {
    let stack = Stack::start_with(StackOptions::with_env(&[
        ("COACHWIRE_CONNECTION_LIMIT", "1"),
        ("COACHWIRE_CONNECTION_WINDOW_MS", "60000"),
    ]))
    .await
    .expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let spoofing = |ip: &str| ConnectOptions {
        auth: Some(json!({"token": room.alice_token})),
        extra_headers: Some(json!({"X-Forwarded-For": ip})),
        transports: Some(vec!["websocket".into()]),
        ..Default::default()
    };
    let first = driver
        .connect_with("first", &stack.url(), spoofing("203.0.113.1"))
        .await
        .expect("driver");
    assert!(matches!(first, ConnectOutcome::Connected(_)), "{first:?}");
    match driver
        .connect_with("spoofer", &stack.url(), spoofing("203.0.113.2"))
        .await
        .expect("driver")
    {
        ConnectOutcome::Refused(message) => {
            assert!(message.starts_with("RATE_LIMITED"), "{message}")
        }
        ConnectOutcome::Connected(_) => panic!("a forged X-Forwarded-For bought a fresh budget"),
    }
}

#[tokio::test]
async fn a_socket_is_disconnected_when_its_token_expires_and_the_token_stops_working() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    // `exp` has whole seconds, so this token lives 4 to 5 s: enough to connect and join
    // on a CI machine busy with other tests (2 s, so 1 to 2 s, was not).
    let short = token(room.alice, None, 5);
    let alice = driver
        .connect("alice", &stack.url(), Some(&short))
        .await
        .expect("alice");
    let joined = alice
        .emit_ack(
            "join_conversation",
            json!({"conversationId": room.id.to_string()}),
        )
        .await
        .expect("join");
    assert_eq!(joined["success"], true, "{joined}");
    let reason = alice.disconnected().await.expect("disconnected at expiry");
    assert_eq!(reason, "io server disconnect");
    let (status, body) = stack
        .api(
            Method::GET,
            &format!("/api/conversations/{}/messages", room.id),
            Some(&short),
            None,
        )
        .await
        .expect("http");
    assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")));
    match driver
        .connect_with(
            "again",
            &stack.url(),
            ConnectOptions {
                auth: Some(json!({"token": short})),
                ..Default::default()
            },
        )
        .await
        .expect("driver")
    {
        ConnectOutcome::Refused(message) => {
            assert!(message.starts_with("UNAUTHORIZED"), "{message}")
        }
        ConnectOutcome::Connected(_) => panic!("an expired token connected"),
    }
}

#[tokio::test]
async fn typing_beyond_its_rate_is_dropped_not_relayed() {
    let stack = Stack::start().await.expect("stack");
    let driver = Driver::start().await.expect("driver");
    let (room, alice, bob) = stack.room_with_pair(&driver).await.expect("alice and bob");
    let burst = vec![json!({"conversationId": room.id.to_string(), "isTyping": true}); 40];
    let acks = alice.emit_many_ack("typing", burst).await.expect("acks");
    assert!(acks.iter().all(|a| a["success"] == true));
    let mut relayed = 0;
    while bob
        .try_next_event("typing", Duration::from_millis(300))
        .await
        .is_some()
    {
        relayed += 1;
    }
    assert!((1..40).contains(&relayed), "{relayed} of 40 relayed");
}
