// Send-to-receive latency through the whole pipeline, as a user feels it:
// A emits `message`, B (another socket) receives it; also A's ack time.
//   node scripts/latency.mjs --url URL --token-a T --token-b T --conversation ID [--count 500]
// Prints p50/p90/p99/max in milliseconds. Messages go one at a time (no pipelining).
import { createRequire } from 'node:module';
import { randomUUID } from 'node:crypto';
const require = createRequire(new URL('../tests/js/package.json', import.meta.url));
const { io } = require('socket.io-client');

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const url = arg('url', 'http://127.0.0.1:3000');
const conversationId = arg('conversation');
const count = Number(arg('count', '500'));

const connect = (token) => new Promise((resolve, reject) => {
  const s = io(url, { auth: { token }, transports: ['websocket'], reconnection: false });
  s.on('connect', () => resolve(s));
  s.on('connect_error', reject);
});
const a = await connect(arg('token-a'));
const b = await connect(arg('token-b'));
for (const s of [a, b]) await s.emitWithAck('join_conversation', { conversationId });

const pending = new Map();
b.on('message', (m) => pending.get(m.content)?.(performance.now()));
const ack = [], e2e = [];
for (let i = 0; i < count; i++) {
  const content = `latency ${i} ${randomUUID()}`;
  const received = new Promise((resolve) => pending.set(content, resolve));
  const t0 = performance.now();
  const reply = await a.emitWithAck('message', { conversationId, content, clientMessageId: randomUUID() });
  if (!reply.success) throw new Error(JSON.stringify(reply));
  ack.push(performance.now() - t0);
  e2e.push((await received) - t0);
  pending.delete(content);
}
const pct = (xs, p) => xs.slice().sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * p))].toFixed(2);
for (const [name, xs] of [['ack (send → success ack)', ack], ['end to end (send → other client)', e2e]]) {
  console.log(`${name}: n=${xs.length} p50=${pct(xs, 0.5)} p90=${pct(xs, 0.9)} p99=${pct(xs, 0.99)} max=${pct(xs, 1)} ms`);
}
a.close(); b.close();
