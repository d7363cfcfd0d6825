//! Logs and traces, set up once per process.
//!
//! - [`logs`]: JSON lines (or pretty text on a terminal); a line written inside a span
//!   carries that span's `trace_id` and `span_id`, so logs and traces join.
//! - [`export`]: the OTLP span exporter, configured only by the standard `OTEL_*`
//!   variables, and absent when no endpoint is set.
//! - [`propagation`]: the W3C trace context in and out of NATS and HTTP headers, so one
//!   trace follows a message through all three services.
//!
//! Without an exporter (no endpoint set) nothing of OpenTelemetry is installed: no
//! span gets ids, no header is added, and the message path pays nothing for tracing
//! (§11). Logs then carry no trace ids; set an endpoint to get both.
//!
//! Neither logs nor spans carry message content, tokens or user agents: handlers record
//! ids, counts and codes only.

mod export;
mod logs;
pub mod propagation;

use crate::settings::LogFormat;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use std::io::IsTerminal;
use std::time::Duration;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::{Layer, fmt, prelude::*};

/// How long shutdown waits for the last spans to reach the collector: a collector that is
/// down must not hold up the process's exit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// The installed tracer; [`Telemetry::shutdown`] flushes what it still holds.
#[must_use = "call shutdown() before exiting, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs logging and tracing for the service `service` (the default
/// `service.name`, which `OTEL_SERVICE_NAME` overrides). `RUST_LOG` filters the logs
/// (default `info`); the spans exported are those of coachwire's own crates.
pub fn init(format: Option<LogFormat>, service: &'static str) -> Telemetry {
    let provider = export::provider(service).unwrap_or_else(|e| {
        eprintln!("{service}: tracing export is off: {e}");
        None
    });
    install(provider.as_ref().map(|p| p.tracer(service)), format, "info");
    if provider.is_some() {
        tracing::info!(service, "exporting traces over OTLP");
    }
    Telemetry { provider }
}

/// Logging alone, with `default_level` when `RUST_LOG` is unset (operator commands use
/// `warn`: their stdout is the answer, and info-level chatter would bury it).
pub fn init_with_default(format: Option<LogFormat>, default_level: &str) {
    install(None, format, default_level);
}

/// One global filter, not one per layer: events as `RUST_LOG` says, and, when spans
/// are exported, every span of coachwire's own crates (they are `debug`, so without an
/// exporter they cost nothing at the default level; with one, they carry no text of
/// their own, and log lines show them only as the context of an event). Per-layer
/// filters were tried: with two of them, events and spans that both enabled went
/// missing.
fn install(tracer: Option<SdkTracer>, format: Option<LogFormat>, default_level: &str) {
    let logs = log_filter(default_level);
    let exported = tracer.is_some();
    let filter = filter_fn(move |meta| {
        logs.would_enable(meta.target(), meta.level())
            || (exported && meta.is_span() && meta.target().starts_with("coachwire"))
    });
    let spans = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
    });
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let lines = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .event_format(logs::WithTraceIds::new(fmt::format().json()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_writer(std::io::stderr).boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(spans)
        .with(lines)
        .try_init();
    if let Err(e) = installed {
        eprintln!("logging was already initialised: {e}");
    }
}

/// `RUST_LOG` (`info`, `warn,coachwire_ingest=debug`, …), or `default_level` when it is
/// unset or unreadable.
fn log_filter(default_level: &str) -> Targets {
    let fallback = || default_level.parse().unwrap_or_default();
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec.parse().unwrap_or_else(|e| {
            eprintln!("RUST_LOG={spec:?} is not a valid filter ({e}); using {default_level}");
            fallback()
        }),
        _ => fallback(),
    }
}

impl Telemetry {
    /// Exports the spans still queued, waiting at most [`FLUSH_TIMEOUT`]. The SDK's
    /// shutdown blocks its caller, so it runs on a thread of its own.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = done.send(provider.shutdown());
        });
        match tokio::time::timeout(FLUSH_TIMEOUT, finished).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "flushing spans failed"),
            Ok(Err(_)) | Err(_) => tracing::warn!("flushing spans timed out; dropping them"),
        }
    }
}
