// A client that joins a conversation and then stops reading its TCP socket, for the
// slow-socket test. Raw Engine.IO/Socket.IO framing over `ws`, so that "not reading" is
// exactly that: the kernel buffers fill and the server's writes to this socket block.
//   node slow_reader.mjs <http base url> <token> <conversationId> <resume wait ms>
// Prints JSON lines:
//   { event: "joined", lastSeq }            — joined, and no longer reading;
// then, after the line "resume" on stdin (reading again):
//   { event: "disconnected", how, seqs }    — the seqs of the `message` events it got
//        before the server ended the session (`how`: "socket.io disconnect packet",
//        "websocket closed <code>", or "never": still connected after the resume wait,
//        and then it stays connected);
//   { event: "synced", joinLastSeq, synced, pages } — unless "never": after reconnecting,
//        joining and calling `sync` from the last seq it saw, page by page while
//        `hasMore`: the seqs `sync` returned and how many pages it took.
// Each later stdin line "report" prints { event: "report", how, seqs, live }: `live` are
// the seqs of `message` events on the second session. Exits when stdin closes.
import WebSocket from "ws";
import readline from "node:readline";

const [base, token, conversationId, resumeWaitMs] = process.argv.slice(2);
const wsUrl = base.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
/// How long a resumed client waits for the server to have ended its session.
const RESUME_WAIT_MS = Number(resumeWaitMs);
/// `sync` page size (the contract's maximum).
const SYNC_LIMIT = 500;

const say = (line) => console.log(JSON.stringify(line));

/// One Socket.IO session: connects, authenticates, and hands out acks and events.
function session({ onMessage, onEnd }) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    const acks = new Map();
    let nextAck = 0;
    const emit = (event, payload) =>
      new Promise((ok) => {
        const id = nextAck++;
        acks.set(id, ok);
        ws.send(`42${id}${JSON.stringify([event, payload])}`);
      });
    ws.on("error", reject);
    ws.on("close", (code) => onEnd(`websocket closed ${code}`));
    ws.on("message", (data) => {
      const text = data.toString();
      if (text.startsWith("0")) ws.send("40" + JSON.stringify({ token }));
      else if (text.startsWith("40")) resolve({ ws, emit });
      else if (text.startsWith("44")) reject(new Error(`connect_error ${text}`));
      else if (text.startsWith("41")) onEnd("socket.io disconnect packet");
      else if (text === "2") ws.send("3");
      else if (text.startsWith("43")) {
        const [, id, body] = text.match(/^43(\d+)(.*)$/s);
        acks.get(Number(id))?.(JSON.parse(body)[0]);
        acks.delete(Number(id));
      } else if (text.startsWith("42")) {
        const [name, payload] = JSON.parse(text.slice(2));
        if (name === "message") onMessage(payload.seq);
      }
    });
  });
}

async function join(emit) {
  const ack = await emit("join_conversation", { conversationId });
  if (!ack.success) throw new Error(`join failed: ${JSON.stringify(ack)}`);
  return ack.lastSeq;
}

// Phase 1: join, then stop reading.
const seqs = [];
let ended = null;
let endedNow = () => {};
const first = await session({
  onMessage: (seq) => seqs.push(seq),
  onEnd: (how) => {
    if (ended === null) { ended = how; endedNow(); }
  },
});
say({ event: "joined", lastSeq: await join(first.emit) });
first.ws.pause();

// stdin, a line at a time (null at EOF).
const queued = [];
let stdinClosed = false;
let wake = () => {};
const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => { queued.push(line.trim()); wake(); });
lines.on("close", () => { stdinClosed = true; wake(); });
async function nextLine() {
  while (queued.length === 0 && !stdinClosed) await new Promise((ok) => (wake = ok));
  return queued.shift() ?? null;
}

if ((await nextLine()) !== "resume") process.exit(0);

// Phase 2: read again, and see how the server ended the session.
first.ws.resume();
if (ended === null) {
  await new Promise((ok) => {
    endedNow = ok;
    setTimeout(ok, RESUME_WAIT_MS);
  });
}
say({ event: "disconnected", how: ended ?? "never", seqs: [...seqs] });
const live = [];
const report = () => say({ event: "report", how: ended ?? "still connected", seqs, live });
if (ended === null) {
  // Still connected: stay so, and on "report" tell what has arrived by then.
  for (let line; (line = await nextLine()) !== null; ) if (line === "report") report();
  process.exit(0);
}
first.ws.terminate();

// Phase 3: reconnect, join, and sync from the last seq seen.
const second = await session({ onMessage: (seq) => live.push(seq), onEnd: () => {} });
const joinLastSeq = await join(second.emit);
let afterSeq = seqs.length ? seqs[seqs.length - 1] : 0;
const synced = [];
let pages = 0;
for (;;) {
  const page = await second.emit("sync", { conversationId, afterSeq, limit: SYNC_LIMIT });
  if (!page.success) throw new Error(`sync failed: ${JSON.stringify(page)}`);
  pages++;
  for (const m of page.messages) synced.push(m.seq);
  if (!page.hasMore || page.messages.length === 0) break;
  afterSeq = page.messages[page.messages.length - 1].seq;
}
say({ event: "synced", joinLastSeq, synced, pages });
for (let line; (line = await nextLine()) !== null; ) if (line === "report") report();
second.ws.close();
process.exit(0);
