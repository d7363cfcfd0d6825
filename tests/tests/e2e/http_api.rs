//! The HTTP routes of §8 against the real binaries.

use coachwire_testkit::js::Driver;
use coachwire_testkit::stack::{Stack, new_user, token};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn conversations_are_created_listed_and_written_over_http() {
    let stack = Stack::start().await.expect("stack");
    let (alice, bob) = (new_user(), new_user());
    let alice_token = token(alice, None, 3600);
    let (status, created) = stack
        .api(
            Method::POST,
            "/api/conversations",
            Some(&alice_token),
            Some(json!({"title": "coaching", "participantIds": [bob.to_string()]})),
        )
        .await
        .expect("create");
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["createdBy"], alice.to_string());
    let mut participants: Vec<String> =
        serde_json::from_value(created["participantIds"].clone()).expect("ids");
    participants.sort();
    let mut expected = vec![alice.to_string(), bob.to_string()];
    expected.sort();
    assert_eq!(participants, expected, "the caller is a participant too");
    let id = created["id"].as_str().expect("id").to_string();

    let (status, listed) = stack
        .api(
            Method::GET,
            "/api/conversations",
            Some(&token(bob, None, 60)),
            None,
        )
        .await
        .expect("list");
    assert_eq!(status, 200);
    assert_eq!(listed["conversations"][0]["id"], id);

    let driver = Driver::start().await.expect("driver");
    let listener = driver
        .connect("bob", &stack.url(), Some(&token(bob, None, 60)))
        .await
        .expect("bob");
    listener
        .emit_ack("join_conversation", json!({"conversationId": id}))
        .await
        .expect("join");
    let path = format!("/api/conversations/{id}/messages");
    let (status, accepted) = stack
        .api(
            Method::POST,
            &path,
            Some(&alice_token),
            Some(json!({"content": "over http"})),
        )
        .await
        .expect("post");
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["success"], true);
    assert_eq!(accepted["duplicate"], false);
    assert_eq!(
        listener.next_event("message").await.expect("delivered")["content"],
        "over http"
    );

    let (status, page) = stack
        .api(
            Method::GET,
            &format!("{path}?afterSeq=0&limit=10"),
            Some(&alice_token),
            None,
        )
        .await
        .expect("get");
    assert_eq!(status, 200);
    assert_eq!(page["messages"][0]["seq"], 1);
    assert_eq!(
        page["messages"][0]["status"], "complete",
        "an ordinary message is complete as stored"
    );
    assert_eq!(page["updates"], serde_json::json!([]));
    assert_eq!(page["hasMore"], false);
}

#[tokio::test]
async fn http_failures_carry_the_contract_status_and_body() {
    let stack = Stack::start().await.expect("stack");
    let room = stack.room().await.expect("room");
    let path = format!("/api/conversations/{}/messages", room.id);
    let (status, body) = stack
        .api(Method::GET, &path, None, None)
        .await
        .expect("no token");
    assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")));
    assert_eq!(body["success"], false);

    let stranger = token(new_user(), None, 60);
    let (status, body) = stack
        .api(Method::GET, &path, Some(&stranger), None)
        .await
        .expect("stranger");
    assert_eq!((status, body["code"].as_str()), (403, Some("FORBIDDEN")));

    let (status, body) = stack
        .api(
            Method::GET,
            &format!("{path}?limit=0"),
            Some(&room.alice_token),
            None,
        )
        .await
        .expect("bad limit");
    assert_eq!(
        (status, body["details"][0]["path"].as_str()),
        (400, Some("/limit"))
    );

    let other = uuid::Uuid::new_v4().to_string();
    let (status, body) = stack
        .api(
            Method::POST,
            &path,
            Some(&room.alice_token),
            Some(json!({"conversationId": other, "content": "x"})),
        )
        .await
        .expect("mismatch");
    assert_eq!(
        (status, body["details"][0]["path"].as_str()),
        (400, Some("/conversationId"))
    );

    let huge = json!({"content": "x".repeat(70 * 1024)});
    let (status, _) = stack
        .api(Method::POST, &path, Some(&room.alice_token), Some(huge))
        .await
        .expect("huge");
    assert_eq!(status, 413);
    assert_eq!(stack.db.message_count().await.expect("count"), 0);

    let (status, schema) = stack
        .api(Method::GET, "/schema/message.json", None, None)
        .await
        .expect("schema");
    assert_eq!(status, 200);
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], json!(["conversationId", "content"]));
}

#[tokio::test]
async fn conversations_are_listed_newest_activity_first_in_pages() {
    let stack = Stack::start().await.expect("stack");
    let (alice, bob) = (new_user(), new_user());
    let alice_token = token(alice, None, 3600);
    let mut ids = Vec::new();
    for title in ["first", "second", "third"] {
        let (status, created) = stack
            .api(
                Method::POST,
                "/api/conversations",
                Some(&alice_token),
                Some(json!({"title": title, "participantIds": [bob.to_string()]})),
            )
            .await
            .expect("create");
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().expect("id").to_string());
    }
    let listed = |query: &str| {
        let path = format!("/api/conversations{query}");
        let (stack, token) = (&stack, &alice_token);
        async move {
            let (status, body) = stack
                .api(Method::GET, &path, Some(token), None)
                .await
                .expect("list");
            (status, body)
        }
    };
    let page_ids = |body: &serde_json::Value| -> Vec<String> {
        body["conversations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, before) = listed("").await;
    assert_eq!(
        page_ids(&before),
        vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    assert!(before.get("nextCursor").is_none(), "one page: {before}");

    // A message in the oldest conversation makes it the most recently active.
    let path = format!("/api/conversations/{}/messages", ids[0]);
    let (status, _) = stack
        .api(
            Method::POST,
            &path,
            Some(&alice_token),
            Some(json!({"content": "wake up"})),
        )
        .await
        .expect("post");
    assert_eq!(status, 202);
    let mut first = json!(null);
    for _ in 0..200 {
        first = listed("?limit=2").await.1;
        if page_ids(&first).first() == Some(&ids[0]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        page_ids(&first),
        vec![ids[0].clone(), ids[2].clone()],
        "{first}"
    );
    let cursor = first["nextCursor"].as_str().expect("a next page");
    let (status, second) = listed(&format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(status, 200);
    assert_eq!(page_ids(&second), vec![ids[1].clone()]);
    assert!(
        second.get("nextCursor").is_none(),
        "the last page: {second}"
    );

    for (query, pointer) in [
        ("?cursor=not-a-cursor", "/cursor"),
        ("?limit=0", "/limit"),
        ("?limit=201", "/limit"),
    ] {
        let (status, body) = listed(query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["code"], "VALIDATION_FAILED");
        assert_eq!(body["details"][0]["path"], pointer, "{query}: {body}");
    }
}
