//! Ingest's own Postgres queries: creating and listing conversations. Reads shared with
//! other services live in `coachwire_shared::db`.

use chrono::{DateTime, Utc};
use coachwire_shared::db::MessageRow;
use coachwire_shared::ids::{ConversationId, Seq, UserId};
use coachwire_shared::message::Message;
use coachwire_shared::replies::Conversation;
use sqlx::PgPool;

/// Creates a conversation of `participants`, who include the creator, each once.
pub async fn create_conversation(
    pool: &PgPool,
    creator: UserId,
    title: Option<String>,
    participants: Vec<UserId>,
) -> Result<Conversation, sqlx::Error> {
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

/// Takes `user` out of the conversation for good; `false` if they were not in it.
pub async fn leave_conversation(
    pool: &PgPool,
    conversation: ConversationId,
    user: UserId,
) -> Result<bool, sqlx::Error> {
    let removed = sqlx::query(
        "DELETE FROM conversation_participants WHERE conversation_id = $1 AND user_id = $2",
    )
    .bind(conversation)
    .bind(user)
    .execute(pool)
    .await?;
    Ok(removed.rows_affected() > 0)
}

/// Where a page of [`conversations_of`] starts: just after this conversation, in the
/// listing's order (newest activity first, then id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivityCursor {
    pub last_activity_at: DateTime<Utc>,
    pub conversation: ConversationId,
}

/// A page of the caller's conversations, newest activity first, and where the next page
/// starts (`None` on the last page). A keyset scan of one index, however many
/// conversations the caller has.
pub async fn conversations_of(
    pool: &PgPool,
    user: UserId,
    after: Option<ActivityCursor>,
    limit: i64,
) -> Result<(Vec<Conversation>, Option<ActivityCursor>), sqlx::Error> {
    let rows: Vec<ListedConversation> = sqlx::query_as(
        "SELECT c.id, c.title, c.created_by, c.created_at, mine.last_activity_at, \
                ARRAY(SELECT p.user_id FROM conversation_participants p \
                      WHERE p.conversation_id = c.id ORDER BY p.user_id) AS participant_ids \
         FROM conversation_participants mine \
         JOIN conversations c ON c.id = mine.conversation_id \
         WHERE mine.user_id = $1 \
           AND ($2::timestamptz IS NULL OR (mine.last_activity_at, mine.conversation_id) < ($2, $3)) \
         ORDER BY mine.last_activity_at DESC, mine.conversation_id DESC \
         LIMIT $4",
    )
    .bind(user)
    .bind(after.map(|a| a.last_activity_at))
    .bind(after.map(|a| a.conversation))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > limit;
    let page: Vec<ListedConversation> = rows.into_iter().take(limit.max(0) as usize).collect();
    let next = more
        .then(|| page.last())
        .flatten()
        .map(|last| ActivityCursor {
            last_activity_at: last.last_activity_at,
            conversation: last.conversation.id,
        });
    Ok((page.into_iter().map(|c| c.conversation).collect(), next))
}

#[derive(sqlx::FromRow)]
struct ListedConversation {
    #[sqlx(flatten)]
    conversation: Conversation,
    last_activity_at: DateTime<Utc>,
}

/// Replies in progress in every conversation, oldest first, for the sweep for abandoned
/// ones (a partial index keeps this a short scan however large `messages` grows). No age
/// filter: `created_at` is the accepting node's clock, which may be off by minutes.
pub async fn streaming_everywhere(pool: &PgPool) -> Result<Vec<Message>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        coachwire_shared::message_columns!(),
        " FROM messages WHERE status = 'streaming' ORDER BY created_at LIMIT $1"
    );
    let rows: Vec<MessageRow> = sqlx::query_as(sql)
        .bind(SWEPT_AT_ONCE)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Message::from).collect())
}

/// Replies one sweep looks at: more than a cluster streams at once.
const SWEPT_AT_ONCE: i64 = 1000;

/// The conversation's replies in progress, oldest first.
pub async fn streaming_in(
    pool: &PgPool,
    conversation: ConversationId,
) -> Result<Vec<Message>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        coachwire_shared::message_columns!(),
        " FROM messages WHERE status = 'streaming' AND conversation_id = $1 ORDER BY seq"
    );
    let rows: Vec<MessageRow> = sqlx::query_as(sql)
        .bind(conversation)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Message::from).collect())
}

/// Beyond `cursor`, the highest seq persisted at least `settled` ago, and the highest seq
/// at all (both `None` when nothing lies beyond the cursor). Only the rows past the
/// cursor are read: usually none.
pub async fn seqs_beyond(
    pool: &PgPool,
    conversation: ConversationId,
    cursor: Seq,
    settled: std::time::Duration,
) -> Result<(Option<Seq>, Option<Seq>), sqlx::Error> {
    let (settled, newest): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT max(seq) FILTER (WHERE persisted_at <= now() - make_interval(secs => $3)), \
                max(seq) \
         FROM messages WHERE conversation_id = $1 AND seq > $2",
    )
    .bind(conversation)
    .bind(cursor)
    .bind(settled.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok((settled.map(Seq), newest.map(Seq)))
}
