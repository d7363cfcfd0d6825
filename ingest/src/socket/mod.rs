//! The Socket.IO side of ingest: the handshake and what every event handler shares.

pub mod connect;
pub mod evict;
pub mod extract;
pub mod handshake;
pub mod order;
