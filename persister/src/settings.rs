//! Persister configuration (§2).

use coachwire_shared::settings::CommonSettings;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone, Debug, clap::Args)]
pub struct PersisterSettings {
    #[command(flatten)]
    pub common: CommonSettings,
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    #[arg(long, env = "COACHWIRE_ADMIN_LISTEN", default_value = "127.0.0.1:9101")]
    pub admin_listen: SocketAddr,
}

/// Consumer timing ([`crate::consumer`] explains why `ack_wait < pinned_ttl`); tests
/// shorten it, production uses the defaults.
#[derive(Clone, Debug)]
pub struct ConsumerTuning {
    pub ack_wait: Duration,
    pub pinned_ttl: Duration,
    /// Largest batch written in one transaction.
    pub max_batch: usize,
}

impl Default for ConsumerTuning {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(10),
            pinned_ttl: Duration::from_secs(20),
            max_batch: 500,
        }
    }
}
