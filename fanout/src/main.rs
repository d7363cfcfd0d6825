//! `coachwire-fanout`: routes persisted messages to the ingest nodes that need them, or
//! (`replay`) re-emits a conversation's persisted messages to its room.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use coachwire_fanout::replay::{self, SeqRange};
use coachwire_fanout::settings::FanoutSettings;
use coachwire_fanout::startup;
use coachwire_shared::health::Probe;
use coachwire_shared::ids::ConversationId;
use coachwire_shared::process::{Clients, exit_code, supervise};
use coachwire_shared::settings::CommonSettings;
use coachwire_shared::{db, metrics, nats, settings::parse_or_exit, shutdown, telemetry};
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
    /// Re-emit a conversation's persisted messages to its room (sockets that already had
    /// them drop them by seq).
    Replay(ReplayArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// The conversation's id.
    #[arg(long, value_parser = parse_conversation)]
    conversation: ConversationId,
    /// First seq to re-emit (1 or more).
    #[arg(long)]
    from_seq: i64,
    /// Last seq to re-emit (default: the conversation's last); below --from-seq is a
    /// bad argument (exit 2).
    #[arg(long)]
    to_seq: Option<i64>,
    /// Print one JSON document instead of a sentence.
    #[arg(long)]
    json: bool,
}

const BINARY: &str = "coachwire-fanout";
/// §12: bad arguments exit 2, failures 1.
const BAD_ARGUMENTS: u8 = 2;

fn parse_conversation(value: &str) -> Result<ConversationId, String> {
    ConversationId::parse(value).ok_or_else(|| format!("not a hyphenated UUID: {value:?}"))
}

// One thread: the fanout mostly waits on NATS, and a runtime of several
// worker threads spent its CPU waking them for each other (the kernel's task switch
// was the largest frame of its profile at 3000 msg/s; docs/benchmarks.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    let result = match cli.command {
        None | Some(Command::Serve) => serve(cli.settings).await,
        Some(Command::Replay(args)) => {
            // A reversed range is a bad argument like any other (exit 2), caught before
            // anything is connected.
            let range = match SeqRange::new(args.from_seq, args.to_seq) {
                Ok(range) => range,
                Err(e) => {
                    eprintln!("{BINARY}: error: {e}");
                    return ExitCode::from(BAD_ARGUMENTS);
                }
            };
            run_replay(&cli.settings.common, &args, range).await
        }
    };
    exit_code(BINARY, result)
}

async fn serve(settings: FanoutSettings) -> anyhow::Result<()> {
    let telemetry = telemetry::init(settings.common.log_format, BINARY);
    let metrics = metrics::install();
    metrics::start_at_zero(
        metrics::CONSUMER_REDELIVERED_TOTAL,
        &[("consumer", coachwire_shared::subjects::FANOUT_CONSUMER)],
    );
    let clients = Clients::connect(&settings.common, BINARY, 4).await?;
    let admin = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .with_context(|| format!("binding {}", settings.admin_listen))?;
    let probe = Probe {
        pool: clients.pool,
        nats: clients.nats,
        metrics,
    };
    let shutdown = shutdown::on_signal();
    // Its own target, so a supervisor filtering at `warn,coachwire::ready=info` still sees
    // that the listeners are bound.
    tracing::info!(target: "coachwire::ready", admin = %settings.admin_listen, "fanout ready");
    let service = tokio::spawn(startup::run(clients.js, admin, probe, shutdown.clone()));
    let result = supervise(service, shutdown).await;
    telemetry.shutdown().await;
    result.map_err(anyhow::Error::msg)
}

/// Reads only: no migrations and no stream declarations, so an operator's command never
/// changes the deployment it inspects.
async fn run_replay(
    common: &CommonSettings,
    args: &ReplayArgs,
    range: SeqRange,
) -> anyhow::Result<()> {
    let pool = db::connect(&common.database_url, 2).await?;
    let client = nats::connect_within(
        &common.nats_url,
        "coachwire-fanout-replay",
        common.startup_patience(),
    )
    .await?;
    let report = replay::replay(&pool, &client, args.conversation, range).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let to = args
            .to_seq
            .map_or_else(|| "the end".to_string(), |to| to.to_string());
        println!(
            "emitted {} message(s) of conversation {} (seq {} to {to}) to its room",
            report.emitted, args.conversation, args.from_seq
        );
    }
    Ok(())
}
