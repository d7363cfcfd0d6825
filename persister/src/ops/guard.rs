//! Refuses a replay while a persister consumes: two writers assigning `seq` to the same
//! conversation would interleave, and a dry run's open transaction would block a live
//! persister's inserts on the unique indexes until it rolls back.
//!
//! A live persister always holds a pull request on every partition consumer: it renews
//! them before they expire ([`PULL_EXPIRES`], 5 s), so the consumer's
//! `num_waiting` stays above zero. A stopped persister's requests go once they expire or
//! the server notices the connection is gone, so a stale count is waited out for a little
//! longer than one expiry before refusing.

use super::status::consumer_info;
use async_nats::jetstream::stream::Stream;
use coachwire_persister::partition::PULL_EXPIRES;
use coachwire_shared::subjects::{PARTITIONS, persister_consumer};
use std::time::Duration;

/// A little more than one pull expiry: by then every request of a stopped persister has
/// expired, and a live one has renewed its requests.
const DRAIN_WAIT: Duration = PULL_EXPIRES.saturating_add(Duration::from_secs(1));
const POLL_EVERY: Duration = Duration::from_millis(250);
/// Idle readings in a row needed to proceed: one reading could fall in the instant
/// between a live persister's expired request and its next one.
const IDLE_READINGS: u32 = 2;

/// Returns once no persister consumer has a waiting pull request; errors with the reason
/// to refuse if one still has after [`DRAIN_WAIT`].
pub async fn no_persister_consuming(stream: &Stream) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    let mut idle = 0;
    loop {
        match busy_consumer(stream).await? {
            None => {
                idle += 1;
                if idle >= IDLE_READINGS {
                    return Ok(());
                }
            }
            Some((name, waiting)) => {
                idle = 0;
                if tokio::time::Instant::now() >= deadline {
                    let plural = if waiting == 1 { "" } else { "s" };
                    anyhow::bail!(
                        "refusing to replay: {name} has {waiting} active pull request{plural} \
                         (a persister is consuming); stop every persister first"
                    );
                }
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The first persister consumer with waiting pull requests, and how many.
async fn busy_consumer(stream: &Stream) -> anyhow::Result<Option<(String, usize)>> {
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
