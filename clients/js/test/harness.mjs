// The real stack for these tests: `coachwire-harness` (tests/src/bin/harness.rs) starts
// the three binaries on a private nats-server and a fresh database, and takes commands
// (kill or restart a service, stop NATS, sign tokens) as JSON lines.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { existsSync } from "node:fs";
import path from "node:path";

const repo = path.resolve(import.meta.dirname, "../../..");

function harnessBinary() {
  const candidates = [
    process.env.COACHWIRE_BIN_DIR,
    process.env.CARGO_TARGET_DIR && path.join(process.env.CARGO_TARGET_DIR, "debug"),
    path.join(repo, "target/debug"),
  ].filter(Boolean);
  for (const dir of candidates) {
    const file = path.join(dir, "coachwire-harness");
    if (existsSync(file)) return file;
  }
  throw new Error(`coachwire-harness not found in ${candidates.join(", ")}: run cargo build --workspace`);
}

export class Harness {
  /** Starts a stack; `args` as for coachwire-harness (`--ingest-nodes 2`, `--env K=V`). */
  static async start(args = []) {
    const child = spawn(harnessBinary(), args, { stdio: ["pipe", "pipe", "inherit"] });
    const harness = new Harness(child);
    harness.ready = await harness.next();
    if (harness.ready.event !== "ready") throw new Error(`harness: ${JSON.stringify(harness.ready)}`);
    return harness;
  }

  constructor(child) {
    this.child = child;
    this.waiting = [];
    this.exited = new Promise((resolve) => child.on("exit", resolve));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const waiter = this.waiting.shift();
      if (waiter) waiter(JSON.parse(line));
    });
    child.on("exit", (code) => {
      for (const waiter of this.waiting.splice(0)) waiter({ ok: false, error: `harness exited (${code})` });
    });
  }

  get urls() {
    return this.ready.urls;
  }

  next() {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Runs one command; resolves with its answer, rejects if it failed. */
  async command(cmd) {
    const answer = this.next();
    this.child.stdin.write(JSON.stringify(cmd) + "\n");
    const result = await answer;
    if (!result.ok) throw new Error(`harness ${cmd.cmd}: ${result.error}`);
    return result;
  }

  /** A new user with a token (`role`: "ai" for the coach). */
  user(role) {
    return this.command({ cmd: "user", ...(role ? { role } : {}) });
  }

  async conversation(...users) {
    return (await this.command({ cmd: "conversation", participants: users.map((u) => u.userId) })).id;
  }

  async rows(conversationId) {
    return (await this.command({ cmd: "rows", conversationId })).rows;
  }

  async stop() {
    this.child.stdin.end();
    await this.exited;
  }
}
