//! Connections and logging for the operator commands.

use super::error::{Doing, OpsError};
use async_nats::jetstream;
use coachwire_shared::settings::{CommonSettings, LogFormat};
use coachwire_shared::{db, nats};
use sqlx::PgPool;

/// A command runs one thing at a time; a second connection covers a dry run's open
/// transaction next to anything else.
const MAX_CONNECTIONS: u32 = 2;
/// The client name operators see in the server's connection list.
const CLIENT_NAME: &str = "coachwire-persister-ops";

/// Logs to stderr only, `warn` unless `RUST_LOG` says otherwise, in the service's format.
pub fn quiet_logging(format: Option<LogFormat>) {
    coachwire_shared::telemetry::init_with_default(format, "warn");
}

/// NATS with the streams declared (so a command works on a fresh server).
pub async fn nats(common: &CommonSettings) -> Result<jetstream::Context, OpsError> {
    let client =
        nats::connect_within(&common.nats_url, CLIENT_NAME, common.startup_patience()).await?;
    let js = jetstream::new(client);
    nats::ensure_streams(&js, common.stream_replicas.into()).await?;
    Ok(js)
}

/// Postgres, without migrating: an operator command does not change the schema.
pub async fn postgres(common: &CommonSettings) -> Result<PgPool, OpsError> {
    Ok(db::connect(&common.database_url, MAX_CONNECTIONS).await?)
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
) -> Result<async_nats::datetime::DateTime, OpsError> {
    let nanos = time
        .timestamp_nanos_opt()
        .ok_or_else(|| OpsError::Refused(format!("{time} is out of range")))?;
    async_nats::datetime::from_nanos(i128::from(nanos)).doing("time out of range")
}
