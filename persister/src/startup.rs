//! Wiring: admin HTTP server + partition consumers, and their shutdown.

use crate::batch::Persister;
use crate::consumer::{self, ConsumerError};
use crate::settings::ConsumerTuning;
use coachwire_shared::health::{self, Probe, Requires};
use coachwire_shared::process::RunError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs until `shutdown`, then lets every partition finish its batch and flushes acks.
pub async fn run(
    persister: Persister,
    tuning: ConsumerTuning,
    admin: TcpListener,
    probe: Probe,
    shutdown: CancellationToken,
) -> Result<(), RunError<ConsumerError>> {
    let nats = probe.nats.clone();
    let admin = health::serve_admin(admin, probe, Requires::NatsAndPostgres, shutdown.clone());
    consumer::run(persister, tuning, shutdown)
        .await
        .map_err(RunError::Service)?;
    // Acks are buffered by the client: flush them so the next persister need not redo work.
    nats.flush().await?;
    admin.await??;
    Ok(())
}
