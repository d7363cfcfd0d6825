//! Logging set up once per process. Logs never carry message content or tokens: handlers
//! log ids and codes only.

use crate::settings::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber: `RUST_LOG` filter (default `info`), JSON or pretty.
pub fn init(format: Option<LogFormat>) {
    init_with_default(format, "info");
}

/// As [`init`], with `default_level` when `RUST_LOG` is unset (operator commands use
/// `warn`: their stdout is the answer, and info-level chatter would bury it).
pub fn init_with_default(format: Option<LogFormat>, default_level: &str) {
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging was already initialised: {e}");
    }
}
