//! The NATS adapter every service shares: connect, refuse servers that are too old, and
//! declare the streams idempotently.

use crate::subjects::{
    DEAD_LETTER_ALL, DEAD_LETTER_STREAM, MESSAGES_INPUT, MESSAGES_PARTITIONED, MESSAGES_STREAM,
    PERSISTED_ALL, PERSISTED_STREAM,
};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// Oldest server we run on: 2.12 brings priority groups that the persister's pinned
/// partitions need, partition transforms, and the replicated-stream fixes of 2.12.x.
pub const MIN_SERVER_VERSION: (u64, u64, u64) = (2, 12, 0);
/// How long JetStream remembers a `Nats-Msg-Id`. Retries after it are still caught by the
/// deterministic id and Postgres' primary key; the window only saves a round trip. Memory
/// on the server grows with rate × window, hence not hours.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long accepted messages stay in the stream for replay after being persisted.
pub const MESSAGES_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Persisted events only need to outlive a fanout outage.
pub const PERSISTED_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("nats-server {found} is too old: coachwire needs {}.{}.{} or newer", MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1, MIN_SERVER_VERSION.2)]
    TooOld { found: String },
    #[error("NATS server has no JetStream enabled or answered: {0}")]
    Stream(String),
}

/// Connects with a client name (visible in server monitoring) and checks the version.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, NatsError> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(url)
        .await
        .map_err(|source| NatsError::Connect {
            url: url.to_string(),
            source,
        })?;
    tokio::time::timeout(Duration::from_secs(10), wait_connected(&client))
        .await
        .map_err(|_| NatsError::Stream(format!("no connection to {url} within 10 s")))?;
    check_version(&client.server_info().version)?;
    Ok(client)
}

async fn wait_connected(client: &async_nats::Client) {
    while client.connection_state() != async_nats::connection::State::Connected {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Compares versions numerically (a string compare thinks "2.9.10" > "2.12").
pub fn check_version(found: &str) -> Result<(), NatsError> {
    let core = found.split(['-', '+']).next().unwrap_or_default();
    let mut parts = core.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let version = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    if version < MIN_SERVER_VERSION {
        return Err(NatsError::TooOld {
            found: found.to_string(),
        });
    }
    Ok(())
}

/// Creates or updates the three streams. Every service calls this at start-up so any
/// one of them can come up first.
pub async fn ensure_streams(js: &jetstream::Context, replicas: usize) -> Result<(), NatsError> {
    let messages = stream::Config {
        name: MESSAGES_STREAM.into(),
        subjects: vec![MESSAGES_INPUT.into()],
        subject_transform: Some(stream::SubjectTransform {
            source: MESSAGES_INPUT.into(),
            destination: MESSAGES_PARTITIONED.into(),
        }),
        duplicate_window: DUPLICATE_WINDOW,
        max_age: MESSAGES_MAX_AGE,
        num_replicas: replicas,
        allow_direct: true,
        ..Default::default()
    };
    let info = upsert(js, messages).await?;
    if info.config.subject_transform.is_none() {
        return Err(NatsError::Stream(
            "the server ignored the stream's subject transform".into(),
        ));
    }
    upsert(
        js,
        stream::Config {
            name: PERSISTED_STREAM.into(),
            subjects: vec![PERSISTED_ALL.into()],
            duplicate_window: DUPLICATE_WINDOW,
            max_age: PERSISTED_MAX_AGE,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    upsert(
        js,
        stream::Config {
            name: DEAD_LETTER_STREAM.into(),
            subjects: vec![DEAD_LETTER_ALL.into()],
            num_replicas: replicas,
            allow_direct: true,
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

async fn upsert(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Info, NatsError> {
    let name = config.name.clone();
    js.create_or_update_stream(config)
        .await
        .map_err(|e| NatsError::Stream(format!("declaring stream {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(check_version("2.9.10").is_err());
        assert!(check_version("2.11.4").is_err());
        assert!(check_version("2.12.0").is_ok());
        assert!(check_version("2.15.1").is_ok());
        assert!(check_version("2.14.0-beta.1").is_ok());
        assert!(check_version("10.0.0").is_ok());
    }
}
