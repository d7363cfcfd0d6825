// Streamed replies under load (docs/benchmarks.md, "Streamed replies"): R replies stream
// at once, each into its own room of 4 (the ai author and 3 people), A appends per second
// each, while ordinary chat runs at C msg/s in other rooms of 4. Run by
// `scripts/bench.sh replies` against a running stack; a measuring instrument, not a client.
//
//   node bench/replies.mjs --url URL --secret JWT_SECRET [--replies 200] [--append-rate 20]
//        [--chat-rate 500] [--chat-connections 100] [--duration 8] [--warmup 2] [--json FILE]
//
// Two phases of the same length: chat alone, then chat with the replies. Latencies:
// append → each other socket of its room (`reply_delta`), and message send → each other
// socket (`message`), both from the moment the send was due (open loop: a send that waits
// for the one before it counts its wait). CPU: each server process's utime + stime from
// /proc over each phase's measured window; an append costs the difference between the
// phases divided by the appends, a message costs the chat phase divided by its messages.
import { createRequire } from "node:module";
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

const require = createRequire(new URL("../tests/js/package.json", import.meta.url));
const { io } = require("socket.io-client");

const { values: opt } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:3000" },
    secret: { type: "string" },
    replies: { type: "string", default: "200" },
    "append-rate": { type: "string", default: "20" },
    "chat-rate": { type: "string", default: "500" },
    "chat-connections": { type: "string", default: "100" },
    duration: { type: "string", default: "8" },
    warmup: { type: "string", default: "2" },
    json: { type: "string" },
  },
});
if (!opt.secret) throw new Error("--secret is required (the stack's COACHWIRE_JWT_SECRET)");
const REPLIES = Number(opt.replies);
const APPEND_RATE = Number(opt["append-rate"]);
const CHAT_RATE = Number(opt["chat-rate"]);
const CHAT_CONNECTIONS = Number(opt["chat-connections"]);
const WARMUP_MS = Number(opt.warmup) * 1000;
const MEASURE_MS = Number(opt.duration) * 1000;
const ROOM = 4;
/** About five tokens of a model's output per append. */
const APPEND_TEXT = "lorem ipsum dolor sit";

function token(sub, role = "user") {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, role, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac("sha256", opt.secret).update(body).digest("base64url")}`;
}

async function conversation(creator, participantIds) {
  const response = await fetch(`${opt.url}/api/conversations`, {
    method: "POST",
    headers: { authorization: `Bearer ${creator}`, "content-type": "application/json" },
    body: JSON.stringify({ title: "bench", participantIds }),
  });
  if (response.status !== 201) throw new Error(`create conversation: ${response.status} ${await response.text()}`);
  return (await response.json()).id;
}

function request(socket, event, payload) {
  return socket.timeout(30_000).emitWithAck(event, payload).then((ack) => {
    if (!ack?.success) throw new Error(`${event}: ${JSON.stringify(ack)}`);
    return ack;
  });
}

async function joinedSocket(jwt, conversationId) {
  const socket = io(opt.url, { auth: { token: jwt }, transports: ["websocket"], reconnection: false });
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  await request(socket, "join_conversation", { conversationId });
  return socket;
}

/** Latencies in ms, recorded only while `recording`. */
class Samples {
  values = [];
  recording = false;
  add(ms) {
    if (this.recording) this.values.push(ms);
  }
  summary() {
    const sorted = [...this.values].sort((a, b) => a - b);
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null);
    return { count: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted.at(-1) ?? null };
  }
}

/** CPU seconds of the processes of the stack, by name, from /proc. */
function cpuByProcess() {
  const names = { "coachwire-inges": "ingest", "coachwire-persi": "persister", "coachwire-fanou": "fanout", "nats-server": "nats-server", postgres: "postgres" };
  const totals = {};
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue;
    }
    const name = names[stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"))];
    if (!name) continue;
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    totals[name] = (totals[name] ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100;
  }
  const own = process.cpuUsage();
  totals.driver = (own.user + own.system) / 1e6;
  return totals;
}

function minus(after, before) {
  return Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (before[k] ?? 0)]));
}

/** Runs `fn` every 1/rate s on a schedule (open loop), with the time each call was due. */
function every(rate, fn) {
  const start = performance.now();
  let n = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    while (start + (n * 1000) / rate <= now) fn(start + (n++ * 1000) / rate);
  }, 5);
  return () => clearInterval(timer);
}

/** `current.chat` is the tracker of the phase running. */
async function chatRooms(current) {
  const rooms = [];
  for (let r = 0; r < CHAT_CONNECTIONS / ROOM; r++) {
    const users = Array.from({ length: ROOM }, () => randomUUID());
    const id = await conversation(token(users[0]), users);
    const sockets = await Promise.all(users.map((u) => joinedSocket(token(u), id)));
    for (const socket of sockets) {
      socket.on("message", (m) => {
        const due = current.chat.due.get(m.clientMessageId);
        if (due !== undefined && m.userId !== socket.userId) current.chat.room.add(performance.now() - due);
      });
    }
    sockets.forEach((s, i) => (s.userId = users[i]));
    rooms.push({ id, sockets });
  }
  return rooms;
}

/** Ordinary chat at CHAT_RATE over the chat rooms' sockets, round robin. */
function chat(rooms, messages) {
  const senders = rooms.flatMap((room) => room.sockets.map((socket) => ({ socket, id: room.id })));
  let next = 0;
  return every(CHAT_RATE, (due) => {
    const { socket, id } = senders[next++ % senders.length];
    const clientMessageId = randomUUID();
    messages.due.set(clientMessageId, due);
    messages.sent += 1;
    request(socket, "message", { conversationId: id, content: "bench message", clientMessageId })
      .then(() => messages.ack.add(performance.now() - due))
      .catch(() => (messages.failed += 1));
  });
}

async function replyRooms(appends) {
  const rooms = [];
  for (let r = 0; r < REPLIES; r++) {
    const coach = randomUUID();
    const people = Array.from({ length: ROOM - 1 }, () => randomUUID());
    const id = await conversation(token(people[0]), [coach, ...people]);
    const author = await joinedSocket(token(coach, "ai"), id);
    const readers = await Promise.all(people.map((u) => joinedSocket(token(u), id)));
    for (const reader of readers) {
      reader.on("reply_delta", (d) => {
        const due = appends.due.get(`${d.id}:${d.offset}`);
        if (due !== undefined) appends.room.add(performance.now() - due);
      });
    }
    rooms.push({ id, author, readers });
  }
  return rooms;
}

/** Each reply appends APPEND_RATE times a second, one append in flight at a time. */
async function stream(rooms, appends) {
  const writers = [];
  for (const room of rooms) {
    const { message } = await request(room.author, "reply_start", { conversationId: room.id });
    const writer = { room, id: message.id, length: 0, backlog: [], busy: false };
    writers.push(writer);
  }
  const pump = (writer) => {
    if (writer.busy || writer.backlog.length === 0) return;
    const due = writer.backlog.shift();
    writer.busy = true;
    appends.due.set(`${writer.id}:${writer.length}`, due);
    appends.sent += 1;
    const payload = { conversationId: writer.room.id, id: writer.id, offset: writer.length, text: APPEND_TEXT };
    request(writer.room.author, "reply_append", payload)
      .then((ack) => {
        writer.length = ack.length;
        appends.ack.add(performance.now() - due);
      })
      .catch(() => (appends.failed += 1))
      .finally(() => {
        writer.busy = false;
        pump(writer);
      });
  };
  let next = 0;
  const stop = every(REPLIES * APPEND_RATE, (due) => {
    const writer = writers[next++ % writers.length];
    writer.backlog.push(due);
    pump(writer);
  });
  return { writers, stop };
}

function tracker() {
  return { due: new Map(), ack: new Samples(), room: new Samples(), sent: 0, failed: 0 };
}

/** Warm-up, then the measured window: returns the CPU and counts of that window. */
async function phase(trackers) {
  await new Promise((r) => setTimeout(r, WARMUP_MS));
  const sentBefore = trackers.map((t) => t.sent);
  for (const t of trackers) (t.ack.recording = true), (t.room.recording = true);
  const before = cpuByProcess();
  await new Promise((r) => setTimeout(r, MEASURE_MS));
  const cpu = minus(cpuByProcess(), before);
  for (const t of trackers) (t.ack.recording = false), (t.room.recording = false);
  return { cpu, sent: trackers.map((t, i) => t.sent - sentBefore[i]) };
}

const chatOnly = tracker();
const current = { chat: chatOnly };
const rooms = await chatRooms(current);
let stopChat = chat(rooms, chatOnly);
const baseline = await phase([chatOnly]);
stopChat();

const mixedChat = tracker();
const appends = tracker();
current.chat = mixedChat;
const replies = await replyRooms(appends);
stopChat = chat(rooms, mixedChat);
const streaming = await stream(replies, appends);
const mixed = await phase([mixedChat, appends]);
streaming.stop();
stopChat();
const ends = await Promise.allSettled(
  streaming.writers.map((w) => request(w.room.author, "reply_end", { conversationId: w.room.id, id: w.id, status: "complete" })),
);

const servers = ["ingest", "nats-server", "postgres", "persister", "fanout"];
const usPer = (cpu, count) => Object.fromEntries([...servers, "driver"].map((k) => [k, count ? ((cpu[k] ?? 0) * 1e6) / count : null]));
const total = (cpu) => servers.reduce((sum, k) => sum + (cpu[k] ?? 0), 0);
const perMessageUs = (total(baseline.cpu) * 1e6) / baseline.sent[0];
const perAppendUs = ((total(mixed.cpu) - total(baseline.cpu)) * 1e6) / mixed.sent[1];
const result = {
  replies: REPLIES,
  appendRate: APPEND_RATE * REPLIES,
  chatRate: CHAT_RATE,
  measuredSeconds: MEASURE_MS / 1000,
  chatOnly: { sent: baseline.sent[0], ack: chatOnly.ack.summary(), room: chatOnly.room.summary(), failed: chatOnly.failed, cpuUsPerMessage: usPer(baseline.cpu, baseline.sent[0]) },
  withReplies: {
    chat: { sent: mixed.sent[0], ack: mixedChat.ack.summary(), room: mixedChat.room.summary(), failed: mixedChat.failed },
    appends: { sent: mixed.sent[1], ack: appends.ack.summary(), room: appends.room.summary(), failed: appends.failed },
    cpuSeconds: mixed.cpu,
  },
  cpuUsPerMessage: perMessageUs,
  cpuUsPerAppend: perAppendUs,
  repliesEnded: ends.filter((e) => e.status === "fulfilled").length,
};
if (opt.json) writeFileSync(opt.json, JSON.stringify(result, null, 2));
const f = (s) => `p50 ${s.p50?.toFixed(1)} ms, p99 ${s.p99?.toFixed(1)} ms (${s.count})`;
console.log(`chat alone, ${CHAT_RATE} msg/s:       ack ${f(chatOnly.ack.summary())}; send→room ${f(chatOnly.room.summary())}`);
console.log(`chat with ${REPLIES} replies:        ack ${f(mixedChat.ack.summary())}; send→room ${f(mixedChat.room.summary())}`);
console.log(`appends, ${APPEND_RATE * REPLIES}/s:            ack ${f(appends.ack.summary())}; append→room ${f(appends.room.summary())}; failed ${appends.failed}`);
console.log(`CPU of the servers: ${perMessageUs.toFixed(0)} µs per message, ${perAppendUs.toFixed(0)} µs per append (ratio ${(perAppendUs / perMessageUs).toFixed(2)})`);
console.log(`  by process, chat phase (µs/message): ${JSON.stringify(usPer(baseline.cpu, baseline.sent[0]), (k, v) => (typeof v === "number" ? Math.round(v) : v))}`);
console.log(`  by process, added by the replies (CPU s): ${JSON.stringify(minus(mixed.cpu, baseline.cpu), (k, v) => (typeof v === "number" ? Number(v.toFixed(2)) : v))}`);
console.log(`replies ended: ${result.repliesEnded} of ${REPLIES}`);
process.exit(0);
