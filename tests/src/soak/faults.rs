//! Carrying out one planned fault: claim what it hits, inject, hold, heal.
//!
//! The heal runs even when the injection failed halfway (a read-only switch whose session
//! cut failed, a SIGSTOP that reached only some backends), so that no fault outlives its
//! slot; the first error is what the fault reports. Restarts wait until the process is
//! ready again, so a fault's window ends when the system could serve again.

use super::catalog::{Role, ServiceId, Target};
use super::plan::Action;
use super::signals::{Signal, send};
use super::topology::Topology;
use crate::db::Access;
use crate::stack::Service;
use crate::tcp_proxy::Link;
use anyhow::{Context, Result, bail};
use std::time::Duration;
use tokio::time::sleep;

/// How long a service may take to exit on SIGTERM before the restart kills it.
const TERMINATE_WAIT: Duration = Duration::from_secs(10);

pub async fn inflict(top: &Topology, action: &Action) -> Result<()> {
    match action {
        Action::Kill { target, down } => kill(top, *target, *down).await,
        Action::Pause { target, paused } => pause(top, *target, *paused).await,
        Action::Partition { target, cut } => links(top, *target, LinkFault::Cut, *cut).await,
        Action::Slow { target, link, held } => {
            links(top, *target, LinkFault::Link(*link), *held).await
        }
        Action::PgReadOnly { held } => pg_read_only(top, *held).await,
        Action::PgRestart { down } => pg_restart(top, *down).await,
        Action::Skew {
            node,
            minutes,
            held,
        } => skew(top, *node, *minutes, *held).await,
        Action::NatsCrash { down } => nats_crash(top, *down).await,
    }
}

async fn kill(top: &Topology, target: Target, down: Duration) -> Result<()> {
    match target {
        Target::Service(id) => {
            let mut service = top.service(id).await?;
            service.kill().await?;
            sleep(down).await;
            service.restart().await
        }
        Target::NatsNode(node) => {
            let _claim = top.claim_node(node).await?;
            top.cluster.lock().await.kill(node).await;
            sleep(down).await;
            top.cluster.lock().await.restart(node).await
        }
        Target::Postgres => {
            let mut pg = top.pg.lock().await;
            let killed = pg.kill().await;
            sleep(down).await;
            killed.and(pg.start_again().await)
        }
    }
}

async fn pause(top: &Topology, target: Target, paused: Duration) -> Result<()> {
    match target {
        Target::Service(id) => {
            let service = top.service(id).await?;
            let pid = service
                .pid()
                .with_context(|| format!("{id} is not running"))?;
            stopped_for(&[pid], paused).await
        }
        Target::NatsNode(node) => {
            let _claim = top.claim_node(node).await?;
            let pid = top.cluster.lock().await.pid(node);
            let pid = pid.with_context(|| format!("nats-{node} is not running"))?;
            stopped_for(&[pid], paused).await
        }
        Target::Postgres => {
            let pg = top.pg.lock().await;
            stopped_for(&pg.pids(), paused).await
        }
    }
}

async fn stopped_for(pids: &[u32], paused: Duration) -> Result<()> {
    let stopped = send(Signal::Stop, pids).await;
    sleep(paused).await;
    stopped.and(send(Signal::Cont, pids).await)
}

/// What happens to a process's NATS links.
#[derive(Clone, Copy, Debug)]
enum LinkFault {
    Cut,
    Link(Link),
}

async fn links(top: &Topology, target: Target, fault: LinkFault, held: Duration) -> Result<()> {
    match target {
        Target::Service(id) => {
            let _service = top.service(id).await?;
            let proxies = top.links(id);
            for proxy in proxies {
                match fault {
                    LinkFault::Cut => proxy.cut(),
                    LinkFault::Link(link) => proxy.set_link(link),
                }
            }
            sleep(held).await;
            for proxy in proxies {
                proxy.restore();
                proxy.set_link(Link::Open);
            }
            Ok(())
        }
        Target::NatsNode(node) => {
            let _claim = top.claim_node(node).await?;
            let injected = match fault {
                LinkFault::Cut => top.cluster.lock().await.isolate(node),
                LinkFault::Link(link) => top.cluster.lock().await.set_route_link(node, link),
            };
            sleep(held).await;
            let cluster = top.cluster.lock().await;
            let healed = cluster
                .rejoin(node)
                .and(cluster.set_route_link(node, Link::Open));
            injected.and(healed)
        }
        Target::Postgres => bail!("postgres has no NATS links"),
    }
}

async fn pg_read_only(top: &Topology, held: Duration) -> Result<()> {
    let _pg = top.pg.lock().await;
    let injected = top.db.set_access(Access::ReadOnly).await;
    sleep(held).await;
    injected.and(top.db.set_access(Access::ReadWrite).await)
}

async fn pg_restart(top: &Topology, down: Duration) -> Result<()> {
    let mut pg = top.pg.lock().await;
    let stopped = pg.stop().await;
    sleep(down).await;
    stopped.and(pg.start_again().await)
}

/// The ingest node's wall clock `minutes` off (its monotonic clock untouched, as on a
/// host whose NTP is wrong) for `held`, then right again; each a graceful restart.
async fn skew(top: &Topology, node: usize, minutes: i64, held: Duration) -> Result<()> {
    let library = top
        .faketime
        .as_deref()
        .context("no libfaketime (install Debian's faketime or set COACHWIRE_FAKETIME_LIB)")?
        .to_string_lossy()
        .into_owned();
    let mut service = top.service(ServiceId(Role::Ingest, node)).await?;
    let offset = format!("{minutes:+}m");
    let skewed = [
        ("LD_PRELOAD", library.as_str()),
        ("FAKETIME", offset.as_str()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    for (key, value) in skewed {
        service.set_env(key, Some(value));
    }
    let injected = restart_gracefully(&mut service).await;
    sleep(held).await;
    for (key, _) in skewed {
        service.set_env(key, None);
    }
    injected.and(restart_gracefully(&mut service).await)
}

async fn restart_gracefully(service: &mut Service) -> Result<()> {
    // A node that does not stop in time is killed by the restart.
    let _ = service.terminate(TERMINATE_WAIT).await;
    service.restart().await
}

/// Every node killed -9 within milliseconds (a power cut of the whole cluster), then
/// started again; over once the cluster agrees on a meta leader.
async fn nats_crash(top: &Topology, down: Duration) -> Result<()> {
    let _claims = top.claim_all_nodes().await;
    let nodes = top.shape.nats_nodes;
    {
        let mut cluster = top.cluster.lock().await;
        for node in 0..nodes {
            cluster.kill(node).await;
        }
    }
    sleep(down).await;
    let mut cluster = top.cluster.lock().await;
    let mut restarted = Ok(());
    for node in 0..nodes {
        restarted = restarted.and(cluster.restart(node).await);
    }
    restarted.and(cluster.wait_for_leader().await.map(drop))
}
