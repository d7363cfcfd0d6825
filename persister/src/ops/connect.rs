//! Connections and logging for the operator commands.

use anyhow::Context;
use async_nats::jetstream;
use coachwire_shared::settings::{CommonSettings, LogFormat};
use coachwire_shared::{db, nats};
use sqlx::PgPool;
use std::io::IsTerminal;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// A command runs one thing at a time; a second connection covers a dry run's open
/// transaction next to anything else.
const MAX_CONNECTIONS: u32 = 2;
/// The client name operators see in the server's connection list.
const CLIENT_NAME: &str = "coachwire-persister-ops";

/// Logs to stderr only, `warn` unless `RUST_LOG` says otherwise: an operator command's
/// stdout is its answer, and info-level chatter would bury it. The format defaults as the
/// service's does (§2): pretty on a terminal, else JSON.
pub fn quiet_logging(format: Option<LogFormat>) {
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
}

/// NATS with the streams declared (so a command works on a fresh server).
pub async fn nats(common: &CommonSettings) -> anyhow::Result<jetstream::Context> {
    let client = nats::connect(&common.nats_url, CLIENT_NAME).await?;
    let js = jetstream::new(client);
    nats::ensure_streams(&js, common.stream_replicas.into()).await?;
    Ok(js)
}

/// Postgres, without migrating: an operator command does not change the schema.
pub async fn postgres(common: &CommonSettings) -> anyhow::Result<PgPool> {
    db::connect(&common.database_url, MAX_CONNECTIONS)
        .await
        .context("connecting to Postgres")
}

/// A JetStream timestamp (async-nats uses the `time` crate) as the chrono time the rest of
/// coachwire uses; out of chrono's range (years 1677–2262) it clamps to the epoch.
pub fn to_chrono(time: async_nats::datetime::DateTime) -> chrono::DateTime<chrono::Utc> {
    let nanos = i64::try_from(time.unix_timestamp_nanos()).unwrap_or_default();
    chrono::DateTime::from_timestamp_nanos(nanos)
}

/// The reverse of [`to_chrono`], for a start time given to JetStream.
pub fn from_chrono(
    time: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<async_nats::datetime::DateTime> {
    let nanos = time.timestamp_nanos_opt().context("time out of range")?;
    async_nats::datetime::from_nanos(i128::from(nanos))
        .map_err(|e| anyhow::anyhow!("time out of range: {e}"))
}
