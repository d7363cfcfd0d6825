//! Resident memory per connection of one process (`--rss ingest=PID`).
//!
//! What a node can hold is bounded by memory per joined socket, not by CPU: an idle
//! socket costs nothing to run but keeps its buffers, tasks and room membership. The
//! figure is the process's `VmRSS` with every client connected, joined and idle-ish (the
//! step's own light traffic), minus its `VmRSS` before the first client connected,
//! divided by the connections. RSS, not the heap's live bytes, because it is what the
//! machine pays: memory freed after the connect storm but kept by the allocator counts.

use crate::cpu::Watched;
use coachwire_testkit::stack::resident_kb;
use serde::Serialize;
use thiserror::Error;

/// The process's resident set before the first client connected.
#[derive(Clone, Debug)]
pub struct Before {
    process: Watched,
    kb: u64,
}

/// The process's resident memory before the clients and with all of them joined.
#[derive(Clone, Debug, Serialize)]
pub struct PerConnection {
    pub name: String,
    pub before_kb: u64,
    pub joined_kb: u64,
    pub kb_per_connection: f64,
}

#[derive(Debug, Error)]
#[error("process {0} is gone: no resident set to read")]
pub struct Gone(u32);

impl Before {
    /// Reads `process`'s resident set now.
    pub fn sample(process: Watched) -> Result<Before, Gone> {
        let kb = resident_kb(process.pid).ok_or(Gone(process.pid))?;
        Ok(Before { process, kb })
    }

    /// The growth from then to now, per connection.
    pub fn per_connection(&self, connections: usize) -> Result<PerConnection, Gone> {
        let joined_kb = resident_kb(self.process.pid).ok_or(Gone(self.process.pid))?;
        Ok(PerConnection {
            name: self.process.name.clone(),
            before_kb: self.kb,
            joined_kb,
            kb_per_connection: joined_kb.saturating_sub(self.kb) as f64 / connections.max(1) as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_growth_is_shared_by_the_connections() {
        let me = Watched::parse(
            &format!("me={}", std::process::id()),
            crate::cpu::Scope::Process,
        )
        .expect("spec");
        let mut before = Before::sample(me).expect("own status");
        before.kb = before.kb.saturating_sub(1000);
        let growth = before.per_connection(10).expect("rss");
        assert_eq!(growth.before_kb, before.kb);
        assert!(growth.kb_per_connection >= 100.0, "{growth:?}");
    }
}
