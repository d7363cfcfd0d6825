//! The W3C trace context (`traceparent`, `tracestate`) in and out of headers: NATS
//! headers between the services, HTTP headers from callers.
//!
//! A span continues a trace by [`continue_from_nats`] / [`continue_from_http`] right after
//! it is created (before anything is logged in it), and hands its context on with
//! [`nats_headers`]; or, for one of several messages in one payload, by
//! [`continue_from_fields`] and [`trace_context`].

use crate::envelope::TraceContext;
use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Headers carrying `span`'s trace context; `None` when there is none (no exporter
/// installed), so an untraced message goes out as a plain publish with no header block.
pub fn nats_headers(span: &Span) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut NatsInjector(&mut headers));
    (!headers.is_empty()).then_some(headers)
}

/// Makes `span` a child of the context in `headers`, if they carry one; otherwise the
/// span starts a trace of its own.
pub fn continue_from_nats(span: &Span, headers: Option<&HeaderMap>) {
    if let Some(headers) = headers {
        set_parent(span, &NatsExtractor(headers));
    }
}

/// `span`'s trace context as text fields, for a payload that carries several messages'
/// contexts (one NATS message of several events, each with its own trace).
pub fn trace_context(span: &Span) -> TraceContext {
    let mut fields = TraceContext::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut FieldInjector(&mut fields));
    fields
}

/// Makes `span` a child of `fields` (from [`trace_context`]), if they carry a context.
pub fn continue_from_fields(span: &Span, fields: &TraceContext) {
    if !fields.is_empty() {
        set_parent(span, &FieldExtractor(fields));
    }
}

/// Makes `span` a child of the caller's `traceparent`, if the request carries one.
pub fn continue_from_http(span: &Span, headers: &axum::http::HeaderMap) {
    set_parent(span, &HeaderExtractor(headers));
}

fn set_parent(span: &Span, carrier: &dyn Extractor) {
    let parent = TraceContextPropagator::new().extract(carrier);
    if let Err(e) = span.set_parent(parent) {
        tracing::debug!(error = ?e, "a span's parent was set after it started");
    }
}

struct NatsInjector<'a>(&'a mut HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing; leave the header out.
        if !value.is_empty() {
            self.0.insert(key, value.as_str());
        }
    }
}

struct NatsExtractor<'a>(&'a HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

struct FieldInjector<'a>(&'a mut TraceContext);

impl Injector for FieldInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.insert(key.to_string(), value);
        }
    }
}

struct FieldExtractor<'a>(&'a TraceContext);

impl Extractor for FieldExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Links two spans both ways: a batch and a message it handled, each in its own trace.
pub fn link_both(a: &Span, b: &Span) {
    a.add_link(b.context().span().span_context().clone());
    b.add_link(a.context().span().span_context().clone());
}
