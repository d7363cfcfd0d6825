//! The operator commands (§12) as an operator runs them: the real `coachwire-persister`
//! binary against a private database and nats-server, with the persister service run
//! in-process (or as the binary) to fill Postgres and the dead letters.

use crate::common;

use async_nats::jetstream;
use coachwire_persister::batch::Persister;
use coachwire_persister::consumer;
use coachwire_shared::envelope::{MessageEnvelope, Persisted};
use coachwire_shared::ids::{ConversationId, MessageId};
use coachwire_shared::subjects::{
    DEAD_LETTER_STREAM, MESSAGES_STREAM, PARTITIONS, PERSISTED_STREAM, message_subject,
    persisted_subject,
};
use coachwire_testkit::db::TestDb;
use coachwire_testkit::nats_server::{NatsServer, free_port};
use coachwire_testkit::persisted::persisted_events;
use common::{fast_tuning, message, user};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A private database and nats-server, and the clients a test drives them with.
struct Ops {
    db: TestDb,
    nats: NatsServer,
    js: jetstream::Context,
}

/// What a command run printed and how it ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one JSON document on stdout of a successful run.
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "the command failed: {}", self.stderr);
        serde_json::from_str(self.stdout.trim()).expect("stdout is one JSON document")
    }

    /// The one line on stderr of a failed run (the last; any before it are JSON log lines).
    fn failure(&self, code: i32) -> &str {
        assert_eq!(
            self.code, code,
            "stdout: {} stderr: {}",
            self.stdout, self.stderr
        );
        let mut lines: Vec<&str> = self.stderr.trim_end().lines().collect();
        let last = lines.pop().expect("a line on stderr");
        assert!(last.starts_with("coachwire-persister: "), "{last}");
        for log in lines {
            serde_json::from_str::<Value>(log)
                .unwrap_or_else(|_| panic!("only log lines before the reason: {log}"));
        }
        last
    }
}

/// The in-process persister service, with its own NATS connection so that stopping it
/// closes the connection as a stopped process would.
struct Service {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Ops {
    async fn new() -> Self {
        let db = TestDb::new().await.expect("db");
        let nats = NatsServer::start().await.expect("nats-server");
        let (_, js) = common::jetstream_on(&nats).await;
        Self { db, nats, js }
    }

    /// Runs `coachwire-persister ARGS` with this test's database and server.
    async fn cli(&self, args: &[&str]) -> Run {
        let output = tokio::process::Command::new(
            coachwire_testkit::stack::bin_dir().join("coachwire-persister"),
        )
        .args(args)
        .env("DATABASE_URL", &self.db.url)
        .env("NATS_URL", self.nats.url())
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("run coachwire-persister (build the workspace first)");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn json(&self, args: &[&str]) -> Value {
        self.cli(args).await.json()
    }

    async fn start_persister(&self) -> Service {
        let client = coachwire_shared::nats::connect(&self.nats.url(), "persister")
            .await
            .expect("connect");
        let persister = Persister::new(self.db.pool.clone(), jetstream::new(client.clone()));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            consumer::run(persister, fast_tuning(), stop)
                .await
                .expect("persister");
            client.flush().await.expect("flush acks");
        });
        Service { shutdown, task }
    }

    async fn publish(&self, envelope: &MessageEnvelope) -> u64 {
        let payload = serde_json::to_vec(envelope).expect("json");
        self.js
            .publish(
                message_subject(envelope.message.conversation_id),
                payload.into(),
            )
            .await
            .expect("publish")
            .await
            .expect("puback")
            .sequence
    }

    async fn send(&self, conversation: ConversationId, content: &str) -> MessageEnvelope {
        let envelope = message(conversation, user(), content);
        self.publish(&envelope).await;
        envelope
    }

    /// Events in the `PERSISTED` stream (several per stream message).
    async fn persisted_events(&self) -> usize {
        persisted_events(&self.js)
            .await
            .expect("persisted events")
            .len()
    }

    async fn stream_messages(&self, name: &str) -> u64 {
        let mut stream = self.js.get_stream(name).await.expect("stream");
        stream.info().await.expect("info").state.messages
    }

    async fn rows(&self) -> i64 {
        self.db.message_count().await.expect("count")
    }

    /// `(id, seq, stream_seq)` of a conversation in seq order.
    async fn conversation_rows(&self, conversation: ConversationId) -> Vec<(MessageId, i64, i64)> {
        sqlx::query_as(
            "SELECT id, seq, stream_seq FROM messages WHERE conversation_id = $1 ORDER BY seq",
        )
        .bind(conversation)
        .fetch_all(&self.db.pool)
        .await
        .expect("rows")
    }

    /// Installs a trigger that refuses content `poison` as a data exception (22023).
    async fn install_poison_trigger(&self, text: &str) {
        let sql = format!(
            "CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.content = 'poison' THEN \
               RAISE EXCEPTION '{text}' USING ERRCODE = '22023'; \
             END IF; RETURN NEW; END $$; \
             CREATE OR REPLACE TRIGGER refuse_poison BEFORE INSERT ON messages \
             FOR EACH ROW EXECUTE FUNCTION refuse_poison();"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.db.pool)
            .await
            .expect("trigger");
    }

    async fn drop_poison_trigger(&self) {
        sqlx::raw_sql("DROP TRIGGER refuse_poison ON messages")
            .execute(&self.db.pool)
            .await
            .expect("drop trigger");
    }
}

impl Service {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("persister task");
    }
}

fn conversation() -> ConversationId {
    ConversationId(uuid::Uuid::new_v4())
}

/// Polls `check` every 25 ms until it holds, for at most 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn counts(report: &Value) -> [u64; 6] {
    [
        "scanned",
        "restored",
        "alreadyPresent",
        "deadLettered",
        "fromStreamSeq",
        "toStreamSeq",
    ]
    .map(|k| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {report}"))
    })
}

#[tokio::test]
async fn replay_after_an_older_backup_restores_every_lost_row_with_its_id_and_seq() {
    let ops = Ops::new().await;
    let conversations = [conversation(), conversation(), conversation()];
    for i in 0..10 {
        for c in conversations {
            ops.send(c, &format!("m{i}")).await;
        }
    }
    let persister = ops.start_persister().await;
    eventually("30 rows", || async { ops.rows().await == 30 }).await;
    persister.stop().await;
    sqlx::raw_sql("CREATE TABLE before_restore AS SELECT * FROM messages")
        .execute(&ops.db.pool)
        .await
        .expect("copy");
    // A consistent older snapshot: everything stored from stream seq 13 on is gone.
    sqlx::raw_sql("DELETE FROM messages WHERE stream_seq > 12")
        .execute(&ops.db.pool)
        .await
        .expect("restore the older backup");
    // Accepted while the persisters are stopped.
    for c in conversations {
        ops.send(c, "late-1").await;
        ops.send(c, "late-2").await;
    }

    let report = ops
        .json(&["replay", "--from-stream-seq", "1", "--json"])
        .await;

    assert_eq!(counts(&report), [36, 24, 12, 0, 1, 36], "{report}");
    let same: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM before_restore b JOIN messages m USING (id) \
         WHERE m.seq = b.seq AND m.conversation_id = b.conversation_id \
           AND m.stream_seq = b.stream_seq AND m.content = b.content",
    )
    .fetch_one(&ops.db.pool)
    .await
    .expect("compare");
    assert_eq!(same, 30, "every row is back with the same id and seq");
    for c in conversations {
        let rows = ops.conversation_rows(c).await;
        let seqs: Vec<i64> = rows.iter().map(|r| r.1).collect();
        assert_eq!(seqs, (1..=12).collect::<Vec<_>>(), "contiguous");
        let mut by_stream = rows.clone();
        by_stream.sort_by_key(|r| r.2);
        assert_eq!(rows, by_stream, "seq order is stream order");
    }
    let again = ops
        .json(&["replay", "--from-stream-seq", "1", "--json"])
        .await;
    assert_eq!(
        counts(&again),
        [36, 0, 36, 0, 1, 36],
        "nothing is stored twice"
    );
    assert_eq!(
        ops.persisted_events().await,
        30,
        "replay publishes no persisted events"
    );

    // The persisters come back: the replayed late messages get their persisted events,
    // and what arrives now is stored after them.
    for c in conversations {
        ops.send(c, "after").await;
    }
    let persister = ops.start_persister().await;
    eventually("39 rows", || async { ops.rows().await == 39 }).await;
    eventually("39 persisted events", || async {
        ops.persisted_events().await == 39
    })
    .await;
    persister.stop().await;
    for c in conversations {
        let rows = ops.conversation_rows(c).await;
        let seqs: Vec<i64> = rows.iter().map(|r| r.1).collect();
        assert_eq!(seqs, (1..=13).collect::<Vec<_>>());
        let mut by_stream = rows.clone();
        by_stream.sort_by_key(|r| r.2);
        assert_eq!(rows, by_stream, "seq order is stream order");
    }
}

#[tokio::test]
async fn a_replay_of_one_conversation_touches_no_other() {
    let ops = Ops::new().await;
    let (mine, other) = (conversation(), conversation());
    for i in 0..4 {
        ops.send(mine, &format!("m{i}")).await;
        ops.send(other, &format!("o{i}")).await;
    }
    let persister = ops.start_persister().await;
    eventually("8 rows", || async { ops.rows().await == 8 }).await;
    persister.stop().await;
    sqlx::raw_sql("DELETE FROM messages WHERE seq > 1")
        .execute(&ops.db.pool)
        .await
        .expect("lose rows");
    let mine_text = mine.to_string();

    let report = ops
        .json(&[
            "replay",
            "--from-stream-seq",
            "1",
            "--conversation",
            &mine_text,
            "--json",
        ])
        .await;

    assert_eq!(counts(&report), [4, 3, 1, 0, 1, 8], "{report}");
    assert_eq!(ops.conversation_rows(mine).await.len(), 4);
    assert_eq!(
        ops.conversation_rows(other).await.len(),
        1,
        "the other conversation is left as it was"
    );
}

#[tokio::test]
async fn a_dry_run_reports_the_counts_of_the_real_run_and_changes_nothing() {
    let ops = Ops::new().await;
    let c = conversation();
    for i in 0..6 {
        ops.send(c, &format!("m{i}")).await;
    }
    let persister = ops.start_persister().await;
    eventually("6 rows", || async { ops.rows().await == 6 }).await;
    persister.stop().await;
    sqlx::raw_sql("DELETE FROM messages WHERE seq > 2")
        .execute(&ops.db.pool)
        .await
        .expect("lose rows");
    ops.install_poison_trigger("poison refused").await;
    ops.send(c, "poison").await;
    ops.send(c, "m6").await;

    let dry = ops
        .json(&[
            "replay",
            "--since",
            "2000-01-01T00:00:00Z",
            "--dry-run",
            "--json",
        ])
        .await;

    assert_eq!(counts(&dry), [8, 5, 2, 1, 1, 8], "{dry}");
    assert_eq!(ops.rows().await, 2, "a dry run stores nothing");
    assert_eq!(
        ops.stream_messages(DEAD_LETTER_STREAM).await,
        0,
        "a dry run dead-letters nothing"
    );
    let real = ops
        .json(&["replay", "--from-stream-seq", "1", "--json"])
        .await;
    assert_eq!(
        counts(&real),
        counts(&dry),
        "the real run did what the dry run said"
    );
    assert_eq!(ops.rows().await, 7);
    assert_eq!(ops.stream_messages(DEAD_LETTER_STREAM).await, 1);
    let again = ops
        .json(&["replay", "--from-stream-seq", "1", "--json"])
        .await;
    assert_eq!(
        ops.stream_messages(DEAD_LETTER_STREAM).await,
        1,
        "a message already dead-lettered is not added twice: {again}"
    );
}

#[tokio::test]
async fn a_replay_longer_than_one_batch_keeps_stream_order_across_batches() {
    let ops = Ops::new().await;
    let conversations = [conversation(), conversation(), conversation()];
    let payloads: Vec<MessageEnvelope> = (0..1200)
        .map(|i| message(conversations[i % 3], user(), &format!("m{i:04}")))
        .collect();
    // A window of in-flight publishes: awaiting each ack alone would dominate the test.
    for chunk in payloads.chunks(200) {
        let mut acks = Vec::new();
        for envelope in chunk {
            let payload = serde_json::to_vec(envelope).expect("json");
            acks.push(
                ops.js
                    .publish(
                        message_subject(envelope.message.conversation_id),
                        payload.into(),
                    )
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("puback");
        }
    }

    let report = ops
        .json(&["replay", "--from-stream-seq", "1", "--json"])
        .await;

    assert_eq!(counts(&report), [1200, 1200, 0, 0, 1, 1200], "{report}");
    for c in conversations {
        let rows = ops.conversation_rows(c).await;
        assert_eq!(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            (1..=400).collect::<Vec<_>>()
        );
        assert!(
            rows.windows(2).all(|w| w[0].2 < w[1].2),
            "seq order is stream order across batches"
        );
    }
}

#[tokio::test]
async fn a_replay_gives_up_on_a_database_fault_after_its_retries_and_dead_letters_nothing() {
    let ops = Ops::new().await;
    ops.send(conversation(), "m0").await;
    sqlx::raw_sql(
        "CREATE FUNCTION read_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION 'cannot execute INSERT in a read-only transaction' \
             USING ERRCODE = '25006'; END $$; \
         CREATE TRIGGER read_only BEFORE INSERT ON messages \
           FOR EACH ROW EXECUTE FUNCTION read_only();",
    )
    .execute(&ops.db.pool)
    .await
    .expect("trigger");

    let started = Instant::now();
    let run = ops
        .cli(&["replay", "--from-stream-seq", "1", "--json"])
        .await;

    let line = run.failure(1);
    assert!(
        line.contains("kept failing (a database fault)") && line.contains("read-only"),
        "{line}"
    );
    let took = started.elapsed();
    assert!(
        took > Duration::from_secs(10) && took < Duration::from_secs(30),
        "bounded retries with backoff: {took:?}"
    );
    assert_eq!(ops.stream_messages(DEAD_LETTER_STREAM).await, 0);
    assert_eq!(ops.rows().await, 0);
}

#[tokio::test]
async fn replay_refuses_while_a_persister_consumes_a_dry_run_does_not_and_both_run_once_it_is_stopped()
 {
    let ops = Ops::new().await;
    let c = conversation();
    ops.send(c, "m0").await;
    let port = free_port().expect("port");
    let mut persister = tokio::process::Command::new(
        coachwire_testkit::stack::bin_dir().join("coachwire-persister"),
    )
    .env("DATABASE_URL", &ops.db.url)
    .env("NATS_URL", ops.nats.url())
    .env("COACHWIRE_ADMIN_LISTEN", format!("127.0.0.1:{port}"))
    .env("RUST_LOG", "warn")
    .kill_on_drop(true)
    .spawn()
    .expect("spawn the persister");
    eventually("the persister to store", || async { ops.rows().await == 1 }).await;

    let started = Instant::now();
    let refused = ops
        .cli(&["replay", "--from-stream-seq", "1", "--json"])
        .await;
    let line = refused.failure(1);
    assert!(
        line.starts_with("coachwire-persister: refusing to replay: persister-p")
            && line.ends_with("(a persister is consuming); stop every persister first"),
        "{line}"
    );
    assert!(refused.stdout.is_empty(), "no report on failure");
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "a live persister is waited out for one pull expiry before refusing"
    );
    let dry = ops
        .json(&["replay", "--from-stream-seq", "1", "--dry-run", "--json"])
        .await;
    assert_eq!(counts(&dry), [1, 0, 1, 0, 1, 1], "{dry}");
    let needs = dry["realRunNeeds"].as_str().unwrap_or_default();
    assert!(
        needs.starts_with("persister-p") && needs.ends_with("stop every persister first"),
        "a dry run beside a live persister runs and says what a real run needs: {dry}"
    );
    assert_eq!(ops.rows().await, 1, "the dry run changed nothing");

    let pid = persister.id().expect("pid");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(10), persister.wait())
        .await
        .expect("the persister stops")
        .expect("exit status");
    assert!(status.success());
    let started = Instant::now();
    let report = ops
        .json(&["replay", "--from-stream-seq", "1", "--json"])
        .await;
    assert_eq!(counts(&report), [1, 0, 1, 0, 1, 1]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a stopped persister's pull requests leave with its connection: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn status_counts_what_waits_and_goes_to_zero_once_processed() {
    let ops = Ops::new().await;
    for partition in 0..PARTITIONS {
        consumer::ensure_consumer(&ops.js, partition, &fast_tuning())
            .await
            .expect("consumer");
    }
    let c = conversation();
    for i in 0..5 {
        ops.send(c, &format!("m{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let before = ops.json(&["status", "--json"]).await;

    let messages = &before["streams"][0];
    assert_eq!(messages["name"], MESSAGES_STREAM);
    assert_eq!(
        [
            &messages["messages"],
            &messages["firstSeq"],
            &messages["lastSeq"]
        ],
        [5, 1, 5]
    );
    assert!(messages["bytes"].as_u64().expect("bytes") > 0);
    assert_eq!(before["deadLetters"], 0);
    let consumers = before["consumers"].as_array().expect("consumers");
    assert_eq!(
        consumers.len(),
        PARTITIONS as usize,
        "no fanout consumer yet: absent"
    );
    let busy: Vec<&Value> = consumers.iter().filter(|c| c["pending"] != 0).collect();
    assert_eq!(busy.len(), 1, "one conversation, one partition: {before}");
    assert_eq!(busy[0]["stream"], MESSAGES_STREAM);
    assert_eq!([&busy[0]["pending"], &busy[0]["lagMessages"]], [5, 5]);
    assert_eq!([&busy[0]["ackPending"], &busy[0]["redelivered"]], [0, 0]);
    let lag = busy[0]["lagSeconds"].as_f64().expect("lagSeconds");
    assert!(
        (0.05..10.0).contains(&lag),
        "age of the oldest message: {lag}"
    );

    let persister = ops.start_persister().await;
    eventually("5 persisted events", || async {
        ops.persisted_events().await == 5
    })
    .await;
    persister.stop().await;
    let after = ops.json(&["status", "--json"]).await;
    assert_eq!(after["streams"][1]["name"], PERSISTED_STREAM);
    assert_eq!(
        after["streams"][1]["messages"],
        ops.stream_messages(PERSISTED_STREAM).await,
        "status counts the stream's messages (each carries one or more events)"
    );
    for consumer in after["consumers"].as_array().expect("consumers") {
        assert_eq!(
            [
                &consumer["pending"],
                &consumer["ackPending"],
                &consumer["lagMessages"]
            ],
            [0, 0, 0],
            "{consumer}"
        );
        assert_eq!(consumer["lagSeconds"].as_f64(), Some(0.0), "{consumer}");
    }
    let human = ops.cli(&["status"]).await;
    assert_eq!(human.code, 0);
    assert!(human.stdout.contains("dead letters: 0"), "{}", human.stdout);
}

#[tokio::test]
async fn dead_letters_are_listed_retried_and_dropped() {
    let ops = Ops::new().await;
    let c = conversation();
    ops.install_poison_trigger("poison refused").await;
    ops.send(c, "a").await;
    let poison = ops.send(c, "poison").await;
    ops.send(c, "b").await;
    let persister = ops.start_persister().await;
    eventually("a dead letter", || async {
        ops.stream_messages(DEAD_LETTER_STREAM).await == 1
    })
    .await;
    eventually("2 rows", || async { ops.rows().await == 2 }).await;
    persister.stop().await;
    let poison_id = poison.message.id.to_string();

    let listed = ops.json(&["dlq", "list", "--json"]).await;
    let entries = listed["deadLetters"].as_array().expect("deadLetters");
    assert_eq!(entries.len(), 1, "{listed}");
    assert_eq!(entries[0]["id"], poison_id.as_str());
    assert_eq!(entries[0]["conversationId"], c.to_string().as_str());
    assert_eq!(entries[0]["streamSeq"], 2);
    let reason = entries[0]["reason"].as_str().expect("reason");
    assert!(reason.contains("poison refused"), "{reason}");
    let failed_at = entries[0]["failedAt"].as_str().expect("failedAt");
    chrono::DateTime::parse_from_rfc3339(failed_at).expect("failedAt is RFC 3339");

    ops.install_poison_trigger("still poison").await;
    let retried = ops.json(&["dlq", "retry", &poison_id, "--json"]).await;
    assert_eq!(
        [
            &retried["retried"],
            &retried["stored"],
            &retried["failedAgain"]
        ],
        [1, 0, 1]
    );
    let listed = ops.json(&["dlq", "list", "--json"]).await;
    let entries = listed["deadLetters"].as_array().expect("deadLetters");
    assert_eq!(entries.len(), 1, "it stays, once: {listed}");
    assert_eq!(entries[0]["id"], poison_id.as_str());
    assert_eq!(entries[0]["streamSeq"], 2);
    let reason = entries[0]["reason"].as_str().expect("reason");
    assert!(reason.contains("still poison"), "the new reason: {reason}");

    ops.drop_poison_trigger().await;
    let retried = ops.json(&["dlq", "retry", "--all", "--json"]).await;
    assert_eq!(
        [
            &retried["retried"],
            &retried["stored"],
            &retried["failedAgain"]
        ],
        [1, 1, 0]
    );
    assert_eq!(
        ops.json(&["dlq", "list", "--json"]).await["deadLetters"],
        serde_json::json!([])
    );
    let seqs = ops.db.seqs(c).await.expect("rows");
    assert_eq!(
        seqs,
        vec![(1, "a".into()), (2, "b".into()), (3, "poison".into())],
        "the retried message takes the next seq"
    );
    let stream = ops.js.get_stream(PERSISTED_STREAM).await.expect("stream");
    let event = stream
        .get_last_raw_message_by_subject(&persisted_subject(c))
        .await
        .expect("persisted event");
    let event: Persisted = serde_json::from_slice(&event.payload).expect("persisted events");
    let event = event.events.last().expect("an event");
    assert_eq!(
        event.envelope.message.id, poison.message.id,
        "its persisted event is published"
    );

    ops.install_poison_trigger("poison refused").await;
    let persister = ops.start_persister().await;
    let second = ops.send(c, "poison").await;
    eventually("a second dead letter", || async {
        ops.json(&["dlq", "list", "--json"]).await["deadLetters"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    persister.stop().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let refused = ops
        .cli(&["dlq", "drop", &second.message.id.to_string(), &unknown])
        .await;
    assert!(
        refused.failure(1).contains(&unknown),
        "names the unknown id"
    );
    assert_eq!(
        ops.stream_messages(DEAD_LETTER_STREAM).await,
        1,
        "nothing is dropped when one id is unknown"
    );
    let line = ops.cli(&["dlq", "retry", "999"]).await;
    assert!(line.failure(1).contains("999"));
    let dropped = ops.json(&["dlq", "drop", "4", "--json"]).await;
    assert_eq!(dropped["dropped"], 1, "dropped by its stream seq");
    assert_eq!(ops.stream_messages(DEAD_LETTER_STREAM).await, 0);
}

#[tokio::test]
async fn bad_arguments_exit_2_with_one_line() {
    let ops = Ops::new().await;
    let table: &[(&[&str], &str)] = &[
        (&["replay"], "a start is required"),
        (
            &[
                "replay",
                "--from-stream-seq",
                "1",
                "--since",
                "2024-01-01T00:00:00Z",
            ],
            "only one start",
        ),
        (
            &["replay", "--from-stream-seq", "0"],
            "stream sequences start at 1",
        ),
        (&["replay", "--since", "yesterday"], "not RFC 3339"),
        (
            &["replay", "--from-stream-seq", "1", "--conversation", "x"],
            "not a UUID",
        ),
        (&["dlq", "drop"], "drop needs an id"),
        (&["dlq", "drop", "poison"], "neither a UUID nor a sequence"),
        (&["dlq", "retry"], "ids or --all"),
        (&["dlq", "retry", "1", "--all"], "not both"),
        (&["dlq", "list", "--limit", "many"], "a number"),
        (&["status", "--verbose"], "no such flag"),
        (&["dlq"], "a dlq verb is required"),
    ];
    for (args, reason) in table {
        let run = ops.cli(args).await;
        run.failure(2);
        assert!(run.stdout.is_empty(), "{args:?}: {reason}");
    }
}
