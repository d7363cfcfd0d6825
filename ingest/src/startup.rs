//! Wiring: clients → app state → Socket.IO layer + HTTP router → a served listener, and
//! the orderly shutdown of all of it.

use crate::accept::Acceptor;
use crate::app::{App, AppRef, Validators};
use crate::auth::Verifier;
use crate::http;
use crate::http::demo::Demo;
use crate::limits::{ConnectionsFrom, Limits};
use crate::replies::Replies;
use crate::rooms::Rooms;
use crate::serve::{MAX_CONNECTIONS_PER_IP, PeerCap, serve};
use crate::settings::IngestSettings;
use crate::socket::connect::{authenticate, on_connect};
use axum::Router;
use coachwire_shared::health::{self, Probe, Requires};
use socketioxide::handler::ConnectHandler;
use socketioxide::{ParserConfig, SocketIo};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Socket.IO packets and HTTP bodies larger than this are refused (§5).
pub const MAX_PACKET_BYTES: usize = 64 * 1024;
/// Per-socket outgoing queue, in packets: socketioxide bounds it by count only, so its
/// size in bytes is this times the largest packet. Every packet is bounded: a room event
/// carries one message (≤ 10,000 characters, ≤ 40 KB of JSON), an ack at most a page of
/// `sync::MAX_PAGE_BYTES`. A socket that stops reading therefore pins at most ~5 MB of
/// room events here (1024 packets let ten such sockets pin 125 MiB, issue 16 item 11).
/// A burst beyond it disconnects that socket only (§7.4); its client reconnects and syncs.
pub const SOCKET_BUFFER_PACKETS: usize = 128;
/// Each WebSocket keeps a read buffer of this size for its whole life; chat frames are a
/// few hundred bytes, and a larger one grows the buffer only while it is read.
pub const WS_READ_BUFFER_BYTES: usize = 1024;
/// How long an Engine.IO session may go without a Socket.IO CONNECT before it is closed.
/// Clients send it right after the handshake; socketioxide's 45 s default let sessions
/// that never connect (and are never counted as connections) pile up ~25 KB each.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// How long a PubAck may take before the client hears `UNAVAILABLE`.
const PUBLISH_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Publishes in flight on the connection before new ones wait (the pipelining window;
/// measured with nats-server 2.15.1 on 2 cores: a window of 256–1024 reaches the server's
/// throughput, 53–65k msg/s against ~6k awaiting each ack; past 5000 publishes fail).
const MAX_ACKS_IN_FLIGHT: usize = 2048;
/// How long shutdown waits for in-flight acks: a PubAck times out after
/// [`PUBLISH_ACK_TIMEOUT`], so every admitted handler has answered by then.
const DRAIN_ACKS_WITHIN: Duration = Duration::from_secs(6);
/// Between the last in-flight ack and closing the sockets: the acks just sent, and the
/// `UNAVAILABLE` answers to messages that arrive meanwhile, reach their clients before
/// the connections close, so a client learns the fate of all but what is on the wire.
const CLOSE_GRACE: Duration = Duration::from_millis(250);
/// How often limiter state for idle keys is dropped.
const LIMITER_PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// Builds the app and its router from ready clients; `demo`, when on, adds the `/demo` routes.
pub fn build(
    settings: &IngestSettings,
    verifier: Verifier,
    demo: Option<Demo>,
    pool: PgPool,
    nats: async_nats::Client,
    metrics: coachwire_shared::metrics::PrometheusHandle,
) -> (Router, SocketIo, AppRef) {
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(PUBLISH_ACK_TIMEOUT)
        .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
        .build(nats.clone());
    let node = uuid::Uuid::new_v4().to_string();
    let replies = Replies::default();
    let app: AppRef = Arc::new(App {
        acceptor: Acceptor::new(js, pool.clone()),
        verifier,
        limits: Limits::new(&settings.limits).counting_connections(connections_counted(&demo)),
        rooms: Rooms::new(nats.clone(), pool.clone(), node.clone(), replies.clone()),
        replies,
        reply_settings: settings.replies.clone(),
        validators: Validators::default(),
        probe: Probe {
            pool: pool.clone(),
            nats: nats.clone(),
            metrics,
        },
        node,
        pool,
        nats,
        drain: Default::default(),
    });
    let (layer, io) = SocketIo::builder()
        .with_state(app.clone())
        .with_parser(ParserConfig::common().max_incoming_binary_buf_size(MAX_PACKET_BYTES))
        .max_payload(MAX_PACKET_BYTES as u64)
        .ws_max_message_size(MAX_PACKET_BYTES)
        .ws_max_frame_size(MAX_PACKET_BYTES)
        .max_buffer_size(SOCKET_BUFFER_PACKETS)
        .connect_timeout(CONNECT_WITHIN)
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    let router = http::router(app.clone())
        .merge(health::probes(app.probe.clone(), Requires::Nats))
        .merge(demo.map(Demo::router).unwrap_or_default())
        .layer(layer);
    // Outside the Socket.IO layer, so Engine.IO never sees a CONNECT over its limit.
    let router = crate::socket::oversized::answer_oversized_connects(router);
    // Outside the Socket.IO layer, so a session is counted before socketioxide creates it.
    let router = crate::socket::handshake::count(router, app.clone());
    // Outside the Socket.IO layer: socketioxide answers `/socket.io/` itself, so the
    // origin check must see those requests first (browsers apply no CORS to WebSockets).
    let router = http::cors::guard(router, settings.cors_origins.clone().unwrap_or_default());
    (router, io, app)
}

/// In demo mode one person's tabs, reloads, CLI clients and coach all come from loopback:
/// the connection limit then counts everyone else only, and says so.
fn connections_counted(demo: &Option<Demo>) -> ConnectionsFrom {
    match demo {
        Some(_) => {
            tracing::info!(
                "demo mode: connections from loopback are not counted by the connection limit"
            );
            ConnectionsFrom::AllButLoopback
        }
        None => ConnectionsFrom::Everyone,
    }
}

/// Serves until `shutdown`; then acks the messages in flight (refusing new ones), disconnects
/// every socket and lets HTTP requests finish.
pub async fn run(
    listener: TcpListener,
    admin: TcpListener,
    router: Router,
    io: SocketIo,
    app: AppRef,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let admin = health::serve_admin(admin, app.probe.clone(), Requires::Nats, shutdown.clone());
    tokio::spawn(prune_limiters(app.clone(), shutdown.clone()));
    tokio::spawn(crate::replies::reaper::run(app.clone(), shutdown.clone()));
    tokio::spawn(crate::rooms::resync::on_reconnect(
        app.nats.clone(),
        app.rooms.clone(),
        shutdown.clone(),
    ));
    let cap = if app.limits.trust_proxy {
        PeerCap::None
    } else {
        PeerCap::PerIp(MAX_CONNECTIONS_PER_IP)
    };
    let draining = app.clone();
    serve(listener, router, cap, async move {
        shutdown.cancelled().await;
        let acks = draining.drain.finish();
        if tokio::time::timeout(DRAIN_ACKS_WITHIN, acks).await.is_err() {
            tracing::warn!("messages still in flight at shutdown; their clients will retry");
        }
        tokio::time::sleep(CLOSE_GRACE).await;
        io.close().await;
    })
    .await;
    if let Err(e) = app.nats.flush().await {
        tracing::warn!(error = %e, "NATS flush at shutdown failed");
    }
    admin.await.map_err(std::io::Error::other)?
}

async fn prune_limiters(app: AppRef, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(LIMITER_PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => { app.limits.prune(); }
        }
    }
}
