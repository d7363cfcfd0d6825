//! `coachwire-fanout`: routes persisted messages to the ingest nodes that need them.

use anyhow::Context;
use clap::{Parser, Subcommand};
use coachwire_fanout::settings::FanoutSettings;
use coachwire_fanout::startup;
use coachwire_shared::health::Probe;
use coachwire_shared::shutdown::{self, DRAIN_DEADLINE};
use coachwire_shared::{db, metrics, nats, settings::parse_or_exit, telemetry};
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
    report(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli: Cli = parse_or_exit();
    match cli.command {
        None | Some(Command::Serve) => serve(cli.settings).await,
    }
}

/// Errors end the process with one line (the whole cause chain), never a multi-line dump.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coachwire-fanout: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: FanoutSettings) -> anyhow::Result<()> {
    telemetry::init(settings.common.log_format);
    let metrics = metrics::install();
    let pool = db::connect_and_migrate(&settings.common.database_url, 4)
        .await
        .context("Postgres")?;
    let client = nats::connect(&settings.common.nats_url, "coachwire-fanout").await?;
    let js = async_nats::jetstream::new(client.clone());
    nats::ensure_streams(&js, settings.common.stream_replicas.into()).await?;
    let admin = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("binding {}", settings.admin_listen))?;
    let probe = Probe {
        pool,
        nats: client,
        metrics,
    };
    let shutdown = shutdown::on_signal();
    tracing::info!(admin = %settings.admin_listen, "fanout ready");
    let mut service = tokio::spawn(startup::run(js, admin, probe, shutdown.clone()));
    tokio::select! {
        result = &mut service => return result.context("fanout task")?,
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(DRAIN_DEADLINE, service).await {
        Ok(result) => result.context("fanout task")?,
        Err(_) => {
            tracing::warn!("drain deadline passed; unacked events will be redelivered");
            Ok(())
        }
    }
}
