//! `POST /api/conversations` and its listing (§8): what the database would refuse is
//! refused first as bad input, creation is limited per user, and the bearer scheme is read
//! as RFC 7235 says.

use crate::harness::{Ingest, bearer};
use axum::http::{Method, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coachwire_shared::ids::{ConversationId, UserId};
use coachwire_testkit::stack::{new_user, token};
use serde_json::{Value, json};

fn paths(body: &Value) -> Vec<String> {
    body["details"].as_array().map_or(vec![], |d| {
        d.iter()
            .filter_map(|d| d["path"].as_str().map(str::to_string))
            .collect()
    })
}

fn create(title: Value, participants: &[UserId]) -> Value {
    let ids: Vec<String> = participants.iter().map(UserId::to_string).collect();
    json!({"title": title, "participantIds": ids})
}

#[tokio::test]
async fn values_the_database_would_refuse_are_refused_first_as_bad_input() {
    let ingest = Ingest::start(&[]).await;
    let alice = bearer(&token(new_user(), None, 3600));
    let others: Vec<UserId> = (0..1000).map(|_| new_user()).collect();
    let table = [
        (create(json!("a\u{0}b"), &[]), "/title", "NUL in the title"),
        (create(json!("\u{1b}[2J"), &[]), "/title", "escape sequence"),
        (
            create(json!(" \u{200B}\t"), &[]),
            "/title",
            "nothing visible",
        ),
        (
            create(json!("t".repeat(201)), &[]),
            "/title",
            "201 characters",
        ),
        (
            create(json!("big"), &others),
            "/participantIds",
            "1001 participants with the caller",
        ),
    ];
    for (body, path, reason) in table {
        let (status, answer) = ingest
            .api(Method::POST, "/api/conversations", Some(&alice), Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}: {answer}");
        assert_eq!(answer["code"], "VALIDATION_FAILED", "{reason}: {answer}");
        assert_eq!(paths(&answer), [path], "{reason}: {answer}");
    }
    assert_eq!(ingest.db.conversation_count().await.expect("count"), 0);

    let fits = create(json!("😀".repeat(200)), &others[..999]);
    let (status, created) = ingest
        .api(Method::POST, "/api/conversations", Some(&alice), Some(fits))
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "200 scalar values and 1000 participants fit: {created}"
    );

    let id = ConversationId(uuid::Uuid::nil());
    for forged in [
        format!("{}.{id}", i64::MAX),
        format!("{}.{id}", i64::MIN / 2),
    ] {
        let cursor = URL_SAFE_NO_PAD.encode(forged);
        let path = format!("/api/conversations?cursor={cursor}");
        let (status, answer) = ingest.api(Method::GET, &path, Some(&alice), None).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "a cursor time Postgres cannot hold: {answer}"
        );
        assert_eq!(paths(&answer), ["/cursor"]);
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_a_huge_token_is_refused_unread() {
    let ingest = &Ingest::start(&[]).await;
    let alice = token(new_user(), None, 3600);
    let list = |authorization: String| async move {
        ingest
            .api(
                Method::GET,
                "/api/conversations",
                Some(&authorization),
                None,
            )
            .await
    };
    let (status, _) = list(format!("bearer {alice}")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "RFC 7235: the scheme is case-insensitive"
    );
    let (status, body) = list(format!("Bearer {}", "a".repeat(100_000))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "token too long", "{body}");
}

#[tokio::test]
async fn conversation_creation_is_limited_per_user_and_the_coach_is_exempt() {
    let ingest =
        &Ingest::start(&["--conversation-limit=3", "--conversation-window-ms=60000"]).await;
    let post = |who: String| async move {
        let body = create(json!("plan"), &[]);
        ingest
            .api(Method::POST, "/api/conversations", Some(&who), Some(body))
            .await
    };
    let alice = bearer(&token(new_user(), None, 3600));
    for _ in 0..3 {
        assert_eq!(post(alice.clone()).await.0, StatusCode::CREATED);
    }
    let (status, refused) = post(alice).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{refused}");
    assert_eq!(refused["code"], "RATE_LIMITED");
    assert!(
        refused["retryAfterMs"]
            .as_u64()
            .is_some_and(|ms| ms > 0 && ms <= 20_000),
        "{refused}"
    );
    assert_eq!(ingest.db.conversation_count().await.expect("count"), 3);
    let coach = bearer(&token(new_user(), Some("ai"), 3600));
    for _ in 0..5 {
        assert_eq!(
            post(coach.clone()).await.0,
            StatusCode::CREATED,
            "role ai is exempt"
        );
    }
}
