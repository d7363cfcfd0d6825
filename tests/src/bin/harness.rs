//! `coachwire-harness`: a whole stack for tests written in other languages.
//!
//! The client library's tests (`clients/js`, `node:test`) and the browser tests need the
//! real binaries on a private NATS and a fresh database, and need to break them mid-test
//! (kill an ingest node, restart NATS). The Rust [`Stack`] already does all of that, so
//! this binary puts it behind a line protocol instead of re-implementing it in Node:
//!
//! - start: `coachwire-harness [--ingest-nodes N] [--env KEY=VALUE ...]`; once every
//!   service is ready it prints `{"event":"ready","urls":[..],"databaseUrl":..}`;
//! - then one JSON command per line on stdin, one JSON answer per line on stdout
//!   (`{"ok":true,..}` or `{"ok":false,"error":..}`), in order;
//! - stdin closing stops everything (the processes are killed on drop).

use anyhow::{Context, Result, anyhow, bail};
use coachwire_shared::ids::{ConversationId, UserId};
use coachwire_testkit::stack::{Service, Stack, StackOptions, new_user, token};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long a service may take to exit on SIGTERM before it counts as hung.
const TERMINATE_WAIT: Duration = Duration::from_secs(30);
/// Token lifetime when a command does not give one.
const DEFAULT_TTL_SECS: i64 = 3600;

#[tokio::main]
async fn main() -> Result<()> {
    let options = options(std::env::args().skip(1).collect())?;
    let mut stack = Stack::start_with(options).await?;
    let mut out = tokio::io::stdout();
    let ready = json!({
        "event": "ready",
        "urls": stack.urls(),
        "databaseUrl": stack.db.url,
        "natsUrl": stack.nats_url(),
    });
    write_line(&mut out, &ready).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(command) => match run(&mut stack, &command).await {
                Ok(mut answer) => {
                    answer["ok"] = json!(true);
                    answer
                }
                Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
            },
            Err(e) => json!({"ok": false, "error": format!("not JSON: {e}")}),
        };
        write_line(&mut out, &answer).await?;
    }
    Ok(())
}

fn options(args: Vec<String>) -> Result<StackOptions> {
    let mut options = StackOptions::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--ingest-nodes" => options.ingest_nodes = value.parse()?,
            "--env" => {
                let (key, value) = value
                    .split_once('=')
                    .with_context(|| format!("--env {value}: expected KEY=VALUE"))?;
                options.env.push((key.to_string(), value.to_string()));
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(options)
}

async fn write_line(out: &mut tokio::io::Stdout, value: &Value) -> Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await?;
    Ok(())
}

/// Carries out one command.
async fn run(stack: &mut Stack, command: &Value) -> Result<Value> {
    let name = command["cmd"].as_str().context("no \"cmd\"")?;
    match name {
        "user" => {
            let user = new_user();
            Ok(json!({"userId": user, "token": signed(user, command)}))
        }
        "token" => {
            let user: UserId = serde_json::from_value(command["userId"].clone())?;
            Ok(json!({"token": signed(user, command)}))
        }
        "conversation" => {
            let participants: Vec<UserId> =
                serde_json::from_value(command["participants"].clone())?;
            let id = stack.db.conversation(&participants).await?;
            Ok(json!({"id": id}))
        }
        "rows" => {
            let conversation: ConversationId =
                serde_json::from_value(command["conversationId"].clone())?;
            let rows = stack.db.seqs(conversation).await?;
            Ok(json!({"rows": rows}))
        }
        "pid" => Ok(json!({"pid": service(stack, command)?.pid()})),
        "kill" => {
            service(stack, command)?.kill().await?;
            Ok(json!({}))
        }
        "terminate" => {
            let status = service(stack, command)?.terminate(TERMINATE_WAIT).await?;
            Ok(json!({"exitCode": status.code()}))
        }
        "restart" => {
            service(stack, command)?.restart().await?;
            Ok(json!({}))
        }
        "stop-nats" => {
            stack.nats_server().kill().await;
            Ok(json!({}))
        }
        "start-nats" => {
            stack.nats_server().restart().await?;
            Ok(json!({}))
        }
        other => Err(anyhow!("unknown command {other}")),
    }
}

/// A token for `user` with the command's `role` and `ttlSecs`.
fn signed(user: UserId, command: &Value) -> String {
    let ttl = command["ttlSecs"].as_i64().unwrap_or(DEFAULT_TTL_SECS);
    token(user, command["role"].as_str(), ttl)
}

/// The service a command names: `{"service": "ingest"|"persister"|"fanout", "index": n}`.
fn service<'a>(stack: &'a mut Stack, command: &Value) -> Result<&'a mut Service> {
    let index = usize::try_from(command["index"].as_u64().unwrap_or(0))?;
    let services = match command["service"].as_str() {
        Some("ingest") => &mut stack.ingest,
        Some("persister") => &mut stack.persisters,
        Some("fanout") => &mut stack.fanouts,
        other => bail!("unknown service {other:?}"),
    };
    services
        .get_mut(index)
        .with_context(|| format!("no such service index {index}"))
}
