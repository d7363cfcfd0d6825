//! The three real binaries, wired to a private database and nats-server.
//!
//! Any number of each service can run ([`StackOptions`]); each [`Service`] keeps the
//! environment it was started with, so fault tests can SIGKILL or SIGTERM it and start
//! it again on the same ports. NATS and Postgres may come from elsewhere (a cluster
//! harness, a stoppable private Postgres) through `nats_url` and `database_admin_url`.

use crate::db::TestDb;
use crate::nats_server::{NatsServer, free_port};
use anyhow::Context;
use coachwire_shared::ids::UserId;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::watch;

pub const JWT_SECRET: &str = "test-secret-of-sufficient-length-0123456789";

/// What to start. `Default` is one of each service on a private NATS and a fresh
/// database on the default Postgres; a count of 0 means 1.
#[derive(Clone, Debug, Default)]
pub struct StackOptions {
    pub ingest_nodes: usize,
    pub persisters: usize,
    pub fanouts: usize,
    /// Use this NATS (e.g. a cluster, comma-separated URLs) instead of a private server.
    pub nats_url: Option<String>,
    /// Create the test database through this admin URL instead of
    /// `COACHWIRE_TEST_DATABASE_URL` (e.g. a private Postgres a test can stop).
    pub database_admin_url: Option<String>,
    /// Extra environment for every service (e.g. short rate-limit windows).
    pub env: Vec<(String, String)>,
    /// Extra environment for single services, applied after `env` (e.g. one service's own
    /// `NATS_URL` through a proxy).
    pub service_env: Vec<ServiceEnv>,
}

/// Variables for the `index`-th service of `binary` ([`INGEST`], [`PERSISTER`], [`FANOUT`]).
#[derive(Clone, Debug)]
pub struct ServiceEnv {
    pub binary: &'static str,
    pub index: usize,
    pub env: Vec<(String, String)>,
}

impl StackOptions {
    /// One of each service, every one with these extra variables.
    pub fn with_env(pairs: &[(&str, &str)]) -> Self {
        Self {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }
}

/// Warnings, plus the line each binary logs once its listeners are bound (see `bound`).
pub const LOG_FILTER: &str = "warn,coachwire::ready=info";

/// The services' log filter: [`LOG_FILTER`], or `COACHWIRE_TEST_LOG` to look closer
/// (`COACHWIRE_TEST_LOG=warn,coachwire_persister=debug scripts/soak.sh …`).
pub fn log_filter() -> String {
    std::env::var("COACHWIRE_TEST_LOG").unwrap_or_else(|_| LOG_FILTER.to_string())
}

/// How long a (re)started service may take to answer `/readyz` with 200: on a fresh
/// 3-node cluster, declaring R3 streams alone takes 5–15 s (the services retry for up
/// to 45 s, `DECLARE_PATIENCE`).
const READY_WAIT: Duration = Duration::from_secs(50);

/// Starts of one service on fresh ports before a lost port race counts as a failure.
const PORT_ATTEMPTS: usize = 3;
/// One readiness poll window of [`Service::wait_bound_and_ready`], between checks that
/// the process still runs.
const READY_POLL: Duration = Duration::from_millis(250);

/// What waiting for `/readyz` found.
enum Readiness {
    Ready,
    Exited,
    TimedOut,
}

/// Where a service listens, and its environment saying so.
struct Ports {
    /// The port the tests talk to (ingest's public one; the admin one of the others).
    port: u16,
    admin_port: u16,
    env: Vec<(String, String)>,
}

/// `env` plus the listen addresses of `binary` on ports free right now.
fn with_ports(binary: &str, mut env: Vec<(String, String)>) -> anyhow::Result<Ports> {
    env.retain(|(key, _)| key != "COACHWIRE_LISTEN" && key != "COACHWIRE_ADMIN_LISTEN");
    let port = free_port()?;
    let admin_port = if binary == INGEST {
        let admin_port = free_port()?;
        env.push(("COACHWIRE_LISTEN".into(), format!("127.0.0.1:{port}")));
        // Several ingest nodes on one machine must not share the default admin port.
        env.push((
            "COACHWIRE_ADMIN_LISTEN".into(),
            format!("127.0.0.1:{admin_port}"),
        ));
        admin_port
    } else {
        env.push(("COACHWIRE_ADMIN_LISTEN".into(), format!("127.0.0.1:{port}")));
        port
    };
    Ok(Ports {
        port,
        admin_port,
        env,
    })
}

pub const INGEST: &str = "coachwire-ingest";
pub const PERSISTER: &str = "coachwire-persister";
pub const FANOUT: &str = "coachwire-fanout";

/// A running service process, the port it serves `/readyz` on, and the exact
/// environment it was started with, so a test can crash it and start it again as it was.
pub struct Service {
    pub name: &'static str,
    /// Ingest: the public Socket.IO/HTTP port; persister and fanout: the admin port.
    pub port: u16,
    /// Where `/metrics` is served (for the persister and fanout the same as `port`).
    pub admin_port: u16,
    env: Vec<(String, String)>,
    child: Child,
    logs: Logs,
    /// Whether the current process logged its "… ready" line, which each binary writes
    /// only once its listeners are bound: until then a 200 from `/readyz` may come from
    /// another test's process that took the port.
    bound: watch::Receiver<bool>,
}

/// The lines a service wrote to stderr (its logs), across restarts, newest last, and a
/// signal for each new one.
#[derive(Clone, Default)]
struct Logs(Arc<(Mutex<Vec<String>>, watch::Sender<u64>)>);

/// Lines kept per service: enough for any test's window, bounded for long fault runs.
const KEPT_LOG_LINES: usize = 20_000;

impl Service {
    /// Starts `binary` on free ports with `env` (plus its listen addresses).
    pub async fn spawn(binary: &'static str, env: &[(String, String)]) -> anyhow::Result<Self> {
        let Ports {
            port,
            admin_port,
            env,
        } = with_ports(binary, env.to_vec())?;
        let logs = Logs::default();
        let (child, bound) = launch(binary, &env, &logs)?;
        Ok(Self {
            name: binary,
            port,
            admin_port,
            env,
            child,
            logs,
            bound,
        })
    }

    /// Waits until ready, like [`Service::wait_ready`]; a service that exited because its
    /// port was taken (free when [`free_port`] chose it, bound by another test before the
    /// service could) is started again on new ports, up to [`PORT_ATTEMPTS`] times.
    pub async fn wait_bound_and_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        for _ in 1..PORT_ATTEMPTS {
            match self.wait_ready_while_running(within).await {
                Readiness::Ready => return Ok(()),
                Readiness::Exited if self.lost_its_port() => {
                    let fresh = with_ports(self.name, self.env.clone())?;
                    (self.port, self.admin_port, self.env) =
                        (fresh.port, fresh.admin_port, fresh.env);
                    (self.child, self.bound) = launch(self.name, &self.env, &self.logs)?;
                }
                other => return self.readiness_result(other),
            }
        }
        let last = self.wait_ready_while_running(within).await;
        self.readiness_result(last)
    }

    fn readiness_result(&self, readiness: Readiness) -> anyhow::Result<()> {
        match readiness {
            Readiness::Ready => Ok(()),
            Readiness::Exited if self.lost_its_port() => {
                anyhow::bail!(
                    "{}: port {} is taken by another process",
                    self.name,
                    self.port
                )
            }
            Readiness::Exited => anyhow::bail!("{} exited while starting", self.name),
            Readiness::TimedOut => anyhow::bail!("{} never became ready", self.name),
        }
    }

    async fn wait_ready_while_running(&mut self, within: Duration) -> Readiness {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            let bound = tokio::time::timeout(READY_POLL, self.bound.wait_for(|&bound| bound))
                .await
                .map(|logged| logged.is_ok());
            match bound {
                Ok(true) if self.wait_ready(READY_POLL).await.is_ok() => return Readiness::Ready,
                // Its stderr closed before the ready line: the process is gone, or going.
                Ok(false) => {
                    let _ = tokio::time::timeout(READY_POLL, self.child.wait()).await;
                }
                _ => {}
            }
            if !self.is_running() {
                return Readiness::Exited;
            }
        }
        Readiness::TimedOut
    }

    fn lost_its_port(&self) -> bool {
        self.logs()
            .iter()
            .any(|line| line.contains("Address already in use"))
    }

    /// Every line the service has logged so far (it still goes to the test's stderr).
    pub fn logs(&self) -> Vec<String> {
        self.logs
            .0
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The lines logged so far that `matches` selects, once there are at least `n` of
    /// them (waiting at most `within`).
    pub async fn wait_for_logs(
        &self,
        n: usize,
        within: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<String>> {
        let mut logged = self.logs.0.1.subscribe();
        let wait = async {
            loop {
                let found: Vec<String> = self.logs().into_iter().filter(|l| matches(l)).collect();
                if found.len() >= n {
                    return Ok(found);
                }
                logged.changed().await?;
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .with_context(|| format!("{} never logged {n} such line(s)", self.name))?
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The OS process id (`None` once it has been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The process's resident memory (`VmRSS`) in kB, or `None` once it is gone.
    pub fn rss_kb(&self) -> Option<u64> {
        resident_kb(self.pid()?)
    }

    /// Whether the process is still alive (it never panicked or exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How the process ended, once it has (`None` while it runs).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits for the exit status (at most `within`).
    pub async fn terminate(
        &mut self,
        within: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        Ok(tokio::time::timeout(within, self.child.wait()).await??)
    }

    /// SIGKILL, as in a crash, and waits until the process is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("killing {}", self.name))
    }

    /// Sets (`Some`) or removes (`None`) one variable of the environment the next
    /// [`restart`](Self::restart) uses, e.g. to run the node under `libfaketime` for a while.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(value) = value {
            self.env.push((key.to_string(), value.to_string()));
        }
    }

    /// Starts the same binary again with the same environment and ports (after
    /// [`kill`](Self::kill) or [`terminate`](Self::terminate); a live process is killed
    /// first) and waits until it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            self.kill().await?;
        }
        (self.child, self.bound) = launch(self.name, &self.env, &self.logs)?;
        let readiness = self.wait_ready_while_running(READY_WAIT).await;
        self.readiness_result(readiness)
    }

    /// Polls `/readyz` until it answers 200 (at most `within`).
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.url());
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("{} never became ready within {within:?}", self.name)
    }
}

pub struct Stack {
    pub db: TestDb,
    /// The private nats-server; `None` when [`StackOptions::nats_url`] named another.
    pub nats: Option<NatsServer>,
    nats_url: String,
    /// The environment every service was started with (before its listen addresses).
    env: Vec<(String, String)>,
    pub ingest: Vec<Service>,
    pub persisters: Vec<Service>,
    pub fanouts: Vec<Service>,
    pub http: reqwest::Client,
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> anyhow::Result<Self> {
        let db = match &options.database_admin_url {
            Some(admin_url) => TestDb::new_on(admin_url).await?,
            None => TestDb::new().await?,
        };
        let (nats, nats_url) = match &options.nats_url {
            Some(url) => (None, url.clone()),
            None => {
                let server = NatsServer::start().await?;
                let url = server.url();
                (Some(server), url)
            }
        };
        let env = base_env(&db, &nats_url, &options);
        let mut persisters = Vec::new();
        for i in 0..options.persisters.max(1) {
            persisters
                .push(Service::spawn(PERSISTER, &env_of(&env, &options, PERSISTER, i)).await?);
        }
        let mut fanouts = Vec::new();
        for i in 0..options.fanouts.max(1) {
            fanouts.push(Service::spawn(FANOUT, &env_of(&env, &options, FANOUT, i)).await?);
        }
        let mut ingest = Vec::new();
        for i in 0..options.ingest_nodes.max(1) {
            ingest.push(Service::spawn(INGEST, &env_of(&env, &options, INGEST, i)).await?);
        }
        let mut stack = Self {
            db,
            nats,
            nats_url,
            env,
            ingest,
            persisters,
            fanouts,
            http: reqwest::Client::new(),
        };
        for service in stack.services_mut() {
            service.wait_bound_and_ready(READY_WAIT).await?;
        }
        Ok(stack)
    }

    /// Starts one more persister like the others (e.g. a standby that takes over the
    /// partitions of one that dies) and waits until it is ready.
    pub async fn add_persister(&mut self) -> anyhow::Result<&mut Service> {
        let mut service = Service::spawn(PERSISTER, &self.env).await?;
        service.wait_bound_and_ready(READY_WAIT).await?;
        self.persisters.push(service);
        self.persisters
            .last_mut()
            .context("a persister was just added")
    }

    /// Every service: ingest nodes, then persisters, then fanouts.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.ingest
            .iter()
            .chain(&self.persisters)
            .chain(&self.fanouts)
    }

    pub fn services_mut(&mut self) -> impl Iterator<Item = &mut Service> {
        self.ingest
            .iter_mut()
            .chain(&mut self.persisters)
            .chain(&mut self.fanouts)
    }

    /// The environment every service was started with, for a test that starts one more
    /// with part of it replaced (e.g. `NATS_URL` through a [`crate::tcp_proxy::TcpProxy`]).
    pub fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }

    /// The NATS URL the services use (private or external).
    pub fn nats_url(&self) -> String {
        self.nats_url.clone()
    }

    /// The private nats-server, for tests that kill and restart it.
    ///
    /// # Panics
    /// When the stack runs on an external NATS ([`StackOptions::nats_url`]): such a
    /// test stops that server through its own harness.
    pub fn nats_server(&mut self) -> &mut NatsServer {
        self.nats
            .as_mut()
            .expect("this stack runs on an external NATS (StackOptions::nats_url)")
    }

    /// The first ingest node's base URL.
    pub fn url(&self) -> String {
        self.ingest[0].url()
    }

    /// Every ingest node's base URL.
    pub fn urls(&self) -> Vec<String> {
        self.ingest.iter().map(Service::url).collect()
    }

    /// An HTTP request to the first ingest node: `(status, JSON body)`.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }
}

/// Signs a token for `user` (HS256 with [`JWT_SECRET`]) valid for `ttl_secs` (may be negative).
pub fn token(user: UserId, role: Option<&str>, ttl_secs: i64) -> String {
    token_with(
        json!({"sub": user.to_string(), "exp": chrono::Utc::now().timestamp() + ttl_secs, "role": role}),
    )
}

/// Signs arbitrary claims with [`JWT_SECRET`] (null fields are dropped).
pub fn token_with(mut claims: Value) -> String {
    if let Some(map) = claims.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap_or_default()
}

pub fn new_user() -> UserId {
    UserId(uuid::Uuid::new_v4())
}

/// The persisters' `COACHWIRE_ACK_WAIT_MS` in test stacks (production: 10 s).
pub const TEST_ACK_WAIT: Duration = Duration::from_secs(2);
/// The persisters' `COACHWIRE_PINNED_TTL_MS` in test stacks (production: 20 s). Short, so
/// that a scenario waiting out a dead persister's pin takes seconds; the soak runs
/// production's timing.
pub const TEST_PINNED_TTL: Duration = Duration::from_secs(5);

fn base_env(db: &TestDb, nats_url: &str, options: &StackOptions) -> Vec<(String, String)> {
    let mut env = vec![
        ("DATABASE_URL".to_string(), db.url.clone()),
        ("NATS_URL".to_string(), nats_url.to_string()),
        ("COACHWIRE_JWT_SECRET".to_string(), JWT_SECRET.to_string()),
        ("COACHWIRE_LOG_FORMAT".to_string(), "json".to_string()),
        ("RUST_LOG".to_string(), log_filter()),
        // Tests open many connections from one IP and send fast; limits get their own tests.
        ("COACHWIRE_CONNECTION_LIMIT".to_string(), "0".to_string()),
        ("COACHWIRE_MESSAGE_LIMIT".to_string(), "0".to_string()),
        (
            "COACHWIRE_ACK_WAIT_MS".to_string(),
            TEST_ACK_WAIT.as_millis().to_string(),
        ),
        (
            "COACHWIRE_PINNED_TTL_MS".to_string(),
            TEST_PINNED_TTL.as_millis().to_string(),
        ),
    ];
    // Later entries win: a test's own values replace these.
    env.extend(options.env.iter().cloned());
    env
}

/// `env` with the variables [`StackOptions::service_env`] gives this one service.
fn env_of(
    env: &[(String, String)],
    options: &StackOptions,
    binary: &str,
    index: usize,
) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    let own = options
        .service_env
        .iter()
        .filter(|s| s.binary == binary && s.index == index);
    for (key, value) in own.flat_map(|s| &s.env) {
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }
    env
}

/// Where the binaries are: `COACHWIRE_BIN_DIR`, else next to this test's `deps/` folder.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COACHWIRE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.parent()
                .and_then(|deps| deps.parent())
                .map(PathBuf::from)
        })
        .unwrap_or_default()
}

/// Starts `binary`, keeping its logs in `logs`; the receiver turns `true` once this
/// process logged that it is ready (its listeners bound).
fn launch(
    binary: &str,
    env: &[(String, String)],
    logs: &Logs,
) -> anyhow::Result<(Child, watch::Receiver<bool>)> {
    let mut child = Command::new(bin_dir().join(binary))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {binary} (build the workspace first)"))?;
    let (bound, bound_rx) = watch::channel(false);
    let ready_line = format!("{} ready", binary.trim_start_matches("coachwire-"));
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(keep_lines(stderr, logs.clone(), bound, ready_line));
    }
    Ok((child, bound_rx))
}

/// Copies a service's stderr to the test's (so a failing test shows it) and keeps it.
async fn keep_lines(
    stderr: ChildStderr,
    logs: Logs,
    bound: watch::Sender<bool>,
    ready_line: String,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("{line}");
        if line.contains(&ready_line) {
            bound.send_replace(true);
        }
        let mut kept = logs.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == KEPT_LOG_LINES {
            kept.drain(..KEPT_LOG_LINES / 2);
        }
        kept.push(line);
        drop(kept);
        logs.0.1.send_modify(|n| *n += 1);
    }
}

/// A conversation between two users, with their tokens.
pub struct Room {
    pub id: coachwire_shared::ids::ConversationId,
    pub alice: UserId,
    pub bob: UserId,
    pub alice_token: String,
    pub bob_token: String,
}

impl Stack {
    /// A client of the first node, connected with `token` and joined to `conversation`.
    pub async fn joined(
        &self,
        driver: &crate::js::Driver,
        name: &str,
        token: &str,
        conversation: coachwire_shared::ids::ConversationId,
    ) -> anyhow::Result<crate::js::Client> {
        let client = driver.connect(name, &self.url(), Some(token)).await?;
        client.join(conversation).await?;
        Ok(client)
    }

    /// A fresh conversation, and its first participant connected and joined.
    pub async fn room_with_alice(
        &self,
        driver: &crate::js::Driver,
    ) -> anyhow::Result<(Room, crate::js::Client)> {
        let room = self.room().await?;
        let alice = self
            .joined(driver, "alice", &room.alice_token, room.id)
            .await?;
        Ok((room, alice))
    }

    /// A fresh conversation with both its participants connected to the first node and
    /// joined.
    pub async fn room_with_pair(
        &self,
        driver: &crate::js::Driver,
    ) -> anyhow::Result<(Room, crate::js::Client, crate::js::Client)> {
        let (room, alice) = self.room_with_alice(driver).await?;
        let bob = self.joined(driver, "bob", &room.bob_token, room.id).await?;
        Ok((room, alice, bob))
    }

    /// A fresh two-person conversation with hour-long tokens.
    pub async fn room(&self) -> anyhow::Result<Room> {
        let (alice, bob) = (new_user(), new_user());
        let id = self.db.conversation(&[alice, bob]).await?;
        Ok(Room {
            id,
            alice,
            bob,
            alice_token: token(alice, None, 3600),
            bob_token: token(bob, None, 3600),
        })
    }
}

/// A process's resident memory (`VmRSS` in `/proc/PID/status`) in kB, or `None` if it is
/// gone.
pub fn resident_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    vm_rss_kb(&status)
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
mod resident_tests {
    use super::*;

    #[test]
    fn reads_the_resident_set_of_a_status_file_and_of_this_process() {
        let status = "Name:\tcoachwire-ingest\nVmHWM:\t  190000 kB\nVmRSS:\t  182728 kB\n";
        assert_eq!(vm_rss_kb(status), Some(182728));
        assert_eq!(vm_rss_kb("Name:\tx\n"), None);
        assert!(resident_kb(std::process::id()).is_some_and(|kb| kb > 0));
    }
}
