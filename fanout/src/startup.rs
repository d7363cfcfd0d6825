//! Wiring: admin HTTP server + the routing loop, and their shutdown.

use crate::router;
use coachwire_shared::health::{self, Probe, Requires};
use coachwire_shared::nats::DeclareError;
use coachwire_shared::process::RunError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub async fn run(
    js: async_nats::jetstream::Context,
    admin: TcpListener,
    probe: Probe,
    shutdown: CancellationToken,
) -> Result<(), RunError<DeclareError>> {
    let nats = probe.nats.clone();
    let consumer = router::ensure_consumer(&js)
        .await
        .map_err(RunError::Service)?;
    let admin = health::serve_admin(admin, probe, Requires::Nats, shutdown.clone());
    router::run(nats.clone(), consumer, shutdown).await;
    nats.flush().await?;
    admin.await??;
    Ok(())
}
