//! The one judge of the delivery guarantees (CONTRACT §7) for every fault scenario.
//!
//! Each scenario runs load through a fault, then hands the driver's report
//! ([`crate::load::LoadReport`]) and the test database to [`check`]. It compares what
//! the clients were told (acks), what they received (events, sync) and what Postgres
//! holds, and fails with the exact messages, seqs and sockets that break a guarantee.
//! Keeping every check in one place means a scenario cannot forget one, and the unit
//! tests at the bottom show that each check can fail.

mod replies;

use crate::load::{ClientRecord, LoadReport, SentMessage, SentReply};
use anyhow::{Result, bail};
use coachwire_shared::ids::{ClientMessageId, ConversationId, MessageId, UserId};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

/// Violations printed per check; the count says how many more there were.
const EVIDENCE_PER_CHECK: usize = 10;
/// Outcomes of a failed send that a client must expect during faults (§4, §7.5): the
/// queue could not confirm, the ack never came, or the socket went away. Anything else
/// (INTERNAL, FORBIDDEN …) under these faults is a fault of the service.
const EXPECTED_FAILURES: [&str; 3] = ["UNAVAILABLE", "timeout", "disconnected"];

/// One row of `messages` in a test conversation.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredRow {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    pub user_id: UserId,
    pub client_message_id: Option<ClientMessageId>,
    pub seq: i64,
    pub content: String,
    pub status: String,
    /// Set on a later version of a message (the end of a streamed reply, §14).
    pub version_of: Option<MessageId>,
}

impl StoredRow {
    /// Whether an event or sync entry naming message `id` at this row's seq is this row:
    /// the message itself, or a later version of it.
    pub fn is_event_of(&self, id: MessageId) -> bool {
        self.id == id || self.version_of == Some(id)
    }
}

/// What was checked, for the one-line summary.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub sent: usize,
    pub acked: usize,
    pub retries: usize,
    pub codes: BTreeMap<String, usize>,
    pub duplicates_acked: usize,
    pub stored: usize,
    pub conversations: usize,
    pub stayed: usize,
    pub reconnected: usize,
    pub deliveries_checked: usize,
    pub synced_checked: usize,
    pub own_as_message: usize,
    pub results: Vec<(&'static str, bool)>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "checker: sent={} acked={} retries={} codes={:?} duplicate-acks={} stored={} \
             conversations={} sockets stayed={} reconnected={} deliveries-checked={} \
             synced-checked={} own-as-message={} |",
            self.sent,
            self.acked,
            self.retries,
            self.codes,
            self.duplicates_acked,
            self.stored,
            self.conversations,
            self.stayed,
            self.reconnected,
            self.deliveries_checked,
            self.synced_checked,
            self.own_as_message
        )?;
        for (name, ok) in &self.results {
            write!(f, " {name}={}", if *ok { "ok" } else { "FAIL" })?;
        }
        Ok(())
    }
}

/// Checks every §7 guarantee of `report` against the test database; prints a one-line
/// summary; `Err` carries the evidence of each violation.
pub async fn check(report: &LoadReport, pool: &PgPool) -> Result<Summary> {
    check_rows(report, &stored_rows(report, pool).await?)
}

/// [`check`] on rows already read (what the unit tests feed by hand).
pub fn check_rows(report: &LoadReport, rows: &[StoredRow]) -> Result<Summary> {
    let verdict = judge(report, rows);
    println!("{}", verdict.summary);
    if !verdict.evidence.is_empty() {
        bail!(
            "delivery guarantees violated\n{}\n{}",
            verdict.summary,
            verdict.evidence
        );
    }
    Ok(verdict.summary)
}

/// What every check found: the summary (with each check's result), the number of
/// violations per check, and their evidence (empty when every guarantee held).
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub summary: Summary,
    pub violations: BTreeMap<&'static str, usize>,
    pub evidence: String,
}

/// Runs every check of [`check_rows`] without failing, for a caller that counts the
/// violations (the soak's report) instead of stopping at the first failed scenario.
pub fn judge(report: &LoadReport, rows: &[StoredRow]) -> Verdict {
    let world = World::new(report, rows);
    let mut summary = world.summary();
    let checks: [(&'static str, Vec<String>); 10] = [
        ("every-send-acked", world.every_send_acked()),
        ("failures-expected", world.failures_expected()),
        ("acked-stored", world.acked_stored()),
        ("stored-once", world.stored_once()),
        ("seq-contiguous", world.seq_contiguous()),
        ("ack-order", world.ack_order()),
        ("stayed-delivery", world.stayed_delivery(&mut summary)),
        ("reconnect-sync", world.reconnect_sync(&mut summary)),
        ("driver-consistent", world.driver_consistent()),
        ("replies", world.replies()),
    ];
    let mut verdict = Verdict::default();
    for (name, violations) in &checks {
        summary.results.push((name, violations.is_empty()));
        verdict.violations.insert(name, violations.len());
        if violations.is_empty() {
            continue;
        }
        let _ = writeln!(
            verdict.evidence,
            "{name}: {} violation(s)",
            violations.len()
        );
        for v in violations.iter().take(EVIDENCE_PER_CHECK) {
            let _ = writeln!(verdict.evidence, "  - {v}");
        }
    }
    verdict.summary = summary;
    verdict
}

/// Reads the rows of every conversation of `report` (what [`check`] judges).
pub async fn stored_rows(report: &LoadReport, pool: &PgPool) -> Result<Vec<StoredRow>> {
    let conversations: Vec<uuid::Uuid> = conversations(report).iter().map(|c| c.0).collect();
    Ok(sqlx::query_as(
        "SELECT id, conversation_id, user_id, client_message_id, seq, content, status, version_of
         FROM messages WHERE conversation_id = ANY($1)",
    )
    .bind(conversations)
    .fetch_all(pool)
    .await?)
}

/// §7.3/§7.5: per conversation, `seq` order equals the order JetStream accepted the
/// messages in (the MESSAGES stream), through crashes and hand-overs. Reads the whole
/// stream (a test's stream is small) and compares with the stored seqs; returns how many
/// stored messages were placed.
pub async fn check_stream_order(
    pool: &PgPool,
    js: &async_nats::jetstream::Context,
    conversations: &[ConversationId],
) -> Result<usize> {
    let StreamOrder {
        placed,
        inversions,
        moved,
    } = stream_order(pool, js, conversations).await?;
    println!(
        "stream-order: {placed} stored messages placed in the stream, {} inversion(s), \
         {} read from a position that holds another message now",
        inversions.len(),
        moved.len()
    );
    if !inversions.is_empty() {
        let shown: Vec<&str> = inversions
            .iter()
            .take(EVIDENCE_PER_CHECK)
            .map(String::as_str)
            .collect();
        bail!(
            "seq order differs from stream order ({} inversion(s)):\n  - {}",
            inversions.len(),
            shown.join("\n  - ")
        );
    }
    Ok(placed)
}

/// How the stored seqs compare with the stream's order.
#[derive(Clone, Debug, Default)]
pub struct StreamOrder {
    /// Stored messages found in the stream.
    pub placed: usize,
    /// One line per pair of consecutive messages of a conversation whose seqs disagree
    /// with their stream order.
    pub inversions: Vec<String>,
    /// One line per stored message whose recorded stream position (`stream_seq`, where
    /// the persister read it) holds another message in the stream now, or none: the
    /// stream changed under the persister (replicas that diverged, a rewritten tail).
    pub moved: Vec<String>,
}

/// How often, and after what pause, reading the stream is tried again when the server
/// does not answer a fetch (a consumer leader still being elected).
const STREAM_READ_RETRIES: u32 = 20;
const STREAM_READ_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// The comparison of [`check_stream_order`], without failing on an inversion.
pub async fn stream_order(
    pool: &PgPool,
    js: &async_nats::jetstream::Context,
    conversations: &[ConversationId],
) -> Result<StreamOrder> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    use futures::StreamExt;
    let ids: Vec<uuid::Uuid> = conversations.iter().map(|c| c.0).collect();
    let stored: Vec<(MessageId, ConversationId, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, conversation_id, seq, stream_seq FROM messages
         WHERE conversation_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    // Per message id: its conversation, its seq, and where the persister read it.
    let stored: HashMap<String, (ConversationId, i64, Option<i64>)> = stored
        .into_iter()
        .map(|(id, c, seq, read_from)| (id.to_string(), (c, seq, read_from)))
        .collect();
    // Every position's message id, to tell whether a stored message's position changed.
    let mut at_position: HashMap<u64, String> = HashMap::new();
    let stream = js
        .get_stream(coachwire_shared::subjects::MESSAGES_STREAM)
        .await?;
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await?;
    // Per conversation: (stream sequence, stored seq, message id) in stream order.
    let mut order: HashMap<ConversationId, Vec<(u64, i64, String)>> = HashMap::new();
    let mut seen = HashSet::new();
    let mut unanswered = 0;
    loop {
        let mut batch = consumer.fetch().max_messages(1000).messages().await?;
        let mut n = 0;
        let mut refused = false;
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(message) => message,
                // Right after a node of the cluster came back, the new consumer's leader
                // may not answer yet (503): fetch again; what came is kept.
                Err(_) if unanswered < STREAM_READ_RETRIES => {
                    unanswered += 1;
                    refused = true;
                    break;
                }
                Err(e) => anyhow::bail!("reading the stream: {e}"),
            };
            n += 1;
            let stream_seq = message
                .info()
                .map_err(|e| anyhow::anyhow!("stream message info: {e}"))?
                .stream_sequence;
            let Some(id) = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_string())
            else {
                continue;
            };
            at_position.insert(stream_seq, id.clone());
            if let Some((conversation, seq, _)) = stored.get(&id)
                && seen.insert(id.clone())
            {
                order
                    .entry(*conversation)
                    .or_default()
                    .push((stream_seq, *seq, id));
            }
        }
        if refused {
            tokio::time::sleep(STREAM_READ_PAUSE).await;
        } else if n == 0 {
            break;
        }
    }
    let mut evidence = Vec::new();
    for (conversation, entries) in &order {
        for pair in entries.windows(2) {
            let ((s1, q1, id1), (s2, q2, id2)) = (&pair[0], &pair[1]);
            if q1 >= q2 {
                let (r1, r2) = (read_position(&stored, id1), read_position(&stored, id2));
                evidence.push(format!(
                    "{conversation}: stream #{s1} ({id1}, read from #{r1}) stored as seq {q1}, \
                     later stream #{s2} ({id2}, read from #{r2}) as seq {q2}"
                ));
            }
        }
    }
    let mut moved: Vec<String> = stored
        .iter()
        .filter_map(|(id, (_, _, position))| {
            let position = u64::try_from((*position)?).ok()?;
            let now = at_position.get(&position);
            (now != Some(id)).then(|| {
                let now = now.map_or("nothing", String::as_str);
                format!("{id} was read from stream #{position}, which holds {now} now")
            })
        })
        .collect();
    moved.sort();
    Ok(StreamOrder {
        placed: order.values().map(Vec::len).sum(),
        inversions: evidence,
        moved,
    })
}

/// Where the persister read a stored message (its `stream_seq`), for evidence.
fn read_position(stored: &HashMap<String, (ConversationId, i64, Option<i64>)>, id: &str) -> String {
    match stored.get(id) {
        Some((_, _, Some(position))) => position.to_string(),
        _ => "?".into(),
    }
}

/// Polls (bounded) until the test conversations hold at least `acked` messages (streamed
/// replies, whose writers count none of theirs as sent, aside).
pub async fn wait_until_stored(
    pool: &PgPool,
    conversations: &[ConversationId],
    acked: u64,
    within: Duration,
) -> Result<()> {
    let stored = poll_count(
        pool,
        conversations,
        "SELECT count(*) FROM messages
         WHERE conversation_id = ANY($1) AND version_of IS NULL AND type <> 'ai'",
        |n| n >= acked,
        within,
    )
    .await?;
    if stored < acked {
        eprintln!("only {stored} of {acked} acked messages stored within {within:?}");
    }
    Ok(())
}

/// Polls (bounded) until no reply of the test conversations is `streaming` (§14 rule 3),
/// then returns each conversation's highest seq: the target the sockets must settle to.
pub async fn wait_until_ended(
    pool: &PgPool,
    conversations: &[ConversationId],
    within: Duration,
) -> Result<HashMap<ConversationId, i64>> {
    let streaming = poll_count(
        pool,
        conversations,
        "SELECT count(*) FROM messages WHERE conversation_id = ANY($1) AND status = 'streaming'",
        |n| n == 0,
        within,
    )
    .await?;
    if streaming > 0 {
        eprintln!("{streaming} replies still streaming after {within:?}");
    }
    let ids: Vec<uuid::Uuid> = conversations.iter().map(|c| c.0).collect();
    let last: Vec<(ConversationId, i64)> = sqlx::query_as(
        "SELECT conversation_id, max(seq) FROM messages WHERE conversation_id = ANY($1)
         GROUP BY conversation_id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut last: HashMap<ConversationId, i64> = last.into_iter().collect();
    for c in conversations {
        last.entry(*c).or_insert(0);
    }
    Ok(last)
}

/// Runs the count `sql` over the conversations every 200 ms until `done` holds of it or
/// `within` passes; returns the last count.
async fn poll_count(
    pool: &PgPool,
    conversations: &[ConversationId],
    sql: &'static str,
    done: impl Fn(u64) -> bool,
    within: Duration,
) -> Result<u64> {
    let ids: Vec<uuid::Uuid> = conversations.iter().map(|c| c.0).collect();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n: i64 = sqlx::query_scalar(sql).bind(&ids).fetch_one(pool).await?;
        let n = u64::try_from(n).unwrap_or(0);
        if done(n) || tokio::time::Instant::now() >= deadline {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every conversation a client or message of the report belongs to.
fn conversations(report: &LoadReport) -> BTreeSet<ConversationId> {
    report
        .clients
        .iter()
        .map(|c| c.conversation_id)
        .chain(report.messages.iter().map(|m| m.conversation_id))
        .collect()
}

/// The report and the rows, indexed for the checks.
struct World<'a> {
    report: &'a LoadReport,
    rows: &'a [StoredRow],
    by_id: HashMap<MessageId, &'a StoredRow>,
    by_cmid: HashMap<(UserId, ClientMessageId), Vec<&'a StoredRow>>,
    sent: HashMap<(UserId, ClientMessageId), &'a SentMessage>,
    replies: HashMap<(UserId, ClientMessageId), &'a SentReply>,
    /// Later versions by the message they are versions of.
    versions: HashMap<MessageId, Vec<&'a StoredRow>>,
    /// Per conversation: seq → row (the last one wins if seq repeats; seq-contiguous says so).
    by_seq: HashMap<ConversationId, BTreeMap<i64, &'a StoredRow>>,
}

impl<'a> World<'a> {
    fn new(report: &'a LoadReport, rows: &'a [StoredRow]) -> Self {
        let mut by_cmid: HashMap<_, Vec<_>> = HashMap::new();
        let mut by_seq: HashMap<_, BTreeMap<_, _>> = HashMap::new();
        let mut versions: HashMap<_, Vec<_>> = HashMap::new();
        for row in rows {
            // A later version carries its message's clientMessageId: it is no second copy.
            match (row.version_of, row.client_message_id) {
                (Some(of), _) => versions.entry(of).or_default().push(row),
                (None, Some(cmid)) => by_cmid.entry((row.user_id, cmid)).or_default().push(row),
                (None, None) => {}
            }
            by_seq
                .entry(row.conversation_id)
                .or_default()
                .insert(row.seq, row);
        }
        for c in conversations(report) {
            by_seq.entry(c).or_default();
        }
        Self {
            report,
            rows,
            by_id: rows.iter().map(|r| (r.id, r)).collect(),
            by_cmid,
            sent: report
                .messages
                .iter()
                .map(|m| ((m.user_id, m.client_message_id), m))
                .collect(),
            replies: report
                .replies
                .iter()
                .map(|r| ((r.user_id, r.client_message_id), r))
                .collect(),
            versions,
            by_seq,
        }
    }

    fn summary(&self) -> Summary {
        let mut codes = BTreeMap::new();
        let mut retries = 0;
        for m in &self.report.messages {
            retries += m.attempts.len().saturating_sub(1);
            for (_, outcome) in &m.attempts {
                *codes.entry(outcome.clone()).or_insert(0) += 1;
            }
        }
        Summary {
            sent: self.report.messages.len(),
            acked: self
                .report
                .messages
                .iter()
                .filter(|m| m.id.is_some())
                .count(),
            retries,
            codes,
            duplicates_acked: self
                .report
                .messages
                .iter()
                .filter(|m| m.duplicate == Some(true))
                .count(),
            stored: self.rows.len(),
            conversations: self.by_seq.len(),
            stayed: self
                .report
                .clients
                .iter()
                .filter(|c| c.stayed_joined)
                .count(),
            reconnected: self.report.clients.iter().filter(|c| c.reconnected).count(),
            ..Default::default()
        }
    }

    /// A client retries until success, so after the fault every send must end acked.
    fn every_send_acked(&self) -> Vec<String> {
        self.report
            .messages
            .iter()
            .filter(|m| m.id.is_none())
            .map(|m| {
                format!(
                    "{} ({} of {}) never acked: first sent at {:?}, attempts {:?}",
                    m.client_message_id, m.content, m.conversation_id, m.first_send_at, m.attempts
                )
            })
            .collect()
    }

    /// §4/§7.5: a failed send says UNAVAILABLE (or never answers), never another code.
    fn failures_expected(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.report.messages {
            for (at, outcome) in &m.attempts {
                let fine = outcome == "ok"
                    || outcome == "duplicate"
                    || EXPECTED_FAILURES.contains(&outcome.as_str());
                if !fine {
                    out.push(format!(
                        "{} ({}) attempt at {at} ms answered {outcome}",
                        m.client_message_id, m.content
                    ));
                }
            }
        }
        out
    }

    /// §7.1: every success-acked message is a row with the acked id, conversation, user
    /// and clientMessageId (and the ack's seq, when the ack carried one).
    fn acked_stored(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.report.messages {
            let Some(id) = m.id else { continue };
            let Some(row) = self.by_id.get(&id) else {
                out.push(format!(
                    "acked {id} (cmid {}, {}, conversation {}, acked at {:?} ms) is not stored",
                    m.client_message_id, m.content, m.conversation_id, m.ack_at
                ));
                continue;
            };
            if row.conversation_id != m.conversation_id
                || row.user_id != m.user_id
                || row.client_message_id != Some(m.client_message_id)
            {
                out.push(format!(
                    "acked {id} stored as conversation {} user {} cmid {:?}, sent as {} {} {}",
                    row.conversation_id,
                    row.user_id,
                    row.client_message_id,
                    m.conversation_id,
                    m.user_id,
                    m.client_message_id
                ));
            }
            if m.ack_seq.is_some_and(|s| s != row.seq) {
                out.push(format!(
                    "ack of {id} said seq {:?}, stored seq {}",
                    m.ack_seq, row.seq
                ));
            }
        }
        out
    }

    /// §7.1/§7.2: at most one row per (user, clientMessageId), and every row of the test
    /// conversations is a message a client sent, with the content it sent.
    fn stored_once(&self) -> Vec<String> {
        let mut out = Vec::new();
        for ((user, cmid), rows) in &self.by_cmid {
            if rows.len() > 1 {
                let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
                out.push(format!(
                    "user {user} cmid {cmid} stored {} times (seqs {seqs:?})",
                    rows.len()
                ));
            }
        }
        for row in self.rows {
            // Streamed replies and their versions are the `replies` check's.
            if row
                .version_of
                .is_some_and(|of| self.by_id.contains_key(&of))
                || row
                    .client_message_id
                    .is_some_and(|cmid| self.replies.contains_key(&(row.user_id, cmid)))
            {
                continue;
            }
            let sent = row
                .client_message_id
                .and_then(|cmid| self.sent.get(&(row.user_id, cmid)));
            match sent {
                None => out.push(format!(
                    "row {} (seq {} of {}) was not sent by any client (cmid {:?})",
                    row.id, row.seq, row.conversation_id, row.client_message_id
                )),
                Some(m) if m.content != row.content || m.conversation_id != row.conversation_id => {
                    out.push(format!(
                        "row {} holds {:?} in {}, client sent {:?} to {}",
                        row.id, row.content, row.conversation_id, m.content, m.conversation_id
                    ))
                }
                Some(_) => {}
            }
        }
        out
    }

    /// §7.3: seq is 1..n per conversation with no gap or repeat.
    fn seq_contiguous(&self) -> Vec<String> {
        let mut seqs: HashMap<ConversationId, Vec<i64>> = HashMap::new();
        for row in self.rows {
            seqs.entry(row.conversation_id).or_default().push(row.seq);
        }
        let mut out = Vec::new();
        for (conversation, mut seqs) in seqs {
            seqs.sort_unstable();
            for (expected, (i, seq)) in (1..).zip(seqs.iter().enumerate()) {
                if *seq != expected {
                    let around = &seqs[i.saturating_sub(2)..(i + 3).min(seqs.len())];
                    let what = if *seq < expected { "repeat" } else { "gap" };
                    out.push(format!(
                        "{conversation}: {what} at seq {seq}, expected {expected} (around {around:?})"
                    ));
                    break;
                }
            }
        }
        out
    }

    /// §7.3: if A's success ack arrived before B was first sent (same conversation),
    /// seq(A) < seq(B).
    fn ack_order(&self) -> Vec<String> {
        let mut per_conversation: HashMap<ConversationId, Vec<&SentMessage>> = HashMap::new();
        for m in &self.report.messages {
            per_conversation
                .entry(m.conversation_id)
                .or_default()
                .push(m);
        }
        let mut out = Vec::new();
        for (conversation, messages) in per_conversation {
            let seq_of = |m: &SentMessage| {
                self.by_cmid
                    .get(&(m.user_id, m.client_message_id))
                    .and_then(|rows| rows.first())
                    .map(|r| r.seq)
            };
            // Acked messages by ack time, with the running maximum seq and who holds it.
            let mut acked: Vec<(f64, i64, &SentMessage)> = messages
                .iter()
                .filter_map(|m| Some((m.ack_at?, seq_of(m)?, *m)))
                .collect();
            acked.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut running: Vec<(f64, i64, &SentMessage)> = Vec::with_capacity(acked.len());
            for (at, seq, m) in acked {
                let best = match running.last() {
                    Some(&(_, best_seq, best_m)) if best_seq > seq => (at, best_seq, best_m),
                    _ => (at, seq, m),
                };
                running.push(best);
            }
            for b in &messages {
                let (Some(sent_at), Some(seq_b)) = (b.first_send_at, seq_of(b)) else {
                    continue;
                };
                // Acks that arrived strictly before B's first send.
                let n = running.partition_point(|(at, _, _)| *at < sent_at);
                let Some(&(_, seq_a, a)) = n.checked_sub(1).map(|i| &running[i]) else {
                    continue;
                };
                if seq_a >= seq_b {
                    out.push(format!(
                        "{conversation}: {} ({}) acked at {:?} ms has seq {seq_a}, but {} ({}) \
                         first sent later at {sent_at} ms has seq {seq_b}",
                        a.client_message_id, a.content, a.ack_at, b.client_message_id, b.content
                    ));
                }
            }
        }
        out
    }

    /// §7.4: a socket that stayed joined got every later message exactly once, in order:
    /// its `message` and `message_delivered` events, in arrival order, are exactly
    /// `lastSeq+1 ..= n` with the stored ids.
    fn stayed_delivery(&self, summary: &mut Summary) -> Vec<String> {
        let mut out = Vec::new();
        for client in self.report.clients.iter().filter(|c| c.stayed_joined) {
            let stored = &self.by_seq[&client.conversation_id];
            let last = stored.keys().next_back().copied().unwrap_or(0);
            let from = client.first_join_last_seq.unwrap_or(0);
            if client.first_join_last_seq.is_none() {
                out.push(format!("{} never joined", client.name));
                continue;
            }
            let own: HashSet<ClientMessageId> = self
                .report
                .messages
                .iter()
                .filter(|m| m.client == client.name)
                .map(|m| m.client_message_id)
                .collect();
            let mut expected = from + 1;
            let mut problem = None;
            for event in foreign_and_own(client, &mut out) {
                let Some(seq) = event.1 else {
                    problem = Some(format!("event without seq: {event:?}"));
                    break;
                };
                if seq <= from {
                    continue;
                }
                if seq != expected {
                    let what = if seq < expected {
                        "repeat or out of order"
                    } else {
                        "gap"
                    };
                    problem = Some(format!(
                        "{what}: got seq {seq} (kind {}) when expecting {expected}, at {} ms",
                        event.0, event.4
                    ));
                    break;
                }
                match stored.get(&seq) {
                    Some(row) if event.2.is_some_and(|id| row.is_event_of(id)) => {
                        if !event.is_delivered()
                            && row.client_message_id.is_some_and(|c| own.contains(&c))
                        {
                            summary.own_as_message += 1;
                        }
                    }
                    row => {
                        problem = Some(format!(
                            "seq {seq} delivered as {:?}, stored as {:?}",
                            event.2,
                            row.map(|r| r.id)
                        ));
                        break;
                    }
                }
                summary.deliveries_checked += 1;
                expected += 1;
            }
            if problem.is_none() && expected <= last {
                problem = Some(format!(
                    "missing seq {expected}..={last} (nothing after seq {})",
                    expected - 1
                ));
            }
            if let Some(problem) = problem {
                out.push(format!(
                    "{} (stayed joined, {}, join lastSeq {from}, {} events): {problem}",
                    client.name,
                    client.conversation_id,
                    client.events.len()
                ));
            }
        }
        out
    }

    /// §7.4: a socket that reconnected and synced holds every seq after its first join's
    /// lastSeq, by events or sync (repeats by seq are tolerated: sync overlaps events).
    fn reconnect_sync(&self, summary: &mut Summary) -> Vec<String> {
        let mut out = Vec::new();
        for client in self.report.clients.iter().filter(|c| !c.stayed_joined) {
            if !client.reconnected {
                out.push(format!(
                    "{} was disconnected ({:?}) and never joined again",
                    client.name, client.disconnects
                ));
                continue;
            }
            let stored = &self.by_seq[&client.conversation_id];
            let last = stored.keys().next_back().copied().unwrap_or(0);
            let from = client.first_join_last_seq.unwrap_or(0);
            let mut seen: BTreeMap<i64, MessageId> = BTreeMap::new();
            let received = foreign_and_own(client, &mut out)
                .filter_map(|e| Some((e.1?, e.2?)))
                .chain(client.synced.iter().copied());
            for (seq, id) in received {
                if let Some(row) = stored.get(&seq)
                    && !row.is_event_of(id)
                {
                    out.push(format!(
                        "{}: seq {seq} received as {id}, stored as {}",
                        client.name, row.id
                    ));
                }
                seen.insert(seq, id);
            }
            let missing: Vec<i64> = (from + 1..=last)
                .filter(|s| !seen.contains_key(s))
                .collect();
            summary.synced_checked += (from + 1..=last).count();
            if !missing.is_empty() {
                out.push(format!(
                    "{} (reconnected at {:?} ms, {}, join lastSeq {from}) misses {} seqs: {}",
                    client.name,
                    client.reconnected_at,
                    client.conversation_id,
                    missing.len(),
                    ranges(&missing)
                ));
            }
        }
        out
    }

    /// The driver itself noticed a contradiction (e.g. two acks with different ids).
    fn driver_consistent(&self) -> Vec<String> {
        self.report
            .clients
            .iter()
            .flat_map(|c| c.errors.iter().map(move |e| (c, e)))
            .filter(|(_, e)| e["what"] == "ack id changed")
            .map(|(c, e)| format!("{}: {e}", c.name))
            .collect()
    }
}

/// The client's events, after noting any that belong to another conversation.
fn foreign_and_own<'c>(
    client: &'c ClientRecord,
    out: &mut Vec<String>,
) -> impl Iterator<Item = &'c crate::load::Received> + use<'c> {
    for e in &client.events {
        if e.3.is_some_and(|c| c != client.conversation_id) {
            out.push(format!(
                "{} of {} received an event of {:?}: {e:?}",
                client.name, client.conversation_id, e.3
            ));
        }
    }
    client
        .events
        .iter()
        .filter(|e| e.3.is_none_or(|c| c == client.conversation_id))
}

/// `[1, 2, 3, 7, 9, 10]` → `"1..=3, 7, 9..=10"`, so evidence stays short.
fn ranges(seqs: &[i64]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let start = seqs[i];
        while i + 1 < seqs.len() && seqs[i + 1] == seqs[i] + 1 {
            i += 1;
        }
        parts.push(if seqs[i] == start {
            start.to_string()
        } else {
            format!("{start}..={}", seqs[i])
        });
        i += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Join, Progress, Received};
    use uuid::Uuid;

    /// A conversation where alice sent 1..=n (acked in order, 10 ms apart) and bob stayed
    /// joined and received all of them, stored as seq 1..=n.
    struct Case {
        report: LoadReport,
        rows: Vec<StoredRow>,
    }

    fn case(n: i64) -> Case {
        let conversation = ConversationId(Uuid::new_v4());
        let (alice, bob) = (UserId(Uuid::new_v4()), UserId(Uuid::new_v4()));
        let mut messages = Vec::new();
        let mut rows = Vec::new();
        let mut alice_events = Vec::new();
        let mut bob_events = Vec::new();
        for seq in 1..=n {
            let cmid = ClientMessageId(Uuid::new_v4());
            let id = MessageId::derive(alice, cmid);
            let t = seq as f64 * 10.0;
            messages.push(SentMessage {
                client_message_id: cmid,
                client: "alice".into(),
                user_id: alice,
                conversation_id: conversation,
                content: format!("alice-{seq}"),
                created_at: Some(t),
                first_send_at: Some(t),
                attempts: vec![(t + 5.0, "ok".into())],
                id: Some(id),
                duplicate: Some(false),
                ack_at: Some(t + 5.0),
                ack_seq: None,
                in_flight: false,
            });
            rows.push(StoredRow {
                id,
                conversation_id: conversation,
                user_id: alice,
                client_message_id: Some(cmid),
                seq,
                content: format!("alice-{seq}"),
                status: "complete".into(),
                version_of: None,
            });
            alice_events.push(Received(
                "d".into(),
                Some(seq),
                Some(id),
                Some(conversation),
                t + 6.0,
            ));
            bob_events.push(Received(
                "m".into(),
                Some(seq),
                Some(id),
                Some(conversation),
                t + 6.0,
            ));
        }
        let client = |name: &str, user, events| ClientRecord {
            name: name.into(),
            user_id: user,
            conversation_id: conversation,
            first_join_last_seq: Some(0),
            joins: vec![Join {
                at: 0.0,
                last_seq: 0,
                url: "http://x".into(),
            }],
            stayed_joined: true,
            reconnected: false,
            reconnected_at: vec![],
            disconnects: vec![],
            events,
            synced: vec![],
            errors: vec![],
        };
        Case {
            report: LoadReport {
                timed_out: false,
                settle_ms: 0.0,
                counts: Progress::default(),
                clients: vec![
                    client("alice", alice, alice_events),
                    client("bob", bob, bob_events),
                ],
                messages,
                replies: vec![],
            },
            rows,
        }
    }

    fn failing_check(case: &Case) -> String {
        let err = check_rows(&case.report, &case.rows).expect_err("a violation");
        format!("{err:#}")
    }

    #[test]
    fn a_clean_report_passes_every_check() {
        let case = case(20);
        let summary = check_rows(&case.report, &case.rows).expect("clean");
        assert_eq!(summary.deliveries_checked, 40);
        assert!(summary.results.iter().all(|(_, ok)| *ok), "{summary}");
    }

    #[test]
    fn a_missing_seq_is_a_gap() {
        let mut case = case(10);
        case.rows.retain(|r| r.seq != 4);
        let err = failing_check(&case);
        assert!(err.contains("seq-contiguous: 1"), "{err}");
        assert!(err.contains("gap at seq 5, expected 4"), "{err}");
        assert!(err.contains("acked-stored: 1"), "{err}");
    }

    #[test]
    fn a_repeated_seq_is_reported() {
        let mut case = case(5);
        let mut again = case.rows[2].clone();
        again.id = MessageId(Uuid::new_v4());
        case.rows.push(again);
        let err = failing_check(&case);
        assert!(err.contains("repeat at seq 3"), "{err}");
        assert!(err.contains("stored 2 times"), "{err}");
    }

    #[test]
    fn an_out_of_order_delivery_is_reported() {
        let mut case = case(6);
        case.report.clients[1].events.swap(2, 3);
        let err = failing_check(&case);
        assert!(err.contains("stayed-delivery: 1"), "{err}");
        assert!(
            err.contains("bob (stayed joined") && err.contains("gap: got seq 4"),
            "{err}"
        );
    }

    #[test]
    fn a_delivery_seen_twice_is_reported() {
        let mut case = case(6);
        let again = case.report.clients[1].events[2].clone();
        case.report.clients[1].events.insert(3, again);
        let err = failing_check(&case);
        assert!(err.contains("repeat or out of order: got seq 3"), "{err}");
    }

    #[test]
    fn a_lost_tail_delivery_is_reported() {
        let mut case = case(6);
        case.report.clients[1].events.pop();
        let err = failing_check(&case);
        assert!(err.contains("missing seq 6..=6"), "{err}");
    }

    #[test]
    fn an_acked_message_that_is_not_stored_is_reported() {
        let mut case = case(5);
        let last = case.rows.pop().expect("row");
        case.report.clients.iter_mut().for_each(|c| {
            c.events.pop();
        });
        let err = failing_check(&case);
        assert!(err.contains("acked-stored: 1"), "{err}");
        assert!(
            err.contains(&format!("acked {} ", last.id)) && err.contains("is not stored"),
            "{err}"
        );
    }

    #[test]
    fn a_false_success_code_or_unacked_send_is_reported() {
        let mut case = case(3);
        case.report.messages[0]
            .attempts
            .insert(0, (1.0, "INTERNAL".into()));
        case.report.messages[1].id = None;
        case.report.messages[1].ack_at = None;
        let err = failing_check(&case);
        assert!(err.contains("failures-expected: 1"), "{err}");
        assert!(err.contains("answered INTERNAL"), "{err}");
        assert!(err.contains("every-send-acked: 1"), "{err}");
    }

    #[test]
    fn a_seq_assigned_against_ack_order_is_reported() {
        let mut case = case(4);
        // Message 3 was first sent after message 2's ack, yet stored before it.
        case.rows[1].seq = 3;
        case.rows[2].seq = 2;
        let err = failing_check(&case);
        assert!(err.contains("ack-order"), "{err}");
        assert!(err.contains("alice-2") && err.contains("alice-3"), "{err}");
    }

    #[test]
    fn a_reconnected_socket_missing_a_seq_is_reported_and_sync_overlap_is_fine() {
        let mut case = case(8);
        let bob = &mut case.report.clients[1];
        bob.stayed_joined = false;
        bob.reconnected = true;
        bob.reconnected_at = vec![50.0];
        let tail: Vec<Received> = bob.events.drain(3..).collect();
        // Sync returned 3..=6 (3 overlaps an event), events then resumed at 8: 7 is lost.
        bob.synced = tail[..3]
            .iter()
            .chain(&bob.events[2..3])
            .map(|e| (e.1.expect("seq"), e.2.expect("id")))
            .collect();
        bob.events.push(tail[4].clone());
        let err = failing_check(&case);
        assert!(err.contains("reconnect-sync: 1"), "{err}");
        assert!(err.contains("misses 1 seqs: 7"), "{err}");
    }

    #[test]
    fn ranges_are_compact() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1..=3, 7, 9..=10");
        assert_eq!(ranges(&[]), "");
    }
}
