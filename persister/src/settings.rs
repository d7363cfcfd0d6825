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
    /// How long a delivered message may stay unacked before the server delivers it
    /// again, in milliseconds.
    #[arg(long, env = "COACHWIRE_ACK_WAIT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    pub ack_wait_ms: u64,
    /// How long a partition stays with a persister that stopped pulling before another
    /// takes it over, in milliseconds; above the ack wait.
    #[arg(long, env = "COACHWIRE_PINNED_TTL_MS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(2_000..=1_200_000))]
    pub pinned_ttl_ms: u64,
}

/// The pin must outlast the ack wait ([`crate::consumer`] explains why).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "COACHWIRE_PINNED_TTL_MS ({pinned_ttl_ms}) must be above COACHWIRE_ACK_WAIT_MS ({ack_wait_ms})"
)]
pub struct TuningError {
    ack_wait_ms: u64,
    pinned_ttl_ms: u64,
}

impl PersisterSettings {
    /// The consumers' timing these settings ask for.
    pub fn tuning(&self) -> Result<ConsumerTuning, TuningError> {
        if self.pinned_ttl_ms <= self.ack_wait_ms {
            return Err(TuningError {
                ack_wait_ms: self.ack_wait_ms,
                pinned_ttl_ms: self.pinned_ttl_ms,
            });
        }
        Ok(ConsumerTuning {
            ack_wait: Duration::from_millis(self.ack_wait_ms),
            pinned_ttl: Duration::from_millis(self.pinned_ttl_ms),
            ..ConsumerTuning::default()
        })
    }
}

/// Consumer timing ([`crate::consumer`] explains why `ack_wait < pinned_ttl`); production
/// uses the defaults, tests shorten it (in process, or through the two settings above).
#[derive(Clone, Debug)]
pub struct ConsumerTuning {
    pub ack_wait: Duration,
    pub pinned_ttl: Duration,
    /// Largest batch written in one transaction.
    pub max_batch: usize,
}

/// The longest one pull request waits on the server.
pub const PULL_EXPIRES: Duration = Duration::from_secs(5);

impl ConsumerTuning {
    /// How long one pull request waits on the server: renewed continuously, well inside
    /// `pinned_ttl` (a quarter of it, at most [`PULL_EXPIRES`]), so a live persister never
    /// loses its pin.
    pub fn pull_expires(&self) -> Duration {
        (self.pinned_ttl / 4).min(PULL_EXPIRES)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: PersisterSettings,
    }

    fn tuning(args: &[&str]) -> Result<ConsumerTuning, TuningError> {
        let cli = Cli::try_parse_from(std::iter::once("persister").chain(args.iter().copied()))
            .expect("parses");
        cli.settings.tuning()
    }

    #[test]
    fn the_defaults_are_production_s_and_the_pin_must_outlast_the_ack_wait() {
        let defaults = tuning(&[]).expect("defaults");
        assert_eq!(defaults.ack_wait, ConsumerTuning::default().ack_wait);
        assert_eq!(defaults.pinned_ttl, ConsumerTuning::default().pinned_ttl);
        let short = tuning(&["--ack-wait-ms", "2000", "--pinned-ttl-ms", "4000"]).expect("short");
        assert_eq!(short.pinned_ttl, Duration::from_secs(4));
        let refused = tuning(&["--ack-wait-ms", "5000", "--pinned-ttl-ms", "5000"]);
        assert!(refused.is_err(), "{refused:?}");
    }
}
