//! The OTLP exporter, configured the standard way: `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`), `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`_ARG` and the batch processor's
//! `OTEL_BSP_*`, all read by the SDK itself.
//!
//! The batch processor runs on the tokio runtime (tonic needs its reactor). Ending a span
//! only `try_send`s it into the processor's bounded queue (`OTEL_BSP_MAX_QUEUE_SIZE`,
//! default 2048): when a collector is down or slow the queue fills and spans are dropped,
//! and the message path never waits for export.

use opentelemetry_otlp::{ExporterBuildError, SpanExporter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;

/// The exporting tracer provider, or `None` when no endpoint is configured.
pub(super) fn provider(
    service: &'static str,
) -> Result<Option<SdkTracerProvider>, ExporterBuildError> {
    if !export_configured() {
        return Ok(None);
    }
    let exporter = SpanExporter::builder().build()?;
    let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource(service))
        .with_span_processor(processor)
        .build();
    Ok(Some(provider))
}

/// An endpoint is set (for all signals or for traces), and neither the SDK nor the
/// traces exporter is switched off.
fn export_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// The environment's resource, named `service` unless `OTEL_SERVICE_NAME` or a
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES` names it.
fn resource(service: &'static str) -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| {
            attributes
                .split(',')
                .any(|pair| pair.trim_start().starts_with("service.name="))
        });
    let builder = Resource::builder();
    let builder = if named {
        builder
    } else {
        builder.with_service_name(service)
    };
    builder
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}
