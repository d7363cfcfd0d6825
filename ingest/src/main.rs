//! `coachwire-ingest`: serve (default), or print a development token.

use anyhow::Context;
use clap::{Parser, Subcommand};
use coachwire_ingest::auth::{Role, issue_token};
use coachwire_ingest::settings::IngestSettings;
use coachwire_ingest::startup;
use coachwire_shared::ids::UserId;
use coachwire_shared::shutdown::{self, DRAIN_DEADLINE};
use coachwire_shared::{db, metrics, nats, settings::parse_or_exit, telemetry};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "coachwire-ingest",
    version,
    about = "Socket.IO + HTTP edge of coachwire"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: IngestSettings,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Print an HS256 token signed with COACHWIRE_JWT_SECRET (development and tests).
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        user: uuid::Uuid,
        /// `ai` for the AI coach.
        #[arg(long, default_value = "user", value_parser = ["user", "ai"])]
        role: String,
        /// Lifetime, e.g. `1h`, `30m`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    report(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli: Cli = parse_or_exit();
    match cli.command {
        Some(Command::Token { user, role, ttl }) => token(&cli.settings, user, &role, ttl),
        None | Some(Command::Serve) => serve(cli.settings).await,
    }
}

/// Errors end the process with one line (the whole cause chain), never a multi-line dump.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coachwire-ingest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn token(
    settings: &IngestSettings,
    user: uuid::Uuid,
    role: &str,
    ttl: Duration,
) -> anyhow::Result<()> {
    let secret = settings
        .jwt
        .jwt_secret
        .as_deref()
        .context("COACHWIRE_JWT_SECRET must be set to sign tokens")?;
    let role = if role == "ai" { Role::Ai } else { Role::User };
    println!("{}", issue_token(secret, UserId(user), role, ttl)?);
    Ok(())
}

async fn serve(settings: IngestSettings) -> anyhow::Result<()> {
    telemetry::init(settings.common.log_format);
    let metrics = metrics::install();
    let pool = db::connect_and_migrate(&settings.common.database_url, 32)
        .await
        .context("Postgres")?;
    let client = nats::connect(&settings.common.nats_url, "coachwire-ingest").await?;
    let js = async_nats::jetstream::new(client.clone());
    nats::ensure_streams(&js, settings.common.stream_replicas.into()).await?;
    let (router, io, app) = startup::build(&settings, pool, client, metrics)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    tracing::info!(listen = %settings.listen, node = %app.node, "ingest ready");
    let shutdown = shutdown::on_signal();
    let mut server = tokio::spawn(startup::run(listener, router, io, app, shutdown.clone()));
    tokio::select! {
        result = &mut server => return result.context("server task")?.context("server"),
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(DRAIN_DEADLINE, server).await {
        Ok(result) => result.context("server task")?.context("server")?,
        Err(_) => tracing::warn!("drain deadline passed; exiting"),
    }
    Ok(())
}
