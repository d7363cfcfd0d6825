//! What an abusive client tried that the hostile-input suite did not: input the database
//! would refuse, unbounded creation and joins, a retry that is not one, floods of cheap
//! events, a forged proxy header (§5, §6, §7.2, §8). Each test failed before its fix. The
//! rules of `POST /api/conversations` alone are proven in process
//! (`ingest/tests/app/conversations.rs`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coachwire_shared::ids::{ConversationId, UserId};
use coachwire_testkit::js::{Client, ConnectOptions, ConnectOutcome, Driver};
use coachwire_testkit::stack::{Stack, StackOptions, new_user, token};
use reqwest::Method;
use serde_json::{Value, json};

fn paths(body: &Value) -> Vec<String> {
    body["details"].as_array().map_or(vec![], |d| {
        d.iter()
            .filter_map(|d| d["path"].as_str().map(str::to_string))
            .collect()
    })
}

/// The HTTP half of this rule is proven in process (`ingest/tests/app/conversations.rs`);
/// the handshake's token is read by the Socket.IO layer, through a real client, which
/// long-polls first as browsers do.
#[tokio::test]
async fn a_huge_handshake_token_is_refused_unread_and_the_bearer_scheme_is_case_insensitive() {
    let stack = Stack::start().await.expect("stack");
    let alice_token = token(new_user(), None, 3600);
    let driver = Driver::start().await.expect("driver");
    let big_auth = ConnectOptions {
        auth: Some(json!({"token": "a".repeat(60_000)})),
        ..Default::default()
    };
    match driver
        .connect_with("big", &stack.url(), big_auth)
        .await
        .expect("handshake")
    {
        ConnectOutcome::Refused(reason) => {
            assert_eq!(reason, "UNAUTHORIZED: token too long")
        }
        ConnectOutcome::Connected(_) => panic!("a 60 KB token connected"),
    }
    // Over §5's 64 KiB packet limit: the CONNECT is read no further than the limit, and the
    // client still hears why (it used to see only "xhr post error", and retried for ever).
    for size in [100_000, 1_000_000] {
        let huge_auth = ConnectOptions {
            auth: Some(json!({"token": "a".repeat(size)})),
            ..Default::default()
        };
        match driver
            .connect_with("huge", &stack.url(), huge_auth)
            .await
            .expect("handshake")
        {
            ConnectOutcome::Refused(reason) => assert!(
                reason.starts_with("UNAUTHORIZED: token too long"),
                "{size} bytes: {reason}"
            ),
            ConnectOutcome::Connected(_) => panic!("a {size}-byte token connected"),
        }
    }
    let lower_header = ConnectOptions {
        extra_headers: Some(json!({"authorization": format!("bearer {alice_token}")})),
        ..Default::default()
    };
    let outcome = driver
        .connect_with("lower", &stack.url(), lower_header)
        .await
        .expect("handshake");
    assert!(
        matches!(outcome, ConnectOutcome::Connected(_)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn leaving_for_good_drops_the_listing_takes_the_sockets_out_on_every_node_and_tells_the_others()
 {
    let stack = Stack::start_with(StackOptions {
        ingest_nodes: 2,
        ..Default::default()
    })
    .await
    .expect("stack");
    let room = stack.room().await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let alice = stack
        .joined(&driver, "alice", &room.alice_token, room.id)
        .await
        .expect("alice");
    let bob_here = stack
        .joined(&driver, "bob-1", &room.bob_token, room.id)
        .await
        .expect("bob on node 1");
    let bob_there = driver
        .connect("bob-2", &stack.urls()[1], Some(&room.bob_token))
        .await
        .expect("bob on node 2");
    bob_there.join(room.id).await.expect("join on node 2");

    let leave = format!("/api/conversations/{}/participants/me", room.id);
    let (status, body) = stack
        .api(Method::DELETE, &leave, Some(&room.bob_token), None)
        .await
        .expect("leave");
    assert_eq!(status, 204, "{body}");
    let left = alice.next_event("user_left").await.expect("alice hears it");
    assert_eq!(left["userId"], room.bob.to_string());

    for bob in [&bob_here, &bob_there] {
        let payload = json!({"conversationId": room.id.to_string(), "content": "still in?"});
        let ack = bob.emit_ack("message", payload).await.expect("ack");
        assert_eq!(ack["code"], "FORBIDDEN", "the socket left the room: {ack}");
        let ack = bob
            .emit_ack(
                "join_conversation",
                json!({"conversationId": room.id.to_string()}),
            )
            .await
            .expect("ack");
        assert_eq!(ack["code"], "FORBIDDEN", "no longer a participant: {ack}");
    }
    let (_, listed) = stack
        .api(
            Method::GET,
            "/api/conversations",
            Some(&room.bob_token),
            None,
        )
        .await
        .expect("list");
    assert_eq!(listed["conversations"], json!([]), "{listed}");
    let (status, again) = stack
        .api(Method::DELETE, &leave, Some(&room.bob_token), None)
        .await
        .expect("leave again");
    assert_eq!(status, 403, "{again}");
    alice
        .send(room.id, "still here")
        .await
        .expect("alice chats on");
}

#[tokio::test]
async fn a_socket_joins_at_most_its_room_limit_and_the_coach_is_exempt() {
    let stack = Stack::start_with(StackOptions::with_env(&[(
        "COACHWIRE_ROOMS_PER_SOCKET",
        "2",
    )]))
    .await
    .expect("stack");
    let (alice, coach) = (new_user(), new_user());
    let mut rooms = Vec::new();
    for _ in 0..3 {
        rooms.push(stack.db.conversation(&[alice, coach]).await.expect("room"));
    }
    let driver = Driver::start().await.expect("driver");
    let socket = driver
        .connect("alice", &stack.url(), Some(&token(alice, None, 3600)))
        .await
        .expect("alice");
    let join = |c: &Client, room: ConversationId| {
        let c = c.clone();
        async move {
            c.emit_ack(
                "join_conversation",
                json!({"conversationId": room.to_string()}),
            )
            .await
            .expect("ack")
        }
    };
    for room in &rooms[..2] {
        assert_eq!(join(&socket, *room).await["success"], true);
    }
    assert_eq!(
        join(&socket, rooms[0]).await["success"],
        true,
        "a re-join is free"
    );
    let refused = join(&socket, rooms[2]).await;
    assert_eq!(refused["code"], "RATE_LIMITED", "{refused}");
    assert!(
        refused.get("retryAfterMs").is_none(),
        "waiting does not help: {refused}"
    );
    let payload = json!({"conversationId": rooms[2].to_string(), "content": "hi"});
    let ack = socket.emit_ack("message", payload).await.expect("ack");
    assert_eq!(ack["code"], "FORBIDDEN", "the refused join joined nothing");
    socket
        .emit_ack(
            "leave_conversation",
            json!({"conversationId": rooms[0].to_string()}),
        )
        .await
        .expect("leave");
    assert_eq!(join(&socket, rooms[2]).await["success"], true);

    let ai = driver
        .connect("coach", &stack.url(), Some(&token(coach, Some("ai"), 3600)))
        .await
        .expect("coach");
    for room in &rooms {
        assert_eq!(join(&ai, *room).await["success"], true, "role ai is exempt");
    }
}

#[tokio::test]
async fn a_client_message_id_reused_in_another_conversation_is_refused_and_stores_nothing() {
    let stack = Stack::start().await.expect("stack");
    let (alice, bob) = (new_user(), new_user());
    let first = stack.db.conversation(&[alice, bob]).await.expect("room");
    let second = stack.db.conversation(&[alice, bob]).await.expect("room");
    let driver = Driver::start().await.expect("driver");
    let socket = driver
        .connect("alice", &stack.url(), Some(&token(alice, None, 3600)))
        .await
        .expect("alice");
    for room in [first, second] {
        socket.join(room).await.expect("join");
    }
    let send = |room: ConversationId, cmid: uuid::Uuid| {
        let socket = socket.clone();
        async move {
            let payload = json!({"conversationId": room.to_string(), "content": "hi",
                                 "clientMessageId": cmid.to_string()});
            socket.emit_ack("message", payload).await.expect("ack")
        }
    };
    // A fresh UUIDv7 is answered by JetStream's duplicate window, without Postgres; an old
    // UUIDv4 is looked up in Postgres once stored. Both must tell a reuse from a retry.
    let in_window = uuid::Uuid::now_v7();
    let stored = uuid::Uuid::new_v4();
    assert_eq!(send(first, in_window).await["success"], true);
    assert_eq!(send(first, stored).await["success"], true);
    socket
        .next_events("message_delivered", 2)
        .await
        .expect("both persisted");
    for cmid in [in_window, stored] {
        let refused = send(second, cmid).await;
        assert_eq!(refused["code"], "VALIDATION_FAILED", "{refused}");
        assert_eq!(paths(&refused), ["/clientMessageId"]);
        let retry = send(first, cmid).await;
        assert_eq!(
            retry["duplicate"], true,
            "a retry is still a retry: {retry}"
        );
    }
    assert_eq!(stack.db.message_count().await.expect("count"), 2);
}

#[tokio::test]
async fn http_and_socket_sends_share_one_message_limit() {
    let stack = Stack::start_with(StackOptions::with_env(&[
        ("COACHWIRE_MESSAGE_LIMIT", "3"),
        ("COACHWIRE_MESSAGE_WINDOW_MS", "60000"),
    ]))
    .await
    .expect("stack");
    let driver = Driver::start().await.expect("driver");
    let (room, alice) = stack.room_with_alice(&driver).await.expect("room");
    alice.send(room.id, "one").await.expect("socket");
    alice.send(room.id, "two").await.expect("socket");
    let path = format!("/api/conversations/{}/messages", room.id);
    let post = || {
        stack.api(
            Method::POST,
            &path,
            Some(&room.alice_token),
            Some(json!({"content": "over http"})),
        )
    };
    assert_eq!(post().await.expect("http").0, 202);
    let (status, refused) = post().await.expect("http");
    assert_eq!(status, 429, "{refused}");
    let payload = json!({"conversationId": room.id.to_string(), "content": "four"});
    let ack = alice.emit_ack("message", payload).await.expect("ack");
    assert_eq!(ack["code"], "RATE_LIMITED", "{ack}");
}

#[tokio::test]
async fn a_socket_flooding_sync_is_refused_past_its_burst() {
    let stack = Stack::start().await.expect("stack");
    let driver = Driver::start().await.expect("driver");
    let (room, alice) = stack.room_with_alice(&driver).await.expect("room");
    let syncs = vec![json!({"conversationId": room.id.to_string(), "afterSeq": 0}); 200];
    let acks = alice.emit_many_ack("sync", syncs).await.expect("acks");
    let refused: Vec<&Value> = acks.iter().filter(|a| a["success"] != true).collect();
    assert!(refused.len() >= 50, "{} of 200 refused", refused.len());
    assert!(
        refused
            .iter()
            .all(|a| a["code"] == "RATE_LIMITED" && a["retryAfterMs"].as_u64().is_some()),
        "{refused:?}"
    );
    let served = acks.len() - refused.len();
    assert!(
        served >= 99,
        "the burst of 100, less the join, is served: {served}"
    );
}

/// A page of history is one ack packet, so it is cut at `MAX_PAGE_BYTES` of JSON with
/// `hasMore` whatever `limit` asked for: what a socket's outgoing queue holds stays
/// bounded in bytes (§7.4), and paging on still returns every message once.
#[tokio::test]
async fn a_page_of_large_messages_ends_early_and_paging_returns_them_all() {
    const SENT: usize = 24;
    let stack = Stack::start_with(StackOptions::with_env(&[(
        "COACHWIRE_MESSAGE_LIMIT",
        "1000",
    )]))
    .await
    .expect("stack");
    let driver = Driver::start().await.expect("driver");
    let (room, alice) = stack.room_with_alice(&driver).await.expect("room");
    let path = format!("/api/conversations/{}/messages", room.id);
    let emoji = "\u{1F4C8}".repeat(10_000);
    for _ in 0..SENT {
        let body = json!({ "content": emoji });
        let (status, answer) = stack
            .api(Method::POST, &path, Some(&room.alice_token), Some(body))
            .await
            .expect("send");
        assert_eq!(status, 202, "{answer}");
    }
    // Alice's joined socket gets each once it is stored.
    alice
        .next_events("message", SENT)
        .await
        .expect("all stored");
    let (mut after, mut pages, mut seqs) = (0, 0, Vec::new());
    loop {
        let query = format!("{path}?afterSeq={after}&limit=500");
        let (status, page) = stack
            .api(Method::GET, &query, Some(&room.alice_token), None)
            .await
            .expect("history");
        assert_eq!(status, 200, "{page}");
        let bytes = page["messages"].to_string().len();
        assert!(bytes <= 300 * 1024, "a page of {bytes} bytes");
        seqs.extend(
            page["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| m["seq"].as_i64()),
        );
        pages += 1;
        after = seqs
            .last()
            .copied()
            .flatten()
            .expect("a page has a message");
        if page["hasMore"] != true {
            break;
        }
    }
    assert!(
        pages >= 3,
        "{SENT} messages of 40 KB came in {pages} page(s)"
    );
    let expected: Vec<Option<i64>> = (1..=SENT as i64).map(Some).collect();
    assert_eq!(
        seqs, expected,
        "every message once, in order, across the pages"
    );
}

/// Counts `event`s from `user` that `listener` got before the first from `sentinel`.
async fn count_until(listener: &Client, event: &str, user: UserId, sentinel: UserId) -> usize {
    let mut count = 0;
    loop {
        let got = listener.next_event(event).await.expect("event");
        if got["userId"] == sentinel.to_string() {
            return count;
        }
        count += usize::from(got["userId"] == user.to_string());
    }
}

#[tokio::test]
async fn typing_and_presence_are_limited_per_user_not_per_socket() {
    let stack = Stack::start().await.expect("stack");
    let (alice, bob, carol, dave) = (new_user(), new_user(), new_user(), new_user());
    let room = stack
        .db
        .conversation(&[alice, bob, carol, dave])
        .await
        .expect("room");
    let driver = Driver::start().await.expect("driver");
    let connect = |name: &'static str, user: UserId| {
        let (driver, stack) = (&driver, &stack);
        async move {
            stack
                .joined(driver, name, &token(user, None, 3600), room)
                .await
                .expect("joined")
        }
    };
    let listener = connect("bob", bob).await;
    let sentinel = connect("carol", carol).await;
    let tabs = [connect("tab-1", alice).await, connect("tab-2", alice).await];
    let typing = json!({"conversationId": room.to_string(), "isTyping": true});
    for tab in &tabs {
        tab.emit_many_ack("typing", vec![typing.clone(); 15])
            .await
            .expect("typing");
    }
    sentinel.emit_ack("typing", typing).await.expect("typing");
    let relayed = count_until(&listener, "typing", alice, carol).await;
    assert!(relayed <= 14, "{relayed} of 30 typing events relayed");

    let cycles = connect("cycler", alice).await;
    let conversation = json!({"conversationId": room.to_string()});
    for _ in 0..20 {
        cycles
            .emit_ack("leave_conversation", conversation.clone())
            .await
            .expect("leave");
        cycles.join(room).await.expect("join");
    }
    connect("dave", dave).await;
    let joined = count_until(&listener, "user_joined", alice, dave).await;
    let mut left = 0;
    while listener
        .try_next_event("user_left", std::time::Duration::ZERO)
        .await
        .is_some()
    {
        left += 1;
    }
    assert!(
        joined + left <= 12,
        "{joined} joins and {left} leaves of 43 relayed"
    );
}

#[tokio::test]
async fn only_the_last_forwarded_for_entry_names_the_client() {
    let stack = Stack::start_with(StackOptions::with_env(&[
        ("COACHWIRE_TRUST_PROXY", "true"),
        ("COACHWIRE_CONNECTION_LIMIT", "1"),
    ]))
    .await
    .expect("stack");
    let driver = Driver::start().await.expect("driver");
    let alice_token = token(new_user(), None, 3600);
    let with_forwarded = |forwarded: &str| ConnectOptions {
        auth: Some(json!({"token": alice_token})),
        extra_headers: Some(json!({"x-forwarded-for": forwarded})),
        ..Default::default()
    };
    // Neither last entry is an address, so both handshakes count against the peer's own.
    let first = driver
        .connect_with(
            "first",
            &stack.url(),
            with_forwarded("198.51.100.1, 127.0.0.1:5000"),
        )
        .await
        .expect("handshake");
    assert!(matches!(first, ConnectOutcome::Connected(_)), "{first:?}");
    let second = driver
        .connect_with(
            "second",
            &stack.url(),
            with_forwarded("198.51.100.2, unknown"),
        )
        .await
        .expect("handshake");
    match second {
        ConnectOutcome::Refused(reason) => assert!(reason.starts_with("RATE_LIMITED"), "{reason}"),
        ConnectOutcome::Connected(_) => panic!("a client-written entry chose the client's IP"),
    }
}

/// Attack connections for the slowloris test: more than the node's file descriptors.
const SLOW_CONNECTIONS: usize = 450;
/// The node's file-descriptor limit during the attack, as in the report.
const NODE_FD_LIMIT: &str = "--nofile=400:400";

#[tokio::test]
async fn slow_clients_cannot_hold_connections_or_lock_another_host_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start().await.expect("stack");
    let pid = stack.ingest[0].pid().expect("ingest runs").to_string();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid, NODE_FD_LIMIT])
        .status()
        .expect("prlimit");
    assert!(limited.success());
    let address = format!("127.0.0.1:{}", stack.ingest[0].port);
    let mut slow = Vec::with_capacity(SLOW_CONNECTIONS);
    for i in 0..SLOW_CONNECTIONS {
        let mut tcp = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        let request: &[u8] = match i % 2 {
            0 => b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
            _ => b"POST /api/conversations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
        };
        // Past the per-address cap the node may already have closed it: that is the point.
        let _ = tcp.write_all(request).await;
        slow.push(tcp);
    }
    let other_host = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("client");
    let probe = other_host
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .expect("another host is served during the attack");
    assert_eq!(probe.status(), 200);
    // Unfinished headers and trickled bodies are cut off by the node (within its 10 s
    // deadlines), not held open until the attacker lets go.
    let ended = futures::future::join_all(slow.into_iter().map(|mut tcp| async move {
        let mut rest = Vec::new();
        let read = tcp.read_to_end(&mut rest);
        tokio::time::timeout(std::time::Duration::from_secs(20), read)
            .await
            .is_ok()
    }))
    .await;
    let held = ended.iter().filter(|ended| !**ended).count();
    assert_eq!(held, 0, "{held} slow connections still open after 20 s");
}

#[tokio::test]
async fn sessions_that_never_connect_count_against_the_limit_and_are_reaped() {
    let stack = Stack::start_with(StackOptions::with_env(&[
        ("COACHWIRE_CONNECTION_LIMIT", "2"),
        ("COACHWIRE_CONNECTION_WINDOW_MS", "60000"),
    ]))
    .await
    .expect("stack");
    let polling = format!("{}/socket.io/?EIO=4&transport=polling", stack.url());
    let mut sids = Vec::new();
    for _ in 0..2 {
        let open = stack.http.get(&polling).send().await.expect("handshake");
        let body = open.text().await.expect("body");
        let handshake: Value = serde_json::from_str(body.trim_start_matches('0')).expect("open");
        sids.push(handshake["sid"].as_str().expect("sid").to_string());
    }
    let driver = Driver::start().await.expect("driver");
    let alice = ConnectOptions {
        auth: Some(json!({"token": token(new_user(), None, 3600)})),
        ..Default::default()
    };
    match driver
        .connect_with("alice", &stack.url(), alice)
        .await
        .expect("handshake")
    {
        ConnectOutcome::Refused(reason) => assert!(reason.starts_with("RATE_LIMITED"), "{reason}"),
        ConnectOutcome::Connected(_) => panic!("two sessions that never connected went uncounted"),
    }
    // A session that never sends CONNECT is closed by the server (after 5 s): its long
    // poll returns, and the session is gone.
    let session = format!("{polling}&sid={}", sids[0]);
    let reaped = tokio::time::timeout(std::time::Duration::from_secs(15), async {
        loop {
            let poll = stack.http.get(&session).send().await.expect("poll");
            if poll.status() == 400 {
                return;
            }
        }
    })
    .await;
    assert!(
        reaped.is_ok(),
        "the unconnected session was still open after 15 s"
    );
}

/// How a sweep row reaches the server.
enum Probe {
    Http(Method, String, Option<Value>),
    Socket(&'static str, Value),
}

/// What the edge must answer: refused at this pointer, or accepted (and Postgres with it).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Edge {
    Refused(&'static str),
    Accepted,
}

/// The sweep: every client-supplied field that reaches Postgres, with the value at the
/// edge of its rule that Postgres accepts and the one past it that Postgres would refuse
/// (NUL in text and jsonb, integers past bigint, times past timestamptz). The refused ones
/// must be `VALIDATION_FAILED` at the field, never `UNAVAILABLE` or `INTERNAL` (§8).
fn sweep(c: ConversationId, bob: UserId) -> Vec<(&'static str, Probe, Edge)> {
    use Edge::{Accepted, Refused};
    let msg = |extra: Value| {
        let mut payload = json!({"conversationId": c.to_string(), "content": "hi"});
        if let (Some(p), Some(e)) = (payload.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        Probe::Socket("message", payload)
    };
    let sync = |after: Value, limit: Value| {
        Probe::Socket(
            "sync",
            json!({"conversationId": c.to_string(), "afterSeq": after, "limit": limit}),
        )
    };
    let create = |title: Value, ids: Vec<String>| {
        let body = json!({"title": title, "participantIds": ids});
        Probe::Http(Method::POST, "/api/conversations".into(), Some(body))
    };
    let get = |path: String| Probe::Http(Method::GET, path, None);
    let cursor = |raw: String| format!("/api/conversations?cursor={}", URL_SAFE_NO_PAD.encode(raw));
    let nil = uuid::Uuid::nil();
    vec![
        (
            "message.content: 10000 emoji",
            msg(json!({"content": "😀".repeat(10_000)})),
            Accepted,
        ),
        (
            "message.content: NUL",
            msg(json!({"content": "a\u{0}b"})),
            Refused("/content"),
        ),
        (
            "message.metadata.imageUrl: NUL",
            msg(json!({"metadata": {"imageUrl": "https://x.io/\u{0}"}})),
            Refused("/metadata/imageUrl"),
        ),
        (
            "message.metadata.timestamp: NUL",
            msg(json!({"metadata": {"timestamp": "2026-01-01T00:00:00Z\u{0}"}})),
            Refused("/metadata/timestamp"),
        ),
        (
            "message.metadata.timestamp: year 9999",
            msg(json!({"metadata": {"timestamp": "9999-12-31T23:59:59Z"}})),
            Accepted,
        ),
        (
            "message.clientMessageId: not a UUID",
            msg(json!({"clientMessageId": "{0190a0a0-0000-7000-8000-000000000001}"})),
            Refused("/clientMessageId"),
        ),
        (
            "message.conversationId: not a UUID",
            Probe::Socket("message", json!({"conversationId": "x", "content": "hi"})),
            Refused("/conversationId"),
        ),
        (
            // The largest integer a JavaScript client can send exactly (2^53 - 1).
            "sync.afterSeq: 2^53 - 1",
            sync(json!(9_007_199_254_740_991u64), json!(500)),
            Accepted,
        ),
        (
            "sync.afterSeq: 2^63",
            sync(json!(9_223_372_036_854_775_808u64), json!(1)),
            Refused("/afterSeq"),
        ),
        (
            "sync.limit: 2^63",
            sync(json!(0), json!(9_223_372_036_854_775_808u64)),
            Refused("/limit"),
        ),
        (
            "GET messages afterSeq: 2^63",
            get(format!(
                "/api/conversations/{c}/messages?afterSeq=9223372036854775808"
            )),
            Refused("/afterSeq"),
        ),
        (
            "GET messages afterSeq: bigint max",
            get(format!(
                "/api/conversations/{c}/messages?afterSeq={}",
                i64::MAX
            )),
            Accepted,
        ),
        (
            "GET messages path id: not a UUID",
            get("/api/conversations/x/messages".into()),
            Refused("/conversationId"),
        ),
        (
            "POST conversations title: 200 emoji",
            create(json!("😀".repeat(200)), vec![bob.to_string()]),
            Accepted,
        ),
        (
            "POST conversations title: NUL",
            create(json!("a\u{0}"), vec![]),
            Refused("/title"),
        ),
        (
            "POST conversations participantIds: not a UUID",
            create(json!(null), vec!["x".into()]),
            Refused("/participantIds/0"),
        ),
        (
            "GET conversations cursor: year 9999",
            get(cursor(format!("253402300799000000.{nil}"))),
            Accepted,
        ),
        (
            "GET conversations cursor: past timestamptz",
            get(cursor(format!("{}.{nil}", i64::MAX))),
            Refused("/cursor"),
        ),
        (
            "GET conversations limit: 2^63",
            get("/api/conversations?limit=9223372036854775808".into()),
            Refused("/limit"),
        ),
        (
            "DELETE participants path id: not a UUID",
            Probe::Http(
                Method::DELETE,
                "/api/conversations/x/participants/me".into(),
                None,
            ),
            Refused("/conversationId"),
        ),
    ]
}

#[tokio::test]
async fn every_field_that_reaches_postgres_is_refused_at_the_edge_when_postgres_would_refuse_it() {
    let stack = Stack::start_with(StackOptions::with_env(&[("COACHWIRE_MESSAGE_LIMIT", "0")]))
        .await
        .expect("stack");
    let driver = Driver::start().await.expect("driver");
    let (room, alice) = stack.room_with_alice(&driver).await.expect("room");
    for (row, probe, expected) in sweep(room.id, room.bob) {
        let (success, answer) = match probe {
            Probe::Http(method, path, body) => {
                let (status, answer) = stack
                    .api(method, &path, Some(&room.alice_token), body)
                    .await
                    .expect("request");
                (status < 300, answer)
            }
            Probe::Socket(event, payload) => {
                let ack = alice.emit_ack(event, payload).await.expect("ack");
                (ack["success"] == true, ack)
            }
        };
        let got = match success {
            true => Edge::Accepted,
            false if answer["code"] == "VALIDATION_FAILED" => match paths(&answer).as_slice() {
                [path] if Some(path.as_str()) == expected_path(expected) => expected,
                _ => panic!("{row}: refused at the wrong field: {answer}"),
            },
            false => panic!("{row}: {answer}"),
        };
        assert_eq!(got, expected, "{row}: {answer}");
    }
}

fn expected_path(edge: Edge) -> Option<&'static str> {
    match edge {
        Edge::Refused(path) => Some(path),
        Edge::Accepted => None,
    }
}
