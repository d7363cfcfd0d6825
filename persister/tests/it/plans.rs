//! The store's query plans must not depend on when its statements were prepared.
//!
//! sqlx prepares each statement once per connection, and after five executions Postgres
//! may switch a prepared statement to a cached generic plan, made from the statistics of
//! that moment. A persister started on an empty database keeps its connections for days
//! while the tables grow to millions of rows: a plan that suited the empty table (a
//! sequential scan) would then read the whole table for every batch.

use crate::common;

use coachwire_persister::store::{Incoming, Row, store_batch, store_in};
use coachwire_testkit::db::TestDb;
use common::{message, user};

/// Messages of history inserted after the statements were prepared.
const HISTORY_CONVERSATIONS: i64 = 2_000;
const HISTORY_PER_CONVERSATION: i64 = 100;

#[tokio::test]
async fn statements_prepared_on_empty_tables_still_use_indexes_once_they_hold_history() {
    let db = TestDb::new().await.expect("db");
    // One connection, so every execution reuses the statements prepared on it.
    let pool = coachwire_shared::db::connect(&db.url, 1)
        .await
        .expect("pool");
    let (alice, bob) = (user(), user());
    let conversation = db.conversation(&[alice, bob]).await.expect("conversation");
    let batch = |n: u64| -> Vec<Incoming> {
        (0..3)
            .map(|i| Incoming {
                stream_seq: n * 3 + i,
                envelope: message(conversation, alice, &format!("m{n}-{i}")),
            })
            .collect()
    };
    for n in 0..10 {
        store_batch(&pool, &batch(n)).await.expect("store");
    }

    sqlx::raw_sql(sqlx::AssertSqlSafe(history_sql()))
        .execute(&pool)
        .await
        .expect("history");

    // The one-statement path for new messages, on the same connection.
    let before = scans(&pool).await;
    let stored = store_batch(&pool, &batch(10)).await.expect("store new");
    assert!(stored.iter().all(|s| s.row == Row::New));
    let after = scans(&pool).await;
    assert!(
        after.1 > before.1,
        "the new rows were numbered through an index"
    );
    assert_eq!(after.0, before.0, "storing new messages scanned a table");

    // The path that reads what is stored first, in a transaction to count its scans.
    let mut tx = pool.begin().await.expect("begin");
    let stored = store_in(&mut tx, &batch(11)).await.expect("store");
    assert!(stored.iter().all(|s| s.row == Row::New));
    let (seq_scans, index_scans): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(seq_scan), 0)::bigint, coalesce(sum(idx_scan), 0)::bigint \
         FROM pg_stat_xact_user_tables \
         WHERE relname IN ('messages', 'conversation_participants')",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("stats");
    tx.rollback().await.expect("rollback");
    assert!(
        index_scans > 0,
        "the store read through its indexes ({index_scans} index scans)"
    );
    assert_eq!(
        seq_scans,
        0,
        "a statement prepared on empty tables scanned a table of {} rows",
        HISTORY_CONVERSATIONS * HISTORY_PER_CONVERSATION
    );
}

/// Sequential and index scans of the store's tables so far, with this connection's
/// counts flushed first (a pool of one: the connection that stored).
async fn scans(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .expect("flush");
    sqlx::query_as(
        "SELECT coalesce(sum(seq_scan), 0)::bigint, coalesce(sum(idx_scan), 0)::bigint \
         FROM pg_stat_user_tables \
         WHERE relname IN ('messages', 'conversation_participants')",
    )
    .fetch_one(pool)
    .await
    .expect("stats")
}

/// Conversations of two with messages each, then the statistics autovacuum would gather.
/// The pool's statement timeout guards the service, not this bulk load: on a loaded CI
/// machine the 200,000-row insert outlasted it.
fn history_sql() -> String {
    format!(
        "SET statement_timeout = 0; \
         CREATE TEMP TABLE history AS \
           SELECT gen_random_uuid() AS conversation, gen_random_uuid() AS a, gen_random_uuid() AS b \
           FROM generate_series(1, {HISTORY_CONVERSATIONS}); \
         INSERT INTO conversations (id, created_by) SELECT conversation, a FROM history; \
         INSERT INTO conversation_participants (conversation_id, user_id) \
           SELECT conversation, a FROM history UNION ALL SELECT conversation, b FROM history; \
         INSERT INTO messages (id, conversation_id, user_id, content, type, seq, created_at) \
           SELECT gen_random_uuid(), conversation, a, 'history ' || s, 'user', s, now() \
           FROM history, generate_series(1, {HISTORY_PER_CONVERSATION}) AS s; \
         ANALYZE conversations; ANALYZE conversation_participants; ANALYZE messages; \
         RESET statement_timeout;"
    )
}
