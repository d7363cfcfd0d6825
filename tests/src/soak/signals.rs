//! Signals to processes that are not our children (NATS nodes, Postgres backends) or whose
//! `Child` handle does not send them (SIGSTOP, SIGCONT): through the `kill` command, since
//! the workspace forbids `unsafe` and so a direct `libc::kill`.

use anyhow::{Context, Result, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Freezes the process (it cannot catch it): leases lapse, pins move, sockets stall.
    Stop,
    /// Lets a stopped process run again.
    Cont,
}

/// Sends `signal` to every one of `pids` (none: nothing to do).
pub async fn send(signal: Signal, pids: &[u32]) -> Result<()> {
    if pids.is_empty() {
        return Ok(());
    }
    let name = match signal {
        Signal::Stop => "-STOP",
        Signal::Cont => "-CONT",
    };
    let status = tokio::process::Command::new("kill")
        .arg(name)
        .args(pids.iter().map(u32::to_string))
        .status()
        .await
        .context("running kill")?;
    if !status.success() {
        bail!("kill {name} {pids:?}: {status}");
    }
    Ok(())
}
