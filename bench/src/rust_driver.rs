//! The Rust load driver: `coachwire-load --client rust` plays the clients itself,
//! speaking Engine.IO v4 / Socket.IO v5 over `tokio-tungstenite` ([`crate::wire`]). The
//! Node driver (`tests/js/load.mjs`) spends ~100 µs of CPU per message, so on a small
//! machine it, not the server, was what filled the cores.
//!
//! It records what load.mjs records, as the same [`LoadReport`] the checker judges, with
//! every time in milliseconds on one monotonic clock (since the driver started). It is
//! simpler than load.mjs: a benchmark runs against a healthy stack, so nothing is retried
//! and no socket reconnects. A send whose ack times out, fails or is cut by a dropped
//! socket keeps that attempt (`timeout`, the code, `disconnected`) as its outcome, and the
//! checker reports it. A late ack after a timeout is still recorded: the server did
//! accept the message. Streamed replies (§14) are not played: use `--client node`.
//!
//! Shape: a thread of its own runs a current-thread Tokio runtime (no work stealing, no
//! cross-core wake-ups) with one task per socket, which reads, writes and expires its
//! acks, so a socket's reader and writer share no lock or channel; and one scheduler task
//! that ticks every millisecond and hands due sends to the clients round-robin. What a
//! client records sits behind a mutex that only its own task takes while the load runs;
//! the counters `progress` reads are atomics.

use anyhow::{Context, Result, bail};
use coachwire_shared::ids::{ClientMessageId, ConversationId, MessageId, UserId};
use coachwire_testkit::load::{
    ClientRecord, Disconnect, Join, LoadConfig, LoadReport, Progress, Received, SentMessage,
};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{MissedTickBehavior, Sleep, interval, sleep, timeout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::wire::{self, Packet};

/// How long every client may take to connect and join before the load counts as broken.
const READY_WAIT: Duration = Duration::from_secs(30);
/// How long one socket's WebSocket and Socket.IO handshakes may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// The scheduler's tick: sends due within a tick go out together, so it is short (at
/// 6000 msg/s a 10 ms tick made bursts of 60 that queued behind each other).
const TICK: Duration = Duration::from_millis(1);
/// A socket's WebSocket read buffer. tungstenite zero-fills the free part of it before
/// every read, and its default of 128 KiB made that fill 22% of the driver's CPU at 6000
/// msg/s; the frames here are a few hundred bytes (engineioxide reads with 4 KiB).
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// How often a socket looks for acks past their timeout.
const EXPIRY_TICK: Duration = Duration::from_millis(100);
/// How often `start` and `stop` look at the counters.
const POLL: Duration = Duration::from_millis(10);
/// How often `settle` walks the recordings (as load.mjs does).
const SETTLE_POLL: Duration = Duration::from_millis(100);
/// How long closing every socket may take at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// The ack id of `join_conversation`; a socket's n-th message (from 1) uses ack id n.
const JOIN_ACK: u64 = 0;
/// Outcomes of an attempt, as load.mjs spells them.
const OK: Cow<'static, str> = Cow::Borrowed("ok");
const DUPLICATE: Cow<'static, str> = Cow::Borrowed("duplicate");
const TIMEOUT: Cow<'static, str> = Cow::Borrowed("timeout");
const DISCONNECTED: Cow<'static, str> = Cow::Borrowed("disconnected");
/// A success ack without the message, or an answer that is not an ack object.
const MALFORMED_ACK: Cow<'static, str> = Cow::Borrowed("MALFORMED_ACK");

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running Rust driver: its clients are connected and joined. Dropping it closes them.
pub struct RustLoad {
    shared: Arc<Shared>,
    sending: watch::Sender<bool>,
    close: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop_deadline: Duration,
}

impl RustLoad {
    /// Starts the driver's thread and waits until every client is connected and joined.
    pub async fn start(config: &LoadConfig) -> Result<RustLoad> {
        if !config.streamers.is_empty() {
            bail!("the Rust driver plays chat clients only; streamers need --client node");
        }
        if config.urls.is_empty() || config.clients.is_empty() {
            bail!("the Rust driver needs at least one URL and one client");
        }
        let shared = Arc::new(Shared::new(config));
        let (sending, sending_rx) = watch::channel(false);
        let (close, close_rx) = oneshot::channel();
        let specs = specs(config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the driver's runtime")?;
        let task = run(shared.clone(), specs, config.rate, sending_rx, close_rx);
        let thread = std::thread::Builder::new()
            .name("load-driver".into())
            .spawn(move || runtime.block_on(task))
            .context("spawning the driver's thread")?;
        let load = RustLoad {
            shared,
            sending,
            close: Some(close),
            thread: Some(thread),
            stop_deadline: config.stop_deadline,
        };
        load.wait_ready().await?;
        Ok(load)
    }

    /// Starts sending at the configured rate.
    pub async fn begin(&mut self) -> Result<()> {
        self.sending.send_replace(true);
        Ok(())
    }

    pub async fn progress(&mut self) -> Result<Progress> {
        Ok(self.shared.progress())
    }

    /// Stops new sends and waits until none is in flight (each acked, failed or timed
    /// out) or the stop deadline passes (`timed_out` then says so).
    pub async fn stop(&mut self) -> Result<Progress> {
        self.sending.send_replace(false);
        let deadline = Instant::now() + self.stop_deadline;
        let counters = &self.shared.counters;
        loop {
            // `scheduling` falls only once the scheduler has seen `sending` fall, so no
            // send can be created after `done == sent` holds here.
            let stopped =
                !counters.scheduling.load(SeqCst) && counters.done() >= counters.sent.load(SeqCst);
            if stopped || Instant::now() >= deadline {
                let mut progress = self.shared.progress();
                progress.timed_out = !stopped;
                return Ok(progress);
            }
            sleep(POLL).await;
        }
    }

    /// Waits (at most `within`) until every socket saw seq 1..=n of its conversation,
    /// then returns everything recorded.
    pub async fn settle(
        &mut self,
        last_seq: &HashMap<ConversationId, i64>,
        within: Duration,
    ) -> Result<LoadReport> {
        let started = self.shared.clock.now();
        let deadline = Instant::now() + within;
        let timed_out = loop {
            if self.shared.caught_up(last_seq) {
                break false;
            }
            if Instant::now() >= deadline {
                break true;
            }
            sleep(SETTLE_POLL).await;
        };
        let settle_ms = self.shared.clock.now() - started;
        Ok(self.shared.report(timed_out, settle_ms))
    }

    /// Closes every socket and waits for the driver's thread to end.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(close) = self.close.take() {
            // An error means the thread is gone already, which is what we want.
            let _ = close.send(());
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let joined = tokio::task::spawn_blocking(move || thread.join());
        match timeout(CLOSE_WAIT * 2, joined).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(_))) => bail!("the driver's thread panicked"),
            Ok(Err(e)) => Err(e).context("waiting for the driver's thread"),
            Err(_) => bail!(
                "the driver's thread did not end within {:?}",
                CLOSE_WAIT * 2
            ),
        }
    }

    /// Polls until every client joined; fails on the first client that could not.
    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_WAIT;
        let wanted = self.shared.clients.len() as u64;
        loop {
            if let Some(failure) = self.shared.first_failure() {
                bail!("a client could not join: {failure}");
            }
            let joined = self.shared.counters.connected.load(SeqCst);
            if joined == wanted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("only {joined} of {wanted} clients joined within {READY_WAIT:?}");
            }
            sleep(POLL).await;
        }
    }
}

/// What a client's task needs to connect: the WebSocket URL and the token.
struct Spec {
    ws_url: String,
    token: String,
}

fn specs(config: &LoadConfig) -> Result<Vec<Spec>> {
    (0..config.clients.len())
        .map(|i| {
            Ok(Spec {
                ws_url: ws_url(url_of(config, i))?,
                token: config.clients[i].token.clone(),
            })
        })
        .collect()
}

/// Client `i`'s node: its own `url_index`, or round-robin (as load.mjs spreads them).
fn url_of(config: &LoadConfig, i: usize) -> &str {
    let index = config.clients[i].url_index.unwrap_or(i);
    &config.urls[index % config.urls.len()]
}

/// `http://host:port` → `ws://host:port/socket.io/?EIO=4&transport=websocket`: straight
/// to the WebSocket transport, as socket.io-client with `transports: ["websocket"]`.
fn ws_url(url: &str) -> Result<String> {
    let base = url.trim_end_matches('/');
    let rest = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if base.starts_with("ws://") {
        base.to_owned()
    } else {
        bail!("{url}: the Rust driver speaks plain http:// (or ws://) only");
    };
    Ok(format!("{rest}/socket.io/?EIO=4&transport=websocket"))
}

/// The driver's runtime: every client's task and the scheduler, until `close` fires (or
/// the [`RustLoad`] is dropped); then every socket is closed.
async fn run(
    shared: Arc<Shared>,
    specs: Vec<Spec>,
    rate: u32,
    sending: watch::Receiver<bool>,
    close: oneshot::Receiver<()>,
) {
    let mut commands = Vec::with_capacity(specs.len());
    let mut tasks = Vec::with_capacity(specs.len());
    for (index, spec) in specs.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        commands.push(tx);
        tasks.push(tokio::spawn(client(shared.clone(), index, spec, rx)));
    }
    tokio::spawn(schedule(shared, commands.clone(), rate, sending));
    // Either a shutdown or a dropped RustLoad: both mean close everything.
    let _ = close.await;
    for tx in &commands {
        // A client whose task ended has nothing to close.
        let _ = tx.send(Command::Close);
    }
    let _ = timeout(CLOSE_WAIT, async {
        for task in tasks {
            let _ = task.await;
        }
    })
    .await;
}

/// The open-loop scheduler: from `begin` until `stop`, the sends due since `begin` go to
/// the clients round-robin, whatever the acks do.
async fn schedule(
    shared: Arc<Shared>,
    clients: Vec<mpsc::UnboundedSender<Command>>,
    rate: u32,
    mut sending: watch::Receiver<bool>,
) {
    if sending.wait_for(|on| *on).await.is_err() {
        return;
    }
    let counters = &shared.counters;
    counters.scheduling.store(true, SeqCst);
    let began = Instant::now();
    let mut tick = interval(TICK);
    // Sends due are computed from the elapsed time, so a late tick sends a larger batch.
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let (mut scheduled, mut next) = (0u64, 0usize);
    while *sending.borrow() {
        let due = (began.elapsed().as_micros() * u128::from(rate) / 1_000_000) as u64;
        let created_at = shared.clock.now();
        for _ in scheduled..due {
            counters.sent.fetch_add(1, SeqCst);
            if clients[next].send(Command::Send { created_at }).is_err() {
                shared.unsent(next, created_at);
            }
            next = (next + 1) % clients.len();
        }
        scheduled = scheduled.max(due);
        tick.tick().await;
    }
    counters.scheduling.store(false, SeqCst);
}

/// What the scheduler and the shutdown tell a client's task.
enum Command {
    /// Create and send the next message (created at this driver time).
    Send {
        created_at: f64,
    },
    Close,
}

/// One client's task: connect, join, serve until closed. Without reconnects, a client
/// whose socket is gone records every later send as never sent.
async fn client(
    shared: Arc<Shared>,
    index: usize,
    spec: Spec,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    match timeout(CONNECT_WAIT, handshake(&spec)).await {
        Ok(Ok((ws, open))) => {
            let mut socket = Socket::new(shared.clone(), index, ws, &open);
            match socket.serve(&mut commands).await {
                Ended::Closed => return,
                Ended::Dropped(reason) => socket.dropped(reason),
                Ended::Refused(reason) => {
                    shared.fail(index, reason);
                    socket.close().await;
                }
            }
        }
        Ok(Err(e)) => shared.fail(index, format!("connect: {e:#}")),
        Err(_) => shared.fail(index, format!("connect: no answer within {CONNECT_WAIT:?}")),
    }
    while let Some(Command::Send { created_at }) = commands.recv().await {
        shared.unsent(index, created_at);
    }
}

/// Opens the WebSocket, waits for Engine.IO's open packet and does the Socket.IO CONNECT
/// with the token in its `auth` (§3).
async fn handshake(spec: &Spec) -> Result<(Ws, wire::Open)> {
    // Nagle off: a send is one small frame, and waiting for the previous one's TCP ack
    // (with delayed acks, up to 40 ms) would be measured as server latency.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(&spec.ws_url, Some(config), true)
            .await
            .with_context(|| format!("opening {}", spec.ws_url))?;
    let open = match wire::decode(&next_text(&mut ws).await?)? {
        Packet::Open(open) => open,
        other => bail!("expected Engine.IO open, got {other:?}"),
    };
    #[derive(Serialize)]
    struct Auth<'a> {
        token: &'a str,
    }
    let connect = wire::connect(&Auth { token: &spec.token })?;
    ws.send(Message::text(connect)).await?;
    loop {
        match wire::decode(&next_text(&mut ws).await?)? {
            Packet::Connected => return Ok((ws, open)),
            Packet::ConnectError { message } => bail!("connect_error: {message}"),
            Packet::Ping => ws.send(Message::text(wire::PONG)).await?,
            Packet::Noop => {}
            other => bail!("expected CONNECT's answer, got {other:?}"),
        }
    }
}

/// The next text frame, during the handshake.
async fn next_text(ws: &mut Ws) -> Result<tungstenite::Utf8Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => bail!("closed during the handshake: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed during the handshake"),
        }
    }
}

/// Why a socket's serving ended.
enum Ended {
    /// We closed it (shutdown).
    Closed,
    /// The server or the network did, for this reason (socket.io-client's words).
    Dropped(String),
    /// `join_conversation` was refused: the client cannot take part.
    Refused(String),
}

/// One connected socket, owned by its client's task.
struct Socket {
    shared: Arc<Shared>,
    index: usize,
    ws: Ws,
    name: String,
    conversation: ConversationId,
    /// Joined: only then do sends go out.
    joined: bool,
    /// Indexes of this client's messages still awaiting their ack, in send order (so in
    /// deadline order). Entries acked out of order leave when they reach the front.
    in_flight: VecDeque<usize>,
    /// The server pings every `pingInterval`; one not heard within `pingTimeout` after
    /// that means the connection is dead (socket.io-client's "ping timeout").
    ping_wait: Duration,
    ping_deadline: Pin<Box<Sleep>>,
}

impl Socket {
    fn new(shared: Arc<Shared>, index: usize, ws: Ws, open: &wire::Open) -> Socket {
        let (name, conversation) = {
            let record = shared.record(index);
            (record.name.clone(), record.conversation)
        };
        let ping_wait = Duration::from_millis(open.ping_interval + open.ping_timeout);
        Socket {
            shared,
            index,
            ws,
            name,
            conversation,
            joined: false,
            in_flight: VecDeque::new(),
            ping_wait,
            ping_deadline: Box::pin(sleep(ping_wait)),
        }
    }

    /// Joins, then reads frames, sends what the scheduler hands over and expires acks
    /// until the socket ends.
    async fn serve(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Ended {
        if let Err(ended) = self.join().await {
            return ended;
        }
        let mut expiry = interval(EXPIRY_TICK);
        expiry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                // Frames first: an ack's arrival time is what the latencies measure.
                biased;
                frame = self.ws.next() => self.on_frame(frame).await,
                command = commands.recv() => match command {
                    Some(Command::Send { created_at }) => self.send(created_at).await,
                    Some(Command::Close) | None => return self.close().await,
                },
                _ = expiry.tick(), if !self.in_flight.is_empty() => {
                    self.expire();
                    Ok(())
                }
                () = &mut self.ping_deadline => Err(Ended::Dropped("ping timeout".into())),
            };
            if let Err(ended) = step {
                return ended;
            }
        }
    }

    /// `join_conversation` with ack id [`JOIN_ACK`]; its answer comes to [`Self::on_ack`].
    async fn join(&mut self) -> Result<(), Ended> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct JoinPayload {
            conversation_id: ConversationId,
        }
        let payload = JoinPayload {
            conversation_id: self.conversation,
        };
        let frame = wire::event(Some(JOIN_ACK), "join_conversation", &payload)
            .map_err(|e| Ended::Refused(format!("encoding the join: {e:#}")))?;
        self.write(frame).await
    }

    async fn write(&mut self, frame: impl Into<tungstenite::Utf8Bytes>) -> Result<(), Ended> {
        self.ws
            .send(Message::Text(frame.into()))
            .await
            .map_err(|e| Ended::Dropped(format!("transport error: {e}")))
    }

    async fn on_frame(
        &mut self,
        frame: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), Ended> {
        match frame {
            Some(Ok(Message::Text(text))) => self.on_packet(&text).await,
            Some(Ok(Message::Close(_))) | None => Err(Ended::Dropped("transport close".into())),
            Some(Err(e)) => Err(Ended::Dropped(format!("transport error: {e}"))),
            // WebSocket pings are answered by tungstenite itself; binary is not spoken.
            Some(Ok(_)) => Ok(()),
        }
    }

    async fn on_packet(&mut self, text: &str) -> Result<(), Ended> {
        match wire::decode(text) {
            Ok(Packet::Ping) => {
                let next = tokio::time::Instant::now() + self.ping_wait;
                self.ping_deadline.as_mut().reset(next);
                self.write(wire::PONG).await
            }
            Ok(Packet::Event { name, arg, .. }) => {
                self.on_event(&name, arg);
                Ok(())
            }
            Ok(Packet::Ack { id, arg }) => self.on_ack(id, arg),
            Ok(Packet::Close) => Err(Ended::Dropped("transport close".into())),
            Ok(Packet::Disconnect) => Err(Ended::Dropped("io server disconnect".into())),
            Ok(Packet::Noop) => Ok(()),
            Ok(other) => {
                self.shared
                    .error(self.index, "unexpected packet", format!("{other:?}"));
                Ok(())
            }
            Err(e) => {
                self.shared
                    .error(self.index, "undecodable frame", format!("{e:#}"));
                Ok(())
            }
        }
    }

    /// Records a `message` or `message_delivered` event; others (presence, typing) are
    /// not part of the report, as in load.mjs.
    fn on_event(&mut self, name: &str, arg: Option<&RawValue>) {
        let kind = match name {
            "message" => Kind::Message,
            "message_delivered" => Kind::Delivered,
            _ => return,
        };
        let at = self.shared.clock.now();
        match arg.map(|arg| serde_json::from_str::<Seen>(arg.get())) {
            Some(Ok(seen)) => self.shared.record(self.index).events.push(Event {
                kind,
                seq: seen.seq,
                id: seen.id,
                conversation: seen.conversation_id,
                at,
            }),
            Some(Err(e)) => self
                .shared
                .error(self.index, "undecodable event", e.to_string()),
            None => self
                .shared
                .error(self.index, "event without payload", name.into()),
        }
    }

    fn on_ack(&mut self, id: u64, arg: Option<&RawValue>) -> Result<(), Ended> {
        if id == JOIN_ACK {
            return self.on_join_ack(arg);
        }
        let at = self.shared.clock.now();
        let message = usize::try_from(id - 1).unwrap_or(usize::MAX);
        self.shared.answered(self.index, message, outcome(arg), at);
        Ok(())
    }

    fn on_join_ack(&mut self, arg: Option<&RawValue>) -> Result<(), Ended> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct JoinAck {
            success: bool,
            last_seq: Option<i64>,
        }
        let ack = arg.and_then(|a| serde_json::from_str::<JoinAck>(a.get()).ok());
        let Some(JoinAck {
            success: true,
            last_seq: Some(last_seq),
        }) = ack
        else {
            let answer = arg.map_or("no payload", RawValue::get);
            return Err(Ended::Refused(format!("join refused: {answer}")));
        };
        let at = self.shared.clock.now();
        let mut record = self.shared.record(self.index);
        record.first_join_last_seq.get_or_insert(last_seq);
        let url = record.url.clone();
        record.joins.push(Join { at, last_seq, url });
        drop(record);
        self.joined = true;
        self.shared.counters.connected.fetch_add(1, SeqCst);
        Ok(())
    }

    /// Creates this client's next message and sends it with its ack id.
    async fn send(&mut self, created_at: f64) -> Result<(), Ended> {
        match self.create(created_at) {
            Some(frame) => self.write(frame).await,
            None => Ok(()),
        }
    }

    /// Records the next message as sent now and returns its frame; `None` if it cannot
    /// go out (then it is recorded as never sent).
    fn create(&mut self, created_at: f64) -> Option<String> {
        if !self.joined {
            self.shared.unsent(self.index, created_at);
            return None;
        }
        let client_message_id = ClientMessageId(uuid::Uuid::now_v7());
        let mut record = self.shared.record(self.index);
        let index = record.messages.len();
        let content = format!("{}-{}", self.name, index + 1);
        let payload = MessagePayload {
            conversation_id: self.conversation,
            content: &content,
            client_message_id,
        };
        let frame = wire::event(Some(index as u64 + 1), "message", &payload);
        let Ok(frame) = frame else {
            drop(record);
            let error = frame.err().map(|e| format!("{e:#}")).unwrap_or_default();
            self.shared.error(self.index, "encoding a message", error);
            self.shared.unsent(self.index, created_at);
            return None;
        };
        let sent = Sent::new(
            client_message_id,
            content,
            created_at,
            Some(self.shared.clock.now()),
        );
        record.messages.push(sent);
        drop(record);
        self.in_flight.push_back(index);
        self.shared.counters.in_flight.fetch_add(1, SeqCst);
        Some(frame)
    }

    /// Marks every message whose ack is overdue as timed out (load.mjs: `timeout`).
    fn expire(&mut self) {
        let now = self.shared.clock.now();
        let timeout_ms = self.shared.ack_timeout_ms;
        let mut record = self.shared.record(self.index);
        let mut expired = 0;
        while let Some(&index) = self.in_flight.front() {
            if let Some(sent) = record.messages.get_mut(index).filter(|s| s.in_flight) {
                if sent.first_send_at.is_some_and(|t| now - t < timeout_ms) {
                    break;
                }
                sent.in_flight = false;
                sent.attempts.push((now, TIMEOUT));
                expired += 1;
            }
            self.in_flight.pop_front();
        }
        drop(record);
        self.shared.finished(expired);
        self.shared.count_failures(expired, &TIMEOUT);
    }

    /// The socket is gone: its unanswered sends end `disconnected` (load.mjs's word).
    fn dropped(&mut self, reason: String) {
        let at = self.shared.clock.now();
        let mut record = self.shared.record(self.index);
        record.disconnects.push(Disconnect { at, reason });
        let mut cut = 0;
        for index in self.in_flight.drain(..) {
            if let Some(sent) = record.messages.get_mut(index).filter(|s| s.in_flight) {
                sent.in_flight = false;
                sent.attempts.push((at, DISCONNECTED));
                cut += 1;
            }
        }
        drop(record);
        self.shared.finished(cut);
        self.shared.count_failures(cut, &DISCONNECTED);
        if std::mem::take(&mut self.joined) {
            self.shared.counters.connected.fetch_sub(1, SeqCst);
        }
    }

    /// As socket.io-client's `disconnect()`: leave the namespace, close the WebSocket.
    /// Errors are ignored: the socket is being let go either way.
    async fn close(&mut self) -> Ended {
        let _ = self.ws.send(Message::text(wire::DISCONNECT)).await;
        let _ = self.ws.close(None).await;
        Ended::Closed
    }
}

/// The `message` payload (§4): `clientMessageId` a fresh UUIDv7, as load.mjs mints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessagePayload<'a> {
    conversation_id: ConversationId,
    content: &'a str,
    client_message_id: ClientMessageId,
}

/// What an event's message (or `message_delivered`) says about where it belongs; the
/// other fields of the message object are skipped unparsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    seq: Option<i64>,
    id: Option<MessageId>,
    conversation_id: Option<ConversationId>,
}

/// A `message` ack (§4): `{ success, message, duplicate }` or `{ success: false, code }`.
#[derive(Deserialize)]
struct MessageAck {
    success: bool,
    message: Option<AckedMessage>,
    #[serde(default)]
    duplicate: bool,
    code: Option<String>,
}

#[derive(Clone, Copy, Deserialize)]
struct AckedMessage {
    id: MessageId,
    seq: Option<i64>,
}

/// How one attempt ended.
enum Outcome {
    Acked {
        message: AckedMessage,
        duplicate: bool,
    },
    Failed(Cow<'static, str>),
}

fn outcome(arg: Option<&RawValue>) -> Outcome {
    let ack = arg.and_then(|a| serde_json::from_str::<MessageAck>(a.get()).ok());
    match ack {
        Some(MessageAck {
            success: true,
            message: Some(message),
            duplicate,
            ..
        }) => Outcome::Acked { message, duplicate },
        Some(MessageAck {
            success: false,
            code,
            ..
        }) => Outcome::Failed(code.map_or(Cow::Borrowed("NO_CODE"), Cow::Owned)),
        _ => Outcome::Failed(MALFORMED_ACK),
    }
}

/// State the driver's tasks and the [`RustLoad`] handle share.
struct Shared {
    clock: Clock,
    ack_timeout_ms: f64,
    counters: Counters,
    /// Failed attempts by outcome (rare, so a mutex is fine).
    failures: Mutex<BTreeMap<String, u64>>,
    clients: Vec<Mutex<Recording>>,
}

/// The driver's one clock: milliseconds since it started, monotonic.
struct Clock(Instant);

impl Clock {
    fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1000.0
    }
}

#[derive(Default)]
struct Counters {
    /// Messages created (scheduled), sent or not.
    sent: AtomicU64,
    /// Messages with a success ack.
    acked: AtomicU64,
    in_flight: AtomicU64,
    /// Messages whose first attempt is over: answered, timed out, cut, or never sent.
    answered: AtomicU64,
    /// Clients joined right now.
    connected: AtomicU64,
    /// The scheduler is between `begin` and having seen `stop`.
    scheduling: AtomicBool,
}

impl Counters {
    fn done(&self) -> u64 {
        self.answered.load(SeqCst)
    }
}

/// Locks, ignoring poisoning: a recording stays readable whatever happened to a task.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(config: &LoadConfig) -> Shared {
        let clients = config
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let url = url_of(config, i).to_owned();
                Mutex::new(Recording::new(c.name.clone(), c.user, c.conversation, url))
            })
            .collect();
        Shared {
            clock: Clock(Instant::now()),
            ack_timeout_ms: config.ack_timeout.as_secs_f64() * 1000.0,
            counters: Counters::default(),
            failures: Mutex::default(),
            clients,
        }
    }

    fn record(&self, client: usize) -> MutexGuard<'_, Recording> {
        lock(&self.clients[client])
    }

    /// Records the answer to message `message` of `client`.
    fn answered(&self, client: usize, message: usize, outcome: Outcome, at: f64) {
        let mut record = self.record(client);
        let Some(sent) = record.messages.get_mut(message) else {
            drop(record);
            self.error(client, "ack of an unknown id", (message + 1).to_string());
            return;
        };
        let was_in_flight = std::mem::take(&mut sent.in_flight);
        let failed = match outcome {
            Outcome::Acked { message, duplicate } => {
                sent.attempts
                    .push((at, if duplicate { DUPLICATE } else { OK }));
                if sent.ack.is_none() {
                    sent.ack = Some(Acked {
                        id: message.id,
                        seq: message.seq,
                        duplicate,
                        at,
                    });
                    self.counters.acked.fetch_add(1, SeqCst);
                }
                None
            }
            Outcome::Failed(code) => {
                sent.attempts.push((at, code.clone()));
                Some(code)
            }
        };
        drop(record);
        if was_in_flight {
            self.finished(1);
        }
        if let Some(code) = failed {
            self.count_failures(1, &code);
        }
    }

    /// `n` messages in flight are over (answered, timed out or cut).
    fn finished(&self, n: u64) {
        self.counters.in_flight.fetch_sub(n, SeqCst);
        self.counters.answered.fetch_add(n, SeqCst);
    }

    fn count_failures(&self, n: u64, outcome: &str) {
        if n > 0 {
            *lock(&self.failures).entry(outcome.to_owned()).or_default() += n;
        }
    }

    /// A send created for a client whose socket cannot take it: it never leaves.
    fn unsent(&self, client: usize, created_at: f64) {
        let mut record = self.record(client);
        let content = format!("{}-{}", record.name, record.messages.len() + 1);
        let cmid = ClientMessageId(uuid::Uuid::now_v7());
        record
            .messages
            .push(Sent::new(cmid, content, created_at, None));
        drop(record);
        self.counters.answered.fetch_add(1, SeqCst);
    }

    /// The client could not connect or join: `start` fails with this.
    fn fail(&self, client: usize, reason: String) {
        self.error(client, "connect/join", reason.clone());
        self.record(client).failure.get_or_insert(reason);
    }

    fn error(&self, client: usize, what: &str, error: String) {
        let at = self.clock.now();
        let entry = json!({ "at": at, "what": what, "error": error });
        self.record(client).errors.push(entry);
    }

    fn first_failure(&self) -> Option<String> {
        self.clients.iter().find_map(|c| {
            let record = lock(c);
            let failure = record.failure.as_ref()?;
            Some(format!("{}: {failure}", record.name))
        })
    }

    fn progress(&self) -> Progress {
        let c = &self.counters;
        let (sent, acked) = (c.sent.load(SeqCst), c.acked.load(SeqCst));
        Progress {
            at: self.clock.now(),
            sent,
            acked,
            unacked: sent.saturating_sub(acked),
            in_flight: c.in_flight.load(SeqCst),
            failures: lock(&self.failures).clone(),
            connected: c.connected.load(SeqCst),
            ..Progress::default()
        }
    }

    /// Every client saw every seq of its conversation after its join, up to `last_seq`.
    fn caught_up(&self, last_seq: &HashMap<ConversationId, i64>) -> bool {
        self.clients.iter().all(|c| {
            let record = lock(c);
            let target = last_seq.get(&record.conversation).copied().unwrap_or(0);
            record.missing(target) == 0
        })
    }

    /// Everything recorded, in the shape load.mjs writes (messages in creation order).
    fn report(&self, timed_out: bool, settle_ms: f64) -> LoadReport {
        let mut clients = Vec::with_capacity(self.clients.len());
        let mut messages = Vec::new();
        for record in &self.clients {
            let record = lock(record);
            clients.push(record.client_record());
            messages.extend(record.sent_messages());
        }
        messages.sort_by(|a, b| {
            let created = |m: &SentMessage| m.created_at.unwrap_or(0.0);
            created(a).total_cmp(&created(b))
        });
        LoadReport {
            timed_out,
            settle_ms,
            counts: self.progress(),
            clients,
            messages,
            replies: Vec::new(),
        }
    }
}

/// What one client recorded while the load ran.
struct Recording {
    name: String,
    user: UserId,
    conversation: ConversationId,
    url: String,
    first_join_last_seq: Option<i64>,
    joins: Vec<Join>,
    disconnects: Vec<Disconnect>,
    events: Vec<Event>,
    messages: Vec<Sent>,
    errors: Vec<serde_json::Value>,
    /// Why the client never joined, if it did not.
    failure: Option<String>,
}

/// A received `message` (`m`) or `message_delivered` (`d`); [`Received`] at report time
/// (its kind is a `String`, one allocation per event the hot path does not need).
struct Event {
    kind: Kind,
    seq: Option<i64>,
    id: Option<MessageId>,
    conversation: Option<ConversationId>,
    at: f64,
}

#[derive(Clone, Copy)]
enum Kind {
    Message,
    Delivered,
}

/// One message a client created.
struct Sent {
    client_message_id: ClientMessageId,
    content: String,
    created_at: f64,
    /// `None`: it never went out (the socket was gone).
    first_send_at: Option<f64>,
    attempts: Vec<(f64, Cow<'static, str>)>,
    /// The first success ack.
    ack: Option<Acked>,
    in_flight: bool,
}

#[derive(Clone, Copy)]
struct Acked {
    id: MessageId,
    seq: Option<i64>,
    duplicate: bool,
    at: f64,
}

impl Sent {
    fn new(
        client_message_id: ClientMessageId,
        content: String,
        created_at: f64,
        first_send_at: Option<f64>,
    ) -> Sent {
        Sent {
            client_message_id,
            content,
            created_at,
            first_send_at,
            attempts: Vec::with_capacity(1),
            ack: None,
            in_flight: first_send_at.is_some(),
        }
    }
}

impl Recording {
    fn new(name: String, user: UserId, conversation: ConversationId, url: String) -> Recording {
        Recording {
            name,
            user,
            conversation,
            url,
            first_join_last_seq: None,
            joins: Vec::new(),
            disconnects: Vec::new(),
            events: Vec::new(),
            messages: Vec::new(),
            errors: Vec::new(),
            failure: None,
        }
    }

    /// How many seqs in (first join's lastSeq, target] no event brought.
    fn missing(&self, target: i64) -> usize {
        let from = self.first_join_last_seq.unwrap_or(0);
        let Ok(span) = usize::try_from(target - from) else {
            return 0;
        };
        let mut seen = vec![false; span];
        for seq in self.events.iter().filter_map(|e| e.seq) {
            if seq > from && seq <= target {
                seen[(seq - from - 1) as usize] = true;
            }
        }
        seen.iter().filter(|s| !**s).count()
    }

    fn client_record(&self) -> ClientRecord {
        let events = self
            .events
            .iter()
            .map(|e| {
                let kind = match e.kind {
                    Kind::Message => "m",
                    Kind::Delivered => "d",
                };
                Received(kind.into(), e.seq, e.id, e.conversation, e.at)
            })
            .collect();
        ClientRecord {
            name: self.name.clone(),
            user_id: self.user,
            conversation_id: self.conversation,
            first_join_last_seq: self.first_join_last_seq,
            joins: self.joins.clone(),
            stayed_joined: self.disconnects.is_empty(),
            reconnected: false,
            reconnected_at: Vec::new(),
            disconnects: self.disconnects.clone(),
            events,
            synced: Vec::new(),
            errors: self.errors.clone(),
        }
    }

    fn sent_messages(&self) -> impl Iterator<Item = SentMessage> + '_ {
        self.messages.iter().map(|m| SentMessage {
            client_message_id: m.client_message_id,
            client: self.name.clone(),
            user_id: self.user,
            conversation_id: self.conversation,
            content: m.content.clone(),
            created_at: Some(m.created_at),
            first_send_at: m.first_send_at,
            attempts: m
                .attempts
                .iter()
                .map(|(at, outcome)| (*at, outcome.to_string()))
                .collect(),
            id: m.ack.map(|a| a.id),
            duplicate: m.ack.map(|a| a.duplicate),
            ack_at: m.ack.map(|a| a.at),
            ack_seq: m.ack.and_then(|a| a.seq),
            in_flight: m.in_flight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_go_straight_to_the_websocket_transport() {
        assert_eq!(
            ws_url("http://127.0.0.1:3000/").expect("http"),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        assert!(ws_url("https://chat.example.com").is_err());
    }

    #[test]
    fn acks_become_outcomes() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).expect("JSON");
        let ok = raw(
            r#"{"success":true,"message":{"id":"0194c6f3-0a2b-8d4e-8f10-1a2b3c4d5e6f","seq":null,"content":"x"},"duplicate":true}"#,
        );
        match outcome(Some(&ok)) {
            Outcome::Acked { message, duplicate } => assert!(duplicate && message.seq.is_none()),
            Outcome::Failed(code) => panic!("failed: {code}"),
        }
        let refused = raw(r#"{"success":false,"error":"x","code":"UNAVAILABLE"}"#);
        assert!(matches!(outcome(Some(&refused)), Outcome::Failed(c) if c == "UNAVAILABLE"));
        let odd = raw(r#"{"success":true}"#);
        assert!(matches!(outcome(Some(&odd)), Outcome::Failed(c) if c == MALFORMED_ACK));
        assert!(matches!(outcome(None), Outcome::Failed(c) if c == MALFORMED_ACK));
    }

    #[test]
    fn missing_counts_seqs_after_the_join() {
        let id = |n| ConversationId(uuid::Uuid::from_u128(n));
        let mut record = Recording::new("a".into(), UserId(uuid::Uuid::nil()), id(1), "u".into());
        record.first_join_last_seq = Some(2);
        for seq in [1, 3, 5, 5] {
            record.events.push(Event {
                kind: Kind::Message,
                seq: Some(seq),
                id: None,
                conversation: None,
                at: 0.0,
            });
        }
        assert_eq!(record.missing(2), 0);
        assert_eq!(record.missing(5), 1, "4 is missing");
        assert_eq!(record.missing(6), 2);
    }
}
