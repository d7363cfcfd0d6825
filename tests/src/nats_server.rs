//! A private nats-server per test: random port, own store directory, killable.

use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct NatsServer {
    pub port: u16,
    /// The HTTP monitoring port (`/varz`, `/connz`, `/subsz`).
    pub monitor_port: u16,
    pub store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts the pinned server (`COACHWIRE_NATS_SERVER`, else `tools/nats/bin/nats-server`)
    /// with JetStream on a free port, and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let store = std::env::temp_dir().join(format!("cw-nats-{}", uuid::Uuid::new_v4().simple()));
        let mut server = Self {
            port,
            monitor_port: free_port()?,
            store,
            child: None,
        };
        server.boot().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The monitoring base URL, e.g. for `/connz?subs=1` (subscriptions per client).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// SIGKILL, as in a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts again on the same port and store, after [`kill`](Self::kill).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        self.boot().await
    }

    async fn boot(&mut self) -> anyhow::Result<()> {
        let child = Command::new(binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-m",
                &self.monitor_port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (run scripts/test.sh once to install it)")?;
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("nats-server did not listen on {addr}")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn binary() -> PathBuf {
    std::env::var_os("COACHWIRE_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("tools/nats/bin/nats-server"))
}

/// A port nobody listens on right now (bind 0, read, release).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
