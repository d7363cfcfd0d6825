//! coachwire-fanout: persisted messages → the ingest nodes that have the room.
//!
//! - [`router`]: consumes the `PERSISTED` stream and republishes each message on its
//!   conversation's room subject; NATS subject interest delivers it to exactly the ingest
//!   nodes with a socket joined to that conversation. Nodes order and deduplicate by `seq`
//!   (and fill gaps from Postgres), so any number of fanouts may share the consumer.
//! - [`settings`], [`startup`]: configuration and wiring.

pub mod router;
pub mod settings;
pub mod startup;
