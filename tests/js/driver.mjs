// Drives the official `socket.io-client` for coachwire's Rust integration tests
// (tests/src/js.rs). Test logic and assertions stay in Rust; this process only
// turns JSON-line commands on stdin into socket.io-client calls and reports
// replies and events as JSON lines on stdout.
//
// stdout carries protocol lines ONLY (the Rust side parses every line);
// diagnostics go to stderr. Set COACHWIRE_JS_DEBUG=1 for a trace of commands.
//
// Binary values cross the JSON boundary as `{"$binary":"<base64>"}`: such an
// argument (or a property of an argument object) becomes a Buffer before it is
// emitted, and Buffers/ArrayBuffers received from the server are printed in
// that same shape.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const DEBUG = !!process.env.COACHWIRE_JS_DEBUG;
/** Client name → { socket, settled } (settled: connect or connect_error seen). */
const clients = new Map();

/** One protocol line. Pipes are synchronous on Linux, so lines never interleave or get lost on exit. */
function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}
function log(...args) {
  process.stderr.write(`[driver] ${args.join(" ")}\n`);
}

const isBinaryMarker = (v) =>
  v !== null && typeof v === "object" && !Array.isArray(v) &&
  Object.keys(v).length === 1 && typeof v.$binary === "string";

const isJsonMarker = (v) =>
  v !== null && typeof v === "object" && !Array.isArray(v) &&
  Object.keys(v).length === 1 && typeof v.$json === "string";

/**
 * JSON arg → emit arg: `{"$binary":…}` at top level or one level inside an object becomes a
 * Buffer; `{"$json":"<text>"}` becomes `JSON.parse(text)`, for values Rust cannot hold
 * (lone surrogates) or would refuse to build (nesting thousands deep).
 */
function decodeArg(v) {
  if (isBinaryMarker(v)) return Buffer.from(v.$binary, "base64");
  if (isJsonMarker(v)) return JSON.parse(v.$json);
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    const o = {};
    // defineProperty, not assignment: `o["__proto__"] = x` would set the prototype and
    // silently drop a key the hostile-input tests send on purpose.
    for (const [k, x] of Object.entries(v)) {
      const value = isBinaryMarker(x) ? Buffer.from(x.$binary, "base64") : x;
      Object.defineProperty(o, k, { value, enumerable: true, writable: true, configurable: true });
    }
    return o;
  }
  return v;
}

/** Received value → JSON-safe value (binary → `{"$binary":…}`, ack callbacks dropped). */
function encode(v) {
  if (Buffer.isBuffer(v)) return { $binary: v.toString("base64") };
  if (v instanceof ArrayBuffer) return { $binary: Buffer.from(v).toString("base64") };
  if (ArrayBuffer.isView(v)) return { $binary: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64") };
  if (Array.isArray(v)) return v.filter((x) => typeof x !== "function").map(encode);
  if (v !== null && typeof v === "object") {
    const o = {};
    for (const [k, x] of Object.entries(v)) o[k] = encode(x);
    return o;
  }
  return v;
}

function getSocket(name) {
  const entry = clients.get(name);
  if (!entry) throw new Error(`unknown client ${JSON.stringify(name)}`);
  return entry.socket;
}

/** For emits: socket.io-client would silently buffer until a reconnect that never comes, ending in a timeout. */
function connectedSocket(name) {
  const socket = getSocket(name);
  if (!socket.connected) throw new Error(`client ${JSON.stringify(name)} is not connected`);
  return socket;
}

const errMessage = (err) =>
  err && err.message === "operation has timed out" ? "timeout" : String(err && err.message ? err.message : err);

/** Handles one command; resolves to the reply (without `id`). Throws → `{ok:false,error}`. */
async function handle(cmd) {
  switch (cmd.cmd) {
    case "connect": {
      const name = cmd.client;
      if (typeof name !== "string") throw new Error("connect needs a string `client`");
      const old = clients.get(name);
      // A refused or disconnected client's name may be reused (e.g. reconnect tests).
      if (old && (old.socket.connected || !old.settled)) throw new Error(`client ${JSON.stringify(name)} is in use`);
      if (old) old.socket.disconnect();
      const opts = { reconnection: false, forceNew: true, timeout: 5000 };
      if (cmd.auth != null) opts.auth = cmd.auth;
      if (cmd.extraHeaders != null) opts.extraHeaders = cmd.extraHeaders;
      if (cmd.query != null) opts.query = cmd.query;
      if (cmd.transports != null) opts.transports = cmd.transports;
      const socket = io(cmd.url, opts);
      const entry = { socket, settled: false };
      clients.set(name, entry);
      socket.onAny((event, ...args) => out({ event: "incoming", client: name, name: event, args: encode(args) }));
      socket.on("disconnect", (reason) => out({ event: "disconnect", client: name, reason }));
      // Same tick as io(), before `connect`: socket.io-client buffers these like a real eager client.
      (cmd.emit || []).forEach((e, index) => {
        const args = (e.args || []).map(decodeArg);
        if (!e.ack) return socket.emit(e.event, ...args);
        socket.timeout(e.timeoutMs ?? 10000).emit(e.event, ...args, (err, ...ackArgs) =>
          out(err
            ? { event: "ack", client: name, index, error: errMessage(err) }
            : { event: "ack", client: name, index, args: encode(ackArgs) }));
      });
      return await new Promise((resolve) => {
        socket.once("connect", () => {
          entry.settled = true;
          resolve({ ok: true, connected: true, sid: socket.id });
        });
        socket.once("connect_error", (err) => {
          entry.settled = true;
          // A transport failure ("xhr poll error") says why only in its description.
          const cause = err?.description?.message ?? err?.description;
          const error = [err?.message, cause].filter((part) => part != null && part !== "").join(": ");
          resolve({ ok: true, connected: false, error });
        });
      });
    }
    case "emit": {
      const socket = connectedSocket(cmd.client);
      const args = (cmd.args || []).map(decodeArg);
      if (!cmd.ack) {
        socket.emit(cmd.event, ...args);
        return { ok: true };
      }
      try {
        const ack = await socket.timeout(cmd.timeoutMs ?? 5000).emitWithAck(cmd.event, ...args);
        return { ok: true, ack: encode(ack) ?? null };
      } catch (err) {
        return { ok: false, error: errMessage(err) };
      }
    }
    case "emit_many": {
      const socket = connectedSocket(cmd.client);
      const argsList = (cmd.argsList || []).map((args) => args.map(decodeArg));
      if (!cmd.ack) {
        for (const args of argsList) socket.emit(cmd.event, ...args);
        return { ok: true, acks: [] };
      }
      // All emitted before any ack is awaited: pipelined on the wire.
      const pending = argsList.map((args) => socket.timeout(cmd.timeoutMs ?? 10000).emitWithAck(cmd.event, ...args));
      try {
        const acks = await Promise.all(pending);
        return { ok: true, acks: acks.map((a) => encode(a) ?? null) };
      } catch (err) {
        return { ok: false, error: errMessage(err) };
      }
    }
    case "disconnect":
      getSocket(cmd.client).disconnect(); // prints the `disconnect` event line synchronously, before the reply
      return { ok: true };
    case "exit":
      shutdown(cmd.id);
      return null;
    default:
      throw new Error(`unknown command ${JSON.stringify(cmd.cmd)}`);
  }
}

/** Disconnects everyone, then exits once replies already under way (microtasks) are written. */
function shutdown(id) {
  for (const { socket } of clients.values()) socket.disconnect();
  setImmediate(() => {
    if (id !== undefined) out({ id, ok: true });
    process.exit(0);
  });
}

async function onLine(line) {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (err) {
    const m = /"id"\s*:\s*(\d+)/.exec(line); // best effort, so the caller's wait ends
    return out({ id: m ? Number(m[1]) : null, ok: false, error: `bad JSON: ${err.message}` });
  }
  const id = cmd && typeof cmd === "object" ? (cmd.id ?? null) : null;
  if (DEBUG) log("cmd", line);
  try {
    const reply = await handle(cmd ?? {});
    if (reply) out({ id, ...reply });
  } catch (err) {
    out({ id, ok: false, error: String(err && err.message ? err.message : err) });
  }
}

process.on("uncaughtException", (err) => log("uncaught exception:", err && err.stack));
process.on("unhandledRejection", (err) => log("unhandled rejection:", err && err.stack));
process.stdout.on("error", () => process.exit(0)); // reader gone (EPIPE): nothing left to do

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => void onLine(line));
rl.on("close", () => shutdown());
