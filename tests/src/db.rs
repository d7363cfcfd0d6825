//! A private Postgres database per test.

use anyhow::Context;
use coachwire_shared::ids::{ConversationId, UserId};
use sqlx::{Connection, PgConnection, PgPool};

/// Whether new transactions of a database may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `default_transaction_read_only`: what a writer sees after a failover to a replica.
    ReadOnly,
    ReadWrite,
}

/// Admin URL used to create and drop test databases (the role needs CREATEDB).
const DEFAULT_ADMIN_URL: &str = "postgres://coachwire:coachwire@127.0.0.1:5432/coachwire";

pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
    admin_url: String,
}

impl TestDb {
    /// Creates `cw_test_<uuid>` on the test Postgres (`COACHWIRE_TEST_DATABASE_URL`) and
    /// applies the migrations.
    pub async fn new() -> anyhow::Result<Self> {
        let admin_url = std::env::var("COACHWIRE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string());
        Self::new_on(&admin_url).await
    }

    /// Like [`TestDb::new`] on the server of `admin_url` (e.g. a private Postgres).
    pub async fn new_on(admin_url: &str) -> anyhow::Result<Self> {
        let admin_url = admin_url.to_string();
        let name = format!("cw_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .context("connecting to the test Postgres (is it running? see scripts/test.sh)")?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        let url = with_database(&admin_url, &name);
        let pool = coachwire_shared::db::connect_and_migrate(&url, 8).await?;
        Ok(Self {
            name,
            url,
            pool,
            admin_url,
        })
    }

    /// A conversation with these participants (the first is its creator).
    pub async fn conversation(&self, participants: &[UserId]) -> anyhow::Result<ConversationId> {
        let id = ConversationId(uuid::Uuid::now_v7());
        let creator = participants
            .first()
            .copied()
            .unwrap_or(UserId(uuid::Uuid::nil()));
        sqlx::query("INSERT INTO conversations (id, title, created_by) VALUES ($1, 'test', $2)")
            .bind(id)
            .bind(creator)
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO conversation_participants (conversation_id, user_id) SELECT $1, unnest($2::uuid[])")
            .bind(id)
            .bind(participants.iter().map(|u| u.0).collect::<Vec<_>>())
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// Turns the database read-only or writable again, and ends every other session of it,
    /// as a failover does: the services' pools reconnect into the new default.
    pub async fn set_access(&self, access: Access) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.url).await?;
        // The admin session itself starts read-only while the database is.
        sqlx::raw_sql("SET default_transaction_read_only = off")
            .execute(&mut admin)
            .await?;
        let setting = match access {
            Access::ReadOnly => "SET default_transaction_read_only = on",
            Access::ReadWrite => "RESET default_transaction_read_only",
        };
        let alter = format!("ALTER DATABASE {} {setting}", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(alter))
            .execute(&mut admin)
            .await?;
        self.cut_sessions(&mut admin).await
    }

    /// Ends every client session of the database but `admin`'s, as a failover does: the
    /// services' pools reconnect, and new sessions get the database's current defaults.
    ///
    /// Client sessions only: an autovacuum worker on a busy database is a superuser
    /// process that this role may not end (the 30-minute soak hit one, and so did the
    /// read-only fault scenario), and a failover is about the clients anyway.
    pub async fn cut_sessions(&self, admin: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend'",
        )
        .bind(&self.name)
        .execute(admin)
        .await?;
        Ok(())
    }

    /// Rows in `conversations` (for "nothing was created" assertions).
    pub async fn conversation_count(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM conversations")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Rows in `messages` (for "nothing was stored" assertions).
    pub async fn message_count(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM messages")
            .fetch_one(&self.pool)
            .await?)
    }

    /// `(seq, content)` of a conversation in seq order.
    pub async fn seqs(&self, conversation: ConversationId) -> anyhow::Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT seq, content FROM messages WHERE conversation_id = $1 ORDER BY seq",
        )
        .bind(conversation)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Drop for TestDb {
    /// Drops the database on a helper thread (Drop cannot await) so runs leave no litter.
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            // WITH (FORCE) ends the test's own pool connections; closing the pool here
            // instead would wait on the test runtime, which is blocked in this drop.
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}
