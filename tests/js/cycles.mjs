// Connection churn for the leak test: connect → join_conversation → disconnect, many times,
// many at once, over raw Engine.IO/Socket.IO WebSocket framing (socket.io-client costs
// several times more CPU per connection, and this machine has two cores for both sides).
//   node cycles.mjs < config.json   (stdin: the config, whole, then EOF)
//   config: { url, jobs: [{ token, conversationId }], cycles, concurrency, raceEvery }
// Cycle i uses jobs[i % jobs.length]. Every `raceEvery`-th cycle closes while its join is
// still in flight (right after sending it, or a moment later), so the server sees a join
// racing its socket's disconnect; the others wait for the join's ack, then close.
// Prints one JSON line when done: { cycles, joined, raced, failed, errors, elapsedMs, … }.
import WebSocket from "ws";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const config = JSON.parse(input);
const wsUrl = config.url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
/// A cycle that takes longer than this is counted as an error (and its socket destroyed).
const CYCLE_TIMEOUT_MS = 15_000;

const tally = { cycles: 0, joined: 0, raced: 0, failed: 0, refused: 0, errors: 0, codes: {}, firstError: null };

function cycle(i) {
  const { token, conversationId } = config.jobs[i % config.jobs.length];
  const race = config.raceEvery > 0 && i % config.raceEvery === 0;
  // Three ways a client vanishes mid-join: a close frame at once, a TCP reset at once,
  // and a close frame a moment later (the join is then in the server's handler).
  const raceKind = race ? Math.floor(i / config.raceEvery) % 3 : -1;
  return new Promise((resolve) => {
    let settled = false;
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    const finish = (outcome, detail) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      tally.cycles++;
      tally[outcome]++;
      if (outcome === "errors" && !tally.firstError) tally.firstError = String(detail);
      // Wait for the close to complete so the server has seen the disconnect by the time
      // the driver reports; a reset is immediate.
      if (ws.readyState === WebSocket.CLOSED) return resolve();
      ws.once("close", () => resolve());
      if (outcome === "errors") ws.terminate();
      else ws.close();
    };
    const timer = setTimeout(() => finish("errors", `cycle ${i} timed out`), CYCLE_TIMEOUT_MS);
    ws.on("error", (e) => finish("errors", e.message));
    ws.on("close", () => finish("errors", `cycle ${i}: closed by the server`));
    ws.on("message", (data) => {
      const text = data.toString();
      if (text.startsWith("0")) {
        ws.send("40" + JSON.stringify({ token }));
      } else if (text.startsWith("40")) {
        ws.send(`420["join_conversation",${JSON.stringify({ conversationId })}]`);
        if (raceKind === 0) {
          settled = true; clearTimeout(timer); tally.cycles++; tally.raced++;
          ws.once("close", () => resolve());
          ws.close();
        } else if (raceKind === 1) {
          settled = true; clearTimeout(timer); tally.cycles++; tally.raced++;
          ws.terminate();
          resolve();
        } else if (raceKind === 2) {
          setTimeout(() => {
            if (settled) return;
            settled = true; clearTimeout(timer); tally.cycles++; tally.raced++;
            ws.once("close", () => resolve());
            ws.close();
          }, 1 + (i % 3));
        }
      } else if (text.startsWith("44")) {
        finish("refused");
      } else if (text.startsWith("430")) {
        const ack = JSON.parse(text.slice(3))[0];
        if (ack && ack.success) {
          finish(race ? "raced" : "joined");
        } else {
          tally.codes[ack?.code] = (tally.codes[ack?.code] ?? 0) + 1;
          finish(race ? "raced" : "failed");
        }
      } else if (text === "2") {
        ws.send("3");
      }
    });
  });
}

const started = Date.now();
let next = 0;
async function worker() {
  while (next < config.cycles) {
    const i = next++;
    await cycle(i);
  }
}
await Promise.all(Array.from({ length: Math.min(config.concurrency, config.cycles) }, worker));
console.log(JSON.stringify({ ...tally, elapsedMs: Date.now() - started }));
