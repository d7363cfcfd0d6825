//! Bridge to the official `socket.io-client` (npm) for end-to-end tests.
//!
//! The server must work with the client real users run, not with a Rust
//! re-implementation of the protocol, so tests drive `tests/js/driver.mjs`: one
//! Node process holding many client sockets, commanded with JSON lines on its
//! stdin and answering with JSON lines on its stdout. Test logic and assertions
//! stay in Rust. Needs `node` (or `$NODE`) and `npm ci` run in `tests/js`.
//!
//! Binary arguments cross the bridge as `{"$binary": "<base64>"}` (see
//! [`binary`]); received binary comes back in the same shape.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, timeout, timeout_at};

/// How long `next_event`, `immediate_acks` and `disconnected` wait.
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// Ack timeout handed to socket.io-client for `emit_ack`.
const ACK_TIMEOUT_MS: u64 = 5_000;
/// Extra time the Rust side allows on top of the driver's own timeouts, so the
/// driver's precise error ("timeout", the connect_error text) is what we see.
const REPLY_SLACK: Duration = Duration::from_secs(5);

/// One thing the driver reported for a client, queued until a test takes it.
enum Incoming {
    Event {
        name: String,
        args: Value,
    },
    Ack {
        index: u64,
        result: Result<Value, String>,
    },
    Disconnect(String),
}

/// State shared by the [`Driver`], its [`Client`] handles and the stdout reader task.
struct Shared {
    stdin: tokio::sync::Mutex<ChildStdin>,
    next_id: AtomicU64,
    /// Replies are routed by command id to whoever sent the command.
    pending: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    /// Per client, everything not yet consumed, in arrival order.
    queues: Mutex<HashMap<String, VecDeque<Incoming>>>,
    /// Woken (all waiters) on every queued item and when the driver exits.
    notify: Notify,
    closed: AtomicBool,
}

/// Locks, ignoring poisoning: a panicking test must not cascade into others.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Sends one command and waits (at most `wait`) for its reply line.
    async fn request(&self, mut cmd: Value, wait: Duration) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        cmd["id"] = json!(id);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        // Checked after inserting: the reader sets `closed` before clearing `pending`.
        if self.closed.load(Ordering::SeqCst) {
            lock(&self.pending).remove(&id);
            bail!("js driver has exited");
        }
        let mut line = serde_json::to_vec(&cmd)?;
        line.push(b'\n');
        {
            let mut stdin = self.stdin.lock().await;
            stdin
                .write_all(&line)
                .await
                .context("writing to the js driver")?;
            stdin.flush().await.context("writing to the js driver")?;
        }
        match timeout(wait, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => bail!("js driver exited before answering {cmd}"),
            Err(_) => {
                lock(&self.pending).remove(&id);
                bail!("js driver did not answer {cmd} within {wait:?}")
            }
        }
    }

    /// Removes and returns the first queued item of `client` that `pick`
    /// accepts, waiting until `deadline`; `None` on timeout or once the driver is gone.
    async fn take(
        &self,
        client: &str,
        deadline: Instant,
        pick: impl Fn(&Incoming) -> bool,
    ) -> Option<Incoming> {
        loop {
            // Created before checking, so a notify_waiters() in between is not lost.
            let notified = self.notify.notified();
            {
                let mut queues = lock(&self.queues);
                let queue = queues.entry(client.to_owned()).or_default();
                if let Some(pos) = queue.iter().position(&pick) {
                    return queue.remove(pos);
                }
            }
            if self.closed.load(Ordering::SeqCst) || timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Error for a wait that ended empty-handed.
    fn missing(&self, client: &str, what: &str) -> anyhow::Error {
        let why = if self.closed.load(Ordering::SeqCst) {
            "the js driver has exited"
        } else {
            "timed out"
        };
        anyhow!("client {client}: no {what} ({why})")
    }

    /// Routes one stdout line: replies by id, everything else to the client's queue.
    fn dispatch(&self, line: &str) {
        let Ok(mut msg) = serde_json::from_str::<Value>(line) else {
            eprintln!("[js driver, not JSON] {line}");
            return;
        };
        if let Some(id) = msg.get("id") {
            match id.as_u64().and_then(|id| lock(&self.pending).remove(&id)) {
                Some(tx) => {
                    let _ = tx.send(msg); // the requester may have timed out
                }
                None => eprintln!("[js driver, unexpected reply] {line}"),
            }
            return;
        }
        let client = msg["client"].as_str().unwrap_or_default().to_owned();
        let item = match msg["event"].as_str() {
            Some("incoming") => Incoming::Event {
                name: msg["name"].as_str().unwrap_or_default().to_owned(),
                args: msg["args"].take(),
            },
            Some("ack") => Incoming::Ack {
                index: msg["index"].as_u64().unwrap_or(u64::MAX),
                result: match msg["error"].as_str() {
                    Some(e) => Err(e.to_owned()),
                    None => Ok(first(msg["args"].take())),
                },
            },
            Some("disconnect") => {
                Incoming::Disconnect(msg["reason"].as_str().unwrap_or_default().to_owned())
            }
            _ => {
                eprintln!("[js driver, unknown line] {line}");
                return;
            }
        };
        lock(&self.queues)
            .entry(client)
            .or_default()
            .push_back(item);
        self.notify.notify_waiters();
    }
}

/// A Node script of `tests/js` running with piped stdin and stdout; its stderr is forwarded
/// through `eprintln!`, so the test harness shows it only for failing tests.
pub(crate) struct NodeScript {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: tokio::process::ChildStdout,
}

impl NodeScript {
    /// `node tests/js/<script> <args>` (or `$NODE`), killed when its `Child` is dropped.
    pub(crate) fn spawn(script: &str, args: &[String]) -> Result<NodeScript> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
        if !dir.join("node_modules/socket.io-client").is_dir() {
            bail!("{} has no node_modules: run `npm ci` there", dir.display());
        }
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
        let mut child = Command::new(&node)
            .arg(dir.join(script))
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning `{node}` for {script}"))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            bail!("{script} spawned without pipes");
        };
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
            }
        });
        Ok(NodeScript {
            child,
            stdin,
            stdout,
        })
    }
}

/// One `node driver.mjs` process; killed when dropped.
pub struct Driver {
    shared: Arc<Shared>,
    child: Child,
}

/// Options for [`Driver::connect_with`]; `None` leaves the client's default.
#[derive(Default)]
pub struct ConnectOptions {
    /// The handshake `auth` payload, e.g. `{"token": "…"}`.
    pub auth: Option<Value>,
    /// HTTP headers of the handshake, e.g. `{"Authorization": "Bearer …"}`.
    pub extra_headers: Option<Value>,
    pub query: Option<Value>,
    /// e.g. `["websocket"]` to skip HTTP long-polling.
    pub transports: Option<Vec<String>>,
    /// `(event, payload)` emitted with an ack callback in the same tick as
    /// `io()`, before `connect`, like an eager real client; see [`Client::immediate_acks`].
    pub immediate_emits: Vec<(String, Value)>,
}

#[derive(Debug)]
pub enum ConnectOutcome {
    Connected(Client),
    /// The `connect_error` message, e.g. `"UNAUTHORIZED: …"`.
    Refused(String),
}

impl Driver {
    /// Spawns the driver. Its stderr is forwarded through `eprintln!`, so the
    /// test harness shows it only for failing tests.
    pub async fn start() -> Result<Driver> {
        let NodeScript {
            child,
            stdin,
            stdout,
        } = NodeScript::spawn("driver.mjs", &[])?;
        let shared = Arc::new(Shared {
            stdin: tokio::sync::Mutex::new(stdin),
            next_id: AtomicU64::new(1),
            pending: Mutex::default(),
            queues: Mutex::default(),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let reader = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                reader.dispatch(&line);
            }
            reader.closed.store(true, Ordering::SeqCst);
            lock(&reader.pending).clear(); // fails every outstanding request
            reader.notify.notify_waiters();
        });
        Ok(Driver { shared, child })
    }

    /// Connects with `auth: {token}` (or no auth); a `connect_error` is an `Err`.
    pub async fn connect(&self, name: &str, url: &str, token: Option<&str>) -> Result<Client> {
        let opts = ConnectOptions {
            auth: token.map(|t| json!({ "token": t })),
            ..Default::default()
        };
        match self.connect_with(name, url, opts).await? {
            ConnectOutcome::Connected(client) => Ok(client),
            ConnectOutcome::Refused(msg) => bail!("client {name}: connect_error: {msg}"),
        }
    }

    /// Connects client `name` (a refused or disconnected name may be reused;
    /// its old unconsumed events are discarded).
    pub async fn connect_with(
        &self,
        name: &str,
        url: &str,
        opts: ConnectOptions,
    ) -> Result<ConnectOutcome> {
        lock(&self.shared.queues).remove(name);
        let emits: Vec<Value> = opts
            .immediate_emits
            .iter()
            .map(|(event, payload)| json!({ "event": event, "args": [payload], "ack": true }))
            .collect();
        let cmd = json!({
            "cmd": "connect", "client": name, "url": url, "auth": opts.auth,
            "extraHeaders": opts.extra_headers, "query": opts.query,
            "transports": opts.transports, "emit": emits,
        });
        // The driver's own connect timeout is 5 s.
        let reply = self
            .shared
            .request(cmd, Duration::from_secs(5) + REPLY_SLACK)
            .await?;
        if reply["ok"] != json!(true) {
            bail!("client {name}: connect failed: {reply}");
        }
        if reply["connected"] != json!(true) {
            return Ok(ConnectOutcome::Refused(
                reply["error"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        let sid = reply["sid"].as_str().unwrap_or_default().to_owned();
        Ok(ConnectOutcome::Connected(Client {
            name: name.to_owned(),
            sid,
            shared: Arc::clone(&self.shared),
        }))
    }

    /// Disconnects every client and waits for the process to exit.
    pub async fn shutdown(mut self) -> Result<()> {
        self.shared
            .request(json!({ "cmd": "exit" }), REPLY_SLACK)
            .await?;
        timeout(REPLY_SLACK, self.child.wait())
            .await
            .context("js driver did not exit")??;
        Ok(())
    }
}

/// A cheap handle on one socket of a [`Driver`] (usable until the driver is dropped).
#[derive(Clone)]
pub struct Client {
    name: String,
    sid: String,
    shared: Arc<Shared>,
}

impl Client {
    /// Emits `event` with one payload and returns the first ack argument (`Err` after 5 s).
    pub async fn emit_ack(&self, event: &str, payload: Value) -> Result<Value> {
        self.emit_ack_args(event, vec![payload]).await
    }

    /// Like [`Client::emit_ack`] with any number of arguments (e.g. none, or binary ones).
    pub async fn emit_ack_args(&self, event: &str, args: Vec<Value>) -> Result<Value> {
        self.emit_ack_within(event, args, Duration::from_millis(ACK_TIMEOUT_MS))
            .await
    }

    /// Like [`Client::emit_ack_args`], waiting up to `timeout` for the ack (for answers
    /// that legitimately take long, such as a PubAck timeout).
    pub async fn emit_ack_within(
        &self,
        event: &str,
        args: Vec<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let cmd = json!({ "cmd": "emit", "client": self.name, "event": event, "args": args,
                          "ack": true, "timeoutMs": timeout_ms });
        let mut reply = self.check(cmd, timeout).await?;
        Ok(reply["ack"].take())
    }

    /// Joins `conversation`, failing unless the ack says `success`; returns the ack.
    pub async fn join(&self, conversation: impl std::fmt::Display) -> Result<Value> {
        let ack = self
            .emit_ack(
                "join_conversation",
                json!({ "conversationId": conversation.to_string() }),
            )
            .await?;
        if ack["success"] != true {
            bail!("{} could not join {conversation}: {ack}", self.name);
        }
        Ok(ack)
    }

    /// Sends `content` to `conversation`, failing unless the ack says `success` (JetStream
    /// has it); returns the ack.
    pub async fn send(&self, conversation: impl std::fmt::Display, content: &str) -> Result<Value> {
        let ack = self
            .emit_ack(
                "message",
                json!({ "conversationId": conversation.to_string(), "content": content }),
            )
            .await?;
        if ack["success"] != true {
            bail!("{} could not send {content:?}: {ack}", self.name);
        }
        Ok(ack)
    }

    /// Emits without an ack callback (failures then arrive as an `error` event).
    pub async fn emit(&self, event: &str, payload: Value) -> Result<()> {
        let cmd = json!({ "cmd": "emit", "client": self.name, "event": event, "args": [payload], "ack": false });
        self.check(cmd, Duration::ZERO).await.map(drop)
    }

    /// Emits all payloads back to back (pipelined, each with an ack callback)
    /// and returns their first ack arguments in send order.
    pub async fn emit_many_ack(&self, event: &str, payloads: Vec<Value>) -> Result<Vec<Value>> {
        let timeout_ms = 10_000 + 10 * payloads.len() as u64;
        let args_list: Vec<Value> = payloads.into_iter().map(|p| json!([p])).collect();
        let cmd = json!({ "cmd": "emit_many", "client": self.name, "event": event,
                          "argsList": args_list, "ack": true, "timeoutMs": timeout_ms });
        let mut reply = self.check(cmd, Duration::from_millis(timeout_ms)).await?;
        serde_json::from_value(reply["acks"].take()).context("emit_many reply without acks")
    }

    /// First argument of the next unconsumed incoming `name` event, waiting up to
    /// 10 s; events of other names stay queued for later calls.
    pub async fn next_event(&self, name: &str) -> Result<Value> {
        let event = self.try_next_event(name, EVENT_WAIT).await;
        event.ok_or_else(|| self.shared.missing(&self.name, &format!("`{name}` event")))
    }

    /// The next `n` `name` events (10 s for each).
    pub async fn next_events(&self, name: &str, n: usize) -> Result<Vec<Value>> {
        let mut events = Vec::with_capacity(n);
        for i in 0..n {
            let event = self.next_event(name).await;
            events.push(event.with_context(|| format!("event {} of {n}", i + 1))?);
        }
        Ok(events)
    }

    /// Like [`Client::next_event`] but `None` after `wait`: for asserting that nothing came.
    pub async fn try_next_event(&self, name: &str, wait: Duration) -> Option<Value> {
        let pick = |i: &Incoming| matches!(i, Incoming::Event { name: n, .. } if n == name);
        match self
            .shared
            .take(&self.name, Instant::now() + wait, pick)
            .await
        {
            Some(Incoming::Event { args, .. }) => Some(first(args)),
            _ => None,
        }
    }

    /// First ack arguments of the first `n` [`ConnectOptions::immediate_emits`], by index.
    pub async fn immediate_acks(&self, n: usize) -> Result<Vec<Value>> {
        let deadline = Instant::now() + EVENT_WAIT;
        let mut acks = Vec::with_capacity(n);
        for index in 0..n as u64 {
            let pick = |i: &Incoming| matches!(i, Incoming::Ack { index: x, .. } if *x == index);
            let what = format!("ack for immediate emit {index}");
            match self.shared.take(&self.name, deadline, pick).await {
                Some(Incoming::Ack {
                    result: Ok(ack), ..
                }) => acks.push(ack),
                Some(Incoming::Ack { result: Err(e), .. }) => {
                    bail!("client {}: {what}: {e}", self.name)
                }
                _ => return Err(self.shared.missing(&self.name, &what)),
            }
        }
        Ok(acks)
    }

    /// Waits (10 s) for this socket's `disconnect` event; returns its reason
    /// (e.g. `"io server disconnect"`).
    pub async fn disconnected(&self) -> Result<String> {
        let pick = |i: &Incoming| matches!(i, Incoming::Disconnect(_));
        match self
            .shared
            .take(&self.name, Instant::now() + EVENT_WAIT, pick)
            .await
        {
            Some(Incoming::Disconnect(reason)) => Ok(reason),
            _ => Err(self.shared.missing(&self.name, "disconnect event")),
        }
    }

    pub async fn disconnect(&self) -> Result<()> {
        self.check(
            json!({ "cmd": "disconnect", "client": self.name }),
            Duration::ZERO,
        )
        .await
        .map(drop)
    }

    /// The Socket.IO session id the server assigned.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Sends a command and turns an `ok: false` reply into an `Err`.
    async fn check(&self, cmd: Value, driver_timeout: Duration) -> Result<Value> {
        let what = format!("client {}: {}", self.name, cmd["cmd"]);
        let reply = self
            .shared
            .request(cmd, driver_timeout + REPLY_SLACK)
            .await?;
        if reply["ok"] != json!(true) {
            bail!("{what} failed: {}", reply["error"]);
        }
        Ok(reply)
    }
}

/// By name and sid, so tests can use `expect_err` and `{:?}` on results holding a client.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Client");
        d.field("name", &self.name).field("sid", &self.sid).finish()
    }
}

/// The first element of an args array (`Null` if there is none).
fn first(args: Value) -> Value {
    match args {
        Value::Array(args) => args.into_iter().next().unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// A binary Socket.IO argument (`{"$binary": base64}`), for `emit_ack_args` etc.
pub fn binary(bytes: &[u8]) -> Value {
    use base64::Engine;
    json!({ "$binary": base64::engine::general_purpose::STANDARD.encode(bytes) })
}

/// A value the driver builds with `JSON.parse(text)`: lone surrogates, absurd nesting.
pub fn raw_json(text: &str) -> Value {
    json!({ "$json": text })
}
