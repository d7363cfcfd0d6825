//! What one run measured, from the drivers' recordings: latency histograms (HDR, in
//! microseconds), counts and rates over the measured window (after the warm-up).

use coachwire_testkit::load::LoadReport;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Latencies from a message's first send, in microseconds, up to a minute.
pub struct Latencies {
    /// → its success ack.
    pub ack: Histogram<u64>,
    /// → its arrival at each other socket of the room.
    pub room: Histogram<u64>,
    /// → `message_delivered` at the sender (persisted, with its `seq`).
    pub delivered: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        let new = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        Self {
            ack: new(),
            room: new(),
            delivered: new(),
        }
    }
}

/// Counts over the measured window.
#[derive(Default, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub acked: u64,
    /// Failed attempts by code (`UNAVAILABLE`, `RATE_LIMITED`, `timeout`, …).
    pub errors: BTreeMap<String, u64>,
    pub room_deliveries: u64,
}

/// Adds the messages of `report` first sent in `[from, to)` (driver milliseconds).
pub fn record(
    report: &LoadReport,
    from: f64,
    to: f64,
    latencies: &mut Latencies,
    counts: &mut Counts,
) {
    let mut sent_at = HashMap::new();
    for message in &report.messages {
        let Some(first) = message.first_send_at.filter(|t| (from..to).contains(t)) else {
            continue;
        };
        counts.sent += 1;
        for (_, outcome) in &message.attempts {
            if outcome != "ok" && outcome != "duplicate" {
                *counts.errors.entry(outcome.clone()).or_default() += 1;
            }
        }
        if let (Some(acked), Some(id)) = (message.ack_at, message.id) {
            counts.acked += 1;
            add(&mut latencies.ack, acked - first);
            sent_at.insert(id, first);
        }
    }
    for client in &report.clients {
        for event in &client.events {
            let Some(first) = event.2.and_then(|id| sent_at.get(&id)) else {
                continue;
            };
            if event.is_delivered() {
                add(&mut latencies.delivered, event.4 - first);
            } else {
                counts.room_deliveries += 1;
                add(&mut latencies.room, event.4 - first);
            }
        }
    }
}

fn add(histogram: &mut Histogram<u64>, millis: f64) {
    let micros = (millis * 1000.0).round().max(1.0) as u64;
    histogram.saturating_record(micros);
}

/// Percentiles in milliseconds, for tables and JSON.
#[derive(Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl From<&Histogram<u64>> for Percentiles {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}
