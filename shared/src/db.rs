//! The Postgres adapter shared by the services: pool, migrations, and the read queries
//! more than one service needs (paging messages, last seq, participation).

use crate::envelope::{MessageEnvelope, Origin, Version};
use crate::ids::{ClientMessageId, ConversationId, MessageId, Seq, UserId};
use crate::message::{Message, MessageStatus, MessageType, Metadata};
use crate::replies::MessageUpdated;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use std::collections::HashMap;
use std::time::Duration;

pub use crate::db_connect::{
    ConnectError, connect, connect_and_migrate, connect_and_migrate_within,
};

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// No statement of ours runs longer than a few milliseconds when Postgres is healthy. One
/// that waits this long is stuck (a lock held on `messages`, a database that hangs): it is
/// cancelled (SQLSTATE 57014) and retried like any other database fault, instead of
/// holding a batch forever.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The columns of `messages` that make a [`MessageRow`]; a macro so queries stay
/// `&'static str` (sqlx refuses SQL built at run time).
#[macro_export]
macro_rules! message_columns {
    () => {
        "id, conversation_id, user_id, content, type, metadata, client_message_id, seq, status, \
         created_at, version_of"
    };
}

/// A `messages` row as read back.
#[derive(sqlx::FromRow)]
pub struct MessageRow {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub content: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub metadata: sqlx::types::Json<Metadata>,
    pub client_message_id: Option<ClientMessageId>,
    pub seq: Seq,
    pub status: String,
    pub created_at: DateTime<Utc>,
    /// Set on the row of a later version: the message it is a version of.
    pub version_of: Option<MessageId>,
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        Message {
            id: row.id,
            conversation_id: row.conversation_id,
            user_id: row.user_id,
            content: row.content,
            kind: MessageType::parse(&row.kind).unwrap_or_default(),
            metadata: row.metadata.0,
            client_message_id: row.client_message_id,
            seq: Some(row.seq),
            status: MessageStatus::parse(&row.status).unwrap_or_default(),
            created_at: row.created_at,
        }
    }
}

/// One event of a conversation (§7.3), as stored.
#[derive(Clone, Debug)]
pub enum StoredEvent {
    /// A new message, in its current version.
    Created(Message),
    /// A later version of a message.
    Updated(MessageUpdated),
}

impl StoredEvent {
    pub fn seq(&self) -> Option<Seq> {
        match self {
            StoredEvent::Created(message) => message.seq,
            StoredEvent::Updated(update) => Some(update.seq),
        }
    }

    /// The event as the fanout routes it, re-emitted from Postgres (gap fill, replay).
    pub fn into_envelope(self, origin: Option<Origin>) -> MessageEnvelope {
        match self {
            StoredEvent::Created(message) => MessageEnvelope {
                message,
                origin,
                version: None,
            },
            StoredEvent::Updated(update) => MessageEnvelope {
                message: update.message,
                origin,
                version: Some(Version {
                    seq: Some(update.seq),
                }),
            },
        }
    }
}

/// A page of the conversation's events with `seq > after`, ascending, and whether more
/// follow. A later version comes with its message's current version: from the page when
/// the message is in it, else read in a second query (only then).
pub async fn events_after(
    pool: &PgPool,
    conversation: ConversationId,
    after: Seq,
    limit: i64,
) -> Result<(Vec<StoredEvent>, bool), sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    );
    let mut page: Vec<MessageRow> = sqlx::query_as(sql)
        .bind(conversation)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    let has_more = page.len() as i64 > limit;
    page.truncate(limit.max(0) as usize);
    let in_page: Vec<MessageId> = page.iter().map(|row| row.id).collect();
    let elsewhere: Vec<uuid::Uuid> = page
        .iter()
        .filter_map(|row| row.version_of)
        .filter(|of| !in_page.contains(of))
        .map(|of| of.0)
        .collect();
    let mut current = messages_by_ids(pool, &elsewhere).await?;
    let events = page
        .into_iter()
        .map(|row| event_of(row, &mut current))
        .collect();
    Ok((events, has_more))
}

async fn messages_by_ids(
    pool: &PgPool,
    ids: &[uuid::Uuid],
) -> Result<HashMap<MessageId, Message>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE id = ANY($1)"
    );
    let rows: Vec<MessageRow> = sqlx::query_as(sql).bind(ids).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|r| (r.id, Message::from(r))).collect())
}

fn event_of(row: MessageRow, current: &mut HashMap<MessageId, Message>) -> StoredEvent {
    let Some(of) = row.version_of else {
        let message = Message::from(row);
        current.insert(message.id, message.clone());
        return StoredEvent::Created(message);
    };
    let seq = row.seq;
    let conversation_id = row.conversation_id;
    let message = current.get(&of).cloned().unwrap_or_else(|| Message {
        id: of,
        ..Message::from(row)
    });
    StoredEvent::Updated(MessageUpdated {
        conversation_id,
        seq,
        message,
    })
}

/// One stored message by id, for answering retries of already-persisted messages.
pub async fn message_by_id(pool: &PgPool, id: MessageId) -> Result<Option<Message>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE id = $1"
    );
    let row: Option<MessageRow> = sqlx::query_as(sql).bind(id).fetch_optional(pool).await?;
    Ok(row.map(Message::from))
}

/// The highest persisted seq of a conversation (0 when empty).
pub async fn last_seq(pool: &PgPool, conversation: ConversationId) -> Result<Seq, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar(
        "SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(conversation)
    .fetch_optional(pool)
    .await?;
    Ok(Seq(seq.unwrap_or(0)))
}

pub async fn is_participant(
    pool: &PgPool,
    conversation: ConversationId,
    user: UserId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM conversation_participants \
         WHERE conversation_id = $1 AND user_id = $2)",
    )
    .bind(conversation)
    .bind(user)
    .fetch_one(pool)
    .await
}
