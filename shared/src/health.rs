//! `/healthz`, `/readyz` and `/metrics` (§8), which every service serves.
//!
//! Readiness answers one question for a load balancer or an orchestrator: can this process
//! do its job right now? That depends on the service ([`Requires`]): ingest keeps accepting
//! messages while Postgres is down (§7.5), so Postgres is reported in its body but never
//! fails it; the persister cannot work without Postgres.

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use schemars::JsonSchema;
use serde::Serialize;
use sqlx::PgPool;
use std::time::Duration;

/// A readiness probe must answer quickly even when a dependency hangs.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The dependencies without which a service is not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requires {
    /// Ingest and the fanout.
    Nats,
    /// The persister.
    NatsAndPostgres,
}

/// What readiness checks, and the metrics `/metrics` renders.
#[derive(Clone)]
pub struct Probe {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub metrics: PrometheusHandle,
}

/// The `/readyz` body: the verdict, its reason, and each dependency's state.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Readiness {
    #[schemars(extend("enum" = ["ready", "unavailable"]))]
    pub status: &'static str,
    /// Why the service is not ready; absent when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub reason: Option<String>,
    /// `connected` or `disconnected`.
    pub nats: String,
    /// `ok`, or why Postgres did not answer.
    pub postgres: String,
}

impl Probe {
    /// Checks NATS and Postgres and judges them by what `requires` says.
    pub async fn readiness(&self, requires: Requires) -> Readiness {
        let nats = self.nats.connection_state() == async_nats::connection::State::Connected;
        let postgres = self.postgres().await;
        let reason = if !nats {
            Some("NATS is not connected".to_string())
        } else if requires == Requires::NatsAndPostgres {
            postgres.as_ref().err().map(|e| format!("Postgres: {e}"))
        } else {
            None
        };
        Readiness {
            status: if reason.is_none() {
                "ready"
            } else {
                "unavailable"
            },
            reason,
            nats: if nats { "connected" } else { "disconnected" }.into(),
            postgres: postgres.map_or_else(|e| e, |()| "ok".into()),
        }
    }

    async fn postgres(&self) -> Result<(), String> {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("did not answer in time".into()),
        }
    }
}

/// The admin address's routes: the probes and `/metrics`.
pub fn router(probe: Probe, requires: Requires) -> Router {
    probe_routes()
        .route("/metrics", get(metrics))
        .with_state((probe, requires))
}

/// Serves [`router`] on the admin address until `shutdown`, on a task of its own, so the
/// probes answer while the service works and wind down with it.
pub fn serve_admin(
    admin: tokio::net::TcpListener,
    probe: Probe,
    requires: Requires,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(admin, router(probe, requires))
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    })
}

/// Only `/healthz` and `/readyz`, for ingest's public port, where load balancers probe;
/// the operator's numbers stay on the admin address (§2).
pub fn probes(probe: Probe, requires: Requires) -> Router {
    probe_routes().with_state((probe, requires))
}

fn probe_routes() -> Router<(Probe, Requires)> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

async fn readyz(State((probe, requires)): State<(Probe, Requires)>) -> impl IntoResponse {
    let readiness = probe.readiness(requires).await;
    let status = if readiness.reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness))
}

async fn metrics(State((probe, _)): State<(Probe, Requires)>) -> impl IntoResponse {
    crate::metrics::record_pool(&probe.pool);
    let consumers = crate::metrics::record_consumers(&probe.nats);
    if tokio::time::timeout(PROBE_TIMEOUT, consumers)
        .await
        .is_err()
    {
        tracing::debug!("reading consumer backlogs timed out; /metrics shows the last values");
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        probe.metrics.render(),
    )
}
