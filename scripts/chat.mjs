#!/usr/bin/env node
// A tiny interactive coachwire chat client (for demos and manual checks).
//   node scripts/chat.mjs --url http://127.0.0.1:3000 --token TOKEN --conversation ID
//       joins, prints every event, sends each stdin line as a message
//   node scripts/chat.mjs ... --send "text"
//       joins, sends one message, prints the ack, exits (0 on success)
//   --json prints every event and ack as raw JSON instead of one readable line each.
// Uses socket.io-client and uuid from tests/js/node_modules (npm ci --prefix tests/js).
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import readline from 'node:readline';

const USAGE = `usage: node scripts/chat.mjs --token TOKEN --conversation ID [--url URL] [--send TEXT] [--json]

  --url URL           ingest's public URL (default http://127.0.0.1:3000)
  --token TOKEN       a JWT (coachwire-ingest token --user <uuid>; . .run/env has $TOKEN_A)
  --conversation ID   the conversation to join ($CONVERSATION_ID in .run/env)
  --send TEXT         send one message, print its ack and exit (0 on success)
  --json              print raw events and acks instead of readable lines
  --help              this text

Without --send, every stdin line is sent as a message; Ctrl-D quits.`;

const ACK_TIMEOUT_MS = 10_000; // above ingest's PubAck timeout, so a slow ack still shows up

function fail(message) {
  console.error(`chat.mjs: ${message}`);
  process.exit(1);
}

let args;
try {
  args = parseArgs({
    options: {
      url: { type: 'string', default: 'http://127.0.0.1:3000' },
      token: { type: 'string' },
      conversation: { type: 'string' },
      send: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }).values;
} catch (err) {
  fail(`${err.message}\n${USAGE}`);
}
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
if (!args.token || !args.conversation) fail(`--token and --conversation are required\n${USAGE}`);

// Resolve from tests/js so the demo shares the e2e tests' pinned client version.
const require = createRequire(new URL('../tests/js/package.json', import.meta.url));
let io, uuidv7;
try {
  ({ io } = require('socket.io-client'));
  ({ v7: uuidv7 } = require('uuid'));
} catch {
  fail('socket.io-client or uuid not found: run `npm ci --prefix tests/js`');
}

const conversationId = args.conversation;
const socket = io(args.url, { auth: { token: args.token }, transports: ['websocket'] });
const show = (label, value) => console.log(args.json ? `${label} ${JSON.stringify(value)}` : readable(label, value));
const who = (userId) => (userId ?? '?').slice(0, 8);
const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '');

/** One line a person can read for each event or ack (`--json` prints them raw). */
function readable(label, v) {
  if (v && v.success === false) return `${label}: refused ${v.code}: ${v.error}`;
  switch (label) {
    case 'message ack':
      return `  ✓ sent${v.duplicate ? ' (already sent before)' : ''}${v.message?.seq != null ? ` as #${v.message.seq}` : ''}`;
    case 'message_delivered':
      return `  ✓✓ stored as #${v.seq}`;
    case 'join_conversation ack':
      return `joined: ${v.lastSeq} message(s) so far${v.streaming?.length ? `, ${v.streaming.length} reply being written` : ''}`;
    case 'user_joined':
    case 'user_left':
      return `  (${who(v.userId)} ${label === 'user_joined' ? 'joined' : 'left'})`;
    case 'typing':
      return v.isTyping ? `  (${who(v.userId)} is typing…)` : `  (${who(v.userId)} stopped typing)`;
    case 'reply_delta':
      return `  … ${who(v.id)}+${v.offset}: ${v.text}`;
    case 'message_updated':
      return `[#${v.message.seq} → #${v.seq}] ${who(v.message.userId)} (${v.message.status}): ${v.message.content}`;
    case 'error':
      return `error ${v.code} (${v.event}): ${v.error}`;
    default:
      return `${label} ${JSON.stringify(v)}`;
  }
}
const emit = (event, payload) => socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);

// Message ids already printed: live events and a post-reconnect sync can overlap.
const printed = new Set();
let lastSeq = 0;
let joined = false;
let pending = 0; // sent lines still waiting for their ack
const undelivered = new Set(); // clientMessageIds acked but not yet message_delivered
let stdinClosed = false;
const DRAIN_MS = 5_000; // at EOF, how long to wait for message_delivered before exiting

function printMessage(m) {
  if (printed.has(m.id)) return;
  printed.add(m.id);
  if (m.seq > lastSeq) lastSeq = m.seq;
  if (args.json) return console.log(JSON.stringify(m));
  const status = m.status && m.status !== 'complete' ? ` (${m.status})` : '';
  console.log(`[#${m.seq} ${clock(m.createdAt)}] ${who(m.userId)}${m.type === 'ai' ? ' (AI)' : ''}${status}: ${m.content}`);
}

function exitIfDone() {
  if (stdinClosed && pending === 0 && undelivered.size === 0) {
    socket.close();
    process.exit(0);
  }
}

async function sendLine(content) {
  pending += 1;
  const clientMessageId = uuidv7();
  try {
    const ack = await emit('message', { conversationId, content, clientMessageId });
    show('message ack', ack);
    if (ack.success && ack.message.seq == null) undelivered.add(clientMessageId);
  } catch (err) {
    console.log(`message ack: none (${err.message}); retry with the same clientMessageId is safe`);
  } finally {
    pending -= 1;
  }
}

// After a reconnect, fetch what was missed while away (CONTRACT §7.4).
async function catchUp() {
  for (let hasMore = true; hasMore; ) {
    const ack = await emit('sync', { conversationId, afterSeq: lastSeq });
    if (!ack.success) return show('sync ack', ack);
    ack.messages.forEach(printMessage);
    for (const update of ack.updates ?? []) {
      lastSeq = Math.max(lastSeq, update.seq);
      show('message_updated', update);
    }
    hasMore = ack.hasMore && ack.messages.length + (ack.updates ?? []).length > 0;
  }
}

socket.on('connect_error', (err) => {
  // Refused by the server (UNAUTHORIZED, RATE_LIMITED) or never reached: give up.
  // A drop after a good connection is retried by socket.io-client on its own.
  if (!socket.active || firstConnect) fail(`connect_error: ${err.message}`);
  console.log(`connect_error (retrying): ${err.message}`);
});
socket.on('disconnect', (reason) => {
  joined = false;
  console.log(`disconnected: ${reason}`);
});
socket.on('message', printMessage);
socket.on('message_delivered', (d) => {
  show('message_delivered', d);
  undelivered.delete(d.clientMessageId);
  exitIfDone();
});
socket.on('user_joined', (e) => show('user_joined', e));
socket.on('user_left', (e) => show('user_left', e));
socket.on('typing', (e) => show('typing', e));
socket.on('reply_delta', (e) => show('reply_delta', e));
socket.on('message_updated', (e) => {
  lastSeq = Math.max(lastSeq, e.seq);
  show('message_updated', e);
});
socket.on('error', (e) => show('error', e));

let firstConnect = true;
socket.on('connect', async () => {
  // Rooms don't survive a reconnect, so every connect joins again.
  let ack;
  try {
    ack = await emit('join_conversation', { conversationId });
  } catch (err) {
    fail(`join_conversation: no ack (${err.message})`);
  }
  show('join_conversation ack', ack);
  if (!ack.success) fail(`could not join ${conversationId}`);
  if (firstConnect) lastSeq = Math.max(lastSeq, ack.lastSeq ?? 0);
  else await catchUp();
  joined = true;

  if (args.send !== undefined) {
    const sent = await emit('message', { conversationId, content: args.send, clientMessageId: uuidv7() }).catch(
      (err) => fail(`message: no ack (${err.message})`),
    );
    show('message ack', sent);
    socket.close();
    process.exit(sent.success ? 0 : 1);
  }
  if (firstConnect) {
    firstConnect = false;
    console.log(`joined ${conversationId}; type a line and Enter to send, Ctrl-D to quit`);
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', (line) => {
      if (!line.trim()) return;
      if (!joined) return console.log('(not joined right now: line not sent)');
      sendLine(line).then(exitIfDone);
    });
    rl.on('close', () => {
      stdinClosed = true;
      setTimeout(() => process.exit(0), DRAIN_MS).unref();
      exitIfDone();
    });
  }
});
