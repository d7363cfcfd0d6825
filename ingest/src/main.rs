//! `coachwire-ingest`: serve (default), or print a development token.

use anyhow::Context;
use clap::{Parser, Subcommand};
use coachwire_ingest::accept::SendOutcome;
use coachwire_ingest::auth::{Role, Verifier, issue_token};
use coachwire_ingest::http::demo::Demo;
use coachwire_ingest::settings::IngestSettings;
use coachwire_ingest::startup;
use coachwire_shared::ids::UserId;
use coachwire_shared::process::{Clients, exit_code, supervise};
use coachwire_shared::{metrics, settings::parse_or_exit, shutdown, telemetry};
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
        #[arg(long, default_value = "1h", value_parser = positive_duration)]
        ttl: Duration,
    },
}

/// A token that is expired when printed is a mistake, not a choice.
fn positive_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(ttl) if ttl.is_zero() => Err("a token must live longer than 0 s".into()),
        Ok(ttl) => Ok(ttl),
        Err(e) => Err(e.to_string()),
    }
}

// One thread: at 6000 msg/s ingest uses about half a core, and a runtime of several
// worker threads spent a fifth of its CPU waking them for each other (the kernel's task
// switch led its profile; one thread took 18–23% off the CPU per message at 1000–6000
// msg/s, docs/benchmarks.md). A host with more cores runs more ingest nodes.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    let result = match cli.command {
        Some(Command::Token { user, role, ttl }) => token(&cli.settings, user, &role, ttl),
        None | Some(Command::Serve) => serve(cli.settings).await,
    };
    exit_code("coachwire-ingest", result)
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
    let telemetry = telemetry::init(settings.common.log_format, "coachwire-ingest");
    // The key is configuration: refuse a bad one before touching anything else.
    let verifier = Verifier::new(&settings.jwt)?;
    let demo = Demo::from_settings(&settings.demo, &settings.jwt)?;
    let metrics = metrics::install();
    for outcome in SendOutcome::ALL {
        metrics::start_at_zero(metrics::MESSAGES_TOTAL, &[("outcome", outcome.label())]);
    }
    for kind in ["message", "connection", "typing"] {
        metrics::start_at_zero(metrics::RATE_LIMITED_TOTAL, &[("kind", kind)]);
    }
    let clients = Clients::connect(&settings.common, "coachwire-ingest", 32).await?;
    let (router, io, app) = startup::build(
        &settings,
        verifier,
        demo,
        clients.pool,
        clients.nats,
        metrics,
    );
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let admin = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("binding {}", settings.admin_listen))?;
    // Its own target, so a supervisor filtering at `warn,coachwire::ready=info` still sees
    // that the listeners are bound.
    tracing::info!(target: "coachwire::ready", listen = %settings.listen, admin = %settings.admin_listen, node = %app.node, "ingest ready");
    let shutdown = shutdown::on_signal();
    let server = tokio::spawn(startup::run(
        listener,
        admin,
        router,
        io,
        app,
        shutdown.clone(),
    ));
    let result = supervise(server, shutdown).await;
    telemetry.shutdown().await;
    result.map_err(anyhow::Error::msg)
}
