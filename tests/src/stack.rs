//! The three real binaries, wired to a private database and nats-server.

use crate::db::TestDb;
use crate::nats_server::{NatsServer, free_port};
use anyhow::Context;
use coachwire_shared::ids::UserId;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::{Child, Command};

pub const JWT_SECRET: &str = "test-secret-of-sufficient-length-0123456789";

/// Extra environment for every service (e.g. short rate-limit windows).
#[derive(Clone, Debug, Default)]
pub struct StackOptions {
    pub ingest_nodes: usize,
    pub env: Vec<(String, String)>,
}

/// A running service process and the address it serves HTTP on.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    child: Child,
}

impl Service {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether the process is still alive (it never panicked or exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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
}

pub struct Stack {
    pub db: TestDb,
    pub nats: NatsServer,
    pub ingest: Vec<Service>,
    pub persister: Service,
    pub fanout: Service,
    pub http: reqwest::Client,
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(StackOptions {
            ingest_nodes: 1,
            ..Default::default()
        })
        .await
    }

    pub async fn start_with(options: StackOptions) -> anyhow::Result<Self> {
        let db = TestDb::new().await?;
        let nats = NatsServer::start().await?;
        let env = base_env(&db, &nats, &options);
        let persister = spawn("coachwire-persister", "COACHWIRE_ADMIN_LISTEN", &env).await?;
        let fanout = spawn("coachwire-fanout", "COACHWIRE_ADMIN_LISTEN", &env).await?;
        let mut ingest = Vec::new();
        for _ in 0..options.ingest_nodes.max(1) {
            ingest.push(spawn("coachwire-ingest", "COACHWIRE_LISTEN", &env).await?);
        }
        let stack = Self {
            db,
            nats,
            ingest,
            persister,
            fanout,
            http: reqwest::Client::new(),
        };
        for service in stack.services() {
            stack.wait_ready(service).await?;
        }
        Ok(stack)
    }

    fn services(&self) -> impl Iterator<Item = &Service> {
        self.ingest.iter().chain([&self.persister, &self.fanout])
    }

    /// The first ingest node's base URL.
    pub fn url(&self) -> String {
        self.ingest[0].url()
    }

    async fn wait_ready(&self, service: &Service) -> anyhow::Result<()> {
        let url = format!("{}/readyz", service.url());
        for _ in 0..400 {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("{} never became ready", service.name)
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

fn base_env(db: &TestDb, nats: &NatsServer, options: &StackOptions) -> Vec<(String, String)> {
    let mut env = vec![
        ("DATABASE_URL".to_string(), db.url.clone()),
        ("NATS_URL".to_string(), nats.url()),
        ("COACHWIRE_JWT_SECRET".to_string(), JWT_SECRET.to_string()),
        ("COACHWIRE_LOG_FORMAT".to_string(), "json".to_string()),
        ("RUST_LOG".to_string(), "warn".to_string()),
        // Tests open many connections from one IP and send fast; limits get their own tests.
        ("COACHWIRE_CONNECTION_LIMIT".to_string(), "0".to_string()),
        ("COACHWIRE_MESSAGE_LIMIT".to_string(), "0".to_string()),
    ];
    env.extend(options.env.iter().cloned());
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

async fn spawn(
    binary: &'static str,
    listen_var: &str,
    env: &[(String, String)],
) -> anyhow::Result<Service> {
    let port = free_port()?;
    let child = Command::new(bin_dir().join(binary))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(listen_var, format!("127.0.0.1:{port}"))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {binary} (build the workspace first)"))?;
    Ok(Service {
        name: binary,
        port,
        child,
    })
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
