//! Settings every service reads: where Postgres and NATS are, how streams are replicated,
//! how logs look. Each service flattens [`CommonSettings`] into its own `*Settings`. They
//! are global: an operator writes them after the subcommand (`status --nats-url …`) as
//! often as before it.

use clap::{Args, CommandFactory, Parser, ValueEnum};

#[derive(Clone, Debug, Args)]
pub struct CommonSettings {
    /// Postgres connection URL.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "postgres://localhost/coachwire"
    )]
    pub database_url: String,
    /// NATS server URL (comma-separate several for a cluster).
    #[arg(long, global = true, env = "NATS_URL", default_value = "nats://127.0.0.1:4222", value_parser = nats_url)]
    pub nats_url: String,
    /// Replicas of each JetStream stream: 1 for a single server, 3 for the production cluster.
    #[arg(long, global = true, env = "COACHWIRE_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// How long a start-up waits for Postgres and for a first NATS connection before it
    /// gives up with one line (exit 1), in milliseconds.
    #[arg(long, global = true, env = "COACHWIRE_STARTUP_PATIENCE_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1_000..=3_600_000))]
    pub startup_patience_ms: u64,
    /// Log format; default `pretty` on a terminal, else `json`.
    #[arg(long, global = true, env = "COACHWIRE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl CommonSettings {
    pub fn startup_patience(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.startup_patience_ms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Checks every entry of a `NATS_URL` list at parse time, so a typo is a configuration
/// error (exit 2) rather than a connection failure.
fn nats_url(value: &str) -> Result<String, crate::nats::NatsError> {
    crate::nats::server_addrs(value).map(|_| value.to_string())
}

/// Parses the command line and environment; on bad configuration prints a one-line reason
/// prefixed with the binary's own name and exits 2 (help and version print in full and
/// exit 0).
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("{}", error_line::<T>(&e));
            std::process::exit(2);
        }
    }
}

/// Clap's report up to its first blank line (the error, and the names it lists on the
/// following lines, as for missing arguments) joined into one line, prefixed with the
/// parser's own name: this function lives in the shared crate, so `CARGO_PKG_NAME` would
/// say `coachwire-shared` for every binary.
fn error_line<T: CommandFactory>(error: &clap::Error) -> String {
    let text = error.to_string();
    let parts: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let mut line = if parts.is_empty() {
        "invalid configuration".to_string()
    } else {
        parts.join(" ")
    };
    if error.kind() == clap::error::ErrorKind::UnknownArgument {
        line.push_str(" (a service's own settings flags go before the subcommand; see --help)");
    }
    format!("{}: {line}", T::command().get_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser)]
    #[command(name = "coachwire-example")]
    struct Example {
        #[command(subcommand)]
        command: Option<ExampleCommand>,
        #[command(flatten)]
        common: CommonSettings,
    }

    #[derive(clap::Subcommand)]
    enum ExampleCommand {
        Serve,
        Replay {
            #[arg(long)]
            from_seq: i64,
        },
    }

    fn error_of(args: &[&str]) -> clap::Error {
        match Example::try_parse_from(args) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e,
        }
    }

    #[test]
    fn errors_name_the_binary_not_the_shared_crate() {
        let cases = [
            (vec!["x", "nonsense"], "unknown subcommand"),
            (vec!["x", "--no-such-flag"], "unknown flag"),
            (vec!["x", "--stream-replicas", "9"], "value out of range"),
            (
                vec!["x", "--nats-url", "nats://a:1,nats://b:port"],
                "a bad entry in the NATS server list",
            ),
        ];
        for (args, reason) in cases {
            let line = error_line::<Example>(&error_of(&args));
            assert!(
                line.starts_with("coachwire-example: error:"),
                "{reason}: {line}"
            );
            assert_eq!(line.lines().count(), 1, "{reason}: {line}");
        }
    }

    #[test]
    fn settings_flags_are_accepted_after_the_subcommand_too() {
        let parsed = Example::try_parse_from([
            "x",
            "replay",
            "--from-seq",
            "3",
            "--nats-url",
            "nats://n:4333",
        ])
        .expect("a settings flag after the subcommand");
        assert_eq!(parsed.common.nats_url, "nats://n:4333");
        let line = error_line::<Example>(&error_of(&["x", "replay", "--from-seq", "3", "--bogus"]));
        assert!(line.contains("go before the subcommand"), "{line}");
    }

    #[test]
    fn missing_arguments_are_named_on_the_same_line() {
        let line = error_line::<Example>(&error_of(&["x", "replay"]));
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("not provided"), "{line}");
        assert!(line.contains("--from-seq"), "{line}");
    }

    #[test]
    fn a_bad_nats_entry_is_named() {
        let line =
            error_line::<Example>(&error_of(&["x", "--nats-url", "nats://a:1,nats://b:port"]));
        assert!(line.contains("nats://b:port"), "{line}");
    }

    #[test]
    fn a_cluster_list_is_accepted_as_it_was_given() {
        let parsed = Example::try_parse_from([
            "x",
            "--nats-url",
            "nats://a:4222,nats://b:4222,nats://c:4222",
        ])
        .expect("valid");
        assert!(parsed.command.is_none());
        assert_eq!(
            parsed.common.nats_url,
            "nats://a:4222,nats://b:4222,nats://c:4222"
        );
    }
}
