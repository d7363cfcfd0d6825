//! Ingest's own Postgres queries: creating and listing conversations. Reads shared with
//! other services live in `coachwire_shared::db`.

use chrono::{DateTime, Utc};
use coachwire_shared::ids::{ConversationId, UserId};
use serde::Serialize;
use sqlx::PgPool;

/// A conversation as the HTTP API returns it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: ConversationId,
    pub title: Option<String>,
    pub created_by: UserId,
    pub participant_ids: Vec<UserId>,
    #[serde(with = "coachwire_shared::message::rfc3339_millis")]
    pub created_at: DateTime<Utc>,
}

/// Creates a conversation whose participants are `participants` plus the creator.
pub async fn create_conversation(
    pool: &PgPool,
    creator: UserId,
    title: Option<String>,
    mut participants: Vec<UserId>,
) -> Result<Conversation, sqlx::Error> {
    participants.push(creator);
    participants.sort();
    participants.dedup();
    let id = ConversationId(uuid::Uuid::now_v7());
    let created_at = coachwire_shared::message::now_millis();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO conversations (id, title, created_by, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(&title)
    .bind(creator)
    .bind(created_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO conversation_participants (conversation_id, user_id) \
         SELECT $1, unnest($2::uuid[])",
    )
    .bind(id)
    .bind(&participants)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Conversation {
        id,
        title,
        created_by: creator,
        participant_ids: participants,
        created_at,
    })
}

/// The caller's conversations, newest first.
pub async fn conversations_of(
    pool: &PgPool,
    user: UserId,
) -> Result<Vec<Conversation>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.title, c.created_by, c.created_at, \
                array_agg(p.user_id ORDER BY p.user_id) AS participant_ids \
         FROM conversations c \
         JOIN conversation_participants mine ON mine.conversation_id = c.id AND mine.user_id = $1 \
         JOIN conversation_participants p ON p.conversation_id = c.id \
         GROUP BY c.id ORDER BY c.created_at DESC, c.id",
    )
    .bind(user)
    .fetch_all(pool)
    .await
}
