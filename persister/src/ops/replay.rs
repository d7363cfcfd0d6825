//! `replay`: the `MESSAGES` stream, from a point, back into Postgres.
//!
//! For the day Postgres is restored from an older backup. Why the restored rows get the
//! same `seq` they had: `seq` is assigned per conversation in stream order by
//! `store::store_in`, and a consistent backup holds, per conversation, a stream-order prefix of
//! its rows. Replaying in stream order from before the first missing message therefore
//! finds the prefix already present (left alone: the store path reads rows back by id)
//! and hands the missing ones `last + 1, last + 2, …`, which are exactly their old seqs.
//!
//! Replay publishes no persisted events. The rows it restores were delivered to the rooms
//! when first stored. The rows it stores for the first time (accepted while the persisters
//! were stopped) are still unacked on the persisters' durable consumers: when the
//! persisters start, they take them, find them stored, and publish their persisted events
//! then — `Persister::finish` in `batch.rs` publishes an event for every stored message,
//! fresh or found present. That is what keeps the fanout from missing them; were it to
//! publish only fresh rows, these would never reach a room.
//!
//! It reads with an ephemeral ordered consumer and stops at the stream's last sequence as
//! of its start, so messages ingest accepts meanwhile are left to the persisters.

use super::connect;
use super::entries::read_entries;
use super::error::{Doing, OpsError};
use super::guard;
use super::output::{Output, Report};
use super::retry::Retries;
use super::writer::{ReplayWriter, WriteMode};
use crate::nats::{Author, dead_letter};
use crate::store::{Fault, Incoming, Row, StoreError, Stored};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::{self, Message};
use chrono::{DateTime, Utc};
use coachwire_shared::ids::ConversationId;
use coachwire_shared::settings::CommonSettings;
use coachwire_shared::subjects::{DEAD_LETTER_STREAM, MESSAGES_STREAM};
use futures::StreamExt;
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;

/// Messages per transaction, as the service's largest batch (`ConsumerTuning::max_batch`).
const MAX_BATCH: usize = 500;
/// How long to wait for the next message the consumer still owes before giving up: far
/// above any healthy delivery time, short enough that a stuck run ends with a reason.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    start: Start,
    /// Replay only this conversation's messages.
    #[arg(long, value_parser = parse_conversation)]
    conversation: Option<ConversationId>,
    /// Run the same store path in a transaction that is rolled back: exact counts, no
    /// change (nothing stored, nothing dead-lettered). It also runs while a persister
    /// consumes (rolling back each batch at once) and says what a real run would need.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    output: Output,
}

/// Where the replay starts: exactly one of the two.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Start {
    /// The first MESSAGES stream sequence to replay.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    from_stream_seq: Option<u64>,
    /// Replay the messages the stream stored at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
}

fn parse_conversation(s: &str) -> Result<ConversationId, String> {
    ConversationId::parse(s).ok_or_else(|| format!("{s:?} is not a conversation id (UUID)"))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReplayReport {
    scanned: u64,
    restored: u64,
    already_present: u64,
    dead_lettered: u64,
    from_stream_seq: u64,
    to_stream_seq: u64,
    /// What a real run would need first (a dry run beside a live persister).
    #[serde(skip_serializing_if = "Option::is_none")]
    real_run_needs: Option<String>,
    #[serde(skip)]
    dry_run: bool,
}

impl Report for ReplayReport {
    fn summary(&self) -> String {
        let rehearsal = match (self.dry_run, &self.real_run_needs) {
            (false, _) => String::new(),
            (true, None) => " (dry run: nothing was changed)".to_string(),
            (true, Some(needs)) => {
                format!(" (dry run: nothing was changed; a real run needs this: {needs})")
            }
        };
        format!(
            "replayed stream seq {}..={}: scanned {}, restored {}, already present {}, dead-lettered {}{rehearsal}",
            self.from_stream_seq,
            self.to_stream_seq,
            self.scanned,
            self.restored,
            self.already_present,
            self.dead_lettered
        )
    }
}

pub async fn run(args: ReplayArgs, common: &CommonSettings) -> Result<(), OpsError> {
    let js = connect::nats(common).await?;
    let stream = js
        .get_stream(MESSAGES_STREAM)
        .await
        .doing("opening the message stream")?;
    let persisters = guard::persisters(&stream).await?;
    let mode = match (args.dry_run, persisters.obstacle()) {
        (false, Some(obstacle)) => {
            return Err(OpsError::Refused(format!("refusing to replay: {obstacle}")));
        }
        (false, None) => WriteMode::Commit,
        (true, None) => WriteMode::Rehearse,
        (true, Some(_)) => WriteMode::RehearseEachBatch,
    };
    let pool = connect::postgres(common).await?;
    let state = stream
        .get_info()
        .await
        .doing("reading the message stream")?
        .state;
    if let Some(from) = args.start.from_stream_seq
        && from < state.first_sequence
    {
        tracing::warn!(
            from,
            first = state.first_sequence,
            "the stream no longer holds the messages before its first sequence"
        );
    }
    let dead_letters = js
        .get_stream(DEAD_LETTER_STREAM)
        .await
        .doing("opening the dead-letter stream")?;
    let already_dead = read_entries(&dead_letters, None)
        .await?
        .into_iter()
        .map(|e| e.stream_seq)
        .collect();
    let mut replay = Replay {
        js: js.clone(),
        writer: ReplayWriter::new(pool, mode).await?,
        already_dead,
        report: ReplayReport {
            from_stream_seq: args.start.from_stream_seq.unwrap_or(0),
            to_stream_seq: state.last_sequence,
            dry_run: args.dry_run,
            real_run_needs: persisters.obstacle(),
            ..Default::default()
        },
    };
    replay.read(&stream, &args).await?;
    replay.writer.finish().await?;
    if replay.report.from_stream_seq == 0 {
        // `--since` after the last message: an empty range.
        replay.report.from_stream_seq = state.last_sequence + 1;
    }
    args.output.print(&replay.report)
}

struct Replay {
    js: jetstream::Context,
    writer: ReplayWriter,
    /// Original stream sequences already in the dead letters: not added a second time.
    already_dead: HashSet<u64>,
    report: ReplayReport,
}

impl Replay {
    /// Feeds the stream, in order, from the start to `to_stream_seq` into [`Self::batch`].
    async fn read(
        &mut self,
        stream: &jetstream::stream::Stream,
        args: &ReplayArgs,
    ) -> Result<(), OpsError> {
        let to = self.report.to_stream_seq;
        let deliver_policy = match (args.start.from_stream_seq, args.start.since) {
            (Some(start_sequence), _) => DeliverPolicy::ByStartSequence { start_sequence },
            (None, Some(since)) => DeliverPolicy::ByStartTime {
                start_time: connect::from_chrono(since)?,
            },
            (None, None) => {
                return Err(OpsError::Refused(
                    "replay needs --from-stream-seq or --since".into(),
                ));
            }
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: args
                    .conversation
                    .map(|c| format!("coachwire.msg.p.*.{c}"))
                    .unwrap_or_default(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .doing("creating the replay consumer")?;
        if to == 0 || consumer.cached_info().num_pending == 0 {
            return Ok(());
        }
        let messages = consumer.messages().await.doing("reading the stream")?;
        let mut chunks = messages.ready_chunks(MAX_BATCH);
        loop {
            let chunk = tokio::time::timeout(STALL_TIMEOUT, chunks.next())
                .await
                .map_err(|_| {
                    OpsError::Refused(format!("no message from the stream for {STALL_TIMEOUT:?}"))
                })?
                .ok_or_else(|| OpsError::Refused("the stream ended early".into()))?;
            let mut batch = Vec::with_capacity(chunk.len());
            let mut done = false;
            for item in chunk {
                let message = item.doing("reading the stream")?;
                let info = message
                    .info()
                    .doing("reading a message's stream position")?;
                let (seq, pending) = (info.stream_sequence, info.pending);
                if seq > to {
                    done = true;
                    break;
                }
                if self.report.from_stream_seq == 0 {
                    self.report.from_stream_seq = seq;
                }
                batch.push((seq, message));
                if seq == to || pending == 0 {
                    done = true;
                    break;
                }
            }
            self.batch(batch).await?;
            if done {
                return Ok(());
            }
        }
    }

    /// One batch in stream order: decode, store, and isolate a batch that fails for its
    /// data message by message (as `batch.rs` does), so only the poison is dead-lettered.
    async fn batch(&mut self, messages: Vec<(u64, Message)>) -> Result<(), OpsError> {
        self.report.scanned += messages.len() as u64;
        let mut decoded = Vec::with_capacity(messages.len());
        for (seq, message) in messages {
            match Incoming::decode(seq, &message.payload) {
                Ok(incoming) => decoded.push((message, incoming)),
                Err(reason) => self.bury(&message, seq, &reason).await?,
            }
        }
        let incoming: Vec<Incoming> = decoded.iter().map(|(_, i)| i.clone()).collect();
        match self.store(&incoming).await {
            Ok(stored) => self.count(&stored),
            Err(e) if e.fault() == Fault::Message => {
                for (message, one) in &decoded {
                    match self.store(std::slice::from_ref(one)).await {
                        Ok(stored) => self.count(&stored),
                        Err(e) if e.fault() == Fault::Message => {
                            self.bury(message, one.stream_seq, &e.to_string()).await?
                        }
                        Err(e) => return Err(gave_up(one.stream_seq, one.stream_seq, e)),
                    }
                }
            }
            Err(e) => {
                let first = incoming.first().map_or(0, |i| i.stream_seq);
                let last = incoming.last().map_or(0, |i| i.stream_seq);
                return Err(gave_up(first, last, e));
            }
        }
        Ok(())
    }

    async fn store(&mut self, batch: &[Incoming]) -> Result<Vec<Stored>, StoreError> {
        let mut retries = Retries::default();
        loop {
            match self.writer.store(batch).await {
                Ok(stored) => return Ok(stored),
                Err(e) if retries.again(&e).await => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn count(&mut self, stored: &[Stored]) {
        let fresh = stored.iter().filter(|s| s.row == Row::New).count() as u64;
        self.report.restored += fresh;
        self.report.already_present += stored.len() as u64 - fresh;
    }

    /// Dead-letters a message that cannot be stored (not in a dry run, and not twice).
    async fn bury(&mut self, message: &Message, seq: u64, reason: &str) -> Result<(), OpsError> {
        self.report.dead_lettered += 1;
        if self.report.dry_run || !self.already_dead.insert(seq) {
            return Ok(());
        }
        tracing::warn!(stream_seq = seq, reason, "dead-lettering a message");
        let conversation = message
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .unwrap_or("unknown");
        dead_letter(
            &self.js,
            Author::Operator,
            conversation,
            seq,
            reason,
            message.payload.clone(),
        )
        .await
        .doing(format!("dead-lettering stream seq {seq}"))?;
        Ok(())
    }
}

fn gave_up(first: u64, last: u64, e: StoreError) -> OpsError {
    OpsError::Step {
        doing: format!("storing stream seq {first}..={last} kept failing (a database fault)"),
        cause: e.into(),
    }
}
