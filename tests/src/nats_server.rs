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
    /// Lines of a config file the server starts with (e.g. `max_payload: 2048`), if any.
    config: String,
    child: Option<Child>,
}

/// How many times a start-up tries fresh ports (see [`on_fresh_ports`]).
const START_ATTEMPTS: usize = 3;

/// A nats-server of ours exited while starting, or another process answered on its port:
/// most likely a port [`free_port`] chose was bound by another test first.
#[derive(Debug, thiserror::Error)]
#[error("{0} did not start as ours (a port taken meanwhile?)")]
pub struct PortTaken(pub String);

/// Runs `start` (which must pick its ports afresh each time) until it succeeds or fails
/// for another reason than [`PortTaken`], at most [`START_ATTEMPTS`] times. Ports come
/// from [`free_port`], which releases the port it found, so another test can bind it
/// before the server does.
pub(crate) async fn on_fresh_ports<T, Fut>(mut start: impl FnMut() -> Fut) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match start().await {
            Err(e) if attempt < START_ATTEMPTS && e.downcast_ref::<PortTaken>().is_some() => {
                eprintln!("[nats] {e}; starting again on fresh ports");
                attempt += 1;
            }
            result => return result,
        }
    }
}

impl NatsServer {
    /// Starts the pinned server (`COACHWIRE_NATS_SERVER`, else `tools/nats/bin/nats-server`)
    /// with JetStream on a free port, and waits until it accepts connections. A port taken
    /// meanwhile makes the server exit, or worse, another test's server answers in its
    /// place; so readiness means our own server's INFO, by its name, and a start that lost
    /// its port is tried again on fresh ones ([`on_fresh_ports`]).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_config("").await
    }

    /// Like [`start`](Self::start), with `config` as the server's config file.
    pub async fn start_with_config(config: &str) -> anyhow::Result<Self> {
        on_fresh_ports(|| async {
            let mut server = Self {
                port: free_port()?,
                monitor_port: free_port()?,
                store: std::env::temp_dir()
                    .join(format!("cw-nats-{}", uuid::Uuid::new_v4().simple())),
                config: config.to_string(),
                child: None,
            };
            server.boot().await?;
            Ok(server)
        })
        .await
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
        let mut command = Command::new(binary());
        if !self.config.is_empty() {
            let file = self.store.with_extension("conf");
            std::fs::write(&file, &self.config)
                .with_context(|| format!("writing {}", file.display()))?;
            command.arg("-c").arg(file);
        }
        let child = command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-m",
                &self.monitor_port.to_string(),
                "-n",
                &self.name(),
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
            if self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some())
            {
                return Err(PortTaken(format!("nats-server on port {}", self.port)).into());
            }
            match server_name(&addr).await {
                Some(name) if name == self.name() => return Ok(()),
                Some(_) => {
                    return Err(PortTaken(format!("nats-server on port {}", self.port)).into());
                }
                None => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
        anyhow::bail!("nats-server did not listen on {addr}")
    }

    /// The server's name: its store directory's, unique to this server.
    fn name(&self) -> String {
        self.store
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The `server_name` of the nats-server answering on `addr` (the INFO line it sends
/// first), or `None` if nothing answers yet.
async fn server_name(addr: &str) -> Option<String> {
    use tokio::io::AsyncBufReadExt;
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stream);
    tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line))
        .await
        .ok()?
        .ok()?;
    let info: serde_json::Value = serde_json::from_str(line.strip_prefix("INFO ")?.trim()).ok()?;
    info["server_name"].as_str().map(str::to_string)
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.store);
        let _ = std::fs::remove_file(self.store.with_extension("conf"));
    }
}

/// The pinned server: `COACHWIRE_NATS_SERVER`, else `tools/nats/bin/nats-server`.
pub(crate) fn binary() -> PathBuf {
    std::env::var_os("COACHWIRE_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("tools/nats/bin/nats-server"))
}

/// A port nobody listens on right now (bind 0, read, release).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Before, the second server's start-up connected to the first one's port and
    /// reported ready: a test would then have used another test's server.
    #[tokio::test]
    async fn a_port_another_server_holds_is_not_taken_for_ours() {
        let first = NatsServer::start().await.expect("first server");
        let mut second = NatsServer {
            port: first.port,
            monitor_port: free_port().expect("port"),
            store: std::env::temp_dir().join(format!("cw-nats-{}", uuid::Uuid::new_v4().simple())),
            config: String::new(),
            child: None,
        };
        let refused = second.boot().await.expect_err("its port is the first's");
        assert!(refused.downcast_ref::<PortTaken>().is_some(), "{refused}");
    }
}
