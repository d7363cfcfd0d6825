//! The randomized fault soak: the production shape under open-loop load while a seeded
//! nemesis injects faults, then one judgement of every send.
//!
//! The fault suite ([`crate::scenario`]) tests one fault at a time at a moment it chose;
//! faults in production overlap and land anywhere. Here a schedule drawn from the seed
//! alone ([`plan`]) kills, pauses, partitions, slows, skews and crashes the processes of
//! [`topology`] (3 NATS nodes with R3 streams, 2 of each service, Postgres) through
//! [`faults`], played by the [`nemesis`]. After the last fault every process must be
//! running and ready; the load then drains and the fault suite's checker judges it, while
//! [`classify`] counts each send's outcome and [`availability`] the share acked within a
//! second under each fault kind. [`report`] prints and writes it all; [`run`] is the whole
//! sequence.

pub mod availability;
pub mod catalog;
pub mod classify;
pub mod faults;
pub mod nemesis;
pub mod plan;
pub mod report;
pub mod run;
pub mod settings;
pub mod signals;
pub mod topology;

pub use catalog::FaultKind;
pub use report::Report;
pub use run::run;
pub use settings::SoakSettings;
