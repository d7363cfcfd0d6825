//! The Postgres adapter shared by the services: pool, migrations, and the read queries
//! more than one service needs (paging messages, last seq, participation).

use crate::ids::{ClientMessageId, ConversationId, MessageId, Seq, UserId};
use crate::message::{Message, MessageStatus, MessageType, Metadata};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::time::Duration;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How long a request waits for a pooled connection before failing (and answering
/// `UNAVAILABLE`/503) rather than piling up while Postgres is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// No statement of ours runs longer than a few milliseconds when Postgres is healthy. One
/// that waits this long is stuck (a lock held on `messages`, a database that hangs): it is
/// cancelled (SQLSTATE 57014) and retried like any other database fault, instead of
/// holding a batch forever.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool whose requests fail fast while Postgres is down or stuck.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let timeout = format!("{}ms", STATEMENT_TIMEOUT.as_millis());
    let options = url
        .parse::<PgConnectOptions>()?
        .options([("statement_timeout", timeout.as_str())]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
}

/// Connects and applies migrations (concurrent services serialize on sqlx's advisory lock).
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let pool = connect(url, max_connections).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// The columns of `messages` that make a [`MessageRow`]; a macro so queries stay
/// `&'static str` (sqlx refuses SQL built at run time).
#[macro_export]
macro_rules! message_columns {
    () => {
        "id, conversation_id, user_id, content, type, metadata, client_message_id, seq, status, \
         created_at"
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

/// A page of persisted messages with `seq > after`, ascending, and whether more follow.
pub async fn messages_after(
    pool: &PgPool,
    conversation: ConversationId,
    after: Seq,
    limit: i64,
) -> Result<(Vec<Message>, bool), sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
    );
    let mut rows: Vec<MessageRow> = sqlx::query_as(sql)
        .bind(conversation)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit.max(0) as usize);
    Ok((rows.into_iter().map(Message::from).collect(), has_more))
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
