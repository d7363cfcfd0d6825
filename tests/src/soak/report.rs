//! The soak's report: what ran, what was injected, what it found; a table for the
//! terminal and the same as JSON for tooling.
//!
//! Every anomaly category is always present (a zero is a finding too), and the run
//! passes only when all are zero: no send lost, duplicated, unexpected or out of order,
//! every client complete, every fault healed, every process running and ready at the end.

use super::availability::{Availability, Share, WITHIN_MS};
use super::catalog::FaultKind;
use super::classify::{Classes, Streamed};
use super::nemesis::{FaultOutcome, FaultRecord, since};
use super::topology::{ProcessProblem, ProcessState, SupervisedExit};
use crate::checker::{StreamOrder, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use tokio::time::Instant;

/// One kind of thing that must not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anomaly {
    /// Acked, never stored (§7.1).
    Lost,
    /// Stored more than once (§7.2).
    Duplicated,
    /// Stored, never sent.
    Unexpected,
    /// `seq` against ack order or stream order (§7.3, §7.5).
    OutOfOrder,
    /// A gap or repeat in a conversation's `seq` (§7.3).
    SeqGap,
    /// A row that disagrees with its send (conversation, content, the ack's seq).
    Mismatched,
    /// Never acked although the client retried to the end.
    Unacked,
    /// A failure code other than UNAVAILABLE, a timeout or a disconnect (§4, §7.5).
    WrongCode,
    /// A client whose conversation is not complete and in order (§7.4).
    IncompleteClient,
    /// Two acks of one clientMessageId with different ids (§7.2).
    InconsistentAck,
    /// A fault that could not be injected or healed (a restart that never got ready).
    FaultFailed,
    /// A process found not running at the end (every fault restarts what it kills).
    Exited,
    /// A process not ready at the end.
    Unready,
    /// A streamed reply stored wrong: left streaming, ended other than once, an acked
    /// append missing from its text, an end other than the acked one (§14).
    BrokenReply,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Operations {
    pub sent: usize,
    pub acked: usize,
    pub attempts: usize,
    pub retries: usize,
    /// Attempts by outcome: `ok`, `duplicate`, a failure code, `timeout`, `disconnected`.
    pub outcomes: BTreeMap<String, usize>,
    pub reconnects: u64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct FaultCount {
    pub injected: usize,
    pub failed: usize,
}

/// One fault as the report lists it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultLine {
    pub kind: FaultKind,
    pub what: String,
    /// Seconds after the load started: planned, then real.
    pub planned_at_s: f64,
    pub started_at_s: f64,
    pub lasted_s: f64,
    pub outcome: FaultOutcome,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub minutes: f64,
    pub rate: u32,
    pub rooms: usize,
    pub clients: usize,
    /// The whole run: startup, load, recovery, drain and checks.
    pub wall_clock_s: f64,
    pub operations: Operations,
    pub faults: BTreeMap<FaultKind, FaultCount>,
    pub fault_log: Vec<FaultLine>,
    pub sends: Classes,
    pub replies: Streamed,
    pub anomalies: BTreeMap<Anomaly, usize>,
    /// Violations per check of [`crate::checker::judge`].
    pub checks: BTreeMap<&'static str, usize>,
    pub stream_order_placed: usize,
    pub processes: Vec<ProcessProblem>,
    /// Services the supervisor started again after they exited by themselves (those that
    /// did not give up as documented are in `processes` too).
    pub supervised: Vec<SupervisedExit>,
    pub availability: Availability,
    /// The checker's evidence of every violation (empty on a clean run).
    pub evidence: String,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.anomalies.values().all(|&n| n == 0)
    }
}

pub fn fault_log(records: &[FaultRecord], load_started: Instant) -> Vec<FaultLine> {
    records
        .iter()
        .map(|r| FaultLine {
            kind: r.kind,
            what: r.what.clone(),
            planned_at_s: r.planned_at.as_secs_f64(),
            started_at_s: since(load_started, r.started),
            lasted_s: (r.ended - r.started).as_secs_f64(),
            outcome: r.outcome.clone(),
        })
        .collect()
}

pub fn fault_counts(records: &[FaultRecord]) -> BTreeMap<FaultKind, FaultCount> {
    let mut counts: BTreeMap<FaultKind, FaultCount> = BTreeMap::new();
    for record in records {
        let count = counts.entry(record.kind).or_default();
        count.injected += 1;
        count.failed += usize::from(record.outcome != FaultOutcome::Healed);
    }
    counts
}

/// What everything found, by category.
pub fn anomalies(
    sends: &Classes,
    verdict: &Verdict,
    order: &StreamOrder,
    faults: &BTreeMap<FaultKind, FaultCount>,
    processes: &[ProcessProblem],
) -> BTreeMap<Anomaly, usize> {
    let check = |name: &str| verdict.violations.get(name).copied().unwrap_or(0);
    let processes_in = |exited: bool| {
        let is = |p: &&ProcessProblem| matches!(p.problem, ProcessState::Exited(_)) == exited;
        processes.iter().filter(is).count()
    };
    // The checker's row checks count what the classes count, and more: what is left
    // over is a row that disagrees with its send.
    let mismatched = check("acked-stored").saturating_sub(sends.lost)
        + check("stored-once").saturating_sub(sends.duplicated + sends.unexpected);
    BTreeMap::from([
        (Anomaly::Lost, sends.lost),
        (Anomaly::Duplicated, sends.duplicated),
        (Anomaly::Unexpected, sends.unexpected),
        (
            Anomaly::OutOfOrder,
            check("ack-order") + order.inversions.len(),
        ),
        (Anomaly::SeqGap, check("seq-contiguous")),
        (Anomaly::Mismatched, mismatched),
        (Anomaly::Unacked, sends.unacked),
        (Anomaly::WrongCode, check("failures-expected")),
        (
            Anomaly::IncompleteClient,
            check("stayed-delivery") + check("reconnect-sync"),
        ),
        (Anomaly::InconsistentAck, check("driver-consistent")),
        (
            Anomaly::FaultFailed,
            faults.values().map(|c| c.failed).sum(),
        ),
        (Anomaly::Exited, processes_in(true)),
        (Anomaly::Unready, processes_in(false)),
        (Anomaly::BrokenReply, check("replies")),
    ])
}

/// The table printed at the end of a run.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let r = report;
    let _ = writeln!(
        out,
        "coachwire soak: seed {}, {:.1} min at {} msg/s, {} rooms ({} clients), {:.0} s wall clock",
        r.seed, r.minutes, r.rate, r.rooms, r.clients, r.wall_clock_s
    );
    let o = &r.operations;
    let _ = writeln!(
        out,
        "operations  sent {}  acked {}  attempts {}  retries {}  reconnects {}  outcomes {:?}",
        o.sent, o.acked, o.attempts, o.retries, o.reconnects, o.outcomes
    );
    let _ = writeln!(
        out,
        "{:<12}{:<12}{:>9}{:>8}{:>9}{:>12}",
        "faults",
        "kind",
        "injected",
        "failed",
        "sends",
        format!("acked<={:.0}s", WITHIN_MS / 1000.0)
    );
    for (kind, count) in &r.faults {
        let share = r
            .availability
            .by_kind
            .get(kind)
            .copied()
            .unwrap_or_default();
        let (injected, failed) = (count.injected.to_string(), count.failed.to_string());
        let _ = writeln!(out, "{}", row(kind.name(), &injected, &failed, share));
    }
    let _ = writeln!(out, "{}", row("(no fault)", "", "", r.availability.quiet));
    let _ = writeln!(out, "{}", row("overall", "", "", r.availability.overall));
    let s = &r.sends;
    let _ = writeln!(
        out,
        "sends       stored once {}  recovered {}  lost {}  duplicated {}  unacked {}  unexpected {}",
        s.stored_once, s.recovered, s.lost, s.duplicated, s.unacked, s.unexpected
    );
    let t = &r.replies;
    let _ = writeln!(
        out,
        "replies     begun {}  start acked {}  stored by status {:?}  appends acked {}  deltas {}",
        t.begun, t.start_acked, t.stored, t.appends_acked, t.deltas
    );
    let listed: Vec<String> = r
        .anomalies
        .iter()
        .map(|(anomaly, n)| format!("{} {n}", kebab(anomaly)))
        .collect();
    let _ = writeln!(out, "anomalies   {}", listed.join("  "));
    for p in &r.processes {
        let _ = writeln!(out, "process     {}: {:?}", p.process, p.problem);
    }
    for e in &r.supervised {
        let how = if e.gave_up {
            "gave up, as documented"
        } else {
            "an anomaly"
        };
        let _ = writeln!(
            out,
            "restarted   {} after it exited ({}; {how}): {:?}",
            e.process,
            e.status,
            e.last_lines.last()
        );
    }
    let verdict = if r.passed() { "PASS" } else { "FAIL" };
    let _ = write!(out, "verdict     {verdict}");
    out
}

fn row(kind: &str, injected: &str, failed: &str, share: Share) -> String {
    let ratio = share
        .ratio()
        .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
    format!(
        "{:<12}{kind:<12}{injected:>9}{failed:>8}{:>9}{ratio:>12}",
        "", share.sends
    )
}

fn kebab(anomaly: &Anomaly) -> String {
    serde_json::to_value(anomaly)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{anomaly:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(violations: &[(&'static str, usize)]) -> Verdict {
        Verdict {
            violations: violations.iter().copied().collect(),
            ..Verdict::default()
        }
    }

    #[test]
    fn every_category_is_reported_and_a_clean_run_has_none() {
        let clean = anomalies(
            &Classes::default(),
            &verdict(&[("ack-order", 0)]),
            &StreamOrder::default(),
            &BTreeMap::new(),
            &[],
        );
        assert_eq!(clean.len(), 14);
        assert!(clean.values().all(|&n| n == 0));
    }

    #[test]
    fn checker_violations_and_process_problems_land_in_their_categories() {
        let sends = Classes {
            lost: 2,
            ..Classes::default()
        };
        let found = anomalies(
            &sends,
            &verdict(&[("acked-stored", 3), ("ack-order", 1), ("reconnect-sync", 4)]),
            &StreamOrder {
                placed: 10,
                inversions: vec!["x".into()],
                moved: Vec::new(),
            },
            &BTreeMap::from([(
                FaultKind::Kill,
                FaultCount {
                    injected: 3,
                    failed: 1,
                },
            )]),
            &[ProcessProblem {
                process: "fanout-1".into(),
                problem: ProcessState::Unready("no".into()),
            }],
        );
        assert_eq!(found[&Anomaly::Lost], 2);
        assert_eq!(
            found[&Anomaly::Mismatched],
            1,
            "3 acked-stored, 2 of them lost"
        );
        assert_eq!(found[&Anomaly::OutOfOrder], 2);
        assert_eq!(found[&Anomaly::IncompleteClient], 4);
        assert_eq!(found[&Anomaly::FaultFailed], 1);
        assert_eq!((found[&Anomaly::Unready], found[&Anomaly::Exited]), (1, 0));
        assert_eq!(kebab(&Anomaly::IncompleteClient), "incomplete-client");
    }
}
