//! The load's world in Postgres: conversations of `room_size` fresh users each, and a
//! token per user signed with the server's secret.

use anyhow::Context;
use coachwire_shared::ids::{ConversationId, UserId};
use coachwire_testkit::load::LoadClient;
use serde::Serialize;
use sqlx::PgPool;

#[derive(Serialize)]
struct Claims {
    sub: String,
    exp: i64,
}

/// Creates `connections / room_size` conversations (at least one) and one client per
/// participant, each on its own socket.
pub async fn clients(
    pool: &PgPool,
    secret: &str,
    connections: usize,
    room_size: usize,
) -> anyhow::Result<Vec<LoadClient>> {
    let room_size = room_size.max(1);
    let rooms = (connections / room_size).max(1);
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let exp = chrono::Utc::now().timestamp() + 6 * 3600;
    let mut clients = Vec::with_capacity(rooms * room_size);
    for r in 0..rooms {
        let users: Vec<UserId> = (0..room_size)
            .map(|_| UserId(uuid::Uuid::new_v4()))
            .collect();
        let conversation = create_conversation(pool, &users).await?;
        for (u, user) in users.into_iter().enumerate() {
            let claims = Claims {
                sub: user.to_string(),
                exp,
            };
            let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
                .context("signing a token")?;
            clients.push(LoadClient {
                name: format!("r{r}u{u}"),
                user,
                token,
                conversation,
                url_index: None,
            });
        }
    }
    Ok(clients)
}

async fn create_conversation(pool: &PgPool, users: &[UserId]) -> anyhow::Result<ConversationId> {
    let id = ConversationId(uuid::Uuid::now_v7());
    let creator = users.first().map_or(uuid::Uuid::nil(), |u| u.0);
    sqlx::query("INSERT INTO conversations (id, title, created_by) VALUES ($1, 'load', $2)")
        .bind(id.0)
        .bind(creator)
        .execute(pool)
        .await
        .context("creating a conversation (is the schema migrated?)")?;
    sqlx::query(
        "INSERT INTO conversation_participants (conversation_id, user_id)
         SELECT $1, unnest($2::uuid[])",
    )
    .bind(id.0)
    .bind(users.iter().map(|u| u.0).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(id)
}
