//! coachwire-ingest: the Socket.IO + HTTP edge.
//!
//! - [`socket`]: the handshake (auth, connection limit) and the extractors every event
//!   handler shares (`Payload`, `Reply`).
//! - [`events`]: one module per client event (`join_conversation`, `message`, …).
//! - [`http`]: the REST routes of §8 on the same port.
//! - [`accept`]: the one path by which a message becomes durable: validate → publish to
//!   JetStream → await the PubAck → ack. Socket and HTTP both use it.
//! - [`rooms`]: per-conversation actors that subscribe to the conversation's room subject
//!   while a local socket is joined, and emit what arrives to the local room in `seq` order.
//! - [`replies`]: streamed replies (§14): the text so far of each, durable between its
//!   start and its end, and the ends nobody else will make.
//! - [`auth`], [`limits`]: JWT verification and rate limits.
//! - [`serve`]: the public listener, with the timeouts and per-address cap that keep slow
//!   or hoarding clients from locking others out.
//! - [`settings`], [`startup`]: configuration and wiring.

pub mod accept;
pub mod app;
pub mod auth;
pub mod events;
pub mod http;
pub mod limits;
pub mod queries;
pub mod replies;
pub mod rooms;
pub mod serve;
pub mod settings;
pub mod socket;
pub mod startup;
