//! `coachwire-load`: N Socket.IO connections in rooms of K send at an open-loop rate
//! (a timer schedules every send, whatever the acks do, so queueing shows as latency
//! rather than as a lower rate). It reports ack, send→room and send→delivered latency,
//! achieved rates and errors by code, then checks in Postgres that every acked message
//! was stored exactly once and that every socket saw its room complete, in order,
//! without repeats.
//!
//! - [`setup`]: conversations and tokens in the server's database.
//! - the clients: the official `socket.io-client`, played by `tests/js/load.mjs` (through
//!   `coachwire_testkit::load`), split by conversation over `--drivers` Node processes;
//! - [`stats`]: HDR histograms over the measured window;
//! - the verdict: `coachwire_testkit::checker`, the fault suite's judge.

mod setup;
mod stats;

use anyhow::Context;
use clap::Parser;
use coachwire_shared::ids::ConversationId;
use coachwire_testkit::checker;
use coachwire_testkit::load::{Load, LoadClient, LoadConfig, LoadReport};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use stats::{Counts, Latencies, Percentiles};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "coachwire-load",
    version,
    about = "Open-loop Socket.IO load for coachwire"
)]
struct Args {
    /// Ingest node URLs (repeat for several; clients are spread over them).
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// The server's database: conversations are created there, and stored rows checked.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The HS256 secret the server verifies tokens with.
    #[arg(long, env = "COACHWIRE_JWT_SECRET")]
    jwt_secret: String,
    #[arg(long, default_value_t = 200)]
    connections: usize,
    #[arg(long, default_value_t = 4)]
    room_size: usize,
    /// Messages per second over all connections together.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Node processes playing the clients (one core handles a few thousand msg/s).
    #[arg(long, default_value_t = 1)]
    drivers: usize,
    /// A name for this run in the output (e.g. `coachwire`, `reference`).
    #[arg(long, default_value = "coachwire")]
    label: String,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One run's results, as printed and as written to `--json`.
#[derive(Serialize)]
struct Results {
    label: String,
    target_rate: u32,
    connections: usize,
    room_size: usize,
    measured_secs: f64,
    sent_per_sec: f64,
    acked_per_sec: f64,
    acked_ratio: f64,
    counts: Counts,
    ack_ms: Percentiles,
    room_ms: Percentiles,
    delivered_ms: Percentiles,
    /// `passed`, or the first violated guarantee.
    check: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = coachwire_shared::db::connect(&args.database_url, 4)
        .await
        .context("connecting to Postgres")?;
    let clients = setup::clients(&pool, &args.jwt_secret, args.connections, args.room_size).await?;
    let mut drivers = start_drivers(&args, clients).await?;
    let begun = drive(&args, &mut drivers).await?;
    let reports = finish(&pool, &mut drivers).await?;
    let results = judge(&args, &pool, &reports, &begun).await;
    print(&results);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for driver in drivers {
        let _ = driver.load.shutdown().await;
    }
    Ok(())
}

/// One Node process and the conversations it plays.
struct Driver {
    load: Load,
    conversations: Vec<ConversationId>,
}

/// Splits the clients by conversation (so every latency is measured on one clock) and
/// starts a driver per share; returns once every client is connected and joined.
async fn start_drivers(args: &Args, clients: Vec<LoadClient>) -> anyhow::Result<Vec<Driver>> {
    let count = args.drivers.max(1);
    let mut shares: Vec<Vec<LoadClient>> = vec![Vec::new(); count];
    let mut rooms: Vec<ConversationId> = clients.iter().map(|c| c.conversation).collect();
    rooms.dedup();
    for client in clients {
        let room = rooms
            .iter()
            .position(|r| *r == client.conversation)
            .unwrap_or(0);
        shares[room % count].push(client);
    }
    let rate = (args.rate as usize).div_ceil(count) as u32;
    let mut drivers = Vec::with_capacity(count);
    for share in shares.into_iter().filter(|s| !s.is_empty()) {
        let mut conversations: Vec<ConversationId> = share.iter().map(|c| c.conversation).collect();
        conversations.dedup();
        let config = LoadConfig::new(args.urls.clone(), share, rate);
        let load = Load::start(&config)
            .await
            .context("starting a load driver")?;
        drivers.push(Driver {
            load,
            conversations,
        });
    }
    Ok(drivers)
}

/// Sends for warm-up plus duration with a progress bar; returns each driver's clock
/// reading when it began.
async fn drive(args: &Args, drivers: &mut [Driver]) -> anyhow::Result<Vec<f64>> {
    let mut begun = Vec::with_capacity(drivers.len());
    for driver in drivers.iter_mut() {
        driver.load.begin().await?;
        begun.push(driver.load.progress().await?.at);
    }
    let total = args.warmup + args.duration;
    let bar = ProgressBar::new(total.as_secs());
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let start = Instant::now();
    while start.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(500).min(total - start.elapsed())).await;
        let (mut sent, mut acked) = (0, 0);
        for driver in drivers.iter_mut() {
            let progress = driver.load.progress().await?;
            sent += progress.sent;
            acked += progress.acked;
        }
        bar.set_position(start.elapsed().as_secs());
        bar.set_message(format!("sent {sent}  acked {acked}"));
    }
    bar.finish_and_clear();
    Ok(begun)
}

/// Stops sending, waits for retries to end, for Postgres to hold what was acked and for
/// every socket to catch up; returns each driver's recording.
async fn finish(pool: &sqlx::PgPool, drivers: &mut [Driver]) -> anyhow::Result<Vec<LoadReport>> {
    let mut acked = 0;
    for driver in drivers.iter_mut() {
        acked += driver.load.stop().await?.acked;
    }
    let conversations: Vec<ConversationId> = drivers
        .iter()
        .flat_map(|d| d.conversations.clone())
        .collect();
    checker::wait_until_stored(pool, &conversations, acked, Duration::from_secs(60)).await?;
    let last_seq = checker::wait_until_ended(pool, &conversations, Duration::from_secs(30)).await?;
    let mut reports = Vec::with_capacity(drivers.len());
    for driver in drivers.iter_mut() {
        reports.push(
            driver
                .load
                .settle(&last_seq, Duration::from_secs(30))
                .await?,
        );
    }
    Ok(reports)
}

async fn judge(args: &Args, pool: &sqlx::PgPool, reports: &[LoadReport], begun: &[f64]) -> Results {
    let mut latencies = Latencies::default();
    let mut counts = Counts::default();
    let warmup = args.warmup.as_secs_f64() * 1000.0;
    let window = args.duration.as_secs_f64() * 1000.0;
    let mut check = "passed".to_string();
    for (report, at) in reports.iter().zip(begun) {
        stats::record(
            report,
            at + warmup,
            at + warmup + window,
            &mut latencies,
            &mut counts,
        );
        if let Err(e) = checker::check(report, pool).await
            && check == "passed"
        {
            check = format!("FAILED: {e:#}");
        }
    }
    let secs = args.duration.as_secs_f64();
    Results {
        label: args.label.clone(),
        target_rate: args.rate,
        connections: args.connections,
        room_size: args.room_size,
        measured_secs: secs,
        sent_per_sec: counts.sent as f64 / secs,
        acked_per_sec: counts.acked as f64 / secs,
        acked_ratio: if counts.sent == 0 {
            0.0
        } else {
            counts.acked as f64 / counts.sent as f64
        },
        ack_ms: Percentiles::from(&latencies.ack),
        room_ms: Percentiles::from(&latencies.room),
        delivered_ms: Percentiles::from(&latencies.delivered),
        counts,
        check,
    }
}

fn print(r: &Results) {
    println!(
        "{} @ {} msg/s target, {} connections in rooms of {}: sent {:.0}/s, acked {:.0}/s ({:.2}%), errors {:?}",
        r.label,
        r.target_rate,
        r.connections,
        r.room_size,
        r.sent_per_sec,
        r.acked_per_sec,
        r.acked_ratio * 100.0,
        r.counts.errors
    );
    println!(
        "  {:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "ms", "n", "p50", "p90", "p99", "p99.9", "max"
    );
    for (name, p) in [
        ("ack", &r.ack_ms),
        ("send→room", &r.room_ms),
        ("send→delivered", &r.delivered_ms),
    ] {
        println!(
            "  {:<16} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            name, p.count, p.p50, p.p90, p.p99, p.p999, p.max
        );
    }
    println!("  exactly once, complete, in order: {}", r.check);
}
