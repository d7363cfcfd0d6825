//! coachwire-persister: the `MESSAGES` stream → Postgres, exactly once, in order.
//!
//! - [`consumer`]: the durable consumers, one per partition, each pinned to one active
//!   persister through a priority group; runs every partition.
//! - [`partition`]: per partition, a puller that keeps the pin and a loop that hands what
//!   was pulled to the writer one batch at a time; hands the partition back at shutdown.
//! - [`gap`]: a batch that follows a gap in the deliveries is completed from the stream,
//!   so that nothing older still outstanding elsewhere is written after it.
//! - [`pulled`]: a message on its way to Postgres: delivered (to ack) or read.
//! - [`writer`]: one per process; the batches all partitions have ready go to Postgres in
//!   one transaction.
//! - [`batch`]: what happens to one batch: decode → store (with retries) → publish the
//!   persisted events → ack; poison messages are isolated and dead-lettered. The writer
//!   stores the next batch while the previous one is published and acked.
//! - [`store`]: the single statement that assigns `seq` and inserts a batch idempotently.
//! - [`nats`]: persisted events and dead letters out.
//! - [`settings`], [`startup`]: configuration and wiring.
//!
//! - [`ops`]: the operator commands (`status`, `dlq`, `replay`, §12); they drive [`store`]
//!   and [`nats`] the way the service does.

pub mod batch;
pub mod consumer;
pub mod gap;
pub mod nats;
pub mod ops;
pub mod partition;
pub mod pulled;
pub mod settings;
pub mod startup;
pub mod store;
pub mod writer;
