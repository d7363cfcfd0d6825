//! Operator commands (§12): `status`, `dlq list|retry|drop`, `replay`.
//!
//! Each connects with the service's own settings, but only to what it needs: `status` and
//! `dlq list` read NATS alone, so they work while Postgres is down; `replay` and
//! `dlq retry` write through [`crate::store`] and need both. Each prints a short summary,
//! or one JSON document with `--json` ([`output`]); failures end the process with exit 1
//! and one line on stderr (through `main`): [`OpsError`].

mod connect;
mod dlq;
mod entries;
mod error;
mod guard;
mod output;
mod replay;
mod retry;
mod status;
mod writer;

use coachwire_shared::settings::CommonSettings;

pub use error::OpsError;

pub use dlq::DlqCommand;
pub use replay::ReplayArgs;
pub use status::StatusArgs;

#[derive(clap::Subcommand)]
pub enum OpsCommand {
    /// Streams, consumers (pending, lag) and the dead-letter count. Needs only NATS.
    Status(StatusArgs),
    /// Dead letters: messages the persister could not store.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Re-drives the MESSAGES stream from a point into Postgres.
    ///
    /// For example after restoring an older backup: missing rows come back with the same
    /// id and seq, present rows are left alone, nothing is stored twice. Persisted events
    /// are not published (the persisters do that for new rows when they start). Stop every
    /// persister first: it refuses to run while one is consuming.
    Replay(ReplayArgs),
}

pub async fn run(command: OpsCommand, common: &CommonSettings) -> Result<(), OpsError> {
    connect::quiet_logging(common.log_format);
    match command {
        OpsCommand::Status(args) => status::run(args, common).await,
        OpsCommand::Dlq { command } => dlq::run(command, common).await,
        OpsCommand::Replay(args) => replay::run(args, common).await,
    }
}
