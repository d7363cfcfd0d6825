//! `coachwire-fanout`: routes persisted messages to the ingest nodes that need them.

use anyhow::Context;
use clap::{Parser, Subcommand};
use coachwire_fanout::settings::FanoutSettings;
use coachwire_fanout::startup;
use coachwire_shared::health::Probe;
use coachwire_shared::process::{Clients, exit_code, supervise};
use coachwire_shared::{metrics, settings::parse_or_exit, shutdown, telemetry};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "coachwire-fanout",
    version,
    about = "Routes persisted messages to conversation rooms"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: FanoutSettings,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    let result = match cli.command {
        None | Some(Command::Serve) => serve(cli.settings).await,
    };
    exit_code("coachwire-fanout", result)
}

async fn serve(settings: FanoutSettings) -> anyhow::Result<()> {
    telemetry::init(settings.common.log_format);
    let metrics = metrics::install();
    let clients = Clients::connect(&settings.common, "coachwire-fanout", 4).await?;
    let admin = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("binding {}", settings.admin_listen))?;
    let probe = Probe {
        pool: clients.pool,
        nats: clients.nats,
        metrics,
    };
    let shutdown = shutdown::on_signal();
    tracing::info!(admin = %settings.admin_listen, "fanout ready");
    let service = tokio::spawn(startup::run(clients.js, admin, probe, shutdown.clone()));
    supervise(service, shutdown)
        .await
        .map_err(anyhow::Error::msg)
}
