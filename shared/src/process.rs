//! What every binary's `main` does the same way: connect to Postgres and NATS (declaring
//! migrations and streams), supervise the service task through shutdown, and turn the
//! outcome into a one-line exit.

use crate::settings::CommonSettings;
use crate::shutdown::DRAIN_DEADLINE;
use crate::{db, nats};
use std::fmt::Display;
use std::process::ExitCode;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The clients a service starts with, migrations applied and streams declared.
pub struct Clients {
    pub pool: sqlx::PgPool,
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Postgres(#[from] db::ConnectError),
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
}

impl Clients {
    /// Connects as `service`, with at most `max_connections` to Postgres.
    pub async fn connect(
        common: &CommonSettings,
        service: &str,
        max_connections: u32,
    ) -> Result<Self, StartupError> {
        let patience = common.startup_patience();
        let pool =
            db::connect_and_migrate_within(&common.database_url, max_connections, patience).await?;
        let client = nats::connect_within(&common.nats_url, service, patience).await?;
        let js = async_nats::jetstream::new(client.clone());
        nats::ensure_streams(&js, common.stream_replicas.into()).await?;
        Ok(Self {
            pool,
            nats: client,
            js,
        })
    }
}

/// How a service's run (its work, then flushing its last acks and closing its admin
/// listener) failed, with the cause kept.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E> {
    /// The service's own work failed.
    #[error(transparent)]
    Service(E),
    #[error("flushing the last acks to NATS: {0}")]
    Flush(#[from] async_nats::client::FlushError),
    #[error("the admin listener: {0}")]
    Admin(#[from] std::io::Error),
    #[error("the admin listener's task: {0}")]
    AdminTask(#[from] tokio::task::JoinError),
}

/// How a supervised service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceFailure<E> {
    /// It returned an error (the whole cause chain is printed).
    #[error("{0:#}")]
    Failed(E),
    /// Its task panicked or was cancelled.
    #[error("the service task failed: {0}")]
    Panicked(tokio::task::JoinError),
}

/// Runs until the service ends by itself (an error, usually) or the shutdown signal; after
/// the signal the service gets [`DRAIN_DEADLINE`] to finish its in-flight work.
pub async fn supervise<E: Display>(
    mut service: JoinHandle<Result<(), E>>,
    shutdown: CancellationToken,
) -> Result<(), ServiceFailure<E>> {
    let ended = tokio::select! {
        result = &mut service => Some(result),
        _ = shutdown.cancelled() => None,
    };
    let result = match ended {
        Some(result) => result,
        None => match tokio::time::timeout(DRAIN_DEADLINE, service).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("drain deadline passed; unfinished work will be redelivered");
                return Ok(());
            }
        },
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServiceFailure::Failed(e)),
        Err(e) => Err(ServiceFailure::Panicked(e)),
    }
}

/// One line on stderr (the whole cause chain) and a failure code, or success.
pub fn exit_code<E: Display>(binary: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
