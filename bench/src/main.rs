//! `coachwire-load`: N Socket.IO connections in rooms of K send at an open-loop rate
//! (a timer schedules every send, whatever the acks do, so queueing shows as latency
//! rather than as a lower rate). It reports ack, send→room and send→delivered latency,
//! achieved rates and errors by code, then checks in Postgres that every acked message
//! was stored exactly once and that every socket saw its room complete, in order,
//! without repeats.
//!
//! - [`setup`]: conversations and tokens in the server's database.
//! - the clients, split by conversation over `--drivers` drivers: by default
//!   [`rust_driver`], which speaks Socket.IO itself ([`wire`]) at a fraction of Node's CPU
//!   per message; with `--client node`, the official `socket.io-client` played by
//!   `tests/js/load.mjs` (through `coachwire_testkit::load`), one Node process a driver;
//! - [`stats`]: HDR histograms over the measured window; [`cpu`] and [`memory`]: what
//!   the watched processes spent;
//! - the verdict: `coachwire_testkit::checker`, the fault suite's judge.

mod cpu;
mod memory;
mod rust_driver;
mod setup;
mod stats;
mod wire;

use anyhow::Context;
use clap::Parser;
use coachwire_shared::ids::ConversationId;
use coachwire_testkit::checker;
use coachwire_testkit::load::{Load, LoadClient, LoadConfig, LoadReport, Progress};
use indicatif::{ProgressBar, ProgressStyle};
use rust_driver::RustLoad;
use serde::Serialize;
use stats::{Counts, Latencies, Percentiles};
use std::collections::HashMap;
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
    /// Who plays the clients: `rust` (built in) or `node` (socket.io-client).
    #[arg(long, value_enum, default_value_t = ClientKind::Rust)]
    client: ClientKind,
    /// Drivers playing the clients: Node processes (one core handles a few thousand
    /// msg/s), or threads of the Rust driver.
    #[arg(long, default_value_t = 1)]
    drivers: usize,
    /// A name for this run in the output (e.g. `coachwire`, `reference`).
    #[arg(long, default_value = "coachwire")]
    label: String,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A process whose CPU per message to report, as NAME=PID (repeat).
    #[arg(long = "cpu")]
    cpu: Vec<String>,
    /// The same, counting the process's children too (Postgres's backends).
    #[arg(long = "cpu-tree")]
    cpu_tree: Vec<String>,
    /// A process whose resident memory per connection to report, as NAME=PID: its RSS
    /// before the clients connect and at the end of the measured window.
    #[arg(long = "rss")]
    rss: Option<String>,
    /// The server keeps nothing (the floor step): no stored-rows check, and the sockets
    /// are not waited for.
    #[arg(long)]
    stores_nothing: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ClientKind {
    Node,
    Rust,
}

/// One run's results, as printed and as written to `--json`.
#[derive(Serialize)]
struct Results {
    label: String,
    /// Who played the clients: `rust` or `node`.
    client: &'static str,
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
    /// CPU the drivers used in the measured window per message sent in it, in µs.
    driver_cpu_us_per_msg: f64,
    /// Each watched process's CPU over the window (`--cpu`, `--cpu-tree`, and the
    /// load driver last).
    cpu: Vec<cpu::Cost>,
    /// The `--rss` process's resident memory per connection, if one was named.
    memory: Option<memory::PerConnection>,
    /// `passed`, or the first violated guarantee.
    check: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let watched = watched(&args)?;
    let pool = coachwire_shared::db::connect(&args.database_url, 4)
        .await
        .context("connecting to Postgres")?;
    let clients = setup::clients(&pool, &args.jwt_secret, args.connections, args.room_size).await?;
    let resident = resident_before(&args)?;
    let mut drivers = start_drivers(&args, clients).await?;
    let driven = drive(&args, &watched, resident.as_ref(), &mut drivers).await?;
    let reports = finish(&args, &pool, &mut drivers).await?;
    let results = judge(&args, &pool, &reports, &driven).await;
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

/// The `--rss` process's resident set now, before any client connects: what the clients
/// add is the growth from here.
fn resident_before(args: &Args) -> anyhow::Result<Option<memory::Before>> {
    let Some(spec) = &args.rss else {
        return Ok(None);
    };
    let process = cpu::Watched::parse(spec, cpu::Scope::Process)?;
    Ok(Some(memory::Before::sample(process)?))
}

/// One driver and the conversations it plays.
struct Driver {
    load: Client,
    conversations: Vec<ConversationId>,
}

/// A driver of either kind, with the commands of [`Load`].
enum Client {
    /// Boxed: a `Load` is four times a `RustLoad`'s size.
    Node(Box<Load>),
    Rust(RustLoad),
}

impl Client {
    async fn start(kind: ClientKind, config: &LoadConfig) -> anyhow::Result<Client> {
        Ok(match kind {
            ClientKind::Node => Client::Node(Box::new(Load::start(config).await?)),
            ClientKind::Rust => Client::Rust(RustLoad::start(config).await?),
        })
    }

    async fn begin(&mut self) -> anyhow::Result<()> {
        match self {
            Client::Node(load) => load.begin().await,
            Client::Rust(load) => load.begin().await,
        }
    }

    async fn progress(&mut self) -> anyhow::Result<Progress> {
        match self {
            Client::Node(load) => load.progress().await,
            Client::Rust(load) => load.progress().await,
        }
    }

    async fn stop(&mut self) -> anyhow::Result<Progress> {
        match self {
            Client::Node(load) => load.stop().await,
            Client::Rust(load) => load.stop().await,
        }
    }

    async fn settle(
        &mut self,
        last_seq: &HashMap<ConversationId, i64>,
        within: Duration,
    ) -> anyhow::Result<LoadReport> {
        match self {
            Client::Node(load) => load.settle(last_seq, within).await,
            Client::Rust(load) => load.settle(last_seq, within).await,
        }
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        match self {
            Client::Node(load) => load.shutdown().await,
            Client::Rust(load) => load.shutdown().await,
        }
    }
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
        let load = Client::start(args.client, &config)
            .await
            .context("starting a load driver")?;
        drivers.push(Driver {
            load,
            conversations,
        });
    }
    Ok(drivers)
}

/// The load driver's own row in the CPU table.
const DRIVER: &str = "load driver";

/// The processes whose CPU per message is reported, the load driver last.
fn watched(args: &Args) -> anyhow::Result<Vec<cpu::Watched>> {
    let mut watched = Vec::new();
    for spec in &args.cpu {
        watched.push(cpu::Watched::parse(spec, cpu::Scope::Process)?);
    }
    for spec in &args.cpu_tree {
        watched.push(cpu::Watched::parse(spec, cpu::Scope::WithChildren)?);
    }
    watched.push(cpu::Watched::me(DRIVER));
    Ok(watched)
}

/// What [`drive`] saw: each driver's clock reading when it began, every watched
/// process's CPU over the measured window, and the `--rss` process's memory at its end.
struct Driven {
    begun: Vec<f64>,
    cpu: Vec<cpu::Cost>,
    memory: Option<memory::PerConnection>,
}

/// Sends for warm-up plus duration with a progress bar, sampling the drivers' CPU time
/// when the measured window opens and when it closes, and `resident`'s memory (against
/// its resident set before the clients connected) when it closes.
async fn drive(
    args: &Args,
    watched: &[cpu::Watched],
    resident: Option<&memory::Before>,
    drivers: &mut [Driver],
) -> anyhow::Result<Driven> {
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
    let opened = show_until(drivers, &bar, start, args.warmup).await?;
    let (cpu_opened, at_open) = (cpu::sample(watched), Instant::now());
    let closed = show_until(drivers, &bar, start, total).await?;
    let (cpu_closed, window) = (cpu::sample(watched), at_open.elapsed());
    let memory = resident
        .map(|before| before.per_connection(args.connections))
        .transpose()?;
    bar.finish_and_clear();
    let cpu = cpu::costs(
        watched,
        &cpu_opened,
        &cpu_closed,
        window.as_secs_f64(),
        closed.saturating_sub(opened),
    );
    Ok(Driven { begun, cpu, memory })
}

/// Shows progress every 500 ms until `until` after `start`; returns the messages sent by
/// then (read at or after `until`, so the window's CPU samples bracket them).
async fn show_until(
    drivers: &mut [Driver],
    bar: &ProgressBar,
    start: Instant,
    until: Duration,
) -> anyhow::Result<u64> {
    loop {
        let (mut sent, mut acked) = (0, 0);
        for driver in drivers.iter_mut() {
            let progress = driver.load.progress().await?;
            sent += progress.sent;
            acked += progress.acked;
        }
        bar.set_position(start.elapsed().as_secs());
        bar.set_message(format!("sent {sent}  acked {acked}"));
        let left = until.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ok(sent);
        }
        tokio::time::sleep(left.min(Duration::from_millis(500))).await;
    }
}

/// Stops sending, waits for retries to end, for Postgres to hold what was acked and for
/// every socket to catch up; returns each driver's recording.
async fn finish(
    args: &Args,
    pool: &sqlx::PgPool,
    drivers: &mut [Driver],
) -> anyhow::Result<Vec<LoadReport>> {
    let mut acked = 0;
    for driver in drivers.iter_mut() {
        acked += driver.load.stop().await?.acked;
    }
    if args.stores_nothing {
        // Nothing to wait for in Postgres; the report is what the sockets saw.
        let mut reports = Vec::with_capacity(drivers.len());
        for driver in drivers.iter_mut() {
            reports.push(driver.load.settle(&HashMap::new(), Duration::ZERO).await?);
        }
        return Ok(reports);
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

async fn judge(
    args: &Args,
    pool: &sqlx::PgPool,
    reports: &[LoadReport],
    driven: &Driven,
) -> Results {
    let mut latencies = Latencies::default();
    let mut counts = Counts::default();
    let warmup = args.warmup.as_secs_f64() * 1000.0;
    let window = args.duration.as_secs_f64() * 1000.0;
    let mut check = "passed".to_string();
    for (report, at) in reports.iter().zip(&driven.begun) {
        stats::record(
            report,
            at + warmup,
            at + warmup + window,
            &mut latencies,
            &mut counts,
        );
        if args.stores_nothing {
            check = "not checked: the server stores nothing".to_string();
        } else if let Err(e) = checker::check(report, pool).await
            && check == "passed"
        {
            check = format!("FAILED: {e:#}");
        }
    }
    let secs = args.duration.as_secs_f64();
    Results {
        label: args.label.clone(),
        client: match args.client {
            ClientKind::Node => "node",
            ClientKind::Rust => "rust",
        },
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
        driver_cpu_us_per_msg: driven
            .cpu
            .iter()
            .find(|c| c.name == DRIVER)
            .map_or(0.0, |c| c.us_per_message),
        cpu: driven.cpu.clone(),
        memory: driven.memory.clone(),
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
    println!(
        "  CPU per message over the window (µs, share of one core; runs on a CPU per message, µs per run; time runnable but waiting for a CPU):"
    );
    for cost in &r.cpu {
        println!(
            "  {:<16} {:>8.1} µs {:>6.0}%  {:>6.2} runs {:>7.1} µs/run  waited {:>4.0}%",
            cost.name,
            cost.us_per_message,
            cost.cores * 100.0,
            cost.runs_per_message,
            cost.us_per_run,
            cost.waited * 100.0
        );
    }
    println!(
        "  driver CPU per message: {:.1} µs ({} client)",
        r.driver_cpu_us_per_msg, r.client
    );
    if let Some(m) = &r.memory {
        println!(
            "  {} RSS: {} kB before the clients, {} kB with {} joined: {:.1} KB per connection",
            m.name, m.before_kb, m.joined_kb, r.connections, m.kb_per_connection
        );
    }
    println!("  exactly once, complete, in order: {}", r.check);
}
