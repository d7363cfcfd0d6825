//! The persister against real Postgres and a private nats-server: idempotent batches,
//! crash between commit and ack, and stream order → seq order under concurrency.

use crate::common;

use async_nats::jetstream::consumer::{DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use coachwire_persister::batch::Persister;
use coachwire_persister::consumer;
use coachwire_persister::partition::PartitionEnd;
use coachwire_persister::pulled::Pulled;
use coachwire_persister::settings::ConsumerTuning;
use coachwire_persister::store::{Incoming, Row, store_batch};
use coachwire_persister::writer::Writer;
use coachwire_shared::db::{self, StoredEvent};
use coachwire_shared::envelope::{MessageEnvelope, Version};
use coachwire_shared::ids::{ConversationId, Seq, UserId};
use coachwire_shared::message::{MessageStatus, MessageType};
use coachwire_shared::subjects::{MESSAGES_STREAM, message_subject};
use coachwire_testkit::db::TestDb;
use coachwire_testkit::nats_server::NatsServer;
use coachwire_testkit::persisted::persisted_events;
use coachwire_testkit::tcp_proxy::{Link, TcpProxy};
use common::{fast_tuning, message, user};
use futures::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Contiguous 1..=n and in the expected content order.
fn assert_contiguous(rows: &[(i64, String)], expected: &[String]) {
    let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..=expected.len() as i64).collect::<Vec<_>>());
    let contents: Vec<&String> = rows.iter().map(|r| &r.1).collect();
    assert_eq!(contents, expected.iter().collect::<Vec<_>>());
}

#[tokio::test]
async fn the_same_batch_stored_twice_leaves_one_row_each_and_contiguous_seq() {
    let db = TestDb::new().await.expect("db");
    let (alice, conversation) = (user(), ConversationId(uuid::Uuid::new_v4()));
    let batch: Vec<Incoming> = (0..5)
        .map(|i| Incoming {
            stream_seq: i + 1,
            envelope: message(conversation, alice, &format!("m{i}")),
        })
        .collect();
    let first = store_batch(&db.pool, &batch).await.expect("first store");
    assert!(first.iter().all(|s| s.row == Row::New));
    let second = store_batch(&db.pool, &batch).await.expect("second store");
    assert!(
        second.iter().all(|s| s.row == Row::Existing),
        "a redelivered batch inserts nothing"
    );
    let first_seqs: Vec<_> = first.iter().map(|s| s.envelope.message.seq).collect();
    let second_seqs: Vec<_> = second.iter().map(|s| s.envelope.message.seq).collect();
    assert_eq!(
        first_seqs, second_seqs,
        "a redelivery reports the seqs first assigned"
    );

    let more = [Incoming {
        stream_seq: 6,
        envelope: message(conversation, alice, "m5"),
    }];
    store_batch(&db.pool, &[batch[4].clone(), more[0].clone()])
        .await
        .expect("overlap");
    let expected: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    assert_contiguous(&db.seqs(conversation).await.expect("rows"), &expected);
}

#[tokio::test]
async fn a_duplicate_inside_one_batch_is_stored_once() {
    let db = TestDb::new().await.expect("db");
    let conversation = ConversationId(uuid::Uuid::new_v4());
    let m = message(conversation, user(), "once");
    let batch = vec![
        Incoming {
            stream_seq: 1,
            envelope: m.clone(),
        },
        Incoming {
            stream_seq: 2,
            envelope: m,
        },
    ];
    let stored = store_batch(&db.pool, &batch).await.expect("store");
    assert_eq!(
        stored[0].envelope.message.seq,
        stored[1].envelope.message.seq
    );
    assert_eq!(db.seqs(conversation).await.expect("rows").len(), 1);
}

/// A streamed reply's start and end (§14) as ingest will publish them: the start an
/// ordinary creation with status `streaming`, the end a later version of the same id.
fn reply(conversation: ConversationId, author: UserId) -> (MessageEnvelope, MessageEnvelope) {
    let mut start = message(conversation, author, "");
    start.message.kind = MessageType::Ai;
    start.message.status = MessageStatus::Streaming;
    let mut end = start.clone();
    end.message.content = "Size it so a stop costs 1% of the account.".into();
    end.message.status = MessageStatus::Complete;
    end.version = Some(Version::default());
    (start, end)
}

/// `envelopes` as a batch taken from the stream, in this order.
fn batch(envelopes: &[&MessageEnvelope]) -> Vec<Incoming> {
    envelopes
        .iter()
        .enumerate()
        .map(|(i, e)| Incoming {
            stream_seq: i as u64 + 1,
            envelope: (*e).clone(),
        })
        .collect()
}

#[tokio::test]
async fn a_reply_that_starts_and_ends_in_one_batch_is_stored_at_its_end_and_published_as_both() {
    let db = TestDb::new().await.expect("db");
    let (alice, coach, conversation) = (user(), user(), ConversationId(uuid::Uuid::new_v4()));
    // A message before it, so that the batch's own count (1, 2) is not the seqs (2, 3).
    let before = message(conversation, alice, "how big a position?");
    store_batch(&db.pool, &batch(&[&before]))
        .await
        .expect("before");
    let (start, end) = reply(conversation, coach);
    let stored = store_batch(&db.pool, &batch(&[&start, &end]))
        .await
        .expect("store");
    let (created, version) = (&stored[0].envelope, &stored[1].envelope);
    assert_eq!(created.event_seq(), Some(Seq(2)));
    assert_eq!(
        created.message.status,
        MessageStatus::Streaming,
        "the start is published as it began"
    );
    assert_eq!(version.event_seq(), Some(Seq(3)));
    assert_eq!(
        version.message.seq,
        Some(Seq(2)),
        "the reply stands where it began"
    );
    assert_eq!(version.message.status, MessageStatus::Complete);
    assert_eq!(version.message.content, end.message.content);

    let (events, _) = db::events_after(&db.pool, conversation, Seq::ZERO, 10)
        .await
        .expect("events");
    assert_eq!(events.len(), 3, "{events:?}");
    reads_as_its_end(&events[1], &events[2], &end);
}

/// A streamed reply's row (`created`) reads as its `end`, and so does the event of the end.
fn reads_as_its_end(created: &StoredEvent, updated: &StoredEvent, end: &MessageEnvelope) {
    match (created, updated) {
        (StoredEvent::Created(row), StoredEvent::Updated(updated)) => {
            assert_eq!(row.status, MessageStatus::Complete, "read at its end");
            assert_eq!(row.content, end.message.content);
            assert_eq!(updated.message, *row);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_later_version_takes_the_next_seq_once_and_updates_its_message_in_place() {
    let db = TestDb::new().await.expect("db");
    let (alice, coach, conversation) = (user(), user(), ConversationId(uuid::Uuid::new_v4()));
    let (start, end) = reply(conversation, coach);
    let between = message(conversation, alice, "while it streams");
    let first = store_batch(&db.pool, &batch(&[&start, &between]))
        .await
        .expect("start");
    assert_eq!(first[0].envelope.event_seq(), Some(Seq(1)));
    let stored = store_batch(&db.pool, &batch(&[&end, &end]))
        .await
        .expect("end");
    let version = &stored[0].envelope;
    assert!(
        stored[0].row == Row::New && stored[1].row == Row::Existing,
        "one end, however often"
    );
    assert_eq!(
        version.event_seq(),
        Some(Seq(3)),
        "the end's own seq follows"
    );
    assert_eq!(
        version.message.seq,
        Some(Seq(1)),
        "the reply stands where it began"
    );
    assert_eq!(version.message.id, start.message.id);
    assert_eq!(version.message.status, MessageStatus::Complete);
    assert_eq!(version.message.content, end.message.content);
    let again = store_batch(&db.pool, &batch(&[&end]))
        .await
        .expect("redelivered");
    assert_eq!(
        again[0].envelope, stored[0].envelope,
        "a redelivery reports the same event"
    );

    let (events, more) = db::events_after(&db.pool, conversation, Seq::ZERO, 10)
        .await
        .expect("events");
    assert!(!more);
    let seqs: Vec<Option<Seq>> = events.iter().map(StoredEvent::seq).collect();
    assert_eq!(seqs, [Some(Seq(1)), Some(Seq(2)), Some(Seq(3))]);
    reads_as_its_end(&events[0], &events[2], &end);
    let (after_start, _) = db::events_after(&db.pool, conversation, Seq(1), 10)
        .await
        .expect("events");
    assert!(
        matches!(&after_start[1], StoredEvent::Updated(u) if u.message.id == start.message.id),
        "a version whose message is before the page still comes with it"
    );
}

/// A private server with the streams declared, and a JetStream context.
async fn nats() -> (NatsServer, async_nats::Client, jetstream::Context) {
    let server = NatsServer::start().await.expect("nats-server");
    let (client, js) = common::jetstream_on(&server).await;
    (server, client, js)
}

async fn publish(js: &jetstream::Context, envelope: &MessageEnvelope) {
    let payload = serde_json::to_vec(envelope).expect("json");
    js.publish(
        message_subject(envelope.message.conversation_id),
        payload.into(),
    )
    .await
    .expect("publish")
    .await
    .expect("puback");
}

/// Waits (polling Postgres, bounded) until `conversation` has `n` rows.
async fn await_rows(db: &TestDb, conversation: ConversationId, n: usize) -> Vec<(i64, String)> {
    for _ in 0..400 {
        let rows = db.seqs(conversation).await.expect("rows");
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    db.seqs(conversation).await.expect("rows")
}

#[tokio::test]
async fn a_crash_between_commit_and_ack_is_redelivered_without_a_second_row_or_a_gap() {
    let db = TestDb::new().await.expect("db");
    let (_server, _client, js) = nats().await;
    let conversation = ConversationId(uuid::Uuid::new_v4());
    let alice = user();
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for content in &expected {
        publish(&js, &message(conversation, alice, content)).await;
    }
    let tuning = fast_tuning();
    let consumer = consumer_of(&js, conversation, &tuning).await;

    // The "crashed" persister: pulls, commits, never acks.
    let batch: Vec<Incoming> = pulled_by_a_previous_holder(&consumer, 10)
        .await
        .iter()
        .map(|m| Incoming {
            stream_seq: m.info().expect("info").stream_sequence,
            envelope: serde_json::from_slice(&m.payload).expect("envelope"),
        })
        .collect();
    store_batch(&db.pool, &batch).await.expect("commit");

    // The next persister gets the redelivery and must change nothing in Postgres.
    let (shutdown, runner) = run_partition(&db, &js, &consumer, &tuning);
    let persisted = await_persisted(&js, 10).await;
    shutdown.cancel();
    runner.await.expect("runner");
    assert_eq!(persisted, 10, "every message gets its persisted event");
    assert_contiguous(&db.seqs(conversation).await.expect("rows"), &expected);
    let info = consumer.clone().info().await.expect("info").clone();
    assert_eq!(info.num_ack_pending, 0, "the redelivered batch was acked");
}

/// The durable consumer of the partition that holds `conversation`'s last message.
async fn consumer_of(
    js: &jetstream::Context,
    conversation: ConversationId,
    tuning: &ConsumerTuning,
) -> PullConsumer {
    let partition = partition_of(js, conversation).await;
    consumer::ensure_consumer(js, partition, tuning)
        .await
        .expect("consumer")
}

/// A persister that crashed or stalled: it pulls `n` messages as the pinned client and
/// then stops pulling, holding them unacked.
async fn pulled_by_a_previous_holder(consumer: &PullConsumer, n: usize) -> Vec<jetstream::Message> {
    let mut pulled = consumer
        .stream()
        .group("persister")
        .max_messages_per_batch(n)
        .messages()
        .await
        .expect("pull")
        .take(n);
    let mut held = Vec::new();
    while let Some(Ok(m)) = pulled.next().await {
        held.push(m);
    }
    assert_eq!(held.len(), n, "pulled as the previous holder");
    held
}

/// The partition's loop of a persister of its own; cancel the token to stop it.
fn run_partition(
    db: &TestDb,
    js: &jetstream::Context,
    consumer: &PullConsumer,
    tuning: &ConsumerTuning,
) -> (CancellationToken, tokio::task::JoinHandle<PartitionEnd>) {
    let shutdown = CancellationToken::new();
    let persister = Persister::new(db.pool.clone(), js.clone());
    let (writer, _writing) = Writer::spawn(persister, shutdown.clone());
    let runner = tokio::spawn(coachwire_persister::partition::run_partition(
        writer,
        consumer.clone(),
        tuning.clone(),
        shutdown.clone(),
    ));
    (shutdown, runner)
}

/// Which partition the stream's transform put a conversation in.
async fn partition_of(js: &jetstream::Context, conversation: ConversationId) -> u32 {
    let mut stream = js
        .get_stream(coachwire_shared::subjects::MESSAGES_STREAM)
        .await
        .expect("stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let raw = stream.get_raw_message(last).await.expect("last message");
    let parts: Vec<&str> = raw.subject.as_str().split('.').collect();
    assert_eq!(parts[4], conversation.to_string());
    parts[3].parse().expect("partition number")
}

/// Waits until the PERSISTED stream holds `n` distinct events; returns how many it holds.
async fn await_persisted(js: &jetstream::Context, n: usize) -> usize {
    let count = || async { persisted_events(js).await.expect("persisted events").len() };
    for _ in 0..400 {
        if count().await >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    count().await
}

#[tokio::test]
async fn seq_follows_stream_order_with_concurrent_publishers_and_two_persisters() {
    let db = TestDb::new().await.expect("db");
    let (_server, _client, js) = nats().await;
    let conversation = ConversationId(uuid::Uuid::new_v4());
    let shutdown = CancellationToken::new();
    let mut persisters = Vec::new();
    for _ in 0..2 {
        let persister = Persister::new(db.pool.clone(), js.clone());
        persisters.push(tokio::spawn(consumer::run(
            persister,
            fast_tuning(),
            shutdown.clone(),
        )));
    }
    let mut publishers = Vec::new();
    for p in 0..4 {
        let js = js.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..50 {
                publish(&js, &message(conversation, user(), &format!("p{p}-{i:02}"))).await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let rows = await_rows(&db, conversation, 200).await;
    shutdown.cancel();
    for persister in persisters {
        persister.await.expect("join").expect("persister");
    }
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=200).collect::<Vec<_>>()
    );
    let by_stream: Vec<String> = sqlx::query_scalar(
        "SELECT content FROM messages WHERE conversation_id = $1 ORDER BY stream_seq",
    )
    .bind(conversation)
    .fetch_all(&db.pool)
    .await
    .expect("by stream order");
    let by_seq: Vec<String> = rows.into_iter().map(|r| r.1).collect();
    assert_eq!(
        by_seq, by_stream,
        "seq order is the order JetStream accepted"
    );
    for p in 0..4 {
        let mine: Vec<&String> = by_seq
            .iter()
            .filter(|c| c.starts_with(&format!("p{p}-")))
            .collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(
            mine, sorted,
            "a publisher that awaited each ack sees its messages in send order"
        );
    }
}

/// Refuses every insert with a data exception (22023), what a broken trigger or column
/// looks like to the persister, for the first [`REFUSED_ROUNDS`] rounds of the batch's
/// retries, then lets inserts through: the database recovers at a point the test chooses,
/// between two rounds, rather than at a moment a sleep guesses. A sequence counts the
/// refusals, since unlike a table it keeps counting through the rollbacks.
fn refuse_for_a_while() -> String {
    format!(
        "CREATE SEQUENCE refusals; \
         CREATE FUNCTION refuse_for_a_while() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF nextval('refusals') > {} THEN RETURN NEW; END IF; \
           RAISE EXCEPTION 'refused by the test' USING ERRCODE = '22023'; END $$; \
         CREATE TRIGGER refuse_for_a_while BEFORE INSERT ON messages \
           FOR EACH ROW EXECUTE FUNCTION refuse_for_a_while()",
        REFUSED_ROUNDS * REFUSALS_PER_ROUND
    )
}
/// Rounds of retries refused before the database recovers.
const REFUSED_ROUNDS: i64 = 4;
/// A round refuses the whole batch once (at its first row) and then each of its 3
/// messages alone.
const REFUSALS_PER_ROUND: i64 = 4;

#[tokio::test]
async fn a_batch_whose_every_message_fails_alike_is_retried_not_dead_lettered() {
    let db = TestDb::new().await.expect("db");
    let (_server, _client, js) = nats().await;
    let conversation = ConversationId(uuid::Uuid::new_v4());
    let alice = user();
    let expected: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
    for content in &expected {
        publish(&js, &message(conversation, alice, content)).await;
    }
    let tuning = fast_tuning();
    let consumer = consumer_of(&js, conversation, &tuning).await;
    let batch = pulled_by_a_previous_holder(&consumer, 3).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(refuse_for_a_while()))
        .execute(&db.pool)
        .await
        .expect("trigger");

    let persister = Persister::new(db.pool.clone(), js.clone());
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        persister.process(
            batch.into_iter().map(Pulled::Delivered).collect(),
            &CancellationToken::new(),
        ),
    )
    .await
    .expect("the batch is stored once the database accepts it");
    assert_eq!(
        outcome,
        coachwire_persister::batch::Outcome::Done { fresh: 3 },
        "stored together once the database took inserts again"
    );
    let calls: i64 = sqlx::query_scalar("SELECT last_value FROM refusals")
        .fetch_one(&db.pool)
        .await
        .expect("refusals");
    assert_eq!(
        calls,
        REFUSED_ROUNDS * REFUSALS_PER_ROUND + 3,
        "every round was refused, then the 3 rows went in"
    );
    let dead_letters = js
        .get_stream(coachwire_shared::subjects::DEAD_LETTER_STREAM)
        .await
        .expect("dlq stream")
        .info()
        .await
        .expect("info")
        .state
        .messages;
    assert_eq!(dead_letters, 0, "a database fault dead-letters nothing");
    assert_contiguous(&db.seqs(conversation).await.expect("rows"), &expected);
}

/// A batch behind a previous holder that still holds an older message (a persister
/// paused, or stuck on an outage, keeping its deliveries alive with progress acks) is
/// completed from the stream: the older message is read there and written first, at
/// once. Regression history: writing such a batch after a deadline stored the older
/// message after the newer ones (the soak, seed 1796467281870442571); waiting for the
/// holder instead trusted the consumer's pending count, which a whole-cluster crash can
/// leave wrong (`docs/reliability.md` item 12), and could wait for ever. When the previous
/// holder stores its message at last, it is the duplicate it is.
#[tokio::test]
async fn a_batch_behind_a_previous_holder_is_completed_from_the_stream_without_waiting() {
    let db = TestDb::new().await.expect("db");
    let (_server, _client, js) = nats().await;
    let conversation = ConversationId(uuid::Uuid::new_v4());
    let alice = user();
    publish(&js, &message(conversation, alice, "m0")).await;
    let tuning = fast_tuning();
    let consumer = consumer_of(&js, conversation, &tuning).await;

    // The previous holder takes m0, stops pulling (so its pin lapses), and keeps m0 alive
    // with progress acks until the test is done with it.
    let held = pulled_by_a_previous_holder(&consumer, 1)
        .await
        .pop()
        .expect("m0");
    let holding = CancellationToken::new();
    let keeper = tokio::spawn(keep_alive(held, tuning.ack_wait / 4, holding.clone()));
    for content in ["m1", "m2"] {
        publish(&js, &message(conversation, alice, content)).await;
    }
    let (shutdown, runner) = run_partition(&db, &js, &consumer, &tuning);
    let rows = await_rows(&db, conversation, 3).await;
    holding.cancel();
    let held = keeper.await.expect("keeper");
    assert_contiguous(&rows, &["m0".into(), "m1".into(), "m2".into()]);

    let envelope: MessageEnvelope = serde_json::from_slice(&held.payload).expect("envelope");
    let stream_seq = held.info().expect("info").stream_sequence;
    let late = store_batch(
        &db.pool,
        &[Incoming {
            stream_seq,
            envelope,
        }],
    )
    .await
    .expect("the previous holder stores m0 at last");
    held.double_ack().await.expect("ack");
    shutdown.cancel();
    runner.await.expect("runner");
    assert_eq!(late[0].row, Row::Existing, "m0 was already written");
    assert_eq!(
        db.seqs(conversation).await.expect("rows"),
        rows,
        "unchanged"
    );
}

/// Keeps `message` from being redelivered (progress acks every `every`) until `done`.
async fn keep_alive(
    message: jetstream::Message,
    every: Duration,
    done: CancellationToken,
) -> jetstream::Message {
    loop {
        message.ack_with(AckKind::Progress).await.expect("progress");
        tokio::select! {
            _ = done.cancelled() => return message,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// A writer that dies (a panic) ends its persister's run with `WriterDied` at once,
/// having handed every partition back, and the other persister stores everything, in
/// order and once: before, the dead writer's partitions kept their pins and stalled.
#[tokio::test]
async fn a_dead_writer_ends_its_persister_and_another_takes_every_partition_over() {
    let db = TestDb::new().await.expect("db");
    let (_server, _client, js) = nats().await;
    let conversation = ConversationId(uuid::Uuid::new_v4());
    let alice = user();
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    let persister = Persister::new(db.pool.clone(), js.clone());
    // The first batch any writer takes kills it; the failpoint is off after that.
    quiet_panics(INJECTED);
    fail::cfg("persister::writer", &format!("1*panic({INJECTED})")).expect("failpoint");
    let start = |stop: &CancellationToken| {
        tokio::spawn(consumer::run(
            persister.clone(),
            fast_tuning(),
            stop.clone(),
        ))
    };
    let (one_stop, other_stop) = (CancellationToken::new(), CancellationToken::new());
    let (mut one, mut other) = (start(&one_stop), start(&other_stop));
    for content in &expected {
        publish(&js, &message(conversation, alice, content)).await;
    }
    let (died, survivor, survivor_stop) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            ended = &mut one => (ended, other, other_stop),
            ended = &mut other => (ended, one, one_stop),
        }
    })
    .await
    .expect("the persister whose writer died ends by itself");
    let died = died.expect("join");
    assert!(
        matches!(died, Err(consumer::ConsumerError::WriterDied)),
        "it ends with WriterDied, not {died:?}"
    );
    let rows = await_rows(&db, conversation, expected.len()).await;
    survivor_stop.cancel();
    survivor
        .await
        .expect("join")
        .expect("the survivor ends cleanly");
    assert_contiguous(&rows, &expected);
}

/// The message of the panic the dead-writer test injects.
const INJECTED: &str = "injected: the writer dies";

/// Keeps the expected panic `message` (and its backtrace) out of the test's output, where
/// it came before, and buried, the message of a real failure.
fn quiet_panics(message: &'static str) {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<String>().map(String::as_str) != Some(message) {
            report(info);
        }
    }));
}

/// A consumer whose state rolled back (a NATS cluster killed all at once can come back so)
/// numbers its deliveries again from an earlier point. The test rolls one back itself:
/// while the persister's connection is cut, the consumer is made again from `m1` on, and
/// another client takes the renumbered deliveries 1–3 (`m1` and `m2` again, and the new
/// `a`) and holds them. The persister's next delivery, `b`, is then number 4, which seems
/// to follow the last it saw (3). Before, it wrote `b` at once, ahead of `a`: the inversion
/// of the 30-minute soak. Now a renewed connection counts as a gap, and the batch is
/// completed from the stream: `a` is written before `b`, while the other client still
/// holds it.
#[tokio::test]
async fn after_a_reconnect_a_rolled_back_consumer_cannot_pass_a_batch_ahead_of_an_older_one() {
    rolled_back_while_away(LinkFault::Cut).await;
}

/// The same roll-back while the persister's connection only stalls and survives: its
/// delivery numbers and its connection both seem to run on (a consumer leader that moved
/// to a replica with older state looks like this). Before, `b` was written at once,
/// ahead of `a`; the stream now shows the gap ([`coachwire_persister::gap::continues_in_stream`]).
#[tokio::test]
async fn a_consumer_rolled_back_behind_a_connection_that_survives_cannot_pass_a_batch_ahead() {
    rolled_back_while_away(LinkFault::Stall).await;
}

/// How the persister is kept away while the consumer is rolled back.
#[derive(Clone, Copy)]
enum LinkFault {
    /// The connection breaks and is made again.
    Cut,
    /// Nothing passes for a while; the connection stays.
    Stall,
}

async fn rolled_back_while_away(fault: LinkFault) {
    let db = TestDb::new().await.expect("db");
    let (server, _client, js) = nats().await;
    let (proxy, persister_js) = behind_a_proxy(&server).await;
    let conversation = ConversationId(uuid::Uuid::new_v4());
    let alice = user();
    publish(&js, &message(conversation, alice, "m0")).await;
    let tuning = fast_tuning();
    let consumer = consumer_of(&js, conversation, &tuning).await;
    let name = consumer.cached_info().name.clone();
    let m1 = js_last_sequence(&js).await + 1;
    for content in ["m1", "m2"] {
        publish(&js, &message(conversation, alice, content)).await;
    }
    let theirs: PullConsumer = persister_js
        .get_consumer_from_stream(&name, MESSAGES_STREAM)
        .await
        .expect("the persister's handle");
    let (shutdown, runner) = run_partition(&db, &persister_js, &theirs, &tuning);
    assert_eq!(
        await_rows(&db, conversation, 3).await.len(),
        3,
        "m0–m2 written"
    );

    match fault {
        LinkFault::Cut => proxy.cut(),
        LinkFault::Stall => proxy.set_link(Link::Stalled),
    }
    let rolled_back = made_again_from(&js, &consumer, m1).await;
    publish(&js, &message(conversation, alice, "a")).await;
    let held = pulled_by_a_previous_holder(&rolled_back, 3).await;
    let numbers: Vec<u64> = held
        .iter()
        .map(|m| m.info().expect("info").consumer_sequence)
        .collect();
    assert_eq!(numbers, vec![1, 2, 3], "renumbered from 1");
    publish(&js, &message(conversation, alice, "b")).await;
    match fault {
        LinkFault::Cut => proxy.restore(),
        LinkFault::Stall => proxy.set_link(Link::Open),
    }

    // The other client keeps its three alive while the persister writes: `a` is read
    // from the stream, not waited for.
    let persister = (shutdown, runner);
    written_around(
        &db,
        conversation,
        held,
        &tuning,
        &["m0", "m1", "m2", "a", "b"],
        &rolled_back,
        persister,
    )
    .await;
}

/// The short soak's inversion (`docs/reliability.md`, item 12): a consumer leader that
/// moved hands out deliveries whose numbers follow the persister's last and whose first
/// message follows the last one written, yet one batch skips an older message that the
/// old leader gave another client. It is the redelivery in front of it that gives it
/// away. The test builds that batch: the persister has written `m0` and `m1`
/// (deliveries 1 and 2); while its link stalls, the consumer is made again from `x` on,
/// another client takes `x` and `a` (deliveries 1 and 2), hands `x` back and holds `a`;
/// then `b` is published. The persister's next batch is `x` again (3, a redelivery) and
/// `b` (4). Before, it wrote `x` and `b` and left `a` for later.
#[tokio::test]
async fn a_batch_with_a_redelivery_cannot_skip_a_message_another_client_holds() {
    let db = TestDb::new().await.expect("db");
    let (server, _client, js) = nats().await;
    let (proxy, persister_js) = behind_a_proxy(&server).await;
    let (conversation, alice) = (ConversationId(uuid::Uuid::new_v4()), user());
    for content in ["m0", "m1"] {
        publish(&js, &message(conversation, alice, content)).await;
    }
    let tuning = fast_tuning();
    let consumer = consumer_of(&js, conversation, &tuning).await;
    let name = consumer.cached_info().name.clone();
    let theirs: PullConsumer = persister_js
        .get_consumer_from_stream(&name, MESSAGES_STREAM)
        .await
        .expect("the persister's handle");
    let (shutdown, runner) = run_partition(&db, &persister_js, &theirs, &tuning);
    assert_eq!(await_rows(&db, conversation, 2).await.len(), 2, "m0, m1");

    proxy.set_link(Link::Stalled);
    let x = js_last_sequence(&js).await + 1;
    let rolled_back = made_again_from(&js, &consumer, x).await;
    for content in ["x", "a"] {
        publish(&js, &message(conversation, alice, content)).await;
    }
    let mut held = pulled_by_a_previous_holder(&rolled_back, 2).await;
    let a = held.pop().expect("a");
    let x = held.pop().expect("x");
    x.ack_with(AckKind::Nak(None)).await.expect("x handed back");
    publish(&js, &message(conversation, alice, "b")).await;
    proxy.set_link(Link::Open);

    let persister = (shutdown, runner);
    written_around(
        &db,
        conversation,
        vec![a],
        &tuning,
        &["m0", "m1", "x", "a", "b"],
        &rolled_back,
        persister,
    )
    .await;
}

/// While another client keeps `held` alive, the persister writes `conversation` as
/// `expected`; then the client hands them back, the persister acks them as duplicates
/// (the rolled-back consumer settles), and stopping it leaves Postgres as it was.
async fn written_around(
    db: &TestDb,
    conversation: ConversationId,
    held: Vec<jetstream::Message>,
    tuning: &ConsumerTuning,
    expected: &[&str],
    rolled_back: &PullConsumer,
    (shutdown, runner): (CancellationToken, tokio::task::JoinHandle<PartitionEnd>),
) {
    let holding = CancellationToken::new();
    let keepers: Vec<_> = held
        .into_iter()
        .map(|m| tokio::spawn(keep_alive(m, tuning.ack_wait / 4, holding.clone())))
        .collect();
    let rows = await_rows(db, conversation, expected.len()).await;
    holding.cancel();
    let expected: Vec<String> = expected.iter().map(|c| c.to_string()).collect();
    assert_contiguous(&rows, &expected);
    for keeper in keepers {
        let message = keeper.await.expect("keeper");
        message
            .ack_with(AckKind::Nak(None))
            .await
            .expect("hand back");
    }
    await_settled(rolled_back).await;
    shutdown.cancel();
    runner.await.expect("runner");
    assert_eq!(
        db.seqs(conversation).await.expect("rows"),
        rows,
        "unchanged"
    );
}

/// A proxy to `server` (to cut or stall), and a persister's JetStream context through it.
async fn behind_a_proxy(server: &NatsServer) -> (TcpProxy, jetstream::Context) {
    let proxy = TcpProxy::start(([127, 0, 0, 1], server.port).into())
        .await
        .expect("proxy");
    let js = jetstream::new(
        coachwire_shared::nats::connect(&proxy.url(), "persister")
            .await
            .expect("connect through the proxy"),
    );
    (proxy, js)
}

/// Rolls `consumer` back as a crashed cluster can: made again, under the same name, to
/// deliver from stream position `start` and number its deliveries from 1.
async fn made_again_from(
    js: &jetstream::Context,
    consumer: &PullConsumer,
    start: u64,
) -> PullConsumer {
    let name = &consumer.cached_info().name;
    let mut config = consumer.cached_info().config.clone();
    config.deliver_policy = DeliverPolicy::ByStartSequence {
        start_sequence: start,
    };
    js.delete_consumer_from_stream(name, MESSAGES_STREAM)
        .await
        .expect("delete");
    js.create_consumer_on_stream(config, MESSAGES_STREAM)
        .await
        .expect("made again");
    js.get_consumer_from_stream(name, MESSAGES_STREAM)
        .await
        .expect("the rolled-back consumer")
}

/// Waits (polling the server, bounded) until `consumer` has nothing pending or unacked.
async fn await_settled(consumer: &PullConsumer) {
    for _ in 0..400 {
        let info = consumer.get_info().await.expect("info");
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the consumer did not settle");
}

async fn js_last_sequence(js: &jetstream::Context) -> u64 {
    let mut stream = js.get_stream(MESSAGES_STREAM).await.expect("stream");
    stream.info().await.expect("info").state.last_sequence
}

/// A persisted event the server can never take (over its `max_payload`) must not stall its
/// partition: the row is committed, so the batch is acked and rooms read the message from
/// Postgres (§7.4). Before, the publish was retried for ever, nothing was acked, and every
/// later message of the partition waited behind it.
#[tokio::test]
async fn a_persisted_event_the_server_can_never_take_does_not_stall_its_partition() {
    const MAX_PAYLOAD: usize = 2048;
    let db = TestDb::new().await.expect("db");
    let server = NatsServer::start_with_config(&format!("max_payload: {MAX_PAYLOAD}"))
        .await
        .expect("nats-server");
    let (_, js) = common::jetstream_on(&server).await;
    let conversation = ConversationId(uuid::Uuid::new_v4());
    let alice = user();
    // An incoming message just under the limit: its persisted event adds a `Nats-Msg-Id`
    // header and its seq, and goes over.
    let size = |content: usize| {
        serde_json::to_vec(&message(conversation, alice, &"x".repeat(content)))
            .expect("json")
            .len()
    };
    let content = MAX_PAYLOAD - 40 - size(0);
    let big = message(conversation, alice, &"x".repeat(content));
    assert!(size(content) < MAX_PAYLOAD, "the incoming message fits");
    publish(&js, &big).await;
    publish(&js, &message(conversation, alice, "after")).await;
    let tuning = fast_tuning();
    let consumer = consumer_of(&js, conversation, &tuning).await;
    let (shutdown, runner) = run_partition(&db, &js, &consumer, &tuning);

    let rows = await_rows(&db, conversation, 2).await;
    let mut settled = None;
    for _ in 0..200 {
        let info = consumer.clone().info().await.expect("info").clone();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            settled = Some(info);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    shutdown.cancel();
    runner.await.expect("runner");
    assert_contiguous(&rows, &["x".repeat(content), "after".into()]);
    assert!(settled.is_some(), "both messages acked, nothing stuck");
    assert_eq!(
        persisted_events(&js).await.expect("persisted events").len(),
        1,
        "only the event the server can take"
    );
}
