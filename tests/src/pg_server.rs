//! A private PostgreSQL server per test, on a random port, that the test can stop and start.
//!
//! Outage tests need to stop Postgres while the services run. Stopping the machine's shared
//! cluster would break every other test running at the same time, so such a test gets its
//! own server: `initdb` into a temporary directory, `pg_ctl start` on a free port. Tests
//! connect as the role `coachwire` (CREATEDB, not a superuser), as the scripts set up.
//!
//! `initdb` refuses to run as root; as root the server runs as the `postgres` user that the
//! Debian package creates.
//!
//! [`PgServer::kill`] is a crash (SIGKILL of the postmaster and its backends); `pg_ctl`
//! daemonizes the postmaster, so nobody of ours reaps it and on a machine whose init does
//! not reap orphans either its zombie would keep the lock file "in use" forever.

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

    /// SIGKILL of the postmaster and every backend, as in a crash of the host: no
    /// checkpoint, WAL recovery at the next [`start_again`](Self::start_again).
    ///
    /// The signal goes to the postmaster's process group (`pg_ctl` makes it a session
    /// leader): a list of pids misses a backend forked for a new connection after it was
    /// read, and such an orphan kept the shared memory, so the next start failed (seen in
    /// the soak).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let pids = self.pids();
        let mut targets: Vec<String> = pids.iter().map(u32::to_string).collect();
        if let Some(postmaster) = pids.first() {
            targets.push(format!("-{postmaster}"));
        }
        // Its exit status is not checked: a backend may end by itself between the listing
        // and the signal, and `kill` then fails for that one pid alone.
        tokio::process::Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .args(&targets)
            .status()
            .await
            .context("running kill")?;
        self.running = false;
        if let Some(&postmaster) = pids.first() {
            wait_dead(postmaster).await?;
            wait_group_dead(postmaster).await?;
        }
        // A zombie (unreaped here, see the module doc) or a gone process: either way the
        // lock file is stale, as it is after a real crash once init has reaped the process.
        let _ = std::fs::remove_file(self.data_dir().join("postmaster.pid"));
        // So is the socket's lock file, which names the postmaster: a zombie still
        // answers `kill -0`, and the next start took it for a live postmaster.
        let socket = format!(".s.PGSQL.{}", self.port);
        let _ = std::fs::remove_file(self.dir.join(format!("{socket}.lock")));
        let _ = std::fs::remove_file(self.dir.join(socket));
        Ok(())
    }

    /// The postmaster's process id and its children's (backends, walwriter …), postmaster
    /// first; empty while the server is stopped. For a pause with SIGSTOP, say.
    pub fn pids(&self) -> Vec<u32> {
        let Some(postmaster) = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|pid_file| pid_file.lines().next()?.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        pids
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
        let started = self
            .pg_ctl(&["start", "-w", "-t", "30", "-l", &log, "-o", &options])
            .await;
        if let Err(e) = started {
            // pg_ctl only says "examine the log output": the log's end says why.
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(e.context(format!("server.log ends with:\n{}", tail.join("\n"))));
        }
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

/// Processes whose parent is `parent` (from `/proc`, which has no `children` file here).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// `(state, parent pid)` of a process from `/proc/<pid>/stat`; `None` once it is gone.
fn process_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    let mut after = stat.rsplit_once(')')?.1.split_whitespace();
    let state = after.next()?.chars().next()?;
    Some((state, after.next()?.parse().ok()?))
}

/// Waits until no live process is left in process group `group`.
async fn wait_group_dead(group: u32) -> anyhow::Result<()> {
    const POLLS: usize = 200;
    for _ in 0..POLLS {
        if group_members(group).is_empty() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    bail!(
        "processes of group {group} still run after SIGKILL: {:?}",
        group_members(group)
    )
}

/// The live (not zombie) processes of process group `group`, from `/proc`.
fn group_members(group: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            // `pid (comm) state ppid pgrp …`
            let fields = stat
                .as_deref()
                .and_then(|s| s.rsplit_once(')'))
                .map(|(_, rest)| {
                    rest.split_whitespace()
                        .take(3)
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                });
            fields.is_some_and(|f| f.len() == 3 && f[0] != "Z" && f[2] == group.to_string())
        })
        .collect()
}

/// Waits until `pid` is gone or a zombie (a SIGKILL is delivered asynchronously).
async fn wait_dead(pid: u32) -> anyhow::Result<()> {
    const POLLS: usize = 200;
    for _ in 0..POLLS {
        if process_stat(pid).is_none_or(|(state, _)| state == 'Z') {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    bail!("postmaster {pid} still runs after SIGKILL")
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
