//! Settings every service reads: where Postgres and NATS are, how streams are replicated,
//! how logs look. Each service flattens [`CommonSettings`] into its own `*Settings`.

use clap::{Args, Parser, ValueEnum};

#[derive(Clone, Debug, Args)]
pub struct CommonSettings {
    /// Postgres connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://localhost/coachwire"
    )]
    pub database_url: String,
    /// NATS server URL (comma-separate several for a cluster).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Replicas of each JetStream stream: 1 for a single server, 3 for the production cluster.
    #[arg(long, env = "COACHWIRE_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// Log format; default `pretty` on a terminal, else `json`.
    #[arg(long, env = "COACHWIRE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Parses the command line and environment; on bad configuration prints a one-line reason
/// and exits 2 (help and version print in full and exit 0).
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid configuration");
            eprintln!("{}: {line}", env!("CARGO_PKG_NAME"));
            std::process::exit(2);
        }
    }
}
