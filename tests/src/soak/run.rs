//! One soak from start to report: plan, start the shape, load it, play the nemesis,
//! recover, drain, judge.

use super::availability::{DriverClock, Window, measure};
use super::catalog::{FaultKind, Shape};
use super::classify::{classify, streamed};
use super::nemesis::{self, FaultRecord};
use super::plan::Schedule;
use super::report::{self, Operations, Report};
use super::settings::{PER_ROOM, SoakSettings};
use super::topology::{SupervisedExit, Topology};
use crate::checker::{self, StreamOrder, Verdict};
use crate::load::{Load, LoadConfig};
use crate::scenario::{self, Drained};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::time::Duration;
use tokio::time::Instant;

/// How often the run prints the load's counts.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often the supervisor looks for services that exited.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);
/// Stream-order inversions quoted in the evidence.
const INVERSIONS_SHOWN: usize = 10;

pub async fn run(settings: &SoakSettings) -> Result<Report> {
    let began = Instant::now();
    let seed = settings.seed();
    let shape = Shape::PRODUCTION;
    let schedule = Schedule::plan(seed, settings.duration(), &settings.faults, &shape);
    let faketime = settings.faketime_library();
    if settings.faults.contains(&FaultKind::Skew) && faketime.is_none() {
        bail!("the skew fault needs libfaketime: install Debian's faketime or set --faketime");
    }
    println!(
        "[soak] seed {seed}: {} faults in {} slots over {:.1} min (--seed {seed} replays them)",
        schedule.faults().count(),
        schedule.slots.len(),
        settings.minutes
    );
    let top = Topology::start(faketime).await?;
    let scenario::Rooms {
        ids: conversations,
        clients,
        coaches,
    } = scenario::rooms(
        &top.db,
        settings.rooms,
        PER_ROOM,
        shape.ingest,
        scenario::Coach::Streams,
    )
    .await?;
    let client_count = clients.len() + coaches.len();
    let config = LoadConfig {
        streamers: coaches,
        ..LoadConfig::new(top.urls.clone(), clients, settings.rate)
    };
    let mut load = Load::start(&config).await.context("starting the load")?;
    load.begin().await?;
    let clock = DriverClock::calibrate(&mut load).await?;
    let load_started = Instant::now();
    println!(
        "[soak] started in {:.0} s; load on",
        began.elapsed().as_secs_f64()
    );
    let until = load_started + settings.duration();
    let (records, supervised) =
        play_supervised(&top, &schedule, &mut load, load_started, until).await?;
    println!(
        "[soak] faults over after {:.0} s; recovering",
        nemesis::since(load_started, Instant::now())
    );
    let mut processes = top.recover().await;
    processes.extend(supervised.iter().filter_map(SupervisedExit::problem));
    let drained = scenario::drain(&mut load, &top.db.pool, &conversations).await?;
    let _ = load.shutdown().await;
    let found = judge(&top, &drained, &conversations).await?;
    let windows: Vec<Window> = records
        .iter()
        .map(|r| Window {
            kind: r.kind,
            from: clock.at(r.started),
            to: clock.at(r.ended),
        })
        .collect();
    let sends = classify(&drained.report, &found.rows);
    let faults = report::fault_counts(&records);
    let anomalies = report::anomalies(&sends, &found.verdict, &found.order, &faults, &processes);
    Ok(Report {
        seed,
        minutes: settings.minutes,
        rate: settings.rate,
        rooms: settings.rooms,
        clients: client_count,
        wall_clock_s: began.elapsed().as_secs_f64(),
        operations: operations(&drained, &found.verdict),
        fault_log: report::fault_log(&records, load_started),
        faults,
        sends,
        replies: streamed(&drained.report, &found.rows),
        anomalies,
        checks: found.verdict.violations.clone(),
        stream_order_placed: found.order.placed,
        processes,
        supervised,
        availability: measure(&drained.report.messages, &windows),
        evidence: evidence(&found.verdict, &found.order),
    })
}

/// [`play_and_watch`], with a supervisor beside it that starts again every service that
/// exits by itself ([`Topology::supervise`]), as production's does.
async fn play_supervised(
    top: &Topology,
    schedule: &Schedule,
    load: &mut Load,
    load_started: Instant,
    until: Instant,
) -> Result<(Vec<FaultRecord>, Vec<SupervisedExit>)> {
    let watched = play_and_watch(top, schedule, load, load_started, until);
    tokio::pin!(watched);
    let mut exits = Vec::new();
    loop {
        tokio::select! {
            records = &mut watched => return Ok((records?, exits)),
            found = async {
                tokio::time::sleep(SUPERVISE_EVERY).await;
                top.supervise().await
            } => exits.extend(found),
        }
    }
}

/// Plays the nemesis until its last slot has ended and the load has run its duration,
/// printing the load's counts meanwhile.
async fn play_and_watch(
    top: &Topology,
    schedule: &Schedule,
    load: &mut Load,
    load_started: Instant,
    until: Instant,
) -> Result<Vec<FaultRecord>> {
    let nemesis = nemesis::play(top, schedule, load_started);
    tokio::pin!(nemesis);
    let mut ticks = tokio::time::interval_at(load_started + PROGRESS_EVERY, PROGRESS_EVERY);
    let records = loop {
        tokio::select! {
            records = &mut nemesis => break records,
            _ = ticks.tick() => print_progress(load, load_started).await?,
        }
    };
    while Instant::now() < until {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = ticks.tick() => print_progress(load, load_started).await?,
        }
    }
    Ok(records)
}

async fn print_progress(load: &mut Load, load_started: Instant) -> Result<()> {
    let p = load.progress().await?;
    println!(
        "[soak] {:>6.1} s  load: sent {} acked {} in flight {} connected {} reconnects {} failures {:?}",
        nemesis::since(load_started, Instant::now()),
        p.sent,
        p.acked,
        p.in_flight,
        p.connected,
        p.reconnects,
        p.failures
    );
    Ok(())
}

/// The checker's findings, and the rows they are about.
struct Found {
    rows: Vec<checker::StoredRow>,
    verdict: Verdict,
    order: StreamOrder,
}

async fn judge(
    top: &Topology,
    drained: &Drained,
    conversations: &[coachwire_shared::ids::ConversationId],
) -> Result<Found> {
    let rows = checker::stored_rows(&drained.report, &top.db.pool).await?;
    let verdict = checker::judge(&drained.report, &rows);
    println!("{}", verdict.summary);
    let nats = scenario::connect_nats(&top.nats_url).await?;
    let js = async_nats::jetstream::new(nats);
    let order = checker::stream_order(&top.db.pool, &js, conversations).await?;
    Ok(Found {
        rows,
        verdict,
        order,
    })
}

fn operations(drained: &Drained, verdict: &Verdict) -> Operations {
    let summary = &verdict.summary;
    Operations {
        sent: summary.sent,
        acked: summary.acked,
        attempts: summary.codes.values().sum(),
        retries: summary.retries,
        outcomes: summary.codes.clone(),
        reconnects: drained.stopped.reconnects,
    }
}

fn evidence(verdict: &Verdict, order: &StreamOrder) -> String {
    let mut evidence = verdict.evidence.clone();
    list(&mut evidence, "stream-order inversions", &order.inversions);
    // Not an anomaly of coachwire's by itself, but what explains one: the stream changed
    // under the persister.
    let moved = "stream positions that changed after the persister read them";
    list(&mut evidence, moved, &order.moved);
    evidence
}

/// `heading: count` and the first [`INVERSIONS_SHOWN`] of `lines`, if there are any.
fn list(evidence: &mut String, heading: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(evidence, "{heading}: {}", lines.len());
    for line in lines.iter().take(INVERSIONS_SHOWN) {
        let _ = writeln!(evidence, "  - {line}");
    }
}
