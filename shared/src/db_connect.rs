//! Connecting to Postgres, and saying plainly why it failed.
//!
//! sqlx's errors repeat themselves through their source chain (`error returned from
//! database: role "x" does not exist …: role "x" does not exist …`), a pool that cannot
//! connect reports only `pool timed out`, and none says where it tried. An operator needs
//! the cause once and the host, port, database and user it was tried with (never the
//! password): [`ConnectError`].

use crate::db::{MIGRATOR, STATEMENT_TIMEOUT};
use crate::lasting::Lasting;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use std::error::Error;
use std::time::Duration;

/// How long a request waits for a pooled connection before failing (and answering
/// `UNAVAILABLE`/503) rather than piling up while Postgres is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a start-up waits for a Postgres that is down, restarting, paused or
/// read-only (a failover, a restart beside this one) before it gives up with one line.
/// A wrong URL, password or database name is not waited for.
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(30);
/// The single attempt that says why the pool could not connect must not hang on a paused
/// server.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(3);

/// Postgres could not be reached, or refused us; `target` is where it was tried.
#[derive(Debug, thiserror::Error)]
#[error("Postgres at {target}: {cause}")]
pub struct ConnectError {
    pub target: String,
    pub cause: String,
    pub lasting: Lasting,
}

/// Whether waiting can fix a failed connection.
impl Lasting {
    fn of(error: &sqlx::Error) -> Lasting {
        let transient = match error {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
            // Connection exceptions, insufficient resources, operator intervention
            // (shutting down, starting up), and a read-only transaction.
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                matches!(code.get(..2), Some("08" | "53" | "57")) || code == "25006"
            }),
            _ => false,
        };
        match transient {
            true => Lasting::Transient,
            false => Lasting::Permanent,
        }
    }

    fn of_migration(error: &sqlx::migrate::MigrateError) -> Lasting {
        use sqlx::migrate::MigrateError;
        match error {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => Lasting::of(e),
            _ => Lasting::Permanent,
        }
    }
}

/// A pool whose requests fail fast while Postgres is down or stuck.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, ConnectError> {
    let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| ConnectError {
        target: "DATABASE_URL".into(),
        cause: format!("not a Postgres URL ({})", once(&e)),
        lasting: Lasting::Permanent,
    })?;
    let timeout = format!("{}ms", STATEMENT_TIMEOUT.as_millis());
    let options = options.options([("statement_timeout", timeout.as_str())]);
    let connected = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await;
    let failed = |cause: String, lasting| ConnectError {
        target: target(&options),
        cause,
        lasting,
    };
    match connected {
        Ok(pool) => Ok(pool),
        // The pool hides why each attempt failed; one direct attempt says it.
        Err(sqlx::Error::PoolTimedOut) => {
            let direct = PgConnection::connect_with(&options);
            Err(
                match tokio::time::timeout(DIAGNOSIS_TIMEOUT, direct).await {
                    Ok(Ok(_)) | Err(_) => failed(
                        "no connection within the pool's timeout".into(),
                        Lasting::Transient,
                    ),
                    Ok(Err(e)) => failed(once(&e), Lasting::of(&e)),
                },
            )
        }
        Err(e) => Err(failed(once(&e), Lasting::of(&e))),
    }
}

/// Connects and applies migrations (concurrent services serialize on sqlx's advisory
/// lock), waiting up to [`STARTUP_PATIENCE`] while Postgres cannot serve yet.
pub async fn connect_and_migrate(url: &str, max_connections: u32) -> Result<PgPool, ConnectError> {
    connect_and_migrate_within(url, max_connections, STARTUP_PATIENCE).await
}

/// [`connect_and_migrate`], waiting up to `patience` (`COACHWIRE_STARTUP_PATIENCE_MS`).
pub async fn connect_and_migrate_within(
    url: &str,
    max_connections: u32,
    patience: Duration,
) -> Result<PgPool, ConnectError> {
    let began = tokio::time::Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match try_connect_and_migrate(url, max_connections).await {
            Ok(pool) => return Ok(pool),
            Err(e) => e,
        };
        if error.lasting == Lasting::Permanent || began.elapsed() >= patience {
            return Err(error);
        }
        tracing::warn!(error = %error, attempts, "Postgres cannot serve yet; waiting for it");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn try_connect_and_migrate(url: &str, max_connections: u32) -> Result<PgPool, ConnectError> {
    let pool = connect(url, max_connections).await?;
    MIGRATOR.run(&pool).await.map_err(|e| ConnectError {
        target: url
            .parse()
            .map_or_else(|_| "DATABASE_URL".into(), |o| target(&o)),
        cause: format!("migrations: {}", once(&e)),
        lasting: Lasting::of_migration(&e),
    })?;
    Ok(pool)
}

fn target(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{} as {}",
        options.get_host(),
        options.get_port(),
        options
            .get_database()
            .unwrap_or("(the user's own database)"),
        options.get_username()
    )
}

/// The error and its sources, each message once: a source whose text the message before
/// already contains adds nothing.
fn once(error: &(dyn Error + 'static)) -> String {
    let mut text = match error.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::Database(db)) => db.message().to_string(),
        _ => error.to_string(),
    };
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_names_where_it_tried_and_why_never_the_password() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let url = format!("postgres://operator:s3cret@127.0.0.1:{port}/chat");
        let error = connect(&url, 1).await.expect_err("nothing listens");
        let line = error.to_string();
        assert!(
            line.contains(&format!("127.0.0.1:{port}/chat as operator")),
            "{line}"
        );
        assert!(line.to_lowercase().contains("refused"), "{line}");
        assert!(!line.contains("s3cret"), "{line}");
        assert!(!line.contains("pool timed out"), "{line}");
    }

    #[tokio::test]
    async fn a_url_that_is_not_one_says_so_once() {
        let line = connect("localhost/chat", 1)
            .await
            .expect_err("bad")
            .to_string();
        assert!(line.contains("not a Postgres URL"), "{line}");
        let words: Vec<&str> = line.split(": ").collect();
        let mut unique = words.clone();
        unique.dedup();
        assert_eq!(words, unique, "nothing repeated: {line}");
    }
}
