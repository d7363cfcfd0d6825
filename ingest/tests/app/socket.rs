//! The socket handlers in process (socketioxide's test socket, see `harness`): what a
//! message goes through before its ack, and a token's expiry, without a port or a
//! process. The end-to-end suite keeps what needs the wire or several processes.

use crate::harness::{Ingest, bearer};
use axum::http::{Method, StatusCode};
use coachwire_shared::subjects::MESSAGES_STREAM;
use coachwire_testkit::stack::{new_user, token};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Messages the MESSAGES stream holds.
async fn in_stream(ingest: &Ingest) -> u64 {
    let mut stream = ingest.js.get_stream(MESSAGES_STREAM).await.expect("stream");
    stream.info().await.expect("stream info").state.messages
}

/// A conversation of `token`'s user, made through the HTTP API.
async fn conversation(ingest: &Ingest, token: &str) -> String {
    let body = json!({"title": "in process", "participantIds": []});
    let (status, created) = ingest
        .api(
            Method::POST,
            "/api/conversations",
            Some(&bearer(token)),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().expect("an id").to_string()
}

/// §7.1 and §5: a success ack comes once JetStream holds the message, and carries it; a
/// retry is the same message; bad input is refused with its field and changes nothing.
#[tokio::test]
async fn a_message_is_acked_once_in_the_stream_and_bad_input_changes_nothing() {
    let ingest = Ingest::start(&[]).await;
    let alice = token(new_user(), None, 3600);
    let id = conversation(&ingest, &alice).await;
    let (mut socket, answer) = ingest.socket(&alice).await;
    answer.expect("admitted");
    let joined = socket
        .emit("join_conversation", json!({"conversationId": id}))
        .await;
    assert_eq!(joined["success"], true, "{joined}");
    assert_eq!(joined["lastSeq"], 0, "{joined}");

    let client_message_id = uuid::Uuid::new_v4().to_string();
    let send = json!({"conversationId": id, "content": "hi", "clientMessageId": client_message_id});
    let acked = socket.emit("message", send.clone()).await;
    assert_eq!(acked["success"], true, "{acked}");
    assert_eq!(acked["duplicate"], false, "{acked}");
    assert_eq!(acked["message"]["content"], "hi", "{acked}");
    assert_eq!(in_stream(&ingest).await, 1, "acked once in the stream");
    let again = socket.emit("message", send).await;
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["message"]["id"], acked["message"]["id"], "{again}");

    let refused = [
        (json!({"conversationId": id, "content": ""}), "/content"),
        (
            json!({"conversationId": "nope", "content": "x"}),
            "/conversationId",
        ),
        (
            json!({"conversationId": id, "content": "x", "clientMessageId": "x"}),
            "/clientMessageId",
        ),
    ];
    for (payload, path) in refused {
        let answer = socket.emit("message", payload).await;
        assert_eq!(answer["code"], "VALIDATION_FAILED", "{answer}");
        assert_eq!(answer["details"][0]["path"], path, "{answer}");
    }
    assert_eq!(
        in_stream(&ingest).await,
        1,
        "nothing refused reached the stream"
    );
}

/// §3: a socket lives no longer than its token; one that has expired is refused.
#[tokio::test]
async fn a_socket_ends_when_its_token_expires_and_an_expired_token_is_refused() {
    let ingest = Ingest::start(&[]).await;
    let user = new_user();
    let (mut socket, answer) = ingest.socket(&token(user, None, 2)).await;
    answer.expect("admitted while its token is valid");
    let began = Instant::now();
    socket.disconnected().await;
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "ended at its expiry, after {:?}",
        began.elapsed()
    );
    let (_, answer) = ingest.socket(&token(user, None, -1)).await;
    let refused: Value = answer.expect_err("refused");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("UNAUTHORIZED")),
        "{refused}"
    );
}
