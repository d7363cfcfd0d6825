//! coachwire-persister: the `MESSAGES` stream → Postgres, exactly once, in order.
//!
//! - [`consumer`]: one pull loop per partition (a durable consumer pinned to one active
//!   persister through a priority group), cutting the stream into batches.
//! - [`batch`]: what happens to one batch: decode → store (with retries) → publish the
//!   persisted events → ack; poison messages are isolated and dead-lettered.
//! - [`store`]: the single transaction that assigns `seq` and inserts a batch idempotently.
//! - [`nats`]: persisted events and dead letters out.
//! - [`settings`], [`startup`]: configuration and wiring.

pub mod batch;
pub mod consumer;
pub mod nats;
pub mod settings;
pub mod startup;
pub mod store;
