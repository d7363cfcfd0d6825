//! What an operator sees (§10, §11): one trace per message across the three binaries,
//! exported over both OTLP protocols to an in-process collector; an HTTP caller's trace
//! continued; log lines stamped with the trace; metrics that count exactly.

use coachwire_testkit::js::Driver;
use coachwire_testkit::otlp::{OtlpReceiver, ReceivedSpan};
use coachwire_testkit::scenario::nats_client;
use coachwire_testkit::stack::{Service, Stack, StackOptions};
use serde_json::{Value, json};
use std::time::Duration;

const SPANS_WAIT: Duration = Duration::from_secs(20);
/// The content of traced messages: it must appear in no span and no log line.
const SECRET_CONTENT: &str = "my position is 300 shares of NVDA";

const POST_SPAN: &str = "POST /api/conversations/{id}/messages";

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

fn find<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
}

fn in_trace(spans: &[ReceivedSpan], trace_id: &str) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect()
}

/// Every hop of a message's trace, service and span name, in order.
const HOPS: [(&str, &str); 7] = [
    ("coachwire-ingest", "message"),
    ("coachwire-ingest", "jetstream.publish"),
    ("coachwire-persister", "persist"),
    ("coachwire-persister", "postgres.write"),
    ("coachwire-persister", "persisted.publish"),
    ("coachwire-fanout", "fanout.route"),
    ("coachwire-ingest", "room.emit"),
];

/// The spans of the trace of the message with `message_id`, once every hop has arrived.
async fn message_trace(receiver: &OtlpReceiver, message_id: &str) -> Vec<ReceivedSpan> {
    let trace_of = |spans: &[ReceivedSpan]| {
        spans
            .iter()
            .find(|s| s.attribute("coachwire.message_id") == Some(message_id))
            .map(|root| in_trace(spans, &root.trace_id))
    };
    let spans = receiver
        .wait_for(SPANS_WAIT, |spans| {
            trace_of(spans).is_some_and(|trace| {
                HOPS.iter()
                    .all(|(service, name)| find(&trace, service, name).is_some())
            })
        })
        .await
        .expect("the message's trace");
    trace_of(&spans).unwrap_or_default()
}

fn span<'a>(trace: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    find(trace, service, name)
        .unwrap_or_else(|| panic!("no {service} span {name} in the trace: {trace:#?}"))
}

fn assert_child(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "{}:{} should be a child of {}:{}",
        child.service, child.name, parent.service, parent.name
    );
}

fn assert_nothing_leaks(spans: &[ReceivedSpan]) {
    for span in spans {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains("NVDA") && !value.contains("eyJ"),
                "{}:{} attribute {key} leaks content or a token: {value}",
                span.service,
                span.name
            );
        }
    }
}

/// A stack exporting to `receiver` over `protocol`, logging the message path's
/// debug lines (one per message in ingest and the persister).
async fn traced_stack(receiver: &OtlpReceiver, protocol: &str) -> Stack {
    let mut env = receiver.env(protocol);
    env.push((
        "RUST_LOG".into(),
        "info,coachwire_ingest=debug,coachwire_persister=debug".into(),
    ));
    Stack::start_with(StackOptions {
        env,
        ..Default::default()
    })
    .await
    .expect("stack")
}

/// The first JSON line of `service` with `text` in the trace `trace_id`.
async fn logged_in_trace(service: &Service, text: &str, trace_id: &str) -> Value {
    let lines = service
        .wait_for_logs(1, SPANS_WAIT, |line| {
            line.contains(text) && line.contains(trace_id)
        })
        .await
        .expect("a log line in the trace");
    serde_json::from_str(&lines[0]).expect("a JSON line")
}

#[tokio::test]
async fn one_socket_message_is_one_trace_through_all_three_services_over_grpc() {
    let receiver = OtlpReceiver::start().await.expect("receiver");
    let stack = traced_stack(&receiver, "grpc").await;
    let driver = Driver::start().await.expect("driver");
    let (room, alice, bob) = stack.room_with_pair(&driver).await.expect("alice and bob");
    let ack = alice
        .emit_ack(
            "message",
            json!({"conversationId": room.id.to_string(), "content": SECRET_CONTENT}),
        )
        .await
        .expect("send");
    assert_eq!(ack["success"], true, "{ack}");
    let message_id = ack["message"]["id"].as_str().expect("id").to_string();
    bob.next_event("message").await.expect("bob receives");

    let trace = message_trace(&receiver, &message_id).await;
    let message = span(&trace, "coachwire-ingest", "message");
    let publish = span(&trace, "coachwire-ingest", "jetstream.publish");
    let persist = span(&trace, "coachwire-persister", "persist");
    let write = span(&trace, "coachwire-persister", "postgres.write");
    let persisted = span(&trace, "coachwire-persister", "persisted.publish");
    let route = span(&trace, "coachwire-fanout", "fanout.route");
    let emit = span(&trace, "coachwire-ingest", "room.emit");
    assert!(
        message.parent_span_id.is_empty(),
        "the socket event starts the trace"
    );
    assert_child(publish, message);
    assert_child(persist, publish);
    assert_child(write, persist);
    assert_child(persisted, persist);
    assert_child(route, persisted);
    assert_child(emit, route);
    let kinds = [
        (message, SERVER),
        (publish, PRODUCER),
        (persist, CONSUMER),
        (write, CLIENT),
        (persisted, PRODUCER),
        (route, PRODUCER),
        (emit, CONSUMER),
    ];
    for (span, kind) in kinds {
        assert_eq!(span.kind, kind, "{}:{}", span.service, span.name);
    }
    let conversation = room.id.to_string();
    assert_eq!(
        message.attribute("coachwire.conversation_id"),
        Some(conversation.as_str())
    );
    assert_eq!(message.attribute("coachwire.outcome"), Some("accepted"));
    assert_eq!(persist.attribute("coachwire.seq"), Some("1"));
    assert_eq!(persist.attribute("coachwire.outcome"), Some("stored"));
    assert_eq!(persist.attribute("coachwire.batch_size"), Some("1"));
    assert_eq!(emit.attribute("coachwire.seq"), Some("1"));
    for span in &trace {
        println!(
            "{:<20} {:<18} span {} parent {:<16} kind {} {:?}",
            span.service, span.name, span.span_id, span.parent_span_id, span.kind, span.attributes
        );
    }
    let all = receiver.spans();
    let batch = all
        .iter()
        .find(|s| {
            s.name == "persist.batch"
                && s.links
                    .contains(&(persist.trace_id.clone(), persist.span_id.clone()))
        })
        .expect("the batch span links to the message's span");
    assert!(
        batch
            .attribute("coachwire.partitions")
            .is_some_and(|p| p.starts_with("persister-p")),
        "{batch:?}"
    );
    assert!(
        persist
            .links
            .contains(&(batch.trace_id.clone(), batch.span_id.clone()))
    );
    assert_nothing_leaks(&all);

    let trace_id = &message.trace_id;
    let answered = logged_in_trace(&stack.ingest[0], "answered", trace_id).await;
    assert_eq!(answered["trace_id"], trace_id.as_str(), "{answered}");
    assert_eq!(answered["span_id"], message.span_id.as_str(), "{answered}");
    let acked = logged_in_trace(&stack.persisters[0], "persisted and acked", trace_id).await;
    assert_eq!(acked["span_id"], persist.span_id.as_str(), "{acked}");
    for service in stack.services() {
        assert!(
            !service
                .logs()
                .iter()
                .any(|line| line.contains(SECRET_CONTENT)),
            "{} logged message content",
            service.name
        );
    }
}

#[tokio::test]
async fn an_http_post_continues_the_callers_trace_over_http_protobuf() {
    let receiver = OtlpReceiver::start().await.expect("receiver");
    let stack = Stack::start_with(StackOptions {
        env: receiver.env("http/protobuf"),
        ..Default::default()
    })
    .await
    .expect("stack");
    let room = stack.room().await.expect("room");
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = stack
        .http
        .post(format!(
            "{}/api/conversations/{}/messages",
            stack.url(),
            room.id
        ))
        .bearer_auth(&room.alice_token)
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .json(&json!({"content": SECRET_CONTENT}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("body");
    let message_id = body["message"]["id"].as_str().expect("id").to_string();
    let spans = receiver
        .wait_for(SPANS_WAIT, |spans| {
            let trace = in_trace(spans, caller_trace);
            [
                ("coachwire-ingest", POST_SPAN),
                ("coachwire-ingest", "jetstream.publish"),
                ("coachwire-persister", "persist"),
                ("coachwire-fanout", "fanout.route"),
            ]
            .iter()
            .all(|(service, name)| find(&trace, service, name).is_some())
        })
        .await
        .expect("the caller's trace reaches the fanout");
    let trace = in_trace(&spans, caller_trace);
    let post = span(
        &trace,
        "coachwire-ingest",
        "POST /api/conversations/{id}/messages",
    );
    assert_eq!(
        post.parent_span_id, caller_span,
        "the caller's span is the parent"
    );
    assert_eq!(post.kind, SERVER);
    assert_eq!(post.attribute("http.response.status_code"), Some("202"));
    assert_eq!(
        post.attribute("coachwire.message_id"),
        Some(message_id.as_str())
    );
    let publish = span(&trace, "coachwire-ingest", "jetstream.publish");
    assert_child(publish, post);
    assert_child(span(&trace, "coachwire-persister", "persist"), publish);
    assert_nothing_leaks(&spans);
}

#[tokio::test]
async fn log_lines_in_the_message_path_carry_its_trace_ids() {
    let receiver = OtlpReceiver::start().await.expect("receiver");
    let stack = traced_stack(&receiver, "http/protobuf").await;
    let driver = Driver::start().await.expect("driver");
    let (room, alice) = stack
        .room_with_alice(&driver)
        .await
        .expect("alice in a room");
    alice.send(room.id, "hi").await.expect("sent");
    let refused = alice
        .emit_ack(
            "message",
            json!({"conversationId": room.id.to_string(), "content": ""}),
        )
        .await
        .expect("send");
    assert_eq!(refused["code"], "VALIDATION_FAILED", "{refused}");
    let answered: Vec<Value> = stack.ingest[0]
        .wait_for_logs(2, SPANS_WAIT, |line| line.contains("answered"))
        .await
        .expect("two answers logged")
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert_eq!(answered.len(), 2, "one line per message: {answered:?}");
    let hex = |v: &Value, len: usize| {
        v.as_str()
            .is_some_and(|s| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit()))
    };
    for line in &answered {
        assert!(
            hex(&line["trace_id"], 32) && hex(&line["span_id"], 16),
            "{line}"
        );
    }
    assert_ne!(
        answered[0]["trace_id"], answered[1]["trace_id"],
        "a trace per message"
    );
    let first = answered[0]["trace_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    stack.persisters[0]
        .wait_for_logs(1, SPANS_WAIT, |line| {
            line.contains("persisted and acked") && line.contains(&first)
        })
        .await
        .expect("the persister's log line carries the message's trace id");
}

/// The value of the sample `series` (name and labels exactly as rendered) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// The backlog of all persister partitions together.
fn persister_backlog(scrape: &str) -> f64 {
    scrape
        .lines()
        .filter(|line| line.starts_with(r#"coachwire_consumer_pending{consumer="persister-p"#))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(service: &Service) -> String {
    reqwest::get(format!("{}/metrics", service.admin_url()))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text")
}

/// Scrapes `service` until `done` holds (metrics change without an event to await).
async fn scrape_until(service: &Service, what: &str, done: impl Fn(&str) -> bool) -> String {
    let wait = async {
        loop {
            let text = scrape(service).await;
            if done(&text) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(SPANS_WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("{}: {what} never showed", service.name))
}

#[tokio::test]
async fn counters_move_by_exactly_what_was_sent_and_the_backlog_shows_a_stopped_persister() {
    let mut stack = Stack::start().await.expect("stack");
    let driver = Driver::start().await.expect("driver");
    let (room, alice) = stack
        .room_with_alice(&driver)
        .await
        .expect("alice in a room");
    let send = |content: &str, cmid: &str| json!({"conversationId": room.id.to_string(), "content": content, "clientMessageId": cmid});
    let cmids: Vec<String> = (0..5).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let mut payloads: Vec<Value> = cmids.iter().map(|c| send("counted", c)).collect();
    payloads.push(send("counted", &cmids[0]));
    payloads.extend((0..3).map(|_| send("", &uuid::Uuid::new_v4().to_string())));
    for payload in payloads {
        alice.emit_ack("message", payload).await.expect("ack");
    }
    // A refused HTTP send counts as one, as a socket's does.
    let (status, _) = stack
        .api(
            reqwest::Method::POST,
            &format!("/api/conversations/{}/messages", room.id),
            Some(&room.alice_token),
            Some(json!({"content": ""})),
        )
        .await
        .expect("http");
    assert_eq!(status, 400);
    let ingest = scrape(&stack.ingest[0]).await;
    let outcome = |scrape: &str, outcome: &str| {
        sample(
            scrape,
            &format!(r#"coachwire_messages_total{{outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(outcome(&ingest, "accepted"), Some(5.0), "{ingest}");
    assert_eq!(outcome(&ingest, "duplicate"), Some(1.0), "{ingest}");
    assert_eq!(outcome(&ingest, "rejected"), Some(4.0), "{ingest}");
    assert_eq!(outcome(&ingest, "unavailable"), Some(0.0), "{ingest}");
    assert_eq!(
        sample(&ingest, "coachwire_ack_seconds_count"),
        Some(9.0),
        "{ingest}"
    );
    let persister = scrape_until(&stack.persisters[0], "5 persisted", |text| {
        sample(text, "coachwire_persisted_total") == Some(5.0)
    })
    .await;
    assert_eq!(
        sample(&persister, "coachwire_dead_letters_total"),
        Some(0.0)
    );

    stack.persisters[0]
        .terminate(Duration::from_secs(10))
        .await
        .expect("the persister stops");
    for _ in 0..4 {
        let ack = alice
            .emit_ack(
                "message",
                send("while stopped", &uuid::Uuid::new_v4().to_string()),
            )
            .await
            .expect("ack");
        assert_eq!(ack["success"], true, "{ack}");
    }
    let seen = scrape_until(&stack.ingest[0], "a backlog of 4", |text| {
        persister_backlog(text) == 4.0
    })
    .await;
    assert_eq!(outcome(&seen, "accepted"), Some(9.0), "{seen}");

    stack.persisters[0]
        .restart()
        .await
        .expect("the persister restarts");
    scrape_until(&stack.ingest[0], "the backlog drained", |text| {
        persister_backlog(text) == 0.0
    })
    .await;
    scrape_until(
        &stack.persisters[0],
        "4 persisted after the restart",
        |text| sample(text, "coachwire_persisted_total") == Some(4.0),
    )
    .await;
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_traced() {
    let stack = Stack::start().await.expect("stack");
    let driver = Driver::start().await.expect("driver");
    let (room, alice) = stack
        .room_with_alice(&driver)
        .await
        .expect("alice in a room");
    alice.send(room.id, "untraced").await.expect("sent");
    let js = async_nats::jetstream::new(nats_client(&stack.nats_url()).await);
    let stream = js
        .get_stream(coachwire_shared::subjects::MESSAGES_STREAM)
        .await
        .expect("the stream");
    let accepted = stream
        .get_raw_message(1)
        .await
        .expect("the accepted message");
    assert!(
        accepted.headers.get("traceparent").is_none()
            && accepted.headers.get("tracestate").is_none(),
        "no trace context is made or carried: {:?}",
        accepted.headers
    );
}
