//! The test harness every coachwire test shares, and (in `tests/`) the end-to-end tests.
//!
//! - [`db::TestDb`]: a fresh database per test (random name, migrated, dropped after).
//! - [`nats_server::NatsServer`]: a private nats-server on a random port, killable.
//! - [`stack::Stack`]: the three real binaries wired to those, with typed helpers.
//! - [`js`]: the official `socket.io-client`, driven from Rust through a Node process.

pub mod db;
pub mod js;
pub mod nats_server;
pub mod stack;

/// The repository root (tests locate scripts, tools and binaries from it).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}
