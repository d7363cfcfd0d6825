//! One batch, one statement: the only place `seq` is assigned.
//!
//! Idempotent by message id: rows already present (a redelivered batch, a crash between
//! commit and ack, a client retry) are read back instead of inserted, so they consume no
//! new `seq` and the sequence stays contiguous. The new ones get `last + 1, last + 2, …` per
//! conversation in stream order and go in with one multi-row `INSERT … SELECT FROM UNNEST`,
//! which also moves the conversations' activity time, in the same statement.
//!
//! A later version of a message (the end of a streamed reply, §14) is an event too: it
//! gets the conversation's next `seq` like a new message, as a row of its own whose id is
//! derived from the message's (so it is stored once, however often it is delivered), and
//! the message's own row is brought to the new version in the same statement.
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

/// Stores `batch` (in stream order) on a connection of `pool`; returns one [`Stored`] per
/// input. See [`store_on`].
pub async fn store_batch(pool: &PgPool, batch: &[Incoming]) -> Result<Vec<Stored>, StoreError> {
    let mut conn = pool.acquire().await?;
    store_on(&mut conn, batch).await
}

/// Stores `batch` (in stream order) on `conn`, outside any transaction; returns one
/// [`Stored`] per input.
///
/// Most batches are new messages only, and take one statement, one round trip
/// ([`store_new`]). The rest (a redelivery, a later version) read what is stored first
/// ([`store_in`]). No `BEGIN`/`COMMIT`: each write is one statement, atomic on its own.
/// Why: each round trip to Postgres cost about 0.4 ms on the loaded 2-core host, and the
/// six of a transaction (begin, two reads, insert, activity, commit) were most of a
/// message's wait at 1000 msg/s. Nothing is lost without the transaction: in Postgres's
/// default isolation each statement reads a fresh snapshot anyway, so the reads never
/// protected the insert; the unique constraints do (see the module doc).
pub async fn store_on(
    conn: &mut PgConnection,
    batch: &[Incoming],
) -> Result<Vec<Stored>, StoreError> {
    match store_new(&mut *conn, batch).await {
        Ok(New::Stored(stored)) => return Ok(stored),
        Ok(New::NotOnly) => {}
        // A message stored before (or by a concurrent writer): read it back below.
        Err(e) if is_unique_violation(&e) => {}
        Err(e) => return Err(e.into()),
    }
    store_in(conn, batch).await
}

/// Stores `batch` reading what is stored first, on a connection the caller owns, so
/// `replay --dry-run` can run it inside a transaction and roll it back.
pub async fn store_in(
    conn: &mut PgConnection,
    batch: &[Incoming],
) -> Result<Vec<Stored>, StoreError> {
    let rows = existing(&mut *conn, &read_ids(batch)).await?;
    Ok(write_plan(conn, Plan::new(batch, rows)).await?)
}

/// Whether a batch was only new messages.
enum New {
    Stored(Vec<Stored>),
    /// It has a later version, whose event needs its message's stored row.
    NotOnly,
}

/// Stores a batch on the assumption that none of it is stored yet, without reading
/// first. A row stored before fails the statement with a unique violation, and then
/// nothing was written.
async fn store_new(conn: &mut PgConnection, batch: &[Incoming]) -> Result<New, sqlx::Error> {
    if batch.iter().any(|m| m.envelope.version.is_some()) {
        return Ok(New::NotOnly);
    }
    let stored = write_plan(conn, Plan::new(batch, HashMap::new())).await?;
    Ok(New::Stored(stored))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// What a batch reads before it writes: its events' ids (to find those stored already)
/// and the ids of the messages its later versions bring up to date (to build their
/// current version).
fn read_ids(batch: &[Incoming]) -> Vec<Uuid> {
    let events = batch.iter().map(|m| m.envelope.event_id().0);
    let versioned = batch
        .iter()
        .filter(|m| m.envelope.version.is_some())
        .map(|m| m.envelope.message.id.0);
    events.chain(versioned).collect()
}

/// Writes `plan` and gives its stored events the `seq`s the statement assigned.
async fn write_plan(
    conn: &mut PgConnection,
    mut plan: Plan<'_>,
) -> Result<Vec<Stored>, sqlx::Error> {
    let assigned = write(conn, &plan).await?;
    plan.renumber(&assigned);
    Ok(plan.stored)
}

/// What one batch writes, and what it stored, worked out from what it read.
///
/// The new rows' `seq`s here count 1, 2, 3 … per conversation within the batch: the
/// statement adds the conversation's last stored `seq`, which it reads itself
/// ([`INSERT`]), and [`Plan::renumber`] then puts the `seq`s it returned in the events.
struct Plan<'a> {
    /// New rows, in stream order, each with its count. A message whose later version is
    /// in the same batch goes in already at that version.
    fresh: Vec<(&'a Incoming, Message)>,
    /// Later versions of messages stored before this batch: their rows are updated.
    versions: Vec<&'a Message>,
    stored: Vec<Stored>,
}

impl<'a> Plan<'a> {
    /// `rows`: the stored rows among [`read_ids`].
    fn new(batch: &'a [Incoming], mut rows: HashMap<MessageId, Message>) -> Plan<'a> {
        let mut counts: HashMap<ConversationId, Seq> = HashMap::new();
        let mut fresh: Vec<(&Incoming, Message)> = Vec::new();
        let mut seqs: Vec<(Option<Seq>, Row)> = Vec::with_capacity(batch.len());
        // The events as persisted: a creation as its row when first stored.
        let mut events: HashMap<MessageId, Message> = HashMap::new();
        for incoming in batch {
            let id = incoming.envelope.event_id();
            if let Some(earlier) = events.get(&id).or_else(|| rows.get(&id)).cloned() {
                seqs.push((earlier.seq, Row::Existing));
                events.entry(id).or_insert(earlier);
                continue;
            }
            let accepted = &incoming.envelope;
            let seq = counts
                .entry(accepted.message.conversation_id)
                .or_insert(Seq::ZERO);
            *seq = seq.next();
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
            events.insert(id, row.clone());
            fresh.push((incoming, row));
            seqs.push((Some(*seq), Row::New));
        }
        let versions = bring_up_to_date(&mut fresh, &mut rows);
        let stored = batch
            .iter()
            .zip(seqs)
            .map(|(incoming, (seq, row))| Stored {
                envelope: persisted(incoming, seq, &events, &rows),
                row,
            })
            .collect();
        Plan {
            fresh,
            versions,
            stored,
        }
    }

    /// Puts the `seq`s the statement `assigned` to new rows (by id) in the stored events:
    /// a creation's own, a later version's, and the `seq` of the message a later version
    /// belongs to when that message is new too. Events found stored keep theirs.
    fn renumber(&mut self, assigned: &HashMap<MessageId, Seq>) {
        for stored in &mut self.stored {
            let envelope = &mut stored.envelope;
            let event = envelope.event_id();
            if let Some(version) = envelope.version.as_mut() {
                version.seq = assigned.get(&event).copied().or(version.seq);
            }
            let message = &mut envelope.message;
            message.seq = assigned.get(&message.id).copied().or(message.seq);
        }
    }
}

/// Applies the batch's new later versions: to the new row of a message created in the
/// same batch, else to the stored row read in `rows` (returned, to be updated). After it,
/// `rows` holds each versioned message as it now reads (§4 `sync`: "each in its current
/// version").
fn bring_up_to_date<'a>(
    fresh: &mut [(&'a Incoming, Message)],
    rows: &mut HashMap<MessageId, Message>,
) -> Vec<&'a Message> {
    let mut updates = Vec::new();
    for i in 0..fresh.len() {
        let incoming = fresh[i].0;
        if incoming.envelope.version.is_none() {
            continue;
        }
        let version = &incoming.envelope.message;
        let up_to_date = |row: &mut Message| {
            row.content.clone_from(&version.content);
            row.status = version.status;
        };
        let created_here = fresh[..i].iter_mut().find(|(earlier, _)| {
            earlier.envelope.version.is_none() && earlier.envelope.message.id == version.id
        });
        if let Some((_, row)) = created_here {
            up_to_date(row);
            rows.insert(version.id, row.clone());
        } else if let Some(row) = rows.get_mut(&version.id) {
            up_to_date(row);
            updates.push(version);
        }
    }
    updates
}

/// The persisted event of `incoming`, stored at `seq`: a creation as its row when this
/// batch stored or found it (`events`); a later version as its message's current version
/// (`rows`, brought up to date) with the version's `seq`.
fn persisted(
    incoming: &Incoming,
    seq: Option<Seq>,
    events: &HashMap<MessageId, Message>,
    rows: &HashMap<MessageId, Message>,
) -> MessageEnvelope {
    let accepted = &incoming.envelope;
    let origin = accepted.origin.clone();
    let id = accepted.message.id;
    let row = |map: &HashMap<MessageId, Message>| map.get(&id).cloned();
    match accepted.version {
        None => MessageEnvelope {
            message: row(events).unwrap_or_else(|| accepted.message.clone()),
            origin,
            version: None,
        },
        Some(_) => MessageEnvelope {
            message: row(rows).unwrap_or_else(|| accepted.message.clone()),
            origin,
            version: Some(Version { seq }),
        },
    }
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
    let rows: Vec<MessageRow> = sqlx::query_as(sql).bind(ids).fetch_all(conn).await?;
    Ok(rows.into_iter().map(|r| (r.id, Message::from(r))).collect())
}

/// Moves each conversation's activity time (what `GET /api/conversations` orders by) to
/// its newest stored message, in the statement that stores it, so the listing never runs
/// ahead of or behind what was stored. Sorted by conversation so that two writers lock
/// rows in the same order.
const TOUCH_ACTIVITY: &str = "activity AS (\
     UPDATE conversation_participants p SET last_activity_at = t.at \
     FROM UNNEST($13::uuid[], $14::timestamptz[]) AS t(id, at) \
     WHERE p.conversation_id = t.id AND p.last_activity_at < t.at)";

/// Brings messages stored earlier to their later version in place, so a row always reads
/// as the current version. Only in the statement of a batch that has such versions: an
/// empty update would still be planned, and could scan.
const APPLY_VERSIONS: &str = "versions AS (\
     UPDATE messages m SET content = v.content, status = v.status \
     FROM UNNEST($15::uuid[], $16::text[], $17::text[]) AS v(id, content, status) \
     WHERE m.id = v.id)";

/// The new rows, each `seq` counted from its conversation's last one as the statement
/// reads it: `$8` holds 1, 2, 3 … per conversation. A statement does not see its own
/// rows, so the last `seq` is the same for all of a conversation's rows; a concurrent
/// writer's row makes it fail on `UNIQUE (conversation_id, seq)` (see the module doc).
/// The last `seq` is a backward index scan per row, constant time however long the
/// conversation is.
const INSERT: &str = "INSERT INTO messages (id, conversation_id, user_id, content, type, \
                                metadata, client_message_id, seq, created_at, stream_seq, \
                                status, version_of) \
     SELECT n.id, n.conversation_id, n.user_id, n.content, n.type, n.metadata, \
            n.client_message_id, \
            n.seq + COALESCE((SELECT m.seq FROM messages m \
                              WHERE m.conversation_id = n.conversation_id \
                              ORDER BY m.seq DESC LIMIT 1), 0), \
            n.created_at, n.stream_seq, n.status, n.version_of \
     FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
                 $6::jsonb[], $7::uuid[], $8::int8[], $9::timestamptz[], $10::int8[], \
                 $11::text[], $12::uuid[]) \
       AS n(id, conversation_id, user_id, content, type, metadata, client_message_id, seq, \
            created_at, stream_seq, status, version_of) \
     RETURNING id, seq";

/// Writes a batch in one statement: the new rows, the conversations' activity and the
/// later versions of earlier messages together, or none of them. Returns the `seq` it
/// gave each new row.
async fn write(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
) -> Result<HashMap<MessageId, Seq>, sqlx::Error> {
    let fresh = &plan.fresh;
    if fresh.is_empty() {
        return Ok(HashMap::new());
    }
    let col = |f: fn(&(&Incoming, Message)) -> Uuid| fresh.iter().map(f).collect::<Vec<_>>();
    let metadata: Vec<serde_json::Value> = fresh
        .iter()
        .map(|(_, m)| serde_json::to_value(&m.metadata).unwrap_or_default())
        .collect();
    let client_ids: Vec<Option<Uuid>> = fresh
        .iter()
        .map(|(_, m)| m.client_message_id.map(|c| c.0))
        .collect();
    let versions_of: Vec<Option<Uuid>> = fresh
        .iter()
        .map(|(i, _)| i.envelope.version.map(|_| i.envelope.message.id.0))
        .collect();
    let stream_seqs: Vec<i64> = fresh
        .iter()
        .map(|(i, _)| i64::try_from(i.stream_seq).unwrap_or(i64::MAX))
        .collect();
    let (conversations, times) = newest_activity(fresh);
    let sql = match plan.versions.is_empty() {
        true => format!("WITH {TOUCH_ACTIVITY} {INSERT}"),
        false => format!("WITH {TOUCH_ACTIVITY}, {APPLY_VERSIONS} {INSERT}"),
    };
    let text = |f: fn(&Message) -> &str| fresh.iter().map(|(_, m)| f(m)).collect::<Vec<_>>();
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(col(|(_, m)| m.id.0))
        .bind(col(|(_, m)| m.conversation_id.0))
        .bind(col(|(_, m)| m.user_id.0))
        .bind(text(|m| m.content.as_str()))
        .bind(text(|m| m.kind.as_str()))
        .bind(metadata)
        .bind(client_ids)
        .bind(
            fresh
                .iter()
                .map(|(_, m)| m.seq.map_or(0, |s| s.0))
                .collect::<Vec<_>>(),
        )
        .bind(fresh.iter().map(|(_, m)| m.created_at).collect::<Vec<_>>())
        .bind(stream_seqs)
        .bind(text(|m| m.status.as_str()))
        .bind(versions_of)
        .bind(conversations)
        .bind(times);
    let query = match plan.versions.is_empty() {
        true => query,
        false => query
            .bind(plan.versions.iter().map(|m| m.id.0).collect::<Vec<_>>())
            .bind(
                plan.versions
                    .iter()
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                plan.versions
                    .iter()
                    .map(|m| m.status.as_str())
                    .collect::<Vec<_>>(),
            ),
    };
    let numbered: Vec<(MessageId, i64)> = query
        .try_map(|row| sqlx::FromRow::from_row(&row))
        .fetch_all(conn)
        .await?;
    Ok(numbered
        .into_iter()
        .map(|(id, seq)| (id, Seq(seq)))
        .collect())
}

/// Each conversation's newest `created_at` among the new rows, sorted by conversation.
fn newest_activity(
    fresh: &[(&Incoming, Message)],
) -> (Vec<Uuid>, Vec<chrono::DateTime<chrono::Utc>>) {
    let mut newest: BTreeMap<Uuid, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    for (_, message) in fresh {
        let at = newest
            .entry(message.conversation_id.0)
            .or_insert(message.created_at);
        *at = (*at).max(message.created_at);
    }
    newest.into_iter().unzip()
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
