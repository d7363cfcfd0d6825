//! A private three-node nats-server cluster per test, shaped like `nats/prod-node-*.conf`
//! (one cluster name, unique `server_name` and store per node, routes to all three,
//! JetStream with `sync_interval: always`), on random loopback ports. Nodes can be
//! killed and restarted on the same ports and store, and their monitoring endpoints tell
//! a test who is connected where.
//!
//! [`NatsCluster::start_partitionable`] routes every link between two nodes through a
//! [`TcpProxy`] of its own, so one node can be partitioned from the other two (or given a
//! slow link) while both of them still talk. For that the nodes must not find each other
//! around the proxies: each advertises a route address nobody listens on, so gossip adds
//! no direct route, and none tells clients the other nodes' addresses (`no_advertise`),
//! so a service that reaches the cluster through proxies of its own stays behind them.

use crate::nats_server::{PortTaken, binary, free_port, on_fresh_ports};
use crate::tcp_proxy::{Link, TcpProxy};
use anyhow::Context;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Nodes in the cluster: the production shape (a majority survives one loss).
pub const NODES: usize = 3;
/// A fresh cluster elects its JetStream meta leader in a few seconds; allow for a slow,
/// busy machine.
const LEADER_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// One node's ports and its child process while it runs.
struct Node {
    client_port: u16,
    cluster_port: u16,
    http_port: u16,
    child: Option<Child>,
}

pub struct NatsCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    routing: Routing,
    http: reqwest::Client,
}

/// How the nodes reach each other.
enum Routing {
    /// Straight to each other's cluster port, as in production.
    Direct,
    /// Node `from` reaches node `to` only through its own proxy, one per ordered pair.
    Proxied(Vec<RouteLink>),
}

struct RouteLink {
    from: usize,
    to: usize,
    proxy: TcpProxy,
}

/// A route address that refuses every connection (port 1 is privileged and unused), so
/// a route learnt by gossip never goes around the proxies.
const NOWHERE: &str = "127.0.0.1:1";

/// A client connection as `/connz` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub cid: u64,
    /// The name the client gave (`coachwire-ingest`, …), empty if none.
    pub name: String,
}

impl NatsCluster {
    /// Writes the three configs, starts the nodes and waits until every node reports the
    /// same JetStream meta leader.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_routed(false).await
    }

    /// Like [`start`](Self::start), with every route through a proxy (see the module doc).
    pub async fn start_partitionable() -> anyhow::Result<Self> {
        Self::start_routed(true).await
    }

    /// Starts again on fresh ports when a node exits during start-up, as a node whose
    /// port was taken meanwhile does (seen in CI: "node 3 did not listen").
    async fn start_routed(proxied: bool) -> anyhow::Result<Self> {
        on_fresh_ports(|| Self::try_start_routed(proxied)).await
    }

    async fn try_start_routed(proxied: bool) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("cw-nats-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut nodes = Vec::new();
        for _ in 0..NODES {
            nodes.push(Node {
                client_port: free_port()?,
                cluster_port: free_port()?,
                http_port: free_port()?,
                child: None,
            });
        }
        let routing = if proxied {
            Routing::Proxied(route_links(&nodes).await?)
        } else {
            Routing::Direct
        };
        let mut cluster = Self {
            dir,
            nodes,
            routing,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        cluster.write_configs()?;
        for i in 0..NODES {
            cluster.spawn(i)?;
        }
        for i in 0..NODES {
            cluster.wait_listening(i).await?;
        }
        // A node whose cluster or monitoring port was taken exits after its client port
        // answered (or someone else's listener answered on a taken client port).
        for i in 0..NODES {
            if !cluster.is_running(i) {
                return Err(node_lost(i));
            }
        }
        cluster.wait_for_leader().await?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated (a `NATS_URL` for a cluster).
    pub fn urls(&self) -> String {
        (0..NODES)
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One node's client URL.
    pub fn url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[node].client_port)
    }

    /// One node's client address (for a proxy in front of it).
    pub fn client_addr(&self, node: usize) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.nodes[node].client_port))
    }

    /// One node's monitoring base URL (`/varz`, `/jsz`, `/connz`).
    pub fn monitor_url(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[node].http_port)
    }

    /// SIGKILL one node, as in a crash or a power cut of its host.
    pub async fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill().await;
        }
    }

    /// The node's OS process id while it runs (to pause it with SIGSTOP, say).
    pub fn pid(&self, node: usize) -> Option<u32> {
        self.nodes[node].child.as_ref().and_then(Child::id)
    }

    /// Whether the node's process runs (it was not killed and did not exit).
    pub fn is_running(&mut self, node: usize) -> bool {
        self.nodes[node]
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Cuts every route between `node` and the other two, which keep theirs
    /// ([`start_partitionable`](Self::start_partitionable) clusters only).
    pub fn isolate(&self, node: usize) -> anyhow::Result<()> {
        self.links_of(node)?.for_each(TcpProxy::cut);
        Ok(())
    }

    /// Lets `node`'s routes through again after [`isolate`](Self::isolate).
    pub fn rejoin(&self, node: usize) -> anyhow::Result<()> {
        self.links_of(node)?.for_each(TcpProxy::restore);
        Ok(())
    }

    /// How bytes pass on every route between `node` and the other two.
    pub fn set_route_link(&self, node: usize, link: Link) -> anyhow::Result<()> {
        self.links_of(node)?.for_each(|proxy| proxy.set_link(link));
        Ok(())
    }

    fn links_of(&self, node: usize) -> anyhow::Result<impl Iterator<Item = &TcpProxy>> {
        let Routing::Proxied(links) = &self.routing else {
            anyhow::bail!("this cluster's routes are direct: start it with start_partitionable");
        };
        Ok(links
            .iter()
            .filter(move |l| l.from == node || l.to == node)
            .map(|l| &l.proxy))
    }

    /// Starts a node again on the same ports and store (killing it first if it runs),
    /// and waits until it listens.
    pub async fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        self.kill(node).await;
        self.spawn(node)?;
        self.wait_listening(node).await
    }

    /// The client connections one node holds now.
    pub async fn client_connections(&self, node: usize) -> anyhow::Result<Vec<Connection>> {
        let connz = self.monitor(node, "/connz?limit=1024").await?;
        let list = connz["connections"].as_array().cloned().unwrap_or_default();
        Ok(list
            .iter()
            .map(|c| Connection {
                cid: c["cid"].as_u64().unwrap_or_default(),
                name: c["name"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// The JetStream meta leader's `server_name` as one node sees it (`None` while there
    /// is none).
    pub async fn meta_leader(&self, node: usize) -> anyhow::Result<Option<String>> {
        let jsz = self.monitor(node, "/jsz").await?;
        Ok(jsz["meta_cluster"]["leader"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(str::to_string))
    }

    /// A monitoring endpoint's JSON.
    pub async fn monitor(&self, node: usize, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.monitor_url(node));
        Ok(self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Waits until every running node reports one and the same meta leader.
    pub async fn wait_for_leader(&self) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let mut seen = Vec::new();
        while tokio::time::Instant::now() < deadline {
            seen.clear();
            for i in (0..NODES).filter(|&i| self.nodes[i].child.is_some()) {
                seen.push(self.meta_leader(i).await.ok().flatten());
            }
            if let Some(Some(leader)) = seen.first()
                && seen.iter().all(|l| l.as_deref() == Some(leader.as_str()))
            {
                return Ok(leader.clone());
            }
            tokio::time::sleep(POLL).await;
        }
        anyhow::bail!("no JetStream meta leader agreed within {LEADER_WAIT:?}: {seen:?}")
    }

    fn config_path(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node-{}.conf", node + 1))
    }

    /// The route URLs in `node`'s config, and the lines that keep it from learning others.
    fn routes_of(&self, node: usize) -> (Vec<String>, String) {
        match &self.routing {
            Routing::Direct => (
                self.nodes
                    .iter()
                    .map(|n| format!("    nats-route://127.0.0.1:{}", n.cluster_port))
                    .collect(),
                String::new(),
            ),
            Routing::Proxied(links) => (
                links
                    .iter()
                    .filter(|l| l.from == node)
                    .map(|l| format!("    nats-route://{}", l.proxy.addr()))
                    .collect(),
                format!("  advertise: \"{NOWHERE}\"\n  no_advertise: true\n"),
            ),
        }
    }

    fn write_configs(&self) -> anyhow::Result<()> {
        for (i, node) in self.nodes.iter().enumerate() {
            let store = self.dir.join(format!("store-{}", i + 1));
            let (routes, hidden) = self.routes_of(i);
            let config = format!(
                "server_name: cw-test-{n}\n\
                 listen: 127.0.0.1:{client}\n\
                 http: 127.0.0.1:{http}\n\
                 jetstream {{\n  store_dir: \"{store}\"\n  sync_interval: always\n}}\n\
                 cluster {{\n  name: coachwire\n  listen: 127.0.0.1:{cluster}\n{hidden}  routes: [\n{routes}\n  ]\n}}\n",
                n = i + 1,
                client = node.client_port,
                http = node.http_port,
                store = store.display(),
                cluster = node.cluster_port,
                routes = routes.join("\n"),
            );
            std::fs::write(self.config_path(i), config)?;
        }
        Ok(())
    }

    fn spawn(&mut self, node: usize) -> anyhow::Result<()> {
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.config_path(node))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (run scripts/test.sh once to install it)")?;
        self.nodes[node].child = Some(child);
        Ok(())
    }

    async fn wait_listening(&mut self, node: usize) -> anyhow::Result<()> {
        let addr = format!("127.0.0.1:{}", self.nodes[node].client_port);
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            if !self.is_running(node) {
                return Err(node_lost(node));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("nats-server node {} did not listen on {addr}", node + 1)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One proxy per ordered pair of nodes, to the second one's cluster port.
async fn route_links(nodes: &[Node]) -> anyhow::Result<Vec<RouteLink>> {
    let mut links = Vec::new();
    for from in 0..nodes.len() {
        for (to, target) in nodes.iter().enumerate().filter(|(to, _)| *to != from) {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], target.cluster_port));
            let proxy = TcpProxy::start(addr).await?;
            links.push(RouteLink { from, to, proxy });
        }
    }
    Ok(links)
}

/// A node that exited during start-up, most likely because a port it was given was taken.
fn node_lost(node: usize) -> anyhow::Error {
    PortTaken(format!("nats-server node {}", node + 1)).into()
}
