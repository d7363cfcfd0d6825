//! The test harness every coachwire test shares, and (in `tests/`) the end-to-end tests.
//!
//! - [`db::TestDb`]: a fresh database per test (random name, migrated, dropped after).
//! - [`nats_server::NatsServer`]: a private nats-server on a random port, killable.
//! - [`nats_cluster::NatsCluster`]: a private three-node cluster shaped like production.
//! - [`pg_server::PgServer`]: a private Postgres on a random port, stoppable (outage tests).
//! - [`tcp_proxy::TcpProxy`]: a TCP proxy a test can cut, to partition one service from NATS.
//! - [`scenario`]: the fault suite's machinery: a stack under load, replayable fault times,
//!   the checks that end every scenario.
//! - [`stack::Stack`]: the three real binaries wired to those, with typed helpers.
//! - [`js`]: the official `socket.io-client`, driven from Rust through a Node process.
//! - [`api_docs`]: the official AsyncAPI and OpenAPI validators, run the same way.
//! - [`load`]: steady load from many such clients, recorded for the fault scenarios.
//! - [`checker`]: judges a load report against Postgres for every §7 guarantee.
//! - [`soak`]: the randomized fault soak of the production shape (`coachwire-soak`).
//! - [`otlp::OtlpReceiver`]: an in-process OTLP collector (gRPC and HTTP) the binaries
//!   export their spans to.

pub mod api_docs;
pub mod checker;
pub mod db;
pub mod js;
pub mod load;
pub mod nats_cluster;
pub mod nats_server;
pub mod otlp;
pub mod persisted;
pub mod pg_server;
pub mod scenario;
pub mod soak;
pub mod stack;
pub mod tcp_proxy;

/// The repository root (tests locate scripts, tools and binaries from it).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}
