// Load driver for coachwire's fault tests (tests/src/load.rs bridges it to Rust).
//
// It plays real clients doing their part of CONTRACT §7: every client sends chat
// messages at an open-loop rate (a timer schedules sends whatever the acks do), retries
// a send that failed with UNAVAILABLE, timed out or was cut by a disconnect with the
// SAME clientMessageId until it succeeds, and a client whose socket the server or the
// network dropped reconnects (to the next ingest URL), re-joins and calls `sync` from
// the last seq it saw. Everything is recorded; the Rust checker judges it.
//
// Streamers (optional) play the AI coach of §14 in their room: one reply at a time,
// started (retried with the same clientMessageId on the same socket), appended piece by
// piece (a failed append is retried at the same offset), ended `complete`. A reply whose
// socket goes away is over: its node ends it `interrupted`, and the next one starts after
// the reconnect. Every socket records `message_updated` as a "u" event, and `sync`'s
// `updates` as synced seqs.
//
// Config: the path of a JSON file (one argument)
//   { urls: [..], rate: msgs/s, ackTimeoutMs?, stopDeadlineMs?, settleTimeoutMs?,
//     reportPath, clients: [{ name, userId, token, conversationId, urlIndex? }],
//     streamers?: [same as clients, with an `ai` token], replyPieces?, appendEveryMs?,
//     replyGapMs? }
// Control (JSON lines on stdin) → answers (JSON lines on stdout):
//   {"cmd":"start"}                   → {"event":"started"}  (sending begins)
//   {"cmd":"progress"}                → {"event":"progress", ...counts}
//   {"cmd":"stop"}                    → {"event":"stopped", ...counts} once every send is
//                                        acked or stopDeadlineMs passed
//   {"cmd":"settle","lastSeq":{conv:n}} → {"event":"report","path":..} once every socket
//                                        saw seq 1..n of its conversation (bounded wait)
// and unprompted: {"event":"ready"} once every client is connected and joined.
// stdout carries protocol lines only; diagnostics go to stderr.
//
// One clock: performance.now() (ms since the driver started) for every recorded time,
// so "A's ack arrived before B was first sent" is a plain comparison.
import { createInterface } from "node:readline";
import { v4 as uuidv4, v7 as uuidv7 } from "uuid";
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { io } from "socket.io-client";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const URLS = config.urls;
const RATE = config.rate ?? 100;
/** Longer than ingest's PubAck timeout (5 s), so a slow NATS answers UNAVAILABLE first. */
const ACK_TIMEOUT_MS = config.ackTimeoutMs ?? 6000;
const STOP_DEADLINE_MS = config.stopDeadlineMs ?? 60000;
const SETTLE_TIMEOUT_MS = config.settleTimeoutMs ?? 30000;
/** Retry backoff: first retry after BASE, doubling up to MAX (plus jitter). */
const RETRY_BASE_MS = 100;
const RETRY_MAX_MS = 2000;
/** Reconnect backoff after a dropped socket or a failed connect. */
const RECONNECT_BASE_MS = 200;
const RECONNECT_MAX_MS = 2000;
/** Tick of the open-loop send scheduler; sends due in a tick go out together. Short, so
 * that arrivals are smooth: at 6000 msg/s a 10 ms tick sent bursts of 60, and the last of
 * each burst queued behind the other 59 at the server. */
const TICK_MS = 1;
/** Tick of the retry pass over every client's outbox. */
const RETRY_TICK_MS = 10;
const SYNC_PAGE = 500;
/** A streamer's reply: this many appends, one every APPEND_EVERY_MS, then a pause. */
const REPLY_PIECES = config.replyPieces ?? 8;
const APPEND_EVERY_MS = config.appendEveryMs ?? 100;
const REPLY_GAP_MS = config.replyGapMs ?? 500;
const SETTLE_POLL_MS = 100;

// Time-ordered, as a well-behaved client mints them: ingest then knows a recent id is
// covered by JetStream's duplicate window and skips its Postgres lookup.
// LOAD_CLIENT_ID=v4 mints random ones instead, to measure what that lookup costs.
const newClientMessageId = process.env.LOAD_CLIENT_ID === "v4" ? uuidv4 : uuidv7;
const now = () => Math.round(performance.now() * 1000) / 1000;
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const log = (...args) => process.stderr.write(`[load] ${args.join(" ")}\n`);

/** One logical client: a user in a conversation, with however many sockets it takes. */
class Client {
  constructor(spec, index) {
    this.index = index;
    this.name = spec.name;
    this.userId = spec.userId;
    this.token = spec.token;
    this.conversationId = spec.conversationId;
    this.urlIndex = spec.urlIndex ?? index % URLS.length;
    this.socket = null;
    /** Joined on the current socket: only then may sends go out. */
    this.joined = false;
    this.sent = 0;
    /** Messages not yet acked with success, in creation order. */
    this.outbox = [];
    // Recorded for the report.
    this.firstJoinLastSeq = null;
    this.joins = []; // [{ at, lastSeq, url }]
    this.disconnects = []; // [{ at, reason }]
    this.reconnectedAt = [];
    /** [kind, seq, id, conversationId, at]: "m" = message, "d" = message_delivered. */
    this.events = [];
    this.synced = []; // [seq, id]
    this.syncs = []; // [{ at, afterSeq, count, error? }]
    this.maxSeen = 0;
    // The contract's cursor (docs/protocol.md §7): the highest seq with nothing missing
    // below it, and the seqs seen beyond it. A reconnect syncs from here. Syncing from
    // maxSeen skipped what a sync cut short by the next disconnect never returned while
    // live events had already moved maxSeen past it (the 30-minute soak: two clients
    // missed 73 and 77 seqs that way).
    this.complete = 0;
    this.beyond = new Set();
    this.errors = [];
  }

  url() {
    return URLS[this.urlIndex % URLS.length];
  }

  /** A chat client sends on the scheduler's timer; nothing more to do once joined. */
  onJoined() {}

  connect() {
    const socket = io(this.url(), {
      auth: { token: this.token },
      reconnection: false,
      forceNew: true,
      timeout: 5000,
      transports: ["websocket"],
    });
    this.socket = socket;
    this.joined = false;
    socket.on("message", (m) => this.seen("m", m));
    socket.on("message_delivered", (m) => this.seen("d", m));
    // The version's own seq, with the message it is a version of (§14).
    socket.on("message_updated", (u) => this.seen("u", { ...u, id: u.message && u.message.id }));
    socket.on("reply_delta", () => (deltas += 1));
    socket.on("connect", () => void this.onConnect(socket));
    socket.on("connect_error", (err) => {
      if (socket !== this.socket) return;
      this.errors.push({ at: now(), what: "connect_error", error: String(err && err.message) });
      this.retryConnect();
    });
    socket.on("disconnect", (reason) => {
      if (socket !== this.socket) return;
      this.joined = false;
      this.disconnects.push({ at: now(), reason });
      if (reason === "io client disconnect" || shuttingDown) return;
      // The node went away: the next URL is another node (when there is one).
      this.urlIndex += 1;
      this.retryConnect();
    });
  }

  retryConnect() {
    const attempt = (this.connectAttempts = (this.connectAttempts ?? 0) + 1);
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** Math.min(attempt - 1, 5));
    if (this.socket) this.socket.removeAllListeners().disconnect();
    this.socket = null;
    if (attempt > 1) this.urlIndex += 1;
    setTimeout(() => this.connect(), delay + Math.random() * 100);
  }

  async onConnect(socket) {
    // The cursor is taken before joining: live events arriving between the join and the
    // sync would otherwise move it past messages only the sync can still return.
    const resumeFrom = this.complete;
    try {
      const ack = await socket
        .timeout(ACK_TIMEOUT_MS)
        .emitWithAck("join_conversation", { conversationId: this.conversationId });
      if (!ack || ack.success !== true) throw new Error(`join refused: ${JSON.stringify(ack)}`);
      const first = this.firstJoinLastSeq === null;
      if (first) {
        this.firstJoinLastSeq = ack.lastSeq;
        // What came before the first join is history this client does not read.
        this.mark(ack.lastSeq, true);
      }
      this.joins.push({ at: now(), lastSeq: ack.lastSeq, url: this.url() });
      if (!first) {
        this.reconnectedAt.push(now());
        await this.syncFrom(socket, resumeFrom);
      }
      if (socket !== this.socket || !socket.connected) return;
      this.connectAttempts = 0;
      this.joined = true;
      readyCheck();
      this.flush();
      this.onJoined(socket);
    } catch (err) {
      this.errors.push({ at: now(), what: "join/sync", error: String(err && err.message) });
      if (socket === this.socket) this.retryConnect();
    }
  }

  /** Pages `sync` from the last seq this client saw before reconnecting until hasMore is false. */
  async syncFrom(socket, resumeFrom) {
    let afterSeq = resumeFrom;
    for (;;) {
      const ack = await socket
        .timeout(ACK_TIMEOUT_MS)
        .emitWithAck("sync", { conversationId: this.conversationId, afterSeq, limit: SYNC_PAGE });
      if (!ack || ack.success !== true) {
        this.syncs.push({ at: now(), afterSeq, count: 0, error: JSON.stringify(ack) });
        throw new Error(`sync refused: ${JSON.stringify(ack)}`);
      }
      const events = ack.messages.map((m) => [m.seq, m.id]);
      for (const u of ack.updates ?? []) events.push([u.seq, u.message.id]);
      for (const [seq, id] of events) {
        this.synced.push([seq, id]);
        if (seq > this.maxSeen) this.maxSeen = seq;
        this.mark(seq);
        if (seq > afterSeq) afterSeq = seq;
      }
      this.syncs.push({ at: now(), afterSeq, count: events.length });
      if (!ack.hasMore) return;
    }
  }

  seen(kind, m) {
    this.events.push([kind, m.seq, m.id, m.conversationId, now()]);
    if (typeof m.seq === "number") {
      if (m.seq > this.maxSeen) this.maxSeen = m.seq;
      this.mark(m.seq);
    }
  }

  /** Records `seq` as seen and moves `complete` over every seq now seen without a gap;
   * `upTo` moves it to `seq` outright (the first join's history). */
  mark(seq, upTo = false) {
    if (upTo) {
      if (seq > this.complete) this.complete = seq;
      for (const s of this.beyond) if (s <= this.complete) this.beyond.delete(s);
    } else if (seq > this.complete) this.beyond.add(seq);
    while (this.beyond.has(this.complete + 1)) this.beyond.delete(++this.complete);
  }

  /** Creates one message and sends it if the socket is ready; it waits in the outbox otherwise. */
  newMessage() {
    this.sent += 1;
    const msg = {
      clientMessageId: newClientMessageId(),
      client: this.name,
      userId: this.userId,
      conversationId: this.conversationId,
      content: `${this.name}-${this.sent}`,
      createdAt: now(),
      firstSendAt: null,
      attempts: [], // [at, outcome]: "ok" | "duplicate" | a failure code | "timeout" | "disconnected"
      id: null,
      duplicate: null,
      ackAt: null,
      ackSeq: null,
      inFlight: false,
      retryAt: 0,
      failures: 0,
    };
    messages.push(msg);
    this.outbox.push(msg);
    if (this.joined) this.send(msg);
  }

  /** Sends whatever is due in the outbox (after a reconnect, or on the retry timer). */
  flush() {
    if (!this.joined) return;
    const t = now();
    for (const msg of this.outbox) if (!msg.inFlight && msg.retryAt <= t) this.send(msg);
  }

  send(msg) {
    const socket = this.socket;
    msg.inFlight = true;
    if (msg.firstSendAt === null) msg.firstSendAt = now();
    const payload = { conversationId: msg.conversationId, content: msg.content, clientMessageId: msg.clientMessageId };
    socket.timeout(ACK_TIMEOUT_MS).emit("message", payload, (err, ack) => {
      const at = now();
      msg.inFlight = false;
      if (err) {
        const outcome = err.message === "operation has timed out" ? "timeout" : "disconnected";
        return this.failed(msg, at, outcome, 0);
      }
      if (ack && ack.success === true) {
        msg.attempts.push([at, ack.duplicate ? "duplicate" : "ok"]);
        if (msg.id !== null && msg.id !== ack.message.id) {
          this.errors.push({ at, what: "ack id changed", cmid: msg.clientMessageId, was: msg.id, now: ack.message.id });
        }
        if (msg.ackAt === null) {
          msg.id = ack.message.id;
          msg.duplicate = ack.duplicate;
          msg.ackAt = at;
          msg.ackSeq = ack.message.seq ?? null;
          this.outbox.splice(this.outbox.indexOf(msg), 1);
          acked += 1;
          if (stopping) stopCheck();
        }
        return;
      }
      this.failed(msg, at, (ack && ack.code) || "NO_CODE", (ack && ack.retryAfterMs) || 0);
    });
  }

  failed(msg, at, outcome, retryAfterMs) {
    msg.attempts.push([at, outcome]);
    failures[outcome] = (failures[outcome] ?? 0) + 1;
    msg.failures += 1;
    msg.retryAt = at + backoff(msg.failures, retryAfterMs);
  }

  report() {
    return {
      name: this.name,
      userId: this.userId,
      conversationId: this.conversationId,
      firstJoinLastSeq: this.firstJoinLastSeq,
      joins: this.joins,
      stayedJoined: this.disconnects.length === 0,
      reconnected: this.reconnectedAt.length > 0,
      reconnectedAt: this.reconnectedAt,
      disconnects: this.disconnects,
      events: this.events,
      synced: this.synced,
      syncs: this.syncs,
      errors: this.errors,
    };
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** Answers to a reply event that a writer waits out and retries (§4, §14 rule 5). */
const RETRIED = ["UNAVAILABLE", "RATE_LIMITED"];

/** The AI coach of a room: streams one reply at a time while the load runs (§14). */
class Streamer extends Client {
  constructor(spec, index) {
    super(spec, index);
    /** A reply is between its start and its end (the load's stop waits for it). */
    this.busy = false;
    this.replies = 0;
  }

  onJoined() {
    if (!this.running) this.running = this.run();
  }

  async run() {
    while (!shuttingDown) {
      if (!sending || !this.joined) {
        await sleep(50);
        continue;
      }
      await this.reply(this.socket);
      await sleep(REPLY_GAP_MS * (0.5 + Math.random()));
    }
  }

  /** One reply on `socket`: it is over when that socket is (its node ends it then). */
  async reply(socket) {
    this.replies += 1;
    const conversationId = this.conversationId;
    const r = {
      clientMessageId: uuidv7(),
      client: this.name,
      userId: this.userId,
      conversationId,
      startAttempts: [],
      id: null,
      startSeq: null,
      startStatus: null,
      startAckAt: null,
      appends: [],
      endAttempts: [],
      end: null,
      over: null,
    };
    replies.push(r);
    this.busy = true;
    try {
      r.over = await this.write(socket, r, conversationId);
    } finally {
      this.busy = false;
      if (stopping) stopCheck();
    }
  }

  /** Starts, appends and ends `r`; returns how it ended for this writer. */
  async write(socket, r, conversationId) {
    const start = await this.answered(socket, r.startAttempts, "reply_start", {
      conversationId,
      clientMessageId: r.clientMessageId,
    });
    if (!start) return "socket lost before the start was acked";
    if (start.success !== true) return `start refused: ${start.code}`;
    Object.assign(r, {
      id: start.message.id,
      startSeq: start.message.seq ?? null,
      startStatus: start.message.status,
      startAckAt: now(),
    });
    if (start.message.status !== "streaming") return "over at its start";
    let offset = 0;
    for (let piece = 1; piece <= REPLY_PIECES; piece++) {
      const text = `${this.name}.${this.replies}.${piece} `;
      const append = { offset, text, ackedAt: null, length: null, attempts: [] };
      r.appends.push(append);
      const ack = await this.answered(socket, append.attempts, "reply_append", { conversationId, id: r.id, offset, text });
      if (!ack) return "socket lost while appending";
      if (ack.success !== true) return `append refused: ${ack.code}`;
      Object.assign(append, { ackedAt: now(), length: ack.length });
      offset = ack.length;
      await sleep(APPEND_EVERY_MS);
    }
    const end = await this.answered(socket, r.endAttempts, "reply_end", { conversationId, id: r.id, status: "complete" });
    if (!end) return "socket lost while ending";
    if (end.success !== true) return `end refused: ${end.code}`;
    const m = end.message;
    r.end = { at: now(), status: m.status, content: m.content };
    return "ended";
  }

  /** Emits until answered on `socket`, waiting out a timeout or a retried code; `null`
   * once the socket is no longer this client's. */
  async answered(socket, attempts, event, payload) {
    for (let failures = 1; ; failures++) {
      if (socket !== this.socket || !socket.connected) return null;
      let ack;
      try {
        ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
      } catch (err) {
        attempts.push([now(), err.message === "operation has timed out" ? "timeout" : "disconnected"]);
        await sleep(backoff(failures, 0));
        continue;
      }
      if (ack && ack.success === true) {
        attempts.push([now(), ack.duplicate ? "duplicate" : "ok"]);
        return ack;
      }
      const code = (ack && ack.code) || "NO_CODE";
      attempts.push([now(), code]);
      if (!RETRIED.includes(code)) return ack ?? { success: false, code };
      await sleep(backoff(failures, ack.retryAfterMs ?? 0));
    }
  }
}

/** Retry backoff after the `failures`-th failure, never sooner than the server asked. */
function backoff(failures, retryAfterMs) {
  const base = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(failures - 1, 5));
  return Math.max(base, retryAfterMs) + Math.random() * 50;
}

const chatters = config.clients.map((spec, i) => new Client(spec, i));
const streamers = (config.streamers ?? []).map((spec, i) => new Streamer(spec, chatters.length + i));
/** Every socket: the checker judges what each received. */
const clients = [...chatters, ...streamers];
const messages = [];
const replies = [];
const failures = {};
let acked = 0;
let deltas = 0;
let readySent = false;
let sending = false;
let stopping = false;
let settling = false;
let shuttingDown = false;
let stopTimer = null;
let settleTarget = null;
let settleDeadline = 0;
let settleStartedAt = 0;

function readyCheck() {
  if (!readySent && clients.every((c) => c.joined)) {
    readySent = true;
    out({ event: "ready", at: now() });
  }
}

function counts() {
  const inFlight = messages.filter((m) => m.inFlight).length;
  return {
    at: now(),
    sent: messages.length,
    acked,
    unacked: messages.length - acked,
    inFlight,
    failures,
    connected: clients.filter((c) => c.joined).length,
    reconnects: clients.reduce((n, c) => n + c.reconnectedAt.length, 0),
    replies: replies.length,
    repliesEnded: replies.filter((r) => r.end !== null).length,
    appendsAcked: replies.reduce((n, r) => n + r.appends.filter((a) => a.ackedAt !== null).length, 0),
    deltas,
  };
}

// The open-loop scheduler: sends due since the start go out whatever the acks do;
// each send goes to the next client round-robin. Retries have their own, slower pass.
let startedAt = 0;
let scheduled = 0;
let nextClient = 0;
const ticker = setInterval(() => {
  if (!sending) return;
  const due = Math.floor(((now() - startedAt) * RATE) / 1000);
  for (; scheduled < due; scheduled++) {
    chatters[nextClient].newMessage();
    nextClient = (nextClient + 1) % chatters.length;
  }
}, TICK_MS);
const retrier = setInterval(() => {
  for (const c of clients) if (c.outbox.length) c.flush();
}, RETRY_TICK_MS);

// Settling is polled, not checked per event: the check walks every client's record.
setInterval(() => {
  if (!settling) return;
  if (now() >= settleDeadline) finishSettle(true);
  else settleCheck();
}, SETTLE_POLL_MS);

function stopCheck() {
  if (!stopping || messages.length !== acked || streamers.some((s) => s.busy)) return;
  finishStop(false);
}

function finishStop(timedOut) {
  if (!stopping) return;
  stopping = false;
  clearTimeout(stopTimer);
  out({ event: "stopped", timedOut, ...counts() });
}

/** Every socket has seen every seq up to the target of its conversation. */
function settleCheck() {
  if (!settling) return;
  const done = clients.every((c) => c.maxSeen >= (settleTarget[c.conversationId] ?? 0) && missingCount(c) === 0);
  if (done) finishSettle(false);
}

/** How many seqs in (firstJoinLastSeq, target] this client has not seen by any path. */
function missingCount(c) {
  const target = settleTarget[c.conversationId] ?? 0;
  const from = c.firstJoinLastSeq ?? 0;
  if (target <= from) return 0;
  const seen = new Uint8Array(target + 1);
  for (const e of c.events) if (e[1] > from && e[1] <= target) seen[e[1]] = 1;
  for (const s of c.synced) if (s[0] > from && s[0] <= target) seen[s[0]] = 1;
  let missing = 0;
  for (let s = from + 1; s <= target; s++) if (!seen[s]) missing++;
  return missing;
}

function finishSettle(timedOut) {
  if (!settling) return;
  settling = false;
  const head = { timedOut, settleMs: now() - settleStartedAt, rate: RATE, urls: URLS, startedAt, counts: counts() };
  writeReport(config.reportPath, head, {
    clients: clients.map((c) => () => c.report()),
    messages: messages.map((msg) => () => {
      const { inFlight, retryAt: _r, failures: _f, ...m } = msg;
      return { ...m, inFlight };
    }),
    replies: replies.map((r) => () => r),
  });
  out({ event: "report", path: config.reportPath, timedOut });
}

const WRITE_CHUNK_CHARS = 1 << 20;

/** Writes `head`'s fields, then each array of `lists` one element at a time: a long
 * soak's report (millions of events) is past V8's longest string as one JSON.stringify. */
function writeReport(path, head, lists) {
  const fd = openSync(path, "w");
  writeSync(fd, JSON.stringify(head).slice(0, -1));
  for (const [name, items] of Object.entries(lists)) {
    writeSync(fd, `,${JSON.stringify(name)}:[`);
    // About a megabyte per write: not a system call per send, and never all clients as
    // one string (in a 30-minute soak each holds tens of thousands of events; 125 of
    // them joined passed V8's longest string).
    let chunk = [];
    let size = 0;
    let first = true;
    const flush = () => {
      writeSync(fd, (first ? "" : ",") + chunk.join(","));
      first = false;
      chunk = [];
      size = 0;
    };
    for (const item of items) {
      const json = JSON.stringify(item());
      chunk.push(json);
      size += json.length + 1;
      if (size >= WRITE_CHUNK_CHARS) flush();
    }
    if (chunk.length) flush();
    writeSync(fd, "]");
  }
  writeSync(fd, "}");
  closeSync(fd);
}

function handle(cmd) {
  switch (cmd.cmd) {
    case "start":
      startedAt = now();
      sending = true;
      return out({ event: "started", at: startedAt });
    case "progress":
      return out({ event: "progress", ...counts() });
    case "stop":
      sending = false;
      stopping = true;
      stopTimer = setTimeout(() => finishStop(true), STOP_DEADLINE_MS);
      return stopCheck();
    case "settle":
      settleTarget = cmd.lastSeq ?? {};
      settling = true;
      settleStartedAt = now();
      settleDeadline = now() + (cmd.timeoutMs ?? SETTLE_TIMEOUT_MS);
      return settleCheck();
    case "exit":
      return shutdown();
    default:
      log("unknown command", JSON.stringify(cmd));
  }
}

function shutdown() {
  shuttingDown = true;
  clearInterval(ticker);
  clearInterval(retrier);
  for (const c of clients) if (c.socket) c.socket.disconnect();
  setImmediate(() => process.exit(0));
}

process.on("uncaughtException", (err) => log("uncaught exception:", err && err.stack));
process.on("unhandledRejection", (err) => log("unhandled rejection:", err && err.stack));
process.stdout.on("error", () => process.exit(0));

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  if (!line.trim()) return;
  try {
    handle(JSON.parse(line));
  } catch (err) {
    log("bad command:", line, String(err && err.message));
  }
});
rl.on("close", () => shutdown());

for (const c of clients) c.connect();
