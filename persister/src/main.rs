//! `coachwire-persister`: the stream → Postgres writer.

use anyhow::Context;
use clap::{Parser, Subcommand};
use coachwire_persister::batch::Persister;
use coachwire_persister::consumer::ConsumerTuning;
use coachwire_persister::settings::PersisterSettings;
use coachwire_persister::startup;
use coachwire_shared::health::Probe;
use coachwire_shared::shutdown::{self, DRAIN_DEADLINE};
use coachwire_shared::{db, metrics, nats, settings::parse_or_exit, telemetry};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "coachwire-persister",
    version,
    about = "Writes the message stream to Postgres, in order, exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: PersisterSettings,
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
            eprintln!("coachwire-persister: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: PersisterSettings) -> anyhow::Result<()> {
    telemetry::init(settings.common.log_format);
    let metrics = metrics::install();
    let pool = db::connect_and_migrate(&settings.common.database_url, 16)
        .await
        .context("Postgres")?;
    let client = nats::connect(&settings.common.nats_url, "coachwire-persister").await?;
    let js = async_nats::jetstream::new(client.clone());
    nats::ensure_streams(&js, settings.common.stream_replicas.into()).await?;
    let admin = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("binding {}", settings.admin_listen))?;
    let probe = Probe {
        pool: pool.clone(),
        nats: client,
        metrics,
    };
    let shutdown = shutdown::on_signal();
    let persister = Persister { pool, js };
    tracing::info!(admin = %settings.admin_listen, "persister ready");
    let mut service = tokio::spawn(startup::run(
        persister,
        ConsumerTuning::default(),
        admin,
        probe,
        shutdown.clone(),
    ));
    tokio::select! {
        result = &mut service => return result.context("persister task")?,
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(DRAIN_DEADLINE, service).await {
        Ok(result) => result.context("persister task")?,
        Err(_) => {
            tracing::warn!("drain deadline passed; unacked messages will be redelivered");
            Ok(())
        }
    }
}
