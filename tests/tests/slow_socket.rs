//! A socket that stops reading while its room is busy is disconnected, never silently
//! skipped (§7.4): up to the disconnect it has every message in order, and after it
//! reconnects and `sync`s from the last `seq` it saw, it has every message exactly once.
//! A client in the same room that keeps reading gets everything in order meanwhile.
//!
//! The slow client (`tests/js/slow_reader.mjs`) stops reading its TCP socket after its
//! join, so the server's send buffer, the client's receive buffer and then the socket's
//! outgoing queue (`SOCKET_BUFFER_PACKETS` in ingest) fill; the next emit to it fails and
//! the room disconnects it.

use coachwire_shared::ids::ConversationId;
use coachwire_testkit::js::Driver;
use coachwire_testkit::repo_root;
use coachwire_testkit::stack::{Stack, new_user, token};
use futures::StreamExt;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::time::Instant;

/// Characters per message: near the 10,000 maximum, so the buffers fill in fewer messages.
const CONTENT_CHARS: usize = 9_000;
/// Messages sent between two looks at whether the slow socket is gone yet.
const CHUNK: usize = 100;
/// HTTP sends in flight at once: fast enough to fill the buffers in seconds, slow enough
/// that the reading client keeps up on two cores shared by every process of the test.
const SENDS_IN_FLIGHT: usize = 8;
/// The burst stops here if the slow socket is still connected. Measured here: the
/// 1024-packet queue plus the kernel buffers hold about 1,470 messages of
/// [`CONTENT_CHARS`] (the server's send buffer grows to 4 MB), so twice that is ample.
const MAX_BURST: usize = 3_000;
/// Messages sent after the disconnect was seen: the slow client must get these by `sync`.
const AFTER_DISCONNECT: usize = 200;
/// How long the server may take to drop the slow socket once the burst is over (the room
/// emits a little behind the sends).
const DISCONNECT_WITHIN: Duration = Duration::from_secs(5);
/// The Engine.IO ping interval (socketioxide's default). A ping that cannot be queued
/// closes the socket too, so a disconnect seen this long after the slow client connected
/// may be the heartbeat's doing rather than the room's, and proves nothing.
const HEARTBEAT: Duration = Duration::from_secs(25);
/// How long the whole burst may take to be stored.
const STORED_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_stops_reading_is_disconnected_and_recovers_everything_by_sync() {
    let stack = Stack::start().await.expect("stack");
    let (slow, normal, sender) = (new_user(), new_user(), new_user());
    let conversation = stack
        .db
        .conversation(&[slow, normal, sender])
        .await
        .expect("conversation");
    let sender_token = token(sender, None, 3600);

    let driver = Driver::start().await.expect("driver");
    let reader = stack
        .joined(&driver, "normal", &token(normal, None, 3600), conversation)
        .await
        .expect("normal client");
    let connected = Instant::now();
    let mut slow_reader = SlowReader::start(&stack, &token(slow, None, 3600), conversation).await;
    assert_eq!(connections(&stack).await, 2.0, "both clients are connected");

    // The burst, until the server has dropped the slow socket.
    let mut sent = 0;
    let mut dropped = false;
    while sent < MAX_BURST && !dropped {
        send(&stack, &sender_token, conversation, sent, CHUNK).await;
        sent += CHUNK;
        dropped = connections(&stack).await < 2.0;
    }
    let dropped = dropped || wait_disconnect(&stack).await;
    let dropped_after = connected.elapsed();
    if !dropped {
        // Show what a client that stalled for a few seconds lives with now.
        wait_stored(&stack, conversation, sent).await;
        let report = slow_reader.resume().await;
        panic!(
            "the server did not disconnect the slow socket: {sent} messages sent, the \
             connections gauge still {} {dropped_after:?} after it connected; once it read \
             again it got {} of {sent}, and then {}",
            connections(&stack).await,
            describe(&report["seqs"]),
            match report["how"].as_str() {
                Some("never") => format!(
                    "nothing more while still connected (gauge {}): the rest was silently \
                     skipped",
                    connections(&stack).await
                ),
                how => format!("the session ended ({how:?})"),
            }
        );
    }
    assert!(
        dropped_after < HEARTBEAT,
        "the slow socket went only {dropped_after:?} after connecting, maybe by heartbeat"
    );
    println!(
        "slow socket dropped once {sent} messages of {CONTENT_CHARS} chars were sent \
         ({dropped_after:?} after it connected)"
    );
    send(&stack, &sender_token, conversation, sent, AFTER_DISCONNECT).await;
    let total = sent + AFTER_DISCONNECT;
    wait_stored(&stack, conversation, total).await;

    // The reading client: every message, in order, once.
    let received = reader
        .next_events("message", total)
        .await
        .expect("the normal client gets every message");
    let seqs: Vec<i64> = received
        .iter()
        .map(|m| m["seq"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(
        seqs,
        (1..=total as i64).collect::<Vec<_>>(),
        "normal client in order"
    );
    assert!(
        reader
            .try_next_event("message", Duration::from_millis(500))
            .await
            .is_none(),
        "and nothing more"
    );

    // The slow client reads again: an unbroken prefix, then the server's disconnect.
    let report = slow_reader.resume().await;
    let before: Vec<i64> = serde_json::from_value(report["seqs"].clone()).expect("seqs");
    println!(
        "slow client had {} messages ({} MB of content) before it was disconnected ({})",
        before.len(),
        before.len() * CONTENT_CHARS / 1_000_000,
        report["how"]
    );
    assert_ne!(report["how"], "never", "the server ended the slow session");
    assert_eq!(
        before,
        (1..=before.len() as i64).collect::<Vec<_>>(),
        "up to its disconnect the slow socket missed nothing: {}",
        describe(&report["seqs"])
    );
    assert!(
        before.len() < total,
        "the slow socket was cut off before the end of the burst"
    );

    // It reconnects, joins and syncs from the last seq it saw: exactly the rest.
    let synced = slow_reader.synced().await;
    println!("after reconnecting: {}", compact(&synced));
    let from_sync: Vec<i64> = serde_json::from_value(synced["synced"].clone()).expect("synced");
    let live: Vec<i64> = serde_json::from_value(synced["live"].clone()).expect("live");
    assert_eq!(
        synced["joinLastSeq"], total,
        "the rejoin starts at the room's end"
    );
    assert!(
        live.is_empty(),
        "nothing was sent after the rejoin: {live:?}"
    );
    let everything: Vec<i64> = before.iter().chain(&from_sync).copied().collect();
    assert_eq!(
        everything,
        (1..=total as i64).collect::<Vec<_>>(),
        "after sync the slow client has every seq exactly once"
    );
    slow_reader.finish().await;
}

/// `tests/js/slow_reader.mjs`, joined and no longer reading.
struct SlowReader {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl SlowReader {
    async fn start(stack: &Stack, token: &str, conversation: ConversationId) -> Self {
        let mut child = tokio::process::Command::new("node")
            .arg(repo_root().join("tests/js/slow_reader.mjs"))
            .args([stack.url(), token.to_string(), conversation.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = Self {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        let joined = reader.next("joined").await;
        assert_eq!(joined["lastSeq"], 0, "joined an empty conversation");
        reader
    }

    /// Lets the client read again; returns what it got before the server ended the session.
    async fn resume(&mut self) -> Value {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"resume\n").await.expect("resume");
        stdin.flush().await.expect("resume");
        self.next("disconnected").await
    }

    async fn synced(&mut self) -> Value {
        self.next("synced").await
    }

    async fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("slow_reader.mjs exits")
            .expect("wait");
        assert!(status.success(), "slow_reader.mjs: {status}");
    }

    async fn next(&mut self, event: &str) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("slow_reader.mjs said nothing while `{event}` was due"))
            .expect("read")
            .unwrap_or_else(|| panic!("slow_reader.mjs exited before `{event}`"));
        let value: Value = serde_json::from_str(&line).expect("json line");
        assert_eq!(value["event"], event, "{}", compact(&value));
        value
    }
}

/// Sends messages `first..first + count` over HTTP as `token`'s user.
async fn send(
    stack: &Stack,
    token: &str,
    conversation: ConversationId,
    first: usize,
    count: usize,
) {
    let path = format!("/api/conversations/{conversation}/messages");
    let filler = "x".repeat(CONTENT_CHARS - 7);
    let statuses: Vec<u16> = futures::stream::iter(first..first + count)
        .map(|i| {
            let body = json!({ "content": format!("{i:06} {filler}") });
            let path = path.clone();
            async move {
                let (status, body) = stack
                    .api(reqwest::Method::POST, &path, Some(token), Some(body))
                    .await
                    .expect("send");
                assert_eq!(status, 202, "{body}");
                status
            }
        })
        .buffer_unordered(SENDS_IN_FLIGHT)
        .collect()
        .await;
    assert_eq!(statuses.len(), count);
}

/// `coachwire_connections` on the ingest node.
async fn connections(stack: &Stack) -> f64 {
    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.ingest[0].admin_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    metrics
        .lines()
        .filter_map(|line| {
            line.strip_prefix("coachwire_connections ")?
                .trim()
                .parse()
                .ok()
        })
        .next()
        .unwrap_or(0.0)
}

/// Whether the slow socket is dropped within [`DISCONNECT_WITHIN`] of the burst's end.
async fn wait_disconnect(stack: &Stack) -> bool {
    let deadline = Instant::now() + DISCONNECT_WITHIN;
    while Instant::now() < deadline {
        if connections(stack).await < 2.0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn wait_stored(stack: &Stack, conversation: ConversationId, total: usize) {
    let deadline = Instant::now() + STORED_WITHIN;
    loop {
        let stored = stack.db.seqs(conversation).await.expect("seqs").len();
        if stored == total {
            return;
        }
        assert!(Instant::now() < deadline, "only {stored} of {total} stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A list of seqs as runs (`1..=812, 814..=900`), so a gap or a repeat is plain to see.
fn describe(seqs: &Value) -> String {
    let seqs: Vec<i64> = serde_json::from_value(seqs.clone()).unwrap_or_default();
    let mut runs: Vec<String> = Vec::new();
    let mut start = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let first = *start.get_or_insert(seq);
        if seqs.get(i + 1) != Some(&(seq + 1)) {
            runs.push(format!("{first}..={seq}"));
            start = None;
        }
    }
    format!("{} messages: [{}]", seqs.len(), runs.join(", "))
}

/// A report line with its seq lists shortened to runs.
fn compact(value: &Value) -> String {
    let mut value = value.clone();
    for key in ["seqs", "synced", "live"] {
        if value.get(key).is_some() {
            value[key] = Value::String(describe(&value[key]));
        }
    }
    value.to_string()
}
