//! Ingest's in-process tests (see `harness`): the HTTP edge's rules through the real
//! router and the socket handlers, against a fresh database and a private nats-server.

mod conversations;
mod cors;
mod harness;
mod socket;
