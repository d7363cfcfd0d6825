//! The nemesis: plays the schedule against the topology and records when each fault
//! was really active.
//!
//! Its clock is the only time-based part of the soak: a slot starts at its planned time
//! after the load began, or when the previous slot's faults have all ended if that is
//! later (a restart can take longer than planned), so faults never pile up past two.
//! The load runs until the last slot has ended, or for the planned duration if longer.
//! The records' windows, not the plan's, are what availability is measured against.

use super::catalog::FaultKind;
use super::faults::inflict;
use super::plan::{Planned, Schedule};
use super::topology::Topology;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// One fault as it happened.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// The fault in words, with its target and planned lengths.
    pub what: String,
    /// When the plan wanted it, after the load started.
    pub planned_at: Duration,
    pub started: Instant,
    pub ended: Instant,
    pub outcome: FaultOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultOutcome {
    /// Injected, held and healed; the process it hit is ready again.
    Healed,
    /// Something in it failed (the cause); the end of the run checks what that left.
    Failed(String),
}

/// Plays every slot of the schedule, each after the one before has ended. A slot that
/// comes due late (restarts ran long) is still played, past the planned duration if need
/// be: the plan's promise that every selected kind is drawn is what the short soak of
/// the test command relies on.
pub async fn play(top: &Topology, schedule: &Schedule, load_started: Instant) -> Vec<FaultRecord> {
    let mut records = Vec::new();
    for slot in &schedule.slots {
        tokio::time::sleep_until(load_started + slot.at).await;
        let faults = slot
            .faults
            .iter()
            .map(|planned| one(top, planned, slot.at, load_started));
        records.extend(futures::future::join_all(faults).await);
    }
    records
}

async fn one(
    top: &Topology,
    planned: &Planned,
    slot_at: Duration,
    load_started: Instant,
) -> FaultRecord {
    tokio::time::sleep(planned.offset).await;
    let what = planned.action.to_string();
    let started = Instant::now();
    println!("[soak] {:>6.1} s  {what}", since(load_started, started));
    let outcome = match inflict(top, &planned.action).await {
        Ok(()) => FaultOutcome::Healed,
        Err(e) => FaultOutcome::Failed(format!("{e:#}")),
    };
    let ended = Instant::now();
    let said = match &outcome {
        FaultOutcome::Healed => "healed".to_string(),
        FaultOutcome::Failed(cause) => format!("FAILED: {cause}"),
    };
    println!(
        "[soak] {:>6.1} s  ... {what}: {said} after {:.1} s",
        since(load_started, ended),
        (ended - started).as_secs_f64()
    );
    FaultRecord {
        kind: planned.action.kind(),
        what,
        planned_at: slot_at + planned.offset,
        started,
        ended,
        outcome,
    }
}

/// Seconds from `origin` to `at`.
pub fn since(origin: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(origin).as_secs_f64()
}
