//! Ingest in process: its router and Socket.IO layer built by `startup::build`, exactly as
//! the binary builds them, against a fresh database and a private nats-server, driven
//! with `tower::ServiceExt::oneshot`. No process is spawned and no port is served, so a
//! rule of the HTTP edge is proven here in milliseconds, and the end-to-end suite keeps
//! what needs the wire.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Response, StatusCode};
use clap::Parser;
use coachwire_ingest::auth::Verifier;
use coachwire_ingest::settings::IngestSettings;
use coachwire_ingest::startup;
use coachwire_shared::metrics;
use coachwire_shared::process::Clients;
use coachwire_testkit::db::TestDb;
use coachwire_testkit::nats_server::NatsServer;
use coachwire_testkit::stack::JWT_SECRET;
use serde_json::Value;
use std::net::SocketAddr;
use tower::ServiceExt;

/// The peer every request comes from (a client's address as `serve` records it).
const PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 40_000);

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    settings: IngestSettings,
}

pub struct Ingest {
    pub db: TestDb,
    router: Router,
    // Dropped last: the app's connections go first.
    _nats: NatsServer,
}

impl Ingest {
    /// Ingest with its defaults, overridden by `flags` (e.g. `--conversation-limit=3`).
    pub async fn start(flags: &[&str]) -> Ingest {
        let db = TestDb::new().await.expect("a fresh database");
        let nats = NatsServer::start().await.expect("a private nats-server");
        let mut argv = vec![
            "coachwire-ingest".to_string(),
            format!("--database-url={}", db.url),
            format!("--nats-url={}", nats.url()),
            format!("--jwt-secret={JWT_SECRET}"),
        ];
        argv.extend(flags.iter().map(|f| f.to_string()));
        let settings = Args::try_parse_from(argv).expect("settings").settings;
        let verifier = Verifier::new(&settings.jwt).expect("verifier");
        let clients = Clients::connect(&settings.common, "coachwire-ingest", 4)
            .await
            .expect("Postgres and NATS");
        let (router, _io, _app) = startup::build(
            &settings,
            verifier,
            None,
            clients.pool,
            clients.nats,
            metrics::install(),
        );
        Ingest {
            db,
            router,
            _nats: nats,
        }
    }

    /// Sends `request` through the whole router, from [`PEER`].
    pub async fn send(&self, mut request: Request<Body>) -> Response<Body> {
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(PEER)));
        self.router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible")
    }

    /// A JSON API call: its status and its body as JSON (a string if it is not JSON).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let request = match body {
            Some(body) => request
                .header("content-type", "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        };
        let response = self.send(request.expect("a request")).await;
        let status = response.status();
        (status, json_body(response).await)
    }
}

/// A response's body as JSON, or as a JSON string when it is not JSON.
pub async fn json_body(response: Response<Body>) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body");
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
