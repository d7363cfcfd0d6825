// What every scenario checks: each client saw its conversation exactly once, in seq
// order, with nothing missing, and Postgres holds each sent message once.
import assert from "node:assert/strict";
import { connect } from "../dist/index.js";

/** A connected client that records every `message`, `retry` and state change. */
export function recordingClient(urls, token, options = {}) {
  const client = connect(urls, { token, retryBaseMs: 50, retryMaxMs: 1000, ...options });
  const record = { client, messages: [], retries: [], states: [] };
  client.on("message", (m) => record.messages.push(m));
  client.on("retry", (r) => record.retries.push(r));
  client.on("state", (s) => record.states.push(s.state));
  return record;
}

/** Resolves once `predicate()` holds, checked whenever `client` emits `event`; fails
 * the test after `ms`. */
export function until(client, event, predicate, what, ms = 30_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      client.off(event, check);
      reject(new Error(`timed out waiting for ${what}`));
    }, ms);
    const check = () => {
      if (!predicate()) return;
      clearTimeout(timer);
      client.off(event, check);
      resolve();
    };
    client.on(event, check);
    check();
  });
}

/** Waits until `record` has `count` messages, then checks them: seq 1..count with no gap
 * or repeat, and exactly the `contents` expected (in any interleaving of senders, but
 * each sender's own in the order sent). */
export async function assertConversation(record, contents, bySender = []) {
  await until(record.client, "message", () => record.messages.length >= contents.length, `${contents.length} messages`);
  const seqs = record.messages.map((m) => m.seq);
  assert.deepEqual(seqs, contents.map((_, i) => i + 1), "seq 1..n, each once, in order");
  assert.deepEqual([...record.messages.map((m) => m.content)].sort(), [...contents].sort(), "every message, once");
  assert.equal(new Set(record.messages.map((m) => m.id)).size, contents.length, "no id twice");
  for (const sent of bySender) {
    const seen = record.messages.map((m) => m.content).filter((c) => sent.includes(c));
    assert.deepEqual(seen, sent, "a sender's messages in the order it sent them");
  }
}

/** Postgres holds each content once, with seq 1..n. */
export async function assertStored(harness, conversationId, contents) {
  const rows = await harness.rows(conversationId);
  assert.deepEqual(rows.map((r) => r[0]), contents.map((_, i) => i + 1), "stored seqs contiguous");
  assert.deepEqual(rows.map((r) => r[1]).sort(), [...contents].sort(), "stored once each");
}
