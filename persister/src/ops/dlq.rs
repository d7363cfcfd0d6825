//! `dlq list | retry | drop`: the dead letters ([`super::entries`]), listed and re-driven.
//!
//! `retry` goes through the service's own store path, so a retried message gets the next
//! `seq` of its conversation, exactly as if it had arrived now. Each entry ends one of two
//! ways, and the old entry is removed only after the new state is durable: stored (and its
//! persisted event published for the fanout), or dead-lettered again with its new reason.

use super::connect;
use super::entries::{Entry, EntryRef, Listed, read_entries};
use super::error::{Doing, OpsError};
use super::output::{Output, Report};
use super::retry::Retries;
use crate::nats::{Author, dead_letter, publish_persisted};
use crate::store::{Fault, Incoming, StoreError, Stored, store_batch};
use async_nats::jetstream::{self, stream::Stream};
use coachwire_shared::envelope::PersistedEvent;
use coachwire_shared::settings::CommonSettings;
use coachwire_shared::subjects::DEAD_LETTER_STREAM;
use serde::Serialize;
use sqlx::PgPool;

/// Entries `dlq list` prints unless `--limit` says otherwise: a screenful, since a long
/// dead-letter stream is a symptom to investigate, not a list to read whole.
const DEFAULT_LIST_LIMIT: usize = 100;

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// Lists dead letters, oldest first. Needs only NATS.
    List {
        /// At most this many entries (oldest first).
        #[arg(long, default_value_t = DEFAULT_LIST_LIMIT)]
        limit: usize,
        #[command(flatten)]
        output: Output,
    },
    /// Stores dead letters through the normal store path.
    ///
    /// A stored one leaves the dead letters (and its persisted event is published); one
    /// that fails again stays, with its new reason. Every ID must name an entry: if one
    /// does not, nothing is retried. A database fault (rather than the message's) is
    /// retried for about 15 s, then stops the run after that entry (exit 1).
    Retry {
        /// Message ids (UUID) or original stream sequences (integer).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<EntryRef>,
        /// Retry every dead letter.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Removes dead letters for good.
    ///
    /// Every ID must name an entry: if one does not, nothing is dropped.
    Drop {
        /// Message ids (UUID) or original stream sequences (integer).
        #[arg(required = true)]
        ids: Vec<EntryRef>,
        #[command(flatten)]
        output: Output,
    },
}

pub async fn run(command: DlqCommand, common: &CommonSettings) -> Result<(), OpsError> {
    let js = connect::nats(common).await?;
    let stream = js
        .get_stream(DEAD_LETTER_STREAM)
        .await
        .doing("opening the dead-letter stream")?;
    match command {
        DlqCommand::List { limit, output } => {
            let entries = read_entries(&stream, Some(limit)).await?;
            output.print(&ListReport {
                dead_letters: entries.iter().map(Entry::listed).collect(),
            })
        }
        DlqCommand::Retry { ids, all, output } => {
            let entries = select(&stream, &ids, all).await?;
            let pool = connect::postgres(common).await?;
            output.print(&retry(&js, &stream, &pool, entries).await?)
        }
        DlqCommand::Drop { ids, output } => {
            let entries = select(&stream, &ids, false).await?;
            for entry in &entries {
                delete(&stream, entry).await?;
            }
            output.print(&DropReport {
                dropped: entries.len(),
            })
        }
    }
}

/// The entries `ids` name (all with `all`); an ID that names none is an error, before
/// anything changed.
async fn select(stream: &Stream, ids: &[EntryRef], all: bool) -> Result<Vec<Entry>, OpsError> {
    let entries = read_entries(stream, None).await?;
    if all {
        return Ok(entries);
    }
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !entries.iter().any(|e| e.matches(**id)))
        .map(ToString::to_string)
        .collect();
    if !unknown.is_empty() {
        return Err(OpsError::Refused(format!(
            "no dead letter {}; nothing was changed",
            unknown.join(", ")
        )));
    }
    Ok(entries
        .into_iter()
        .filter(|e| ids.iter().any(|id| e.matches(*id)))
        .collect())
}

async fn retry(
    js: &jetstream::Context,
    stream: &Stream,
    pool: &PgPool,
    entries: Vec<Entry>,
) -> Result<RetryReport, OpsError> {
    let mut report = RetryReport::default();
    for entry in entries {
        report.retried += 1;
        let Some(envelope) = entry.envelope.clone() else {
            let reason = "undecodable payload".to_string();
            redead_letter(js, stream, &entry, &reason).await?;
            report.failed_again += 1;
            continue;
        };
        let incoming = [Incoming {
            stream_seq: entry.stream_seq,
            envelope,
        }];
        match store_one(pool, &incoming).await {
            Ok(stored) => {
                let events: Vec<_> = stored
                    .into_iter()
                    .map(|s| PersistedEvent::untraced(s.envelope))
                    .collect();
                publish_persisted(js, &events)
                    .await
                    .doing(format!("dead letter {}: stored, but", entry.id()))?;
                delete(stream, &entry).await?;
                report.stored += 1;
            }
            Err(e) => {
                redead_letter(js, stream, &entry, &e.to_string()).await?;
                report.failed_again += 1;
                if e.fault() == Fault::Database {
                    return Err(OpsError::Refused(format!(
                        "dead letter {} failed again for a database fault, so the rest were not tried: {e}",
                        entry.id()
                    )));
                }
            }
        }
    }
    Ok(report)
}

async fn store_one(pool: &PgPool, incoming: &[Incoming]) -> Result<Vec<Stored>, StoreError> {
    let mut retries = Retries::default();
    loop {
        match store_batch(pool, incoming).await {
            Ok(stored) => return Ok(stored),
            Err(e) if retries.again(&e).await => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Publishes a new entry with the new reason, then removes the old one: at worst (a crash
/// in between) the message is listed twice, never lost.
async fn redead_letter(
    js: &jetstream::Context,
    stream: &Stream,
    entry: &Entry,
    reason: &str,
) -> Result<(), OpsError> {
    dead_letter(
        js,
        Author::Operator,
        &entry.subject_conversation,
        entry.stream_seq,
        reason,
        entry.payload.clone(),
    )
    .await
    .doing(format!("dead-lettering {} again", entry.id()))?;
    delete(stream, entry).await
}

async fn delete(stream: &Stream, entry: &Entry) -> Result<(), OpsError> {
    stream
        .delete_message(entry.dlq_seq)
        .await
        .doing(format!("removing dead letter {}", entry.id()))?;
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListReport {
    dead_letters: Vec<Listed>,
}

impl Report for ListReport {
    fn summary(&self) -> String {
        if self.dead_letters.is_empty() {
            return "no dead letters".into();
        }
        self.dead_letters
            .iter()
            .map(|d| {
                let conversation = d
                    .conversation_id
                    .map_or_else(|| "unknown".to_string(), |c| c.to_string());
                format!(
                    "{} (stream seq {}, conversation {conversation}) failed at {}: {}",
                    d.id, d.stream_seq, d.failed_at, d.reason
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct RetryReport {
    retried: usize,
    stored: usize,
    failed_again: usize,
}

impl Report for RetryReport {
    fn summary(&self) -> String {
        format!(
            "retried {}: {} stored, {} failed again",
            self.retried, self.stored, self.failed_again
        )
    }
}

#[derive(Serialize)]
struct DropReport {
    dropped: usize,
}

impl Report for DropReport {
    fn summary(&self) -> String {
        format!("dropped {}", self.dropped)
    }
}
