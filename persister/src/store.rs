//! One batch, one transaction: the only place `seq` is assigned.
//!
//! Idempotent by message id: rows already present (a redelivered batch, a crash between
//! commit and ack, a client retry) are read back instead of inserted, so they consume no
//! new `seq` and the sequence stays contiguous. The new ones get `last + 1, last + 2, …` per
//! conversation in stream order and go in with one multi-row `INSERT … SELECT FROM UNNEST`.
//!
//! A concurrent writer for the same conversation (only possible during a partition
//! hand-over) makes the insert hit `UNIQUE (conversation_id, seq)` or the primary key; that
//! error is retriable and the retry recomputes from the winner's rows, so no seq repeats.

use coachwire_shared::db::MessageRow;
use coachwire_shared::envelope::MessageEnvelope;
use coachwire_shared::ids::{ConversationId, MessageId, Seq};
use coachwire_shared::message::Message;
use coachwire_shared::message_columns;
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

/// A message taken from the stream, with its stream sequence.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub stream_seq: u64,
    pub envelope: MessageEnvelope,
}

/// The stored form of an incoming message; `fresh` is false for one stored earlier.
#[derive(Clone, Debug)]
pub struct Stored {
    pub envelope: MessageEnvelope,
    pub fresh: bool,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreError(#[from] pub sqlx::Error);

impl StoreError {
    /// Worth retrying the same batch: the database or the connection was the problem, or
    /// a concurrent writer won a race. Anything else is in the data (a poison message).
    pub fn is_retriable(&self) -> bool {
        match &self.0 {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")
                    || matches!(code.as_ref(), "23505" | "40001" | "40P01")
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => true,
            _ => false,
        }
    }
}

/// Stores `batch` (in stream order) in one transaction; returns one [`Stored`] per input.
pub async fn store_batch(pool: &PgPool, batch: &[Incoming]) -> Result<Vec<Stored>, StoreError> {
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = batch.iter().map(|m| m.envelope.message.id.0).collect();
    let mut known: HashMap<MessageId, Message> = existing(&mut tx, &ids).await?;
    let conversations: Vec<Uuid> = batch
        .iter()
        .filter(|m| !known.contains_key(&m.envelope.message.id))
        .map(|m| m.envelope.message.conversation_id.0)
        .collect();
    let mut last = last_seqs(&mut tx, &conversations).await?;
    let mut stored = Vec::with_capacity(batch.len());
    let mut fresh: Vec<(&Incoming, Message)> = Vec::new();
    for incoming in batch {
        let message = &incoming.envelope.message;
        if let Some(earlier) = known.get(&message.id) {
            stored.push(Stored {
                envelope: MessageEnvelope {
                    message: earlier.clone(),
                    origin: incoming.envelope.origin.clone(),
                },
                fresh: false,
            });
            continue;
        }
        let seq = last.entry(message.conversation_id).or_insert(Seq::ZERO);
        *seq = seq.next();
        let mut assigned = message.clone();
        assigned.seq = Some(*seq);
        known.insert(message.id, assigned.clone());
        fresh.push((incoming, assigned.clone()));
        stored.push(Stored {
            envelope: MessageEnvelope {
                message: assigned,
                origin: incoming.envelope.origin.clone(),
            },
            fresh: true,
        });
    }
    insert(&mut tx, &fresh).await?;
    tx.commit().await?;
    Ok(stored)
}

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

async fn existing(tx: &mut Tx, ids: &[Uuid]) -> Result<HashMap<MessageId, Message>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE id = ANY($1)"
    );
    let rows: Vec<MessageRow> = sqlx::query_as(sql).bind(ids).fetch_all(&mut **tx).await?;
    Ok(rows.into_iter().map(|r| (r.id, Message::from(r))).collect())
}

/// The highest stored seq of each conversation: a backward index scan per conversation
/// (`ORDER BY seq DESC LIMIT 1`), constant time however long the conversation is.
async fn last_seqs(
    tx: &mut Tx,
    conversations: &[Uuid],
) -> Result<HashMap<ConversationId, Seq>, sqlx::Error> {
    let rows: Vec<(ConversationId, i64)> = sqlx::query_as(
        "SELECT c.id, COALESCE((SELECT m.seq FROM messages m WHERE m.conversation_id = c.id \
                                ORDER BY m.seq DESC LIMIT 1), 0) \
         FROM (SELECT DISTINCT unnest($1::uuid[]) AS id) c",
    )
    .bind(conversations)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|(c, s)| (c, Seq(s))).collect())
}

async fn insert(tx: &mut Tx, fresh: &[(&Incoming, Message)]) -> Result<(), sqlx::Error> {
    if fresh.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&(&Incoming, Message)) -> Uuid| fresh.iter().map(f).collect::<Vec<_>>();
    let ids = col(|(_, m)| m.id.0);
    let conversations = col(|(_, m)| m.conversation_id.0);
    let users = col(|(_, m)| m.user_id.0);
    let contents: Vec<&str> = fresh.iter().map(|(_, m)| m.content.as_str()).collect();
    let kinds: Vec<&str> = fresh.iter().map(|(_, m)| m.kind.as_str()).collect();
    let metadata: Vec<serde_json::Value> = fresh
        .iter()
        .map(|(_, m)| serde_json::to_value(&m.metadata).unwrap_or_default())
        .collect();
    let client_ids: Vec<Option<Uuid>> = fresh
        .iter()
        .map(|(_, m)| m.client_message_id.map(|c| c.0))
        .collect();
    let seqs: Vec<i64> = fresh
        .iter()
        .map(|(_, m)| m.seq.map_or(0, |s| s.0))
        .collect();
    let created: Vec<chrono::DateTime<chrono::Utc>> =
        fresh.iter().map(|(_, m)| m.created_at).collect();
    let stream_seqs: Vec<i64> = fresh
        .iter()
        .map(|(i, _)| i64::try_from(i.stream_seq).unwrap_or(i64::MAX))
        .collect();
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, user_id, content, type, metadata, \
                               client_message_id, seq, created_at, stream_seq) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
                              $6::jsonb[], $7::uuid[], $8::int8[], $9::timestamptz[], $10::int8[])",
    )
    .bind(ids)
    .bind(conversations)
    .bind(users)
    .bind(contents)
    .bind(kinds)
    .bind(metadata)
    .bind(client_ids)
    .bind(seqs)
    .bind(created)
    .bind(stream_seqs)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
