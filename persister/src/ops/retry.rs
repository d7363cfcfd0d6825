//! Bounded retries for the operator commands: unlike the service, which waits out any
//! outage, an operator tool must end, so a database fault is retried a few times with
//! backoff and then reported.

use crate::store::{Fault, StoreError};
use std::time::Duration;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// Eight attempts span about 15 s: enough to ride out a failover or a restart, short
/// enough that an operator is told about a real outage while still watching.
const ATTEMPTS: u32 = 8;

/// The retry state of one store.
pub struct Retries {
    backoff: Duration,
    tries: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            backoff: FIRST_BACKOFF,
            tries: 1,
        }
    }
}

impl Retries {
    /// Whether to try again after `error` (then it has waited its backoff): never for the
    /// message's fault, and not after [`ATTEMPTS`] tries.
    pub async fn again(&mut self, error: &StoreError) -> bool {
        if error.fault() == Fault::Message || self.tries >= ATTEMPTS {
            return false;
        }
        tracing::warn!(error = %error, retry_in = ?self.backoff, "storing failed; retrying");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.tries += 1;
        true
    }
}
