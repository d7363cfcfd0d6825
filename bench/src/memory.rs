//! Resident memory per connection of one process (`--rss ingest=PID`).
//!
//! What a node can hold is bounded by memory per joined socket, not by CPU: an idle
//! socket costs nothing to run but keeps its buffers, tasks and room membership. The
//! figure is the process's `VmRSS` (`/proc/PID/status`) with every client connected,
//! joined and idle-ish (the step's own light traffic), minus its `VmRSS` before the first
//! client connected, divided by the connections. RSS, not the heap's live bytes, because
//! it is what the machine pays: memory freed after the connect storm but kept by the
//! allocator counts.

use crate::cpu::{BadWatch, Watched};
use serde::Serialize;
use thiserror::Error;

/// A process whose resident memory is reported, by name.
#[derive(Clone, Debug)]
pub struct Resident {
    pub name: String,
    pub pid: u32,
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
pub enum RssError {
    #[error("reading /proc/{0}/status: {1}")]
    Read(u32, std::io::Error),
    #[error("/proc/{0}/status has no VmRSS line")]
    Missing(u32),
}

impl Resident {
    /// Parses `NAME=PID`.
    pub fn parse(spec: &str) -> Result<Resident, BadWatch> {
        let Watched { name, pid, .. } = Watched::parse(spec, crate::cpu::Scope::Process)?;
        Ok(Resident { name, pid })
    }

    /// The process's resident set now, in kB.
    pub fn rss_kb(&self) -> Result<u64, RssError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|e| RssError::Read(self.pid, e))?;
        vm_rss_kb(&status).ok_or(RssError::Missing(self.pid))
    }

    /// The growth from `before_kb` to now, per connection.
    pub fn per_connection(
        &self,
        before_kb: u64,
        connections: usize,
    ) -> Result<PerConnection, RssError> {
        let joined_kb = self.rss_kb()?;
        Ok(PerConnection {
            name: self.name.clone(),
            before_kb,
            joined_kb,
            kb_per_connection: joined_kb.saturating_sub(before_kb) as f64
                / connections.max(1) as f64,
        })
    }
}

/// `VmRSS:    182728 kB` → 182728.
fn vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_resident_set_of_a_status_file_and_of_this_process() {
        let status = "Name:\tcoachwire-ingest\nVmHWM:\t  190000 kB\nVmRSS:\t  182728 kB\n";
        assert_eq!(vm_rss_kb(status), Some(182728));
        assert_eq!(vm_rss_kb("Name:\tx\n"), None);
        let me = Resident::parse(&format!("me={}", std::process::id())).expect("spec");
        let rss = me.rss_kb().expect("own status");
        assert!(rss > 0);
        let growth = me
            .per_connection(rss.saturating_sub(1000), 10)
            .expect("rss");
        assert!(growth.kb_per_connection >= 100.0, "{growth:?}");
    }
}
