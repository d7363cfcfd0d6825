//! Steady chat load from real `socket.io-client` clients, for the fault scenarios.
//!
//! `tests/js/load.mjs` plays clients that do their part of §7 (retry with the same
//! `clientMessageId`, reconnect and `sync` after a dropped socket) and records everything
//! they sent, were acked and received. This module starts it, steers it (start, progress,
//! stop, settle) and reads its report back as typed data for [`crate::checker`]. The
//! driver schedules sends on its own timer (open loop), so a stalled service shows up as
//! a growing backlog rather than as a slower test.

use crate::js::NodeScript;
use anyhow::{Context, Result, bail};
use coachwire_shared::ids::{ClientMessageId, ConversationId, MessageId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// How long every client may take to connect and join before the load counts as broken.
const READY_WAIT: Duration = Duration::from_secs(30);
/// Slack on top of the driver's own deadlines, so its answer (not ours) ends a wait.
const REPLY_SLACK: Duration = Duration::from_secs(10);
/// How long the driver may take to write its report once settled.
const REPORT_WRITE_WAIT: Duration = Duration::from_secs(300);

/// One client of the load: a user of a conversation with a token for it.
#[derive(Clone, Debug)]
pub struct LoadClient {
    pub name: String,
    pub user: UserId,
    pub token: String,
    pub conversation: ConversationId,
    /// Index into [`LoadConfig::urls`] of its first node (default: spread round-robin).
    pub url_index: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Ingest nodes; a client whose node drops it moves to the next one.
    pub urls: Vec<String>,
    pub clients: Vec<LoadClient>,
    /// AI coaches (tokens with role `ai`) streaming replies into their rooms (§14).
    pub streamers: Vec<LoadClient>,
    /// Messages per second over all clients together.
    pub rate: u32,
    /// Client-side ack timeout of one send (longer than ingest's 5 s PubAck timeout).
    pub ack_timeout: Duration,
    /// After `stop`, how long outstanding sends keep being retried.
    pub stop_deadline: Duration,
}

impl LoadConfig {
    pub fn new(urls: Vec<String>, clients: Vec<LoadClient>, rate: u32) -> Self {
        Self {
            urls,
            clients,
            streamers: Vec::new(),
            rate,
            ack_timeout: Duration::from_secs(6),
            stop_deadline: Duration::from_secs(60),
        }
    }
}

/// Counts the driver reports on `progress` and `stop`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub at: f64,
    pub sent: u64,
    pub acked: u64,
    pub unacked: u64,
    pub in_flight: u64,
    /// Failed attempts by outcome: a failure code, `timeout` or `disconnected`.
    pub failures: BTreeMap<String, u64>,
    /// Clients joined right now.
    pub connected: u64,
    pub reconnects: u64,
    #[serde(default)]
    pub timed_out: bool,
    /// Streamed replies begun, and ended by their writer (§14).
    #[serde(default)]
    pub replies: u64,
    #[serde(default)]
    pub replies_ended: u64,
    #[serde(default)]
    pub appends_acked: u64,
    /// `reply_delta` events received over every socket.
    #[serde(default)]
    pub deltas: u64,
}

/// Everything the driver recorded; times are milliseconds on the driver's one clock.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// The settle wait ended by its deadline, not because every socket caught up.
    pub timed_out: bool,
    pub settle_ms: f64,
    pub counts: Progress,
    pub clients: Vec<ClientRecord>,
    pub messages: Vec<SentMessage>,
    /// Every streamed reply a streamer began (none without streamers).
    #[serde(default)]
    pub replies: Vec<SentReply>,
}

/// One message a client created, with every attempt to send it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    pub client_message_id: ClientMessageId,
    pub client: String,
    pub user_id: UserId,
    pub conversation_id: ConversationId,
    pub content: String,
    /// When the client created it (the user pressed send): it may wait in the outbox for a
    /// socket before it first goes out.
    #[serde(default)]
    pub created_at: Option<f64>,
    /// When it first went out on a socket (`None`: it never left the outbox).
    pub first_send_at: Option<f64>,
    /// `(time, outcome)`: `ok`, `duplicate`, a failure code, `timeout` or `disconnected`.
    pub attempts: Vec<(f64, String)>,
    /// The success ack's `message.id`.
    pub id: Option<MessageId>,
    pub duplicate: Option<bool>,
    pub ack_at: Option<f64>,
    pub ack_seq: Option<i64>,
    pub in_flight: bool,
}

/// One streamed reply (§14) as its writer saw it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentReply {
    pub client_message_id: ClientMessageId,
    pub client: String,
    pub user_id: UserId,
    pub conversation_id: ConversationId,
    /// `(time, outcome)` of each `reply_start`, as [`SentMessage::attempts`].
    pub start_attempts: Vec<(f64, String)>,
    /// The start ack's `message.id`, `seq` and `status`.
    pub id: Option<MessageId>,
    pub start_seq: Option<i64>,
    pub start_status: Option<String>,
    pub start_ack_at: Option<f64>,
    /// Every append tried, in offset order; only the last may be unacked.
    pub appends: Vec<SentAppend>,
    pub end_attempts: Vec<(f64, String)>,
    /// The `reply_end` ack's final version, when the writer got one.
    pub end: Option<EndAcked>,
    /// How the reply ended for its writer (`ended`, or why not).
    pub over: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentAppend {
    /// In Unicode scalar values, as §14 counts.
    pub offset: usize,
    pub text: String,
    pub acked_at: Option<f64>,
    /// The text's length after it, by the ack.
    pub length: Option<usize>,
    pub attempts: Vec<(f64, String)>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EndAcked {
    pub at: f64,
    pub status: String,
    pub content: String,
}

/// One logical client: its socket history and what it received.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientRecord {
    pub name: String,
    pub user_id: UserId,
    pub conversation_id: ConversationId,
    /// `lastSeq` of its first `join_conversation` ack.
    pub first_join_last_seq: Option<i64>,
    pub joins: Vec<Join>,
    pub stayed_joined: bool,
    pub reconnected: bool,
    pub reconnected_at: Vec<f64>,
    pub disconnects: Vec<Disconnect>,
    /// Arrival order of `message` (`"m"`), `message_delivered` (`"d"`) and
    /// `message_updated` (`"u"`: the version's seq, the message's id) events.
    pub events: Vec<Received>,
    /// `(seq, id)` of what `sync` returned after reconnects.
    pub synced: Vec<(i64, MessageId)>,
    pub errors: Vec<Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Join {
    pub at: f64,
    pub last_seq: i64,
    pub url: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Disconnect {
    pub at: f64,
    pub reason: String,
}

/// `[kind, seq, id, conversationId, at]` as the driver writes it.
#[derive(Clone, Debug, Deserialize)]
pub struct Received(
    pub String,
    pub Option<i64>,
    pub Option<MessageId>,
    pub Option<ConversationId>,
    pub f64,
);

impl Received {
    pub fn is_delivered(&self) -> bool {
        self.0 == "d"
    }
}

/// A running `node load.mjs`; killed when dropped.
pub struct Load {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
    report_path: PathBuf,
    config_path: PathBuf,
    keep_report: bool,
    stop_deadline: Duration,
}

impl Load {
    /// Spawns the driver and waits until every client is connected and joined.
    pub async fn start(config: &LoadConfig) -> Result<Load> {
        let run = uuid::Uuid::new_v4().simple();
        let report_path = std::env::temp_dir().join(format!("cw-load-{run}.json"));
        // A file, not an argument: thousands of clients' tokens exceed the kernel's
        // 128 KiB limit on one argument.
        let config_path = std::env::temp_dir().join(format!("cw-load-config-{run}.json"));
        let spec = |c: &LoadClient| {
            json!({ "name": c.name, "userId": c.user, "token": c.token,
                    "conversationId": c.conversation, "urlIndex": c.url_index })
        };
        let clients: Vec<Value> = config.clients.iter().map(spec).collect();
        let streamers: Vec<Value> = config.streamers.iter().map(spec).collect();
        let arg = json!({
            "urls": config.urls, "rate": config.rate, "clients": clients,
            "streamers": streamers,
            "ackTimeoutMs": config.ack_timeout.as_millis() as u64,
            "stopDeadlineMs": config.stop_deadline.as_millis() as u64,
            "reportPath": report_path,
        });
        let NodeScript {
            child,
            stdin,
            stdout,
        } = {
            std::fs::write(&config_path, arg.to_string())?;
            NodeScript::spawn("load.mjs", &[config_path.display().to_string()])?
        };
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(_) => eprintln!("[load, not JSON] {line}"),
                }
            }
        });
        let mut load = Load {
            child,
            stdin,
            lines,
            report_path,
            config_path,
            keep_report: false,
            stop_deadline: config.stop_deadline,
        };
        load.expect_event("ready", READY_WAIT).await?;
        Ok(load)
    }

    /// Starts sending at the configured rate.
    pub async fn begin(&mut self) -> Result<()> {
        self.command(json!({"cmd": "start"})).await?;
        self.expect_event("started", REPLY_SLACK).await.map(drop)
    }

    pub async fn progress(&mut self) -> Result<Progress> {
        self.command(json!({"cmd": "progress"})).await?;
        let reply = self.expect_event("progress", REPLY_SLACK).await?;
        Ok(serde_json::from_value(reply)?)
    }

    /// Polls progress until at least `n` messages are acked (bounded by `within`).
    pub async fn wait_acked(&mut self, n: u64, within: Duration) -> Result<Progress> {
        let deadline = Instant::now() + within;
        loop {
            let progress = self.progress().await?;
            if progress.acked >= n {
                return Ok(progress);
            }
            if Instant::now() >= deadline {
                bail!("load never reached {n} acked messages within {within:?}: {progress:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops new sends and waits until every outstanding one is acked (or the driver's
    /// deadline passes: `timed_out` then says so, and the checker reports the rest).
    pub async fn stop(&mut self) -> Result<Progress> {
        self.command(json!({"cmd": "stop"})).await?;
        let reply = self
            .expect_event("stopped", self.stop_deadline + REPLY_SLACK)
            .await?;
        Ok(serde_json::from_value(reply)?)
    }

    /// Waits (at most `within`) until every socket saw seq 1..=n of its conversation by
    /// events or sync, then reads the driver's report.
    pub async fn settle(
        &mut self,
        last_seq: &HashMap<ConversationId, i64>,
        within: Duration,
    ) -> Result<LoadReport> {
        let targets: serde_json::Map<String, Value> = last_seq
            .iter()
            .map(|(c, n)| (c.to_string(), json!(n)))
            .collect();
        let timeout_ms = within.as_millis() as u64;
        self.command(json!({"cmd": "settle", "lastSeq": targets, "timeoutMs": timeout_ms}))
            .await?;
        // The report of a long soak (a million sends, every socket's events) takes the
        // driver a while to write after the settle itself.
        self.expect_event("report", within + REPLY_SLACK + REPORT_WRITE_WAIT)
            .await?;
        let text = tokio::fs::read(&self.report_path)
            .await
            .with_context(|| format!("reading {}", self.report_path.display()))?;
        serde_json::from_slice(&text).context("parsing the load report")
    }

    /// Leaves the report file in place (for a failed check's evidence) and names it.
    pub fn keep_report(&mut self) -> PathBuf {
        self.keep_report = true;
        self.report_path.clone()
    }

    /// Closes every socket and waits for the driver to exit.
    pub async fn shutdown(mut self) -> Result<()> {
        self.command(json!({"cmd": "exit"})).await?;
        timeout(REPLY_SLACK, self.child.wait())
            .await
            .context("load driver did not exit")??;
        Ok(())
    }

    async fn command(&mut self, cmd: Value) -> Result<()> {
        let mut line = serde_json::to_vec(&cmd)?;
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .await
            .context("writing to the load driver")?;
        self.stdin
            .flush()
            .await
            .context("writing to the load driver")
    }

    /// The next line whose `event` is `name` (others are unexpected and logged).
    async fn expect_event(&mut self, name: &str, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .with_context(|| format!("load driver sent no `{name}` within {within:?}"))?
                .with_context(|| format!("load driver exited before `{name}`"))?;
            if line["event"] == name {
                return Ok(line);
            }
            eprintln!("[load, unexpected line] {line}");
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config_path);
        if !self.keep_report {
            let _ = std::fs::remove_file(&self.report_path);
        }
    }
}
