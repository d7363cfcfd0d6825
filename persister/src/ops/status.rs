//! `status`: how far behind the consumers are and how much waits in each stream.
//!
//! Lag in seconds is the age of the oldest message a consumer has not finished: the first
//! message matching its filter after its ack floor. That is what an operator asks ("how
//! stale is Postgres?"), and unlike a pending count it grows while a consumer is stuck.

use super::connect;
use super::error::{Doing, OpsError};
use super::output::{Output, Report};
use async_nats::jetstream::consumer::Info as ConsumerInfo;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use chrono::Utc;
use coachwire_shared::settings::CommonSettings;
use coachwire_shared::subjects::{
    DEAD_LETTER_STREAM, FANOUT_CONSUMER, MESSAGES_STREAM, PARTITIONS, PERSISTED_STREAM,
    persister_consumer,
};
use serde::Serialize;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    output: Output,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusReport {
    streams: Vec<StreamStatus>,
    consumers: Vec<ConsumerStatus>,
    dead_letters: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StreamStatus {
    name: String,
    messages: u64,
    first_seq: u64,
    last_seq: u64,
    bytes: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConsumerStatus {
    name: String,
    stream: String,
    pending: u64,
    ack_pending: u64,
    redelivered: u64,
    lag_messages: u64,
    lag_seconds: f64,
}

pub async fn run(args: StatusArgs, common: &CommonSettings) -> Result<(), OpsError> {
    let js = connect::nats(common).await?;
    let mut streams = Vec::new();
    let mut dead_letters = 0;
    for name in [MESSAGES_STREAM, PERSISTED_STREAM, DEAD_LETTER_STREAM] {
        let stream = js
            .get_stream(name)
            .await
            .doing(format!("opening stream {name}"))?;
        let state = stream
            .get_info()
            .await
            .doing(format!("reading stream {name}"))?
            .state;
        if name == DEAD_LETTER_STREAM {
            dead_letters = state.messages;
        }
        streams.push(StreamStatus {
            name: name.to_string(),
            messages: state.messages,
            first_seq: state.first_sequence,
            last_seq: state.last_sequence,
            bytes: state.bytes,
        });
    }
    let mut consumers = Vec::new();
    let persisters = (0..PARTITIONS).map(|p| (MESSAGES_STREAM, persister_consumer(p)));
    let fanout = std::iter::once((PERSISTED_STREAM, FANOUT_CONSUMER.to_string()));
    for (stream_name, consumer) in persisters.chain(fanout) {
        let stream = js
            .get_stream(stream_name)
            .await
            .doing(format!("opening stream {stream_name}"))?;
        if let Some(info) = consumer_info(&stream, &consumer).await? {
            consumers.push(consumer_status(&stream, info).await?);
        }
    }
    args.output.print(&StatusReport {
        streams,
        consumers,
        dead_letters,
    })
}

/// A consumer's info, or `None` if it was never created.
pub async fn consumer_info(stream: &Stream, name: &str) -> Result<Option<ConsumerInfo>, OpsError> {
    match stream.consumer_info(name).await {
        Ok(info) => Ok(Some(info)),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).doing(format!("reading consumer {name}")),
    }
}

async fn consumer_status(stream: &Stream, info: ConsumerInfo) -> Result<ConsumerStatus, OpsError> {
    let ack_pending = info.num_ack_pending as u64;
    let lag_messages = info.num_pending + ack_pending;
    let lag_seconds = if lag_messages == 0 {
        0.0
    } else {
        oldest_unprocessed_age(stream, &info).await?
    };
    Ok(ConsumerStatus {
        name: info.name,
        stream: info.stream_name,
        pending: info.num_pending,
        ack_pending,
        redelivered: info.num_redelivered as u64,
        lag_messages,
        lag_seconds,
    })
}

/// Seconds since the first message after the ack floor that the consumer's filter matches
/// was stored (0 when none is left, e.g. it aged out meanwhile). A raw get, not a direct
/// one, because the persisted stream does not allow direct gets.
async fn oldest_unprocessed_age(stream: &Stream, info: &ConsumerInfo) -> Result<f64, OpsError> {
    let filter = match info.config.filter_subject.as_str() {
        "" => ">",
        filter => filter,
    };
    let first = stream
        .raw_message_builder()
        .sequence(info.ack_floor.stream_sequence + 1)
        .next_by_subject(filter)
        .send()
        .await;
    let message = match first {
        Ok(message) => message,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(0.0),
        Err(e) => return Err(e).doing(format!("reading the oldest message of {}", info.name)),
    };
    let stored = connect::to_chrono(message.time);
    let age = (Utc::now() - stored).num_milliseconds().max(0);
    Ok(age as f64 / 1000.0)
}

impl Report for StatusReport {
    fn summary(&self) -> String {
        let mut lines = Vec::new();
        for s in &self.streams {
            lines.push(format!(
                "stream {}: {} messages (seq {}..{}), {} bytes",
                s.name, s.messages, s.first_seq, s.last_seq, s.bytes
            ));
        }
        for c in &self.consumers {
            lines.push(format!(
                "consumer {} on {}: pending {}, ack pending {}, redelivered {}, lag {} messages / {:.1} s",
                c.name, c.stream, c.pending, c.ack_pending, c.redelivered, c.lag_messages, c.lag_seconds
            ));
        }
        lines.push(format!("dead letters: {}", self.dead_letters));
        lines.join("\n")
    }
}
