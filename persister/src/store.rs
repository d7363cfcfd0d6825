//! One batch, one transaction: the only place `seq` is assigned.
//!
//! Idempotent by message id: rows already present (a redelivered batch, a crash between
//! commit and ack, a client retry) are read back instead of inserted, so they consume no
//! new `seq` and the sequence stays contiguous. The new ones get `last + 1, last + 2, …` per
//! conversation in stream order and go in with one multi-row `INSERT … SELECT FROM UNNEST`.
//!
//! A later version of a message (the end of a streamed reply, §14) is an event too: it
//! gets the conversation's next `seq` like a new message, as a row of its own whose id is
//! derived from the message's (so it is stored once, however often it is delivered), and
//! the message's own row is brought to the new version in the same transaction.
//!
//! A concurrent writer for the same conversation (only possible during a partition
//! hand-over) makes the insert hit `UNIQUE (conversation_id, seq)` or the primary key; that
//! error is retriable and the retry recomputes from the winner's rows, so no seq repeats.

use coachwire_shared::db::MessageRow;
use coachwire_shared::envelope::{MessageEnvelope, Version};
use coachwire_shared::ids::{ConversationId, MessageId, Seq};
use coachwire_shared::message::Message;
use coachwire_shared::message_columns;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// A message taken from the stream, with its stream sequence.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub stream_seq: u64,
    pub envelope: MessageEnvelope,
}

impl Incoming {
    /// An accepted message from the stream: an envelope without a `seq`; `Err` says why
    /// a payload is not one (it is then dead-lettered).
    pub fn decode(stream_seq: u64, payload: &[u8]) -> Result<Incoming, String> {
        let envelope: MessageEnvelope =
            serde_json::from_slice(payload).map_err(|e| format!("undecodable: {e}"))?;
        if envelope.event_seq().is_some() || envelope.message.seq.is_some() {
            return Err("an accepted message must not carry a seq".into());
        }
        Ok(Incoming {
            stream_seq,
            envelope,
        })
    }
}

/// The stored form of an incoming message, and whether this batch stored it.
#[derive(Clone, Debug)]
pub struct Stored {
    pub envelope: MessageEnvelope,
    pub row: Row,
}

/// Whether a batch's message got its row now or had it already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// Inserted by this batch, with a new `seq`.
    New,
    /// Stored earlier (a redelivery, a retry): read back, no new `seq`.
    Existing,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreError(#[from] pub sqlx::Error);

/// Whose fault a failed store was: it decides retry (the database's) or dead letter (the
/// message's). §7.5: nothing is dead-lettered for a fault of the database, so anything
/// not clearly the message's is the database's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Down, slow, read-only, refusing, mid-migration, or a concurrent writer's race:
    /// retrying the same batch will eventually succeed.
    Database,
    /// The data itself cannot be stored (a poison message): retrying cannot help.
    Message,
}

/// The constraints whose 23505 is a concurrent writer's race, not the message's fault: the
/// retry re-reads the winner's rows (see the module doc).
const RACE_CONSTRAINTS: &[&str] = &["messages_pkey", "messages_conversation_seq"];

impl StoreError {
    pub fn fault(&self) -> Fault {
        classify(&self.0)
    }

    /// Worth retrying the same batch (see [`Fault`]).
    pub fn is_retriable(&self) -> bool {
        self.fault() == Fault::Database
    }

    /// What tells two failures apart: the SQLSTATE and constraint of a database error,
    /// else the error's text.
    pub fn signature(&self) -> String {
        match &self.0 {
            sqlx::Error::Database(db) => format!(
                "{}/{}",
                db.code().unwrap_or_default(),
                db.constraint().unwrap_or_default()
            ),
            other => other.to_string(),
        }
    }
}

/// Classifies a sqlx error; database errors go by SQLSTATE (see [`classify_sqlstate`]).
pub fn classify(error: &sqlx::Error) -> Fault {
    match error {
        sqlx::Error::Database(db) => {
            classify_sqlstate(db.code().as_deref().unwrap_or_default(), db.constraint())
        }
        // A value of the message that cannot be encoded for Postgres.
        sqlx::Error::Encode(_) => Fault::Message,
        _ => Fault::Database,
    }
}

/// Only class 22 (data exception) and class 23 (integrity) are the message's fault, and
/// of those not a unique violation on a [`RACE_CONSTRAINTS`] constraint (or on none we can
/// name). A 23505 on `messages_user_client_message_id` is the message's: ids derive from
/// (user, clientMessageId), so another id with the same pair never becomes storable.
pub fn classify_sqlstate(code: &str, constraint: Option<&str>) -> Fault {
    match code {
        "23505" => match constraint {
            Some(c) if !RACE_CONSTRAINTS.contains(&c) => Fault::Message,
            _ => Fault::Database,
        },
        _ if code.starts_with("22") || code.starts_with("23") => Fault::Message,
        _ => Fault::Database,
    }
}

/// Stores `batch` (in stream order) in one transaction; returns one [`Stored`] per input.
pub async fn store_batch(pool: &PgPool, batch: &[Incoming]) -> Result<Vec<Stored>, StoreError> {
    let mut tx = pool.begin().await?;
    let stored = store_in(&mut tx, batch).await?;
    tx.commit().await?;
    Ok(stored)
}

/// The body of [`store_batch`] on a transaction the caller owns, so `replay --dry-run` can
/// run the exact store path and roll it back. `conn` must be inside a transaction: the
/// read of the last seqs and the insert must see the same state.
pub async fn store_in(
    conn: &mut PgConnection,
    batch: &[Incoming],
) -> Result<Vec<Stored>, StoreError> {
    let ids: Vec<Uuid> = batch.iter().map(|m| m.envelope.event_id().0).collect();
    let mut known: HashMap<MessageId, Message> = existing(conn, &ids).await?;
    let conversations: Vec<Uuid> = batch
        .iter()
        .filter(|m| !known.contains_key(&m.envelope.event_id()))
        .map(|m| m.envelope.message.conversation_id.0)
        .collect();
    let mut last = last_seqs(conn, &conversations).await?;
    let mut fresh: Vec<(&Incoming, Message)> = Vec::new();
    let mut seqs: Vec<(Option<Seq>, Row)> = Vec::with_capacity(batch.len());
    for incoming in batch {
        let id = incoming.envelope.event_id();
        if let Some(earlier) = known.get(&id) {
            seqs.push((earlier.seq, Row::Existing));
            continue;
        }
        let seq = last
            .entry(incoming.envelope.message.conversation_id)
            .or_insert(Seq::ZERO);
        *seq = seq.next();
        let accepted = &incoming.envelope;
        let row = Message {
            id,
            seq: Some(*seq),
            // The message's own row holds its `clientMessageId` (unique per user).
            client_message_id: match accepted.version {
                None => accepted.message.client_message_id,
                Some(_) => None,
            },
            ..accepted.message.clone()
        };
        known.insert(id, row.clone());
        fresh.push((incoming, row));
        seqs.push((Some(*seq), Row::New));
    }
    insert(conn, &fresh).await?;
    apply_versions(conn, &fresh).await?;
    touch_activity(conn, &fresh).await?;
    let current = versioned_messages(conn, batch).await?;
    let stored = batch
        .iter()
        .zip(seqs)
        .map(|(incoming, (seq, row))| Stored {
            envelope: persisted(incoming, seq, &known, &current),
            row,
        })
        .collect();
    Ok(stored)
}

/// The persisted event of `incoming`, stored at `seq`: a creation as its row; a later
/// version as its message's current version (just updated) with the version's `seq`.
fn persisted(
    incoming: &Incoming,
    seq: Option<Seq>,
    rows: &HashMap<MessageId, Message>,
    current: &HashMap<MessageId, Message>,
) -> MessageEnvelope {
    let accepted = &incoming.envelope;
    let origin = accepted.origin.clone();
    match accepted.version {
        None => MessageEnvelope {
            message: rows
                .get(&accepted.message.id)
                .cloned()
                .unwrap_or_else(|| accepted.message.clone()),
            origin,
            version: None,
        },
        Some(_) => MessageEnvelope {
            message: current
                .get(&accepted.message.id)
                .cloned()
                .unwrap_or_else(|| accepted.message.clone()),
            origin,
            version: Some(Version { seq }),
        },
    }
}

/// Brings each message with a later version in this batch to that version, in place, so
/// its row always reads as the current version (§4 `sync`: "each in its current version").
async fn apply_versions(
    conn: &mut PgConnection,
    fresh: &[(&Incoming, Message)],
) -> Result<(), sqlx::Error> {
    let versions: Vec<&Message> = fresh
        .iter()
        .filter(|(incoming, _)| incoming.envelope.version.is_some())
        .map(|(incoming, _)| &incoming.envelope.message)
        .collect();
    if versions.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = versions.iter().map(|m| m.id.0).collect();
    let contents: Vec<&str> = versions.iter().map(|m| m.content.as_str()).collect();
    let statuses: Vec<&str> = versions.iter().map(|m| m.status.as_str()).collect();
    sqlx::query(
        "UPDATE messages m SET content = v.content, status = v.status \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS v(id, content, status) \
         WHERE m.id = v.id",
    )
    .bind(ids)
    .bind(contents)
    .bind(statuses)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The current rows of the messages that have a later version in `batch`.
async fn versioned_messages(
    conn: &mut PgConnection,
    batch: &[Incoming],
) -> Result<HashMap<MessageId, Message>, sqlx::Error> {
    let ids: Vec<Uuid> = batch
        .iter()
        .filter(|m| m.envelope.version.is_some())
        .map(|m| m.envelope.message.id.0)
        .collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    existing(conn, &ids).await
}

/// Moves each conversation's activity time (what `GET /api/conversations` orders by) to
/// its newest stored message, in the same transaction, so the listing never runs ahead of
/// or behind what was stored. Sorted by conversation so that two writers lock rows in
/// the same order.
async fn touch_activity(
    conn: &mut PgConnection,
    fresh: &[(&Incoming, Message)],
) -> Result<(), sqlx::Error> {
    let mut newest: BTreeMap<Uuid, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    for (_, message) in fresh {
        let at = newest
            .entry(message.conversation_id.0)
            .or_insert(message.created_at);
        *at = (*at).max(message.created_at);
    }
    if newest.is_empty() {
        return Ok(());
    }
    let (conversations, times): (Vec<Uuid>, Vec<_>) = newest.into_iter().unzip();
    sqlx::query(
        "UPDATE conversation_participants p SET last_activity_at = t.at \
         FROM UNNEST($1::uuid[], $2::timestamptz[]) AS t(id, at) \
         WHERE p.conversation_id = t.id AND p.last_activity_at < t.at",
    )
    .bind(conversations)
    .bind(times)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn existing(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<MessageId, Message>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE id = ANY($1)"
    );
    let rows: Vec<MessageRow> = sqlx::query_as(sql).bind(ids).fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().map(|r| (r.id, Message::from(r))).collect())
}

/// The highest stored seq of each conversation: a backward index scan per conversation
/// (`ORDER BY seq DESC LIMIT 1`), constant time however long the conversation is.
async fn last_seqs(
    conn: &mut PgConnection,
    conversations: &[Uuid],
) -> Result<HashMap<ConversationId, Seq>, sqlx::Error> {
    let rows: Vec<(ConversationId, i64)> = sqlx::query_as(
        "SELECT c.id, COALESCE((SELECT m.seq FROM messages m WHERE m.conversation_id = c.id \
                                ORDER BY m.seq DESC LIMIT 1), 0) \
         FROM (SELECT DISTINCT unnest($1::uuid[]) AS id) c",
    )
    .bind(conversations)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(c, s)| (c, Seq(s))).collect())
}

async fn insert(
    conn: &mut PgConnection,
    fresh: &[(&Incoming, Message)],
) -> Result<(), sqlx::Error> {
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
    let statuses: Vec<&str> = fresh.iter().map(|(_, m)| m.status.as_str()).collect();
    let versions_of: Vec<Option<Uuid>> = fresh
        .iter()
        .map(|(i, _)| i.envelope.version.map(|_| i.envelope.message.id.0))
        .collect();
    let stream_seqs: Vec<i64> = fresh
        .iter()
        .map(|(i, _)| i64::try_from(i.stream_seq).unwrap_or(i64::MAX))
        .collect();
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, user_id, content, type, metadata, \
                               client_message_id, seq, created_at, stream_seq, status, \
                               version_of) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
                              $6::jsonb[], $7::uuid[], $8::int8[], $9::timestamptz[], $10::int8[], \
                              $11::text[], $12::uuid[])",
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
    .bind(statuses)
    .bind(versions_of)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_with_a_reason_per_row() {
        use Fault::{Database, Message};
        let table: &[(&str, Option<&str>, Fault, &str)] = &[
            (
                "22023",
                None,
                Message,
                "invalid parameter value (e.g. a trigger's verdict on the data)",
            ),
            (
                "22021",
                None,
                Message,
                "a byte sequence the encoding cannot hold (NUL in text)",
            ),
            ("22P02", None, Message, "invalid text representation"),
            (
                "23502",
                Some("messages_content"),
                Message,
                "a NOT NULL column left empty by the message",
            ),
            (
                "23514",
                Some("messages_type_check"),
                Message,
                "a CHECK the message's values break",
            ),
            (
                "23503",
                Some("some_fk"),
                Message,
                "a foreign key the message points past",
            ),
            (
                "23505",
                Some("messages_user_client_message_id"),
                Message,
                "another id with the same (user, clientMessageId) never becomes storable",
            ),
            (
                "23505",
                Some("messages_pkey"),
                Database,
                "a concurrent writer inserted the id first; the retry reads it back",
            ),
            (
                "23505",
                Some("messages_conversation_seq"),
                Database,
                "a concurrent writer took the seq; the retry recomputes from its rows",
            ),
            (
                "23505",
                None,
                Database,
                "a unique violation we cannot attribute: do not dead-letter on a guess",
            ),
            (
                "25006",
                None,
                Database,
                "read-only transaction: a failover in progress",
            ),
            (
                "42501",
                None,
                Database,
                "insufficient privilege: a revoked grant an operator will restore",
            ),
            (
                "42P01",
                None,
                Database,
                "undefined table: a schema mid-migration",
            ),
            (
                "42703",
                None,
                Database,
                "undefined column: a schema mid-migration",
            ),
            ("57P01", None, Database, "admin shutdown"),
            (
                "57P03",
                None,
                Database,
                "cannot connect now: the server is starting",
            ),
            (
                "57014",
                None,
                Database,
                "query cancelled (statement timeout)",
            ),
            ("08006", None, Database, "connection failure"),
            ("53300", None, Database, "too many connections"),
            ("53100", None, Database, "disk full"),
            ("40001", None, Database, "serialization failure"),
            ("40P01", None, Database, "deadlock detected"),
            ("XX000", None, Database, "internal error: not the message's"),
            (
                "",
                None,
                Database,
                "no SQLSTATE at all: default to the database",
            ),
        ];
        for (code, constraint, expected, reason) in table {
            assert_eq!(
                classify_sqlstate(code, *constraint),
                *expected,
                "{code} on {constraint:?}: {reason}"
            );
        }
    }

    #[test]
    fn client_side_errors_are_the_database_s_fault_except_an_unencodable_value() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let table: Vec<(sqlx::Error, Fault, &str)> = vec![
            (io, Fault::Database, "the connection broke"),
            (
                sqlx::Error::PoolTimedOut,
                Fault::Database,
                "Postgres is down or slow",
            ),
            (sqlx::Error::PoolClosed, Fault::Database, "shutting down"),
            (
                sqlx::Error::Protocol("eof".into()),
                Fault::Database,
                "a broken wire",
            ),
            (
                sqlx::Error::WorkerCrashed,
                Fault::Database,
                "the driver's worker died",
            ),
            (
                sqlx::Error::ColumnNotFound("seq".into()),
                Fault::Database,
                "a schema mid-migration, read back from the database",
            ),
            (
                sqlx::Error::Encode("value out of range".into()),
                Fault::Message,
                "the message holds a value Postgres cannot take",
            ),
        ];
        for (error, expected, reason) in table {
            assert_eq!(classify(&error), expected, "{error}: {reason}");
        }
    }
}
