//! The production shape on one machine, with a handle on every process and link.
//!
//! A 3-node NATS cluster (R3 streams, `sync_interval: always`) whose routes run through
//! proxies, 2 ingest nodes, 2 persisters and 2 fanouts, each reaching the cluster through
//! three proxies of its own (one per node), and a private Postgres. Every process sits
//! behind its own lock: a fault holds the locks of what it hits for as long as it lasts,
//! so overlapping faults never touch one process, and the end of the run
//! ([`Topology::recover`]) waits for every fault to let go before it checks readiness.

use super::catalog::{Role, ServiceId, Shape};
use super::signals::{Signal, send};
use crate::db::TestDb;
use crate::nats_cluster::NatsCluster;
use crate::pg_server::PgServer;
use crate::stack::{FANOUT, INGEST, PERSISTER, Service, ServiceEnv, Stack, StackOptions};
use crate::tcp_proxy::{Link, TcpProxy};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};

/// The soak's `COACHWIRE_REPLY_IDLE_MS` ([`crate::scenario::REPLY_END_WAIT`] covers it).
pub const REPLY_IDLE_MS: u64 = 5000;

/// How long a process may take to be ready again once every fault has ended.
const RECOVER_WAIT: Duration = Duration::from_secs(60);
/// Log lines kept as evidence of a process that exited by itself.
const LAST_LINES: usize = 5;

pub struct Topology {
    pub shape: Shape,
    pub db: TestDb,
    pub pg: Mutex<PgServer>,
    pub cluster: Mutex<NatsCluster>,
    /// What a fault on one NATS node holds (the cluster's own lock is held per call).
    nodes: Vec<Mutex<()>>,
    services: BTreeMap<ServiceId, Mutex<Service>>,
    links: BTreeMap<ServiceId, Vec<TcpProxy>>,
    /// The ingest nodes' public URLs, for the clients.
    pub urls: Vec<String>,
    /// The cluster's own URLs (not through any proxy), for the checks.
    pub nats_url: String,
    /// `libfaketime`, for the clock-skew fault.
    pub faketime: Option<PathBuf>,
}

/// What the end of the run found wrong with one process.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessProblem {
    pub process: String,
    pub problem: ProcessState,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessState {
    /// It was not running, though every fault restarts what it kills; its last lines.
    Exited(Vec<String>),
    /// It runs (or was started again) but is not ready.
    Unready(String),
}

/// A service that exited by itself while the faults ran and was started again, as
/// compose's `restart: unless-stopped` (`compose.yaml`) does in production.
#[derive(Clone, Debug, Serialize)]
pub struct SupervisedExit {
    pub process: String,
    /// How it ended: `exit 1` is a service giving up with one line (at start-up, when
    /// NATS or Postgres stayed unreachable past its patience), for a supervisor to start
    /// it again; anything else (a panic's 101, a signal) is an anomaly.
    pub status: String,
    pub gave_up: bool,
    pub last_lines: Vec<String>,
}

impl SupervisedExit {
    /// `logs`: everything the service logged, in all its lives. A panic in any of them
    /// (a task's panic can end the process much later, many lines on) makes the exit an
    /// anomaly.
    pub fn new(process: String, status: std::process::ExitStatus, logs: &[String]) -> Self {
        let panicked = logs.iter().any(|line| line.contains("panicked at"));
        SupervisedExit {
            process,
            status: status.to_string(),
            gave_up: status.code() == Some(1) && !panicked,
            last_lines: logs[logs.len().saturating_sub(LAST_LINES)..].to_vec(),
        }
    }

    /// The anomaly it is unless the service gave up as documented.
    pub fn problem(&self) -> Option<ProcessProblem> {
        (!self.gave_up).then(|| exited(self.process.clone(), self.last_lines.clone()))
    }
}

impl Topology {
    pub async fn start(faketime: Option<PathBuf>) -> Result<Topology> {
        let shape = Shape::PRODUCTION;
        let pg = PgServer::start()
            .await
            .context("starting a private Postgres")?;
        let cluster = NatsCluster::start_partitionable()
            .await
            .context("starting the NATS cluster")?;
        let links = service_links(&shape, &cluster).await?;
        let stack = Stack::start_with(StackOptions {
            ingest_nodes: shape.ingest,
            persisters: shape.persisters,
            fanouts: shape.fanouts,
            nats_url: Some(cluster.urls()),
            database_admin_url: Some(pg.admin_url()),
            // R3, as `tests/tests/cluster.rs` and production run them.
            env: vec![
                ("COACHWIRE_STREAM_REPLICAS".into(), "3".into()),
                // Short, so that the drain need not wait a minute for the replies the
                // faults left behind to end (§14 rule 3).
                ("COACHWIRE_REPLY_IDLE_MS".into(), REPLY_IDLE_MS.to_string()),
                // Production's consumer timing, not the test stacks' short one.
                ("COACHWIRE_ACK_WAIT_MS".into(), "10000".into()),
                ("COACHWIRE_PINNED_TTL_MS".into(), "20000".into()),
            ],
            service_env: links.iter().map(own_nats_url).collect(),
        })
        .await
        .context("starting the services")?;
        let urls = stack.urls();
        let Stack {
            db,
            ingest,
            persisters,
            fanouts,
            ..
        } = stack;
        let services = shape
            .services()
            .into_iter()
            .zip(ingest.into_iter().chain(persisters).chain(fanouts))
            .map(|(id, service)| (id, Mutex::new(service)))
            .collect();
        Ok(Topology {
            shape,
            db,
            pg: Mutex::new(pg),
            nats_url: cluster.urls(),
            cluster: Mutex::new(cluster),
            nodes: (0..shape.nats_nodes).map(|_| Mutex::new(())).collect(),
            services,
            links,
            urls,
            faketime,
        })
    }

    /// Exclusive use of one service for the length of a fault.
    pub async fn service(&self, id: ServiceId) -> Result<MutexGuard<'_, Service>> {
        let service = self.services.get(&id).with_context(|| format!("no {id}"))?;
        Ok(service.lock().await)
    }

    /// Starts again every service that exited by itself, as a supervisor would; a service
    /// a fault holds (killed and being restarted by it) is left to that fault.
    pub async fn supervise(&self) -> Vec<SupervisedExit> {
        let mut exits = Vec::new();
        for (id, service) in &self.services {
            let Ok(mut service) = service.try_lock() else {
                continue;
            };
            let Some(status) = service.exit_status() else {
                continue;
            };
            let exit = SupervisedExit::new(id.to_string(), status, &service.logs());
            println!("[soak] {id} exited by itself ({status}); starting it again");
            if let Err(e) = service.restart().await {
                println!("[soak] {id} did not become ready after its restart: {e:#}");
            }
            exits.push(exit);
        }
        exits
    }

    /// The proxies between one service and the NATS nodes.
    pub fn links(&self, id: ServiceId) -> &[TcpProxy] {
        self.links.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Exclusive use of one NATS node for the length of a fault.
    pub async fn claim_node(&self, node: usize) -> Result<MutexGuard<'_, ()>> {
        let claim = self
            .nodes
            .get(node)
            .with_context(|| format!("no nats-{node}"))?;
        Ok(claim.lock().await)
    }

    /// Every NATS node, claimed in index order (so two such claims cannot deadlock).
    pub async fn claim_all_nodes(&self) -> Vec<MutexGuard<'_, ()>> {
        let mut claims = Vec::new();
        for claim in &self.nodes {
            claims.push(claim.lock().await);
        }
        claims
    }

    /// After the last fault: every link open, every process running and ready. Returns
    /// what was not so; a process found stopped is started again (that is a problem in
    /// itself: every fault restarts what it kills).
    pub async fn recover(&self) -> Vec<ProcessProblem> {
        let mut problems = Vec::new();
        let _nodes = self.claim_all_nodes().await;
        self.open_every_link().await;
        self.recover_nats(&mut problems).await;
        self.recover_postgres(&mut problems).await;
        for (id, service) in &self.services {
            let mut service = service.lock().await;
            recover_service(&id.to_string(), &mut service, &mut problems).await;
        }
        problems
    }

    /// Undoes what a fault that failed halfway may have left: cut, slow or stopped links.
    async fn open_every_link(&self) {
        for proxy in self.links.values().flatten() {
            proxy.restore();
            proxy.set_link(Link::Open);
        }
        let cluster = self.cluster.lock().await;
        for node in 0..self.shape.nats_nodes {
            let _ = cluster.rejoin(node);
            let _ = cluster.set_route_link(node, Link::Open);
        }
    }

    async fn recover_nats(&self, problems: &mut Vec<ProcessProblem>) {
        let mut cluster = self.cluster.lock().await;
        for node in 0..self.shape.nats_nodes {
            if let Some(pid) = cluster.pid(node) {
                let _ = send(Signal::Cont, &[pid]).await;
            }
            if !cluster.is_running(node) {
                problems.push(exited(format!("nats-{node}"), Vec::new()));
                if let Err(e) = cluster.restart(node).await {
                    problems.push(unready(format!("nats-{node}"), &e));
                }
            }
        }
        if let Err(e) = cluster.wait_for_leader().await {
            problems.push(unready("nats cluster".into(), &e));
        }
    }

    async fn recover_postgres(&self, problems: &mut Vec<ProcessProblem>) {
        let mut pg = self.pg.lock().await;
        let pids = pg.pids();
        if pids.is_empty() {
            problems.push(exited("postgres".into(), Vec::new()));
            if let Err(e) = pg.start_again().await {
                problems.push(unready("postgres".into(), &e));
            }
        }
        let _ = send(Signal::Cont, &pids).await;
        let ready = tokio::time::timeout(RECOVER_WAIT, async {
            while sqlx::query("SELECT 1")
                .execute(&self.db.pool)
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        if ready.await.is_err() {
            let e = anyhow::anyhow!("no query answered within {RECOVER_WAIT:?}");
            problems.push(unready("postgres".into(), &e));
        }
    }
}

async fn recover_service(name: &str, service: &mut Service, problems: &mut Vec<ProcessProblem>) {
    if let Some(pid) = service.pid() {
        let _ = send(Signal::Cont, &[pid]).await;
    }
    if !service.is_running() {
        let logs = service.logs();
        let last = logs[logs.len().saturating_sub(LAST_LINES)..].to_vec();
        problems.push(exited(name.into(), last));
        if let Err(e) = service.restart().await {
            return problems.push(unready(name.into(), &e));
        }
    }
    if let Err(e) = service.wait_ready(RECOVER_WAIT).await {
        problems.push(unready(name.into(), &e));
    }
}

fn exited(process: String, last_lines: Vec<String>) -> ProcessProblem {
    ProcessProblem {
        process,
        problem: ProcessState::Exited(last_lines),
    }
}

fn unready(process: String, cause: &anyhow::Error) -> ProcessProblem {
    ProcessProblem {
        process,
        problem: ProcessState::Unready(format!("{cause:#}")),
    }
}

/// Three proxies per service, one to each node's client port.
async fn service_links(
    shape: &Shape,
    cluster: &NatsCluster,
) -> Result<BTreeMap<ServiceId, Vec<TcpProxy>>> {
    let mut links = BTreeMap::new();
    for id in shape.services() {
        let mut proxies = Vec::new();
        for node in 0..shape.nats_nodes {
            proxies.push(TcpProxy::start(cluster.client_addr(node)).await?);
        }
        links.insert(id, proxies);
    }
    Ok(links)
}

/// The service's `NATS_URL`: its own three proxies.
fn own_nats_url((id, proxies): (&ServiceId, &Vec<TcpProxy>)) -> ServiceEnv {
    let binary = match id.0 {
        Role::Ingest => INGEST,
        Role::Persister => PERSISTER,
        Role::Fanout => FANOUT,
    };
    let urls: Vec<String> = proxies.iter().map(TcpProxy::url).collect();
    ServiceEnv {
        binary,
        index: id.1,
        env: vec![("NATS_URL".into(), urls.join(","))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn only_a_service_that_gave_up_with_exit_1_is_restarted_without_an_anomaly() {
        // The telling line comes first, many lines before the exit.
        let exit = |raw: i32, earlier: &str| {
            let logs: Vec<String> = std::iter::once(earlier.to_string())
                .chain((0..10).map(|i| format!("line {i}")))
                .collect();
            SupervisedExit::new(
                "persister-0".into(),
                std::process::ExitStatus::from_raw(raw),
                &logs,
            )
        };
        let gave_up = exit(
            1 << 8,
            "declaring persister-p3: still failing after 5 attempts",
        );
        assert!(gave_up.gave_up && gave_up.problem().is_none());
        assert_eq!(gave_up.last_lines.len(), LAST_LINES);
        for (raw, last) in [
            (
                101 << 8,
                "thread 'main' panicked at persister/src/writer.rs",
            ),
            (1 << 8, "thread 'tokio-runtime-worker' panicked at src/x.rs"),
            (9, "killed by a signal"),
        ] {
            let anomaly = exit(raw, last);
            assert!(
                matches!(
                    anomaly.problem().map(|p| p.problem),
                    Some(ProcessState::Exited(_))
                ),
                "{raw}: {last}"
            );
        }
    }
}
