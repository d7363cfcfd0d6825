//! What one soak runs: how long, how fast, which faults, from which seed.

use super::catalog::FaultKind;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Clients per conversation: the rooms of 4 the fault suite uses, spread over both nodes.
pub const PER_ROOM: usize = 4;
/// Where Debian's `libfaketime` package puts the library.
const DEBIAN_FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A randomized fault soak of the production shape (see `scripts/soak.sh`).
#[derive(Clone, Debug, Parser)]
#[command(name = "coachwire-soak", version)]
pub struct SoakSettings {
    /// How long the load runs under faults, in minutes (fractions allowed).
    #[arg(long, default_value_t = 2.0)]
    pub minutes: f64,
    /// Messages per second over all clients together.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// The nemesis's seed (default: from the clock); the same seed replays the same schedule.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fault kinds, comma-separated: kill,pause,partition,slow,pg,skew,nats-crash.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,partition,slow,pg,skew,nats-crash"
    )]
    pub faults: Vec<FaultKind>,
    /// Conversations, each with four clients.
    #[arg(long, default_value_t = 25)]
    pub rooms: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = ".run/soak/report.json")]
    pub json: PathBuf,
    /// `libfaketime` for the clock-skew fault (default: Debian's, if installed).
    #[arg(long, env = "COACHWIRE_FAKETIME_LIB")]
    pub faketime: Option<PathBuf>,
}

impl SoakSettings {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.minutes.max(0.0) * 60.0)
    }

    /// The seed given, or one from the clock (printed, so that the run can be replayed).
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
    }

    /// The library the skew fault preloads, if there is one.
    pub fn faketime_library(&self) -> Option<PathBuf> {
        self.faketime
            .clone()
            .or_else(|| Some(PathBuf::from(DEBIAN_FAKETIME)))
            .filter(|path| path.is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_into_settings_and_an_unknown_fault_is_refused() {
        let settings = SoakSettings::try_parse_from([
            "coachwire-soak",
            "--minutes",
            "0.5",
            "--faults",
            "kill,nats-crash",
            "--seed",
            "7",
        ])
        .expect("valid flags");
        assert_eq!(settings.duration(), Duration::from_secs(30));
        assert_eq!(settings.faults, [FaultKind::Kill, FaultKind::NatsCrash]);
        assert_eq!((settings.seed(), settings.rate), (7, 200));
        let all = SoakSettings::try_parse_from(["coachwire-soak"]).expect("defaults");
        assert_eq!(all.faults, FaultKind::ALL);
        assert!(SoakSettings::try_parse_from(["coachwire-soak", "--faults", "flood"]).is_err());
    }
}
