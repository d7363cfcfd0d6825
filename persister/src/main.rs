//! `coachwire-persister`: the stream → Postgres writer, and its operator commands (§12).

use anyhow::Context;
use clap::{Parser, Subcommand};
use coachwire_persister::batch::Persister;
use coachwire_persister::ops;
use coachwire_persister::settings::PersisterSettings;
use coachwire_persister::startup;
use coachwire_shared::health::Probe;
use coachwire_shared::process::{Clients, exit_code, supervise};
use coachwire_shared::{metrics, settings::parse_or_exit, shutdown, telemetry};
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
    #[command(flatten)]
    Ops(ops::OpsCommand),
}

// One thread: the persister mostly waits on NATS and Postgres, and a runtime of several
// worker threads spent its CPU waking them for each other (the kernel's task switch
// was the largest frame of its profile at 3000 msg/s; docs/benchmarks.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    let result = match cli.command {
        None | Some(Command::Serve) => serve(cli.settings).await,
        Some(Command::Ops(command)) => ops::run(command, &cli.settings.common)
            .await
            .map_err(anyhow::Error::from),
    };
    exit_code("coachwire-persister", result)
}

async fn serve(settings: PersisterSettings) -> anyhow::Result<()> {
    let tuning = match settings.tuning() {
        Ok(tuning) => tuning,
        // A configuration error: one line and exit 2, as clap's own.
        Err(e) => {
            eprintln!("coachwire-persister: {e}");
            std::process::exit(2);
        }
    };
    let telemetry = telemetry::init(settings.common.log_format, "coachwire-persister");
    let metrics = metrics::install();
    metrics::start_at_zero(metrics::PERSISTED_TOTAL, &[]);
    metrics::start_at_zero(metrics::DEAD_LETTERS_TOTAL, &[]);
    let clients = Clients::connect(&settings.common, "coachwire-persister", 16).await?;
    let admin = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("binding {}", settings.admin_listen))?;
    let probe = Probe {
        pool: clients.pool.clone(),
        nats: clients.nats,
        metrics,
    };
    let shutdown = shutdown::on_signal();
    let persister = Persister::new(clients.pool, clients.js);
    // Its own target, so a supervisor filtering at `warn,coachwire::ready=info` still sees
    // that the listeners are bound.
    tracing::info!(target: "coachwire::ready", admin = %settings.admin_listen, "persister ready");
    let service = tokio::spawn(startup::run(
        persister,
        tuning,
        admin,
        probe,
        shutdown.clone(),
    ));
    let result = supervise(service, shutdown).await;
    telemetry.shutdown().await;
    result.map_err(anyhow::Error::msg)
}
