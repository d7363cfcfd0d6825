//! The persister's integration tests, one binary: the store path and the service against
//! a fresh database and a private nats-server (`persister`), the operator commands
//! (`ops`), and the query plans once tables hold history (`plans`).

mod common;
mod ops;
mod persister;
mod plans;
