//! Ingest's in-process tests (see `harness`): the HTTP edge's rules through the real
//! router, against a fresh database and a private nats-server.

mod conversations;
mod cors;
mod harness;
