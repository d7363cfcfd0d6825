//! `coachwire-floor`: the socket work of one chat message and nothing else, for the
//! benchmark's floor step (`scripts/bench.sh`, docs/benchmarks.md).
//!
//! It speaks the part of docs/protocol.md §3–§4 that `coachwire-load` uses: a token in the
//! CONNECT auth (HS256, verified once per socket), `join_conversation` (ack with
//! `lastSeq`), and `message` (ack with the message, `seq` set at once; `message` to the
//! room's other sockets, `message_delivered` to the sender). No queue, no database: what
//! ingest spends above this server per message is what the pipeline costs on top of
//! socketioxide. Every conversation id is accepted (there is no participant list), and
//! `seq` is counted in memory per room.
//!
//! Everything below the handlers is ingest's own: its listener (`coachwire_ingest::serve`,
//! which detaches a session's request from hyper's read buffer), socketioxide's buffer
//! sizes, one runtime thread. So the floor is the best this socket work costs as ingest
//! serves it, and the difference is the pipeline, not a setting.

use axum::Router;
use coachwire_ingest::serve::{PeerCap, serve};
use coachwire_ingest::startup::{SOCKET_BUFFER_PACKETS, WS_READ_BUFFER_BYTES};
use serde::Deserialize;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Per-room message counters: the `seq` a stored message would get.
#[derive(Default)]
struct Seqs(Mutex<HashMap<String, i64>>);

impl Seqs {
    fn next(&self, room: &str) -> i64 {
        let mut rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let seq = rooms.entry(room.to_string()).or_insert(0);
        *seq += 1;
        *seq
    }

    fn last(&self, room: &str) -> i64 {
        let rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        rooms.get(room).copied().unwrap_or(0)
    }
}

struct Floor {
    key: jsonwebtoken::DecodingKey,
    seqs: Seqs,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

#[derive(Clone)]
struct User(String);

#[derive(Deserialize)]
struct Auth {
    token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Join {
    conversation_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Send {
    conversation_id: String,
    content: String,
    client_message_id: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let secret = std::env::var("COACHWIRE_JWT_SECRET")?;
    let port: u16 = std::env::var("PORT")
        .unwrap_or_else(|_| "3200".into())
        .parse()?;
    let floor = Arc::new(Floor {
        key: jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        seqs: Seqs::default(),
    });
    let (layer, io) = SocketIo::builder()
        .with_state(floor)
        .max_buffer_size(SOCKET_BUFFER_PACKETS)
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    let app = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    serve(listener, app, PeerCap::None, std::future::pending()).await;
    Ok(())
}

async fn authenticate(
    s: SocketRef,
    State(floor): State<Arc<Floor>>,
    TryData(auth): TryData<Auth>,
) -> Result<(), String> {
    let auth = auth.map_err(|_| "UNAUTHORIZED: no token".to_string())?;
    let claims = jsonwebtoken::decode::<Claims>(
        &auth.token,
        &floor.key,
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    )
    .map_err(|e| format!("UNAUTHORIZED: {e}"))?;
    s.extensions.insert(User(claims.claims.sub));
    s.on("join_conversation", join);
    s.on("message", message);
    Ok(())
}

async fn on_connect() {}

async fn join(s: SocketRef, State(floor): State<Arc<Floor>>, Data(j): Data<Join>, ack: AckSender) {
    s.join(j.conversation_id.clone());
    let last_seq = floor.seqs.last(&j.conversation_id);
    let _ = ack.send(
        &json!({"success": true, "conversationId": j.conversation_id,
        "lastSeq": last_seq, "streaming": []}),
    );
}

async fn message(
    s: SocketRef,
    State(floor): State<Arc<Floor>>,
    Extension(user): Extension<User>,
    Data(m): Data<Send>,
    ack: AckSender,
) {
    let seq = floor.seqs.next(&m.conversation_id);
    let id = uuid::Uuid::now_v7().to_string();
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let message = json!({"id": id, "conversationId": m.conversation_id, "userId": user.0,
        "content": m.content, "type": "user", "metadata": {},
        "clientMessageId": m.client_message_id, "seq": seq, "status": "complete",
        "createdAt": created_at});
    let _ = ack.send(&json!({"success": true, "message": message, "duplicate": false}));
    let _ = s.emit(
        "message_delivered",
        &json!({"id": id, "clientMessageId": m.client_message_id,
            "conversationId": m.conversation_id, "seq": seq, "createdAt": created_at}),
    );
    let _ = s.to(m.conversation_id).emit("message", &message).await;
}
