//! coachwire-fanout: persisted messages → the ingest nodes that have the room.
//!
//! - [`router`]: consumes the `PERSISTED` stream and republishes each message on its
//!   conversation's room subject; NATS subject interest delivers it to exactly the ingest
//!   nodes with a socket joined to that conversation. Nodes order and deduplicate by `seq`
//!   (and fill gaps from Postgres), so any number of fanouts may share the consumer.
//! - [`replay`]: the `replay` operations command, which re-emits persisted messages from
//!   Postgres to a room through the same encoding; nodes drop what they already had.
//! - [`settings`], [`startup`]: configuration and wiring.

pub mod replay;
pub mod router;
pub mod settings;
pub mod startup;
