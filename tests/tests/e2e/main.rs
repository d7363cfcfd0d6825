//! The end-to-end tests: the real binaries against a fresh database and a private NATS
//! per test (the harness is the `coachwire-testkit` library). One test binary, one module
//! per area, so the suite links once; nextest selects an area with `test(/^area::/)`.
//!
//! The heavy areas (faults, db_faults, leaks, slow_socket, collector_down) measure under
//! load and run two at a time beside the rest (`.config/nextest.toml`).

mod abuse;
mod api_docs;
mod chat;
mod cli;
mod cluster;
mod collector_down;
mod cors;
mod db_faults;
mod demo;
mod fanout_replay;
mod faults;
mod framing;
mod hostile;
mod http_api;
mod leaks;
mod lifecycle;
mod limits;
mod observability;
mod ops_files;
mod outages;
mod replies;
mod rooms_heal;
mod slow_socket;
