//! Partial failures of Postgres under steady load (§7.5): a database that turns read-only
//! (a failover to a replica), refuses a grant, or hangs on a lock past the statement
//! timeout, and a long outage across two persisters. In each, ingest keeps acking, the
//! persister retries until the database is back, nothing is dead-lettered for a fault of
//! the database, and every §7 guarantee holds afterwards (the scenario's checker), seq
//! order equal to stream order included.

use coachwire_shared::subjects::DEAD_LETTER_STREAM;
use coachwire_testkit::pg_server::PgServer;
use coachwire_testkit::scenario::{Run, nats_client, plan};
use coachwire_testkit::stack::{StackOptions, TEST_ACK_WAIT, TEST_PINNED_TTL};
use sqlx::{Connection, PgConnection};
use std::time::Duration;

/// How long a fault lasts: several of the persister's backoff steps, and long enough for
/// a few thousand messages to wait.
const FAULT_FOR: Duration = Duration::from_secs(10);

/// A connection of its own (the stack's pools are what the faults hit).
async fn admin(run: &Run) -> PgConnection {
    PgConnection::connect(&run.stack.db.url)
        .await
        .expect("an admin connection")
}

/// Ends the services' sessions, as a failover does (`TestDb::cut_sessions`).
async fn cut_sessions(run: &Run) {
    let mut admin = admin(run).await;
    run.stack
        .db
        .cut_sessions(&mut admin)
        .await
        .expect("terminate sessions");
}

/// Runs each statement on its own (one admin session), in order.
async fn execute(run: &Run, statements: &[&str]) {
    let mut admin = admin(run).await;
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn stored(run: &Run) -> i64 {
    let mut admin = admin(run).await;
    sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&mut admin)
        .await
        .expect("count")
}

async fn dead_letters(run: &Run) -> u64 {
    let js = async_nats::jetstream::new(nats_client(&run.stack.nats_url()).await);
    let mut stream = js.get_stream(DEAD_LETTER_STREAM).await.expect("dlq stream");
    stream.info().await.expect("dlq info").state.messages
}

/// Runs `fault` from a random point of the load for [`FAULT_FOR`], then `heal`, and checks
/// that nothing was stored meanwhile (the fault bit) and nothing was dead-lettered.
async fn database_fault(name: &'static str, fault: &[&str], heal: &[&str], reconnect: bool) {
    let mut run = Run::start(plan(name, StackOptions::default())).await;
    run.fault_point().await;
    execute(&run, fault).await;
    if reconnect {
        cut_sessions(&run).await;
    }
    let acked_at_fault = run.progress().await.acked;
    // Whatever was in a transaction when the fault came may still commit: measure from
    // a moment later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored_early = stored(&run).await;
    tokio::time::sleep(FAULT_FOR - Duration::from_secs(1)).await;
    let stored_late = stored(&run).await;
    let acked_during = run.progress().await.acked - acked_at_fault;
    execute(&run, heal).await;
    if reconnect {
        cut_sessions(&run).await;
    }
    println!(
        "{name}: during the fault {acked_during} acked, stored {stored_early} → {stored_late}"
    );
    assert_eq!(
        stored_early, stored_late,
        "the fault really kept the persister from storing"
    );
    assert!(acked_during > 1000, "ingest kept acking: {acked_during}");
    run.run_until(run.started.elapsed() + Duration::from_secs(3))
        .await;
    let dead = dead_letters(&run).await;
    let (_, _, summary) = run.finish().await;
    assert_eq!(
        dead, 0,
        "{name}: nothing dead-lettered for a fault of the database"
    );
    println!(
        "{name}: {} acked, all stored once, 0 dead letters",
        summary.acked
    );
}

#[tokio::test]
async fn a_database_read_only_for_10_s_dead_letters_nothing_and_stores_everything_once() {
    database_fault(
        "read-only",
        &["DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); END $$"],
        // The admin session itself starts read-only now: switch it back first.
        &[
            "SET default_transaction_read_only = off",
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET default_transaction_read_only', current_database()); END $$",
        ],
        true,
    )
    .await;
}

#[tokio::test]
async fn a_revoked_insert_grant_dead_letters_nothing_and_its_restoration_stores_everything() {
    database_fault(
        "revoked-grant",
        &["REVOKE INSERT ON messages FROM coachwire"],
        &["GRANT INSERT ON messages TO coachwire"],
        false,
    )
    .await;
}

#[tokio::test]
async fn a_lock_held_past_the_statement_timeout_dead_letters_nothing() {
    let mut run = Run::start(plan("statement-timeout", StackOptions::default())).await;
    run.fault_point().await;
    let mut locker = admin(&run).await;
    let mut lock = locker.begin().await.expect("begin");
    sqlx::raw_sql("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let acked_at_lock = run.progress().await.acked;
    // Longer than the services' statement timeout (10 s): the blocked batch is cancelled
    // (57014) and retried, not left hanging.
    tokio::time::sleep(Duration::from_secs(13)).await;
    let acked_during = run.progress().await.acked - acked_at_lock;
    lock.rollback().await.expect("release the lock");
    println!("statement-timeout: {acked_during} acked while messages was locked for 13 s");
    assert!(acked_during > 1000, "ingest kept acking: {acked_during}");
    run.run_until(run.started.elapsed() + Duration::from_secs(3))
        .await;
    let dead = dead_letters(&run).await;
    run.finish().await;
    assert_eq!(dead, 0, "nothing dead-lettered for a lock");
}

/// Longer than a partition's pin (`pinned_ttl`) plus a redelivery (`ack_wait`), with the
/// test stacks' short timing (production's would be 30 s): the batches held through the
/// outage must keep both, or the other persister takes the partition over mid-outage and
/// writes out of stream order.
const LONG_OUTAGE: Duration = TEST_PINNED_TTL
    .saturating_add(TEST_ACK_WAIT)
    .saturating_add(Duration::from_secs(3));

#[tokio::test]
async fn two_persisters_through_a_postgres_outage_longer_than_a_pin_keep_stream_order() {
    let mut pg = PgServer::start().await.expect("a private Postgres");
    let options = StackOptions {
        persisters: 2,
        database_admin_url: Some(pg.admin_url()),
        ..Default::default()
    };
    let mut run = Run::start(plan("two-persisters-outage", options)).await;
    run.fault_point().await;
    pg.stop().await.expect("Postgres stopped");
    let acked_at_stop = run.progress().await.acked;
    tokio::time::sleep(LONG_OUTAGE).await;
    let acked_during = run.progress().await.acked - acked_at_stop;
    pg.start_again().await.expect("Postgres back");
    println!("two-persisters-outage: {acked_during} acked during {LONG_OUTAGE:?} without Postgres");
    run.run_until(run.started.elapsed() + Duration::from_secs(5))
        .await;
    let dead = dead_letters(&run).await;
    // finish() also checks that seq order equals stream order in every conversation.
    run.finish().await;
    assert_eq!(dead, 0, "nothing dead-lettered for an outage");
}

/// The harness's crash of Postgres (the soak's `kill postgres`) leaves no backend behind:
/// one forked after the pids were listed kept the shared memory, and the restart failed.
/// Every backend is in the postmaster's process group, so a held connection's is too.
#[tokio::test]
async fn a_killed_postgres_leaves_no_backend_and_starts_again() {
    let mut pg = PgServer::start().await.expect("a private Postgres");
    let mut held = PgConnection::connect(&pg.admin_url())
        .await
        .expect("a connection");
    let backends = pg.pids().len();
    assert!(backends >= 2, "postmaster and backends: {:?}", pg.pids());
    pg.kill().await.expect("killed, with every backend");
    pg.start_again().await.expect("started again");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(
            &mut PgConnection::connect(&pg.admin_url())
                .await
                .expect("reconnect"),
        )
        .await
        .expect("a query");
    assert_eq!(one, 1);
    assert!(
        sqlx::query("SELECT 1").execute(&mut held).await.is_err(),
        "the old connection's backend died with the crash"
    );
}
