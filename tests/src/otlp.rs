//! An in-process OpenTelemetry collector for tests: it accepts OTLP trace exports over
//! gRPC and over HTTP (`http/protobuf`), decodes them with the OTLP protobuf definitions,
//! and keeps every span, so a test can assert what the real binaries exported.

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One span as a collector received it, with its ids in hex.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The exporting process's `service.name`.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// The OTLP span kind (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Attribute values rendered as strings.
    pub attributes: HashMap<String, String>,
    /// `(trace_id, span_id)` of each linked span.
    pub links: Vec<(String, String)>,
    /// 2 means error.
    pub status_code: i32,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The receiver: a gRPC and an HTTP endpoint feeding one list of spans.
pub struct OtlpReceiver {
    spans: Arc<Spans>,
    grpc_port: u16,
    http_port: u16,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Spans {
    all: Mutex<Vec<ReceivedSpan>>,
    changed: watch::Sender<usize>,
}

impl Spans {
    fn add(&self, request: ExportTraceServiceRequest) {
        let received = decode(request);
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        all.extend(received);
        self.changed.send_replace(all.len());
    }
}

impl OtlpReceiver {
    /// Listens on two free loopback ports.
    pub async fn start() -> anyhow::Result<Self> {
        let spans = Arc::new(Spans::default());
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (grpc_port, http_port) = (grpc.local_addr()?.port(), http.local_addr()?.port());
        let service = TraceServiceServer::new(Grpc(spans.clone()));
        let grpc_task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                eprintln!("otlp grpc receiver failed: {e}");
            }
        });
        let router = axum::Router::new()
            .route("/v1/traces", post(http_export))
            .with_state(spans.clone());
        let http_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(http, router).await {
                eprintln!("otlp http receiver failed: {e}");
            }
        });
        Ok(Self {
            spans,
            grpc_port,
            http_port,
            tasks: vec![grpc_task, http_task],
        })
    }

    /// The environment that points a service at this receiver over `protocol`
    /// (`grpc` or `http/protobuf`), exporting every 100 ms.
    pub fn env(&self, protocol: &str) -> Vec<(String, String)> {
        let port = if protocol == "grpc" {
            self.grpc_port
        } else {
            self.http_port
        };
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ]
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans
            .all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits (at most `within`) until `done` holds for the spans received, and returns
    /// them.
    pub async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> anyhow::Result<Vec<ReceivedSpan>> {
        let mut changed = self.spans.changed.subscribe();
        let wait = async {
            loop {
                let spans = self.spans();
                if done(&spans) {
                    return Ok(spans);
                }
                changed.changed().await?;
            }
        };
        tokio::time::timeout(within, wait).await.with_context(|| {
            let names: Vec<String> = self
                .spans()
                .iter()
                .map(|s| format!("{}:{}", s.service, s.name))
                .collect();
            format!("spans never matched; received {names:?}")
        })?
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Grpc(Arc<Spans>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn http_export(State(spans): State<Arc<Spans>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            spans.add(request);
            let response = ExportTraceServiceResponse {
                partial_success: None,
            };
            (StatusCode::OK, response.encode_to_vec())
        }
        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
    }
}

fn decode(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    status_code: span.status.map(|s| s.code).unwrap_or_default(),
                });
            }
        }
    }
    out
}

fn attributes(pairs: &[KeyValue]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|kv| (kv.key.clone(), render(kv.value.as_ref())))
        .collect()
}

fn render(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
