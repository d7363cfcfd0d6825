//! A private PostgreSQL server per test, on a random port, that the test can stop and start.
//!
//! Outage tests need to stop Postgres while the services run. Stopping the machine's shared
//! cluster would break every other test running at the same time, so such a test gets its
//! own server: `initdb` into a temporary directory, `pg_ctl start` on a free port. Tests
//! connect as the role `coachwire` (CREATEDB, not a superuser), as the scripts set up.
//!
//! `initdb` refuses to run as root; as root the server runs as the `postgres` user that the
//! Debian package creates.

use crate::nats_server::free_port;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    running: bool,
}

impl PgServer {
    /// Initialises a cluster and starts it; returns once it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("cw-pg-{}", uuid::Uuid::new_v4().simple()));
        let mut server = Self {
            port: free_port()?,
            dir,
            bin: bin_dir()?,
            as_postgres: is_root(),
            running: false,
        };
        server.init().await?;
        server.start_again().await?;
        server.create_role().await?;
        Ok(server)
    }

    /// Admin URL for [`crate::db::TestDb::new_on`]: the `coachwire` role, database `postgres`.
    pub fn admin_url(&self) -> String {
        format!(
            "postgres://coachwire:coachwire@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// A clean shutdown, as `systemctl stop postgresql` does: clients are disconnected and
    /// new connections are refused until [`start_again`](Self::start_again).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.pg_ctl(&["stop", "-m", "fast", "-w"]).await?;
        self.running = false;
        Ok(())
    }

    /// Starts the stopped server on the same port and data directory.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        let log = log.to_string_lossy().into_owned();
        self.pg_ctl(&["start", "-w", "-t", "30", "-l", &log, "-o", &options])
            .await?;
        self.running = true;
        Ok(())
    }

    async fn init(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        if self.as_postgres {
            let chown = tokio::process::Command::new("chown")
                .arg("postgres:postgres")
                .arg(&self.dir)
                .output()
                .await?;
            check(chown)?;
        }
        let data = self.data_dir();
        let data = data.to_string_lossy();
        let args = ["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"];
        self.run(&self.bin.join("initdb"), &args).await
    }

    async fn create_role(&self) -> anyhow::Result<()> {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .context("connecting to the private Postgres")?;
        sqlx::raw_sql("CREATE ROLE coachwire LOGIN CREATEDB PASSWORD 'coachwire'")
            .execute(&mut admin)
            .await?;
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    async fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let command = self.command(&self.bin.join("pg_ctl"), &self.pg_ctl_args(args));
        run(tokio::process::Command::from(command)).await
    }

    fn pg_ctl_args<'a>(&'a self, args: &[&'a str]) -> Vec<String> {
        let data = self.data_dir().to_string_lossy().into_owned();
        std::iter::once("-D".to_string())
            .chain(std::iter::once(data))
            .chain(args.iter().map(|a| a.to_string()))
            .collect()
    }

    async fn run(&self, program: &Path, args: &[&str]) -> anyhow::Result<()> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        run(tokio::process::Command::from(self.command(program, &args))).await
    }

    /// A server program's command line, run as `postgres` when we are root.
    fn command(&self, program: &Path, args: &[String]) -> Command {
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.args(args).current_dir("/");
        command
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let args = self.pg_ctl_args(&["stop", "-m", "immediate", "-w"]);
            let _ = self.command(&self.bin.join("pg_ctl"), &args).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn run(mut command: tokio::process::Command) -> anyhow::Result<()> {
    let described = format!("{:?}", command.as_std());
    let output = command
        .output()
        .await
        .with_context(|| format!("running {described}"))?;
    check(output).with_context(|| described)
}

fn check(output: Output) -> anyhow::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "exit {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The newest installed server's programs (`/usr/lib/postgresql/<major>/bin` on Debian), or
/// `COACHWIRE_PG_BIN_DIR`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("COACHWIRE_PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut majors: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install postgresql or set COACHWIRE_PG_BIN_DIR")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    majors.sort_unstable();
    let major = majors
        .last()
        .context("no PostgreSQL server under /usr/lib/postgresql")?;
    Ok(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")))
}
