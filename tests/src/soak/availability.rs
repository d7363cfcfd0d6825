//! Availability: the share of sends acked within a second, overall, while no fault was
//! active, and while each kind of fault was.
//!
//! A send counts from when the client created it (the user pressed send), not from when
//! it first reached a socket: a message that waited in the outbox through a reconnect
//! waited for the user too. A send belongs to a fault kind when it was created inside
//! one of that kind's windows (two overlapping kinds both count it). The windows are the
//! nemesis's records in Rust time; [`DriverClock`] puts them on the load driver's clock,
//! on which every send time is recorded.

use super::catalog::FaultKind;
use crate::load::{Load, SentMessage};
use serde::Serialize;
use std::collections::BTreeMap;
use tokio::time::Instant;

/// "Available" means acked within this many milliseconds of creation.
pub const WITHIN_MS: f64 = 1000.0;

/// When one fault was active, on the driver's clock (ms).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub kind: FaultKind,
    pub from: f64,
    pub to: f64,
}

/// Sends, and how many of them were acked within [`WITHIN_MS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Share {
    pub sends: usize,
    pub within: usize,
}

impl Share {
    /// `within / sends`, or `None` without sends.
    pub fn ratio(&self) -> Option<f64> {
        (self.sends > 0).then(|| self.within as f64 / self.sends as f64)
    }

    fn count(&mut self, available: bool) {
        self.sends += 1;
        self.within += usize::from(available);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Availability {
    pub overall: Share,
    /// Sends created while no fault was active.
    pub quiet: Share,
    pub by_kind: BTreeMap<FaultKind, Share>,
}

pub fn measure(messages: &[SentMessage], windows: &[Window]) -> Availability {
    let mut availability = Availability::default();
    for window in windows {
        availability.by_kind.entry(window.kind).or_default();
    }
    for message in messages {
        let Some(created) = message.created_at.or(message.first_send_at) else {
            continue;
        };
        let available = message
            .ack_at
            .is_some_and(|acked| acked - created <= WITHIN_MS);
        availability.overall.count(available);
        let mut kinds: Vec<FaultKind> = windows
            .iter()
            .filter(|w| (w.from..=w.to).contains(&created))
            .map(|w| w.kind)
            .collect();
        kinds.sort();
        kinds.dedup();
        if kinds.is_empty() {
            availability.quiet.count(available);
        }
        for kind in kinds {
            availability
                .by_kind
                .entry(kind)
                .or_default()
                .count(available);
        }
    }
    availability
}

/// Maps the soak's `Instant`s onto the driver's `performance.now()` milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct DriverClock {
    origin: Instant,
    driver_ms: f64,
}

impl DriverClock {
    /// Reads the driver's clock once; the midpoint of the round trip is taken as the
    /// moment it was read (off by at most half a round trip, a millisecond or so).
    pub async fn calibrate(load: &mut Load) -> anyhow::Result<Self> {
        let asked = Instant::now();
        let progress = load.progress().await?;
        let answered = Instant::now();
        Ok(DriverClock {
            origin: asked + (answered - asked) / 2,
            driver_ms: progress.at,
        })
    }

    pub fn at(&self, instant: Instant) -> f64 {
        match instant.checked_duration_since(self.origin) {
            Some(after) => self.driver_ms + after.as_secs_f64() * 1000.0,
            None => self.driver_ms - (self.origin - instant).as_secs_f64() * 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::classify::tests::sent;
    use coachwire_shared::ids::UserId;
    use std::time::Duration;

    #[test]
    fn sends_are_counted_overall_quiet_and_under_each_kind_whose_window_holds_them() {
        let user = UserId(uuid::Uuid::new_v4());
        let messages = vec![
            sent(user, 100.0, &[(20.0, "ok")]),
            sent(user, 2_000.0, &[(1_500.0, "ok")]),
            sent(user, 2_500.0, &[(6_000.0, "timeout"), (6_200.0, "ok")]),
            sent(user, 3_500.0, &[(30.0, "ok")]),
            sent(user, 9_000.0, &[(5_000.0, "UNAVAILABLE")]),
        ];
        let windows = [
            Window {
                kind: FaultKind::Kill,
                from: 1_000.0,
                to: 3_000.0,
            },
            Window {
                kind: FaultKind::Pause,
                from: 2_400.0,
                to: 4_000.0,
            },
            Window {
                kind: FaultKind::Kill,
                from: 2_450.0,
                to: 2_600.0,
            },
            Window {
                kind: FaultKind::Pg,
                from: 20_000.0,
                to: 21_000.0,
            },
        ];
        let a = measure(&messages, &windows);
        assert_eq!(
            a.overall,
            Share {
                sends: 5,
                within: 2
            }
        );
        assert_eq!(
            a.quiet,
            Share {
                sends: 2,
                within: 1
            }
        );
        assert_eq!(
            a.by_kind[&FaultKind::Kill],
            Share {
                sends: 2,
                within: 0
            }
        );
        assert_eq!(
            a.by_kind[&FaultKind::Pause],
            Share {
                sends: 2,
                within: 1
            }
        );
        assert_eq!(a.by_kind[&FaultKind::Pg], Share::default());
        assert_eq!(a.by_kind[&FaultKind::Pg].ratio(), None);
        assert_eq!(a.overall.ratio(), Some(0.4));
    }

    #[test]
    fn the_driver_clock_maps_instants_before_and_after_its_reading() {
        let origin = Instant::now();
        let clock = DriverClock {
            origin,
            driver_ms: 5_000.0,
        };
        let later = clock.at(origin + Duration::from_millis(1_500));
        assert!((later - 6_500.0).abs() < 1e-6, "{later}");
        let earlier = clock.at(origin - Duration::from_millis(2_000));
        assert!((earlier - 3_000.0).abs() < 1e-6, "{earlier}");
    }
}
