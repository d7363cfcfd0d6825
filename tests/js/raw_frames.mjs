// Garbage at the Engine.IO / Socket.IO framing level, over a plain WebSocket.
//   node raw_frames.mjs <http base url> <token> <conversationId>
// Prints one JSON line per scenario: { name, closed, acks: [...] } — what the server did.
// Never throws: a scenario that errors reports it. The Rust test decides what is acceptable.
import WebSocket from "ws";
import net from "node:net";

const [base, token, conversation] = process.argv.slice(2);
const wsUrl = base.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket";
const deep = (n) => "[".repeat(n) + "]".repeat(n);

// [name, frames to send after the namespace CONNECT (or before, with connectFirst=false)]
const scenarios = [
  ["unknown engine.io packet type", ["7hello"]],
  ["unknown socket.io packet type", ["49[]"]],
  ["truncated JSON", ['42["message",{"conversationId":']],
  ["event name not a string", ["42[123]"]],
  ["empty event array", ["42[]"]],
  ["event for an unknown namespace", ['42/nope,["message",{}]']],
  ["connect to an unknown namespace", ["40/admin,"]],
  ["binary placeholder without attachment", ['451-["message",{"_placeholder":true,"num":0}]']],
  ["absurd attachment count", ['4999999999-["message"]']],
  ["lone surrogate with ack", [`421["message",{"conversationId":"${conversation}","content":"\\ud800"}]`]],
  ["huge number with ack", [`422["message",{"conversationId":"${conversation}","content":1e999999}]`]],
  ["nesting 20000 deep with ack", [`423["message",${deep(20000)}]`]],
  ["nesting 20000 deep in the event name slot", [`424[${deep(20000)}]`]],
  ["frame over 64 KiB", [`42["message",{"content":"${"x".repeat(70 * 1024)}"}]`]],
  ["ping flood", Array(5000).fill("2")],
  ["binary garbage", [Buffer.from([0xff, 0x00, 0x13, 0x37, 0xde, 0xad])]],
  ["event before namespace connect", ['42["message",{}]'], false],
];

function run([name, frames, connectFirst = true]) {
  return new Promise((resolve) => {
    const acks = [];
    let closed = false, opened = false;
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    const done = () => { try { ws.terminate(); } catch {} resolve({ name, closed, acks }); };
    const timer = setTimeout(done, 1500);
    ws.on("error", () => {});
    ws.on("close", () => { closed = true; clearTimeout(timer); resolve({ name, closed, acks }); });
    ws.on("message", (data) => {
      const text = data.toString();
      if (text.startsWith("0") && !opened) {
        opened = true;
        if (connectFirst) ws.send("40" + JSON.stringify({ token }));
        else frames.forEach((f) => ws.send(f));
      } else if (text.startsWith("40") && connectFirst) {
        frames.forEach((f) => ws.send(f));
      } else if (text.startsWith("43")) {
        acks.push(JSON.parse(text.replace(/^43\d+/, ""))[0]);
      } else if (text === "2") {
        ws.send("3");
      }
    });
  });
}

// Hundreds of connections that never finish an HTTP request, held open during the run:
// fewer than the 256 one address may hold, so the scenarios (same address) get in.
const halfOpen = [];
const { hostname, port } = new URL(base);
for (let i = 0; i < 200; i++) {
  const s = net.connect(Number(port), hostname, () => s.write("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"));
  s.on("error", () => {});
  halfOpen.push(s);
}

for (const s of scenarios) console.log(JSON.stringify(await run(s)));
console.log(JSON.stringify({ name: "half-open connections held", count: halfOpen.length }));
// Keep the half-open sockets until the test tells us to stop (stdin closes).
process.stdin.on("end", () => { halfOpen.forEach((s) => s.destroy()); process.exit(0); });
process.stdin.resume();
