//! Whether a persister consumes, which a replay must know: two writers assigning `seq` to
//! the same conversation would interleave, so a real replay refuses, and a dry run's one
//! open transaction would block a live persister's inserts on the unique indexes until it
//! rolls back, so a dry run beside a live persister rolls each batch back at once instead.
//!
//! A live persister always holds a pull request on every partition consumer: it renews
//! them before they expire ([`PULL_EXPIRES`], 5 s), so the consumer's
//! `num_waiting` stays above zero. A stopped persister's requests go once they expire or
//! the server notices the connection is gone, so a stale count is waited out for a little
//! longer than one expiry before refusing.

use super::error::OpsError;
use super::status::consumer_info;
use crate::settings::PULL_EXPIRES;
use async_nats::jetstream::stream::Stream;
use coachwire_shared::subjects::{PARTITIONS, persister_consumer};
use std::time::Duration;

/// A little more than one pull expiry: by then every request of a stopped persister has
/// expired, and a live one has renewed its requests.
const DRAIN_WAIT: Duration = PULL_EXPIRES.saturating_add(Duration::from_secs(1));
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Idle readings in a row needed to proceed: one reading could fall in the instant
/// between a live persister's expired request and its next one.
const IDLE_READINGS: u32 = 2;

/// What the persister consumers are doing.
#[derive(Debug, PartialEq, Eq)]
pub enum Persisters {
    /// No pull request waits on any of them: no persister runs.
    Stopped,
    /// This consumer still had `waiting` pull requests after [`DRAIN_WAIT`].
    Consuming { consumer: String, waiting: usize },
}

impl Persisters {
    /// What stands between this state and a real replay, in words (`None`: nothing).
    pub fn obstacle(&self) -> Option<String> {
        let Persisters::Consuming { consumer, waiting } = self else {
            return None;
        };
        let plural = if *waiting == 1 { "" } else { "s" };
        Some(format!(
            "{consumer} has {waiting} active pull request{plural} (a persister is consuming); \
             stop every persister first"
        ))
    }
}

/// [`Persisters::Stopped`] as soon as no persister consumer has a waiting pull request
/// (twice in a row); [`Persisters::Consuming`] if one still has after [`DRAIN_WAIT`].
pub async fn persisters(stream: &Stream) -> Result<Persisters, OpsError> {
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    let mut idle = 0;
    loop {
        match busy_consumer(stream).await? {
            None => {
                idle += 1;
                if idle >= IDLE_READINGS {
                    return Ok(Persisters::Stopped);
                }
            }
            Some((consumer, waiting)) => {
                idle = 0;
                if tokio::time::Instant::now() >= deadline {
                    return Ok(Persisters::Consuming { consumer, waiting });
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The first persister consumer with waiting pull requests, and how many.
async fn busy_consumer(stream: &Stream) -> Result<Option<(String, usize)>, OpsError> {
    for partition in 0..PARTITIONS {
        let name = persister_consumer(partition);
        if let Some(info) = consumer_info(stream, &name).await?
            && info.num_waiting > 0
        {
            return Ok(Some((name, info.num_waiting)));
        }
    }
    Ok(None)
}
