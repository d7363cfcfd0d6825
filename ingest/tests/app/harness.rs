//! Ingest in process: its router and Socket.IO layer built by `startup::build`, exactly as
//! the binary builds them, against a fresh database and a private nats-server, driven
//! with `tower::ServiceExt::oneshot` (HTTP) and socketioxide's test socket
//! (`SocketIo::new_dummy_sock`, Socket.IO packets with no transport). No process is
//! spawned and no port is served, so a rule of the HTTP edge or of a socket handler is
//! proven here in milliseconds, and the end-to-end suite keeps what needs the wire.

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
use engineioxide::Packet;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tower::ServiceExt;

/// How long a test socket waits for any one packet from the server.
const PACKET_WITHIN: Duration = Duration::from_secs(10);

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
    io: SocketIo,
    pub js: async_nats::jetstream::Context,
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
        let js = async_nats::jetstream::new(clients.nats.clone());
        coachwire_shared::nats::ensure_streams(&js, 1)
            .await
            .expect("the streams");
        let (router, io, _app) = startup::build(
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
            io,
            js,
            _nats: nats,
        }
    }

    /// A socket on ingest's own Socket.IO layer that handed `token` in its handshake, and
    /// the server's answer: `Ok` with the CONNECT payload, `Err` with the `connect_error`.
    pub async fn socket(&self, token: &str) -> (TestSocket, Result<Value, Value>) {
        let (to_server, from_server) = self.io.new_dummy_sock("/", json!({"token": token})).await;
        let mut socket = TestSocket {
            to_server,
            from_server,
            next_ack: 0,
        };
        let answer = match socket.next_packet().await {
            SocketPacket::Connected(payload) => Ok(payload),
            SocketPacket::Refused(payload) => Err(payload),
            other => panic!("expected the handshake's answer, got {other:?}"),
        };
        (socket, answer)
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

/// A client of [`Ingest::socket`]: Socket.IO v5 text packets over socketioxide's test
/// socket, with no transport in between.
pub struct TestSocket {
    to_server: mpsc::Sender<Packet>,
    from_server: mpsc::Receiver<Packet>,
    next_ack: u64,
}

/// A Socket.IO packet as the client sees it (namespace `/`).
#[derive(Debug)]
pub enum SocketPacket {
    Connected(Value),
    Refused(Value),
    /// An event to the room or the socket (these tests look at acks only).
    Event,
    Ack(u64, Value),
    /// The server ended the socket (a DISCONNECT, or the Engine.IO socket closed).
    Disconnected,
}

impl TestSocket {
    /// Emits `event` with `data` and an ack callback; returns the ack's payload.
    pub async fn emit(&mut self, event: &str, data: Value) -> Value {
        let id = self.next_ack;
        self.next_ack += 1;
        let packet = format!("2{id}{}", json!([event, data]));
        self.to_server
            .send(Packet::Message(packet.into()))
            .await
            .expect("the server takes packets");
        loop {
            match self.next_packet().await {
                SocketPacket::Ack(acked, payload) if acked == id => return payload,
                SocketPacket::Event => {}
                other => panic!("expected the ack of {event}, got {other:?}"),
            }
        }
    }

    /// Waits until the server ends the socket, skipping events on the way.
    pub async fn disconnected(&mut self) {
        loop {
            match self.next_packet().await {
                SocketPacket::Disconnected => return,
                SocketPacket::Event => {}
                other => panic!("expected the socket to end, got {other:?}"),
            }
        }
    }

    async fn next_packet(&mut self) -> SocketPacket {
        let packet = tokio::time::timeout(PACKET_WITHIN, self.from_server.recv())
            .await
            .expect("a packet from the server in time");
        match packet {
            Some(Packet::Message(text)) => parse(text.as_str()),
            Some(Packet::Close) | None => SocketPacket::Disconnected,
            Some(other) => panic!("an Engine.IO packet a test socket does not expect: {other:?}"),
        }
    }
}

/// One Socket.IO v5 text packet: its type digit, an optional ack id, then JSON.
fn parse(text: &str) -> SocketPacket {
    let (kind, rest) = text.split_at(1);
    let json_at = rest.find(['[', '{']).unwrap_or(rest.len());
    let (id, body) = rest.split_at(json_at);
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).expect("a JSON payload")
    };
    match kind {
        "0" => SocketPacket::Connected(body),
        "1" => SocketPacket::Disconnected,
        "2" => SocketPacket::Event,
        "3" => SocketPacket::Ack(id.parse().expect("an ack id"), body[0].clone()),
        "4" => SocketPacket::Refused(body),
        _ => panic!("a Socket.IO packet a test socket does not expect: {text}"),
    }
}
