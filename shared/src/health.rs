//! `/healthz`, `/readyz` and `/metrics` (§8), which every service serves.

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;

/// A readiness probe must answer quickly even when a dependency hangs.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What readiness checks: the two systems every service needs.
#[derive(Clone)]
pub struct Probe {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub metrics: PrometheusHandle,
}

impl Probe {
    /// `Ok` when NATS is connected and Postgres answers `SELECT 1`, else the reason.
    pub async fn ready(&self) -> Result<(), String> {
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return Err("NATS is not connected".into());
        }
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("Postgres: {e}")),
            Err(_) => Err("Postgres did not answer in time".into()),
        }
    }
}

/// The three routes, ready to be served alone (persister, fanout) or merged (ingest).
pub fn router(probe: Probe) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probe)
}

async fn readyz(State(probe): State<Probe>) -> impl IntoResponse {
    match probe.ready().await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ready"}))),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unavailable", "reason": reason})),
        ),
    }
}

async fn metrics(State(probe): State<Probe>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        probe.metrics.render(),
    )
}
