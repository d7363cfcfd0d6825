// The client library against the real binaries (see harness.mjs): a conversation survives
// each of these with no message lost or repeated at the application level.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { Harness } from "./harness.mjs";
import { assertConversation, assertStored, recordingClient, until } from "./helpers.mjs";
import { io } from "socket.io-client";
import { Timeline } from "../dist/index.js";

/** Sends `n` messages named `prefix-i`, one after the other's ack, and returns the contents. */
async function sendAll(client, conversationId, prefix, n) {
  const contents = [];
  for (let i = 0; i < n; i++) {
    contents.push(`${prefix}-${i}`);
    await client.send(conversationId, `${prefix}-${i}`);
  }
  return contents;
}

/** Sends `n` messages without waiting for acks; resolves when every one is durable. */
async function sendBurst(client, conversationId, prefix, n) {
  const contents = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  await Promise.all(contents.map((c) => client.send(conversationId, c)));
  return contents;
}

describe("Timeline", () => {
  test("hands out each seq once and in order, holding what comes early", () => {
    const t = new Timeline(0);
    const m = (seq) => ({ seq, id: `m${seq}` });
    assert.deepEqual(t.accept(m(2)), []);
    assert.equal(t.hasGap, true);
    assert.deepEqual(t.accept(m(1)).map((x) => x.seq), [1, 2]);
    assert.deepEqual(t.accept(m(2)), [], "a repeat is dropped");
    assert.deepEqual(t.accept(m(3)).map((x) => x.seq), [3]);
    assert.equal(t.hasGap, false);
    assert.equal(t.lastSeq, 3);
  });
});

describe("a conversation between two clients", () => {
  let harness, alice, bob, conversationId;
  before(async () => {
    harness = await Harness.start();
    [alice, bob] = [await harness.user(), await harness.user()];
    conversationId = await harness.conversation(alice, bob);
  });
  after(() => harness.stop());

  test("the protocol types are generated from the server's own AsyncAPI document", async () => {
    const live = await (await fetch(`${harness.urls[0]}/asyncapi.json`)).json();
    const copy = JSON.parse(await readFile(new URL("../schema/asyncapi.json", import.meta.url), "utf8"));
    assert.deepEqual(copy, live, "schema/asyncapi.json differs from the server's: run `npm run gen -- <url>`");
  });

  test("both see every message once, in seq order, their own included; history on request", async () => {
    const a = recordingClient(harness.urls, alice.token);
    const b = recordingClient(harness.urls, bob.token);
    const typing = b.client.once("typing", (t) => t.isTyping);
    const presence = a.client.once("presence", (p) => p.status === "joined" && p.userId === bob.userId);
    await a.client.join(conversationId);
    await b.client.join(conversationId);
    await presence;
    a.client.typing(conversationId, true);
    assert.equal((await typing).userId, alice.userId);
    const delivered = a.client.once("delivered", () => true);
    const first = await a.client.send(conversationId, "hello bob");
    assert.equal(first.duplicate, false);
    assert.equal((await delivered).seq, 1);
    const fromA = await sendAll(a.client, conversationId, "a", 5);
    const fromB = await sendAll(b.client, conversationId, "b", 5);
    const all = ["hello bob", ...fromA, ...fromB];
    await assertConversation(a, all, [fromA, fromB]);
    await assertConversation(b, all, [fromA, fromB]);

    const late = recordingClient(harness.urls, bob.token);
    await late.client.join(conversationId, { afterSeq: 0 });
    await assertConversation(late, all);
    for (const r of [a, b, late]) r.client.close();
  });

  test("a retry with the same clientMessageId is stored once", async () => {
    const a = recordingClient(harness.urls, alice.token);
    await a.client.join(conversationId);
    const clientMessageId = "0190a0a0-0000-7000-8000-000000000001";
    const one = await a.client.send(conversationId, "once", { clientMessageId });
    const two = await a.client.send(conversationId, "once", { clientMessageId });
    assert.equal(two.duplicate, true);
    assert.equal(two.message.id, one.message.id);
    a.client.close();
  });

  test("leaving for good ends the membership: sends are refused, a second leave too", async () => {
    const [carol, dave] = [await harness.user(), await harness.user()];
    const room = await harness.conversation(carol, dave);
    const c = recordingClient(harness.urls, carol.token);
    const d = recordingClient(harness.urls, dave.token);
    await c.client.join(room);
    await d.client.join(room);
    const left = new Promise((resolve) =>
      d.client.on("presence", (p) => p.status === "left" && p.userId === carol.userId && resolve(p)),
    );
    await c.client.leaveForGood(room);
    assert.equal((await left).conversationId, room, "the others are told");
    await assert.rejects(c.client.join(room), (e) => e.code === "FORBIDDEN");
    await assert.rejects(c.client.leaveForGood(room), (e) => e.code === "FORBIDDEN");
    c.client.close();
    d.client.close();
  });

  test("a streamed reply grows by deltas, ends as one update in seq order, and nothing sticks", async () => {
    const coach = await harness.user("ai");
    const room = await harness.conversation(alice, coach);
    const a = recordingClient(harness.urls, alice.token);
    const deltas = [];
    const updates = [];
    a.client.on("delta", (d) => deltas.push(d));
    a.client.on("updated", (u) => updates.push(u));
    await a.client.join(room);
    const raw = io(harness.urls[0], { auth: { token: coach.token }, transports: ["websocket"] });
    const ack = (event, payload) => new Promise((resolve) => raw.emit(event, payload, resolve));
    await new Promise((resolve) => raw.on("connect", resolve));
    await ack("join_conversation", { conversationId: room });
    const started = await ack("reply_start", { conversationId: room });
    const id = started.message.id;
    let offset = 0;
    for (const piece of ["Keep ", "it ", "small."]) {
      offset = (await ack("reply_append", { conversationId: room, id, offset, text: piece })).length;
    }
    await until(a.client, "delta", () => deltas.map((d) => d.text).join("") === "Keep it small.", "the text");
    let length = 0;
    for (const d of deltas) {
      assert.equal(d.offset, length, "in offset order, each piece once");
      length += [...d.text].length;
    }
    await ack("reply_end", { conversationId: room, id, status: "complete" });
    await ack("message", { conversationId: room, content: "after the reply", type: "ai" });
    await until(a.client, "message", () => a.messages.length === 2, "the reply and the message after it");
    assert.equal(updates.length, 1);
    assert.deepEqual([a.messages[0].seq, updates[0].seq, a.messages[1].seq], [1, 2, 3], "one seq per event");
    assert.equal(updates[0].message.content, "Keep it small.");
    assert.equal(updates[0].message.status, "complete");
    assert.equal(a.client.lastSeq(room), 3);
    raw.close();
    a.client.close();
  });

  test("the coach writes a reply with startReply; a stop reaches it and the end is cancelled", async () => {
    const coach = await harness.user("ai");
    const room = await harness.conversation(alice, coach);
    const a = recordingClient(harness.urls, alice.token);
    const c = recordingClient(harness.urls, coach.token);
    const updates = [];
    a.client.on("updated", (u) => updates.push(u));
    await a.client.join(room);
    await c.client.join(room);
    const writer = await c.client.startReply(room);
    const stoppedBy = new Promise((resolve) => writer.onStop(resolve));
    assert.equal(await writer.append("Trim "), 5);
    assert.equal(await writer.append("the size"), 13);
    await until(a.client, "message", () => a.messages.length === 1, "the start");
    await a.client.stopReply(room, writer.id);
    assert.equal(await stoppedBy, alice.userId, "the coach hears who stopped it");
    const final = await writer.end();
    assert.equal(final.status, "cancelled");
    assert.equal(final.content, "Trim the size");
    await until(a.client, "updated", () => updates.length === 1, "the end");
    assert.equal(updates[0].message.status, "cancelled");
    a.client.close();
    c.client.close();
  });

  test("a refused send rejects with the server's code and is not retried", async () => {
    const a = recordingClient(harness.urls, alice.token);
    await a.client.join(conversationId);
    await assert.rejects(a.client.send(conversationId, "   "), (e) => e.code === "VALIDATION_FAILED");
    await assert.rejects(a.client.send(conversationId, "hi", { type: "ai" }), (e) => e.code === "FORBIDDEN");
    assert.equal(a.retries.length, 0);
    a.client.close();
  });
});

/** A fresh stack (`args` for coachwire-harness) with a conversation between two people,
 * each with a recording client joined to it (`urls(harness)` gives each client's URLs);
 * runs `scenario`, then closes the clients and stops the stack whatever happened. */
async function inRoom(args, scenario, urls = (h) => [h.urls, h.urls]) {
  const harness = await Harness.start(args);
  const records = [];
  try {
    const [alice, bob] = [await harness.user(), await harness.user()];
    const conversationId = await harness.conversation(alice, bob);
    const [aliceUrls, bobUrls] = urls(harness);
    const a = recordingClient(aliceUrls, alice.token);
    const b = recordingClient(bobUrls, bob.token);
    records.push(a, b);
    await a.client.join(conversationId);
    await b.client.join(conversationId);
    await scenario({ harness, conversationId, a, b });
  } finally {
    for (const record of records) record.client.close();
    await harness.stop();
  }
}

describe("a server-side disconnect", () => {
  test("both clients reconnect, re-join and sync; sends made meanwhile go out once", () =>
    inRoom([], async ({ harness, conversationId, a, b }) => {
      const before = await sendAll(a.client, conversationId, "before", 3);
      // A graceful stop disconnects every socket from the server's side.
      const down = until(a.client, "state", () => a.states.includes("disconnected"), "alice disconnected");
      await harness.command({ cmd: "terminate", service: "ingest" });
      await down;
      const during = ["during-0", "during-1", "during-2"].map((c) => a.client.send(conversationId, c));
      await harness.command({ cmd: "restart", service: "ingest" });
      await Promise.all(during);
      const fromB = await sendAll(b.client, conversationId, "after", 3);
      const all = [...before, "during-0", "during-1", "during-2", ...fromB];
      await assertConversation(a, all);
      await assertConversation(b, all);
      await assertStored(harness, conversationId, all);
    }));
});

describe("an ingest node killed", () => {
  test("clients talking across two nodes move to the other node and lose nothing", () =>
    inRoom(
      ["--ingest-nodes", "2"],
      async ({ harness, conversationId, a, b }) => {
        const sending = [sendAll(a.client, conversationId, "a", 30), sendAll(b.client, conversationId, "b", 30)];
        await until(a.client, "message", () => a.messages.length >= 10, "some traffic first");
        await harness.command({ cmd: "kill", service: "ingest", index: 0 });
        const [fromA, fromB] = await Promise.all(sending);
        const all = [...fromA, ...fromB];
        await assertConversation(a, all, [fromA, fromB]);
        await assertConversation(b, all, [fromA, fromB]);
        // Her sends may all be acked before the kill shows: wait for it rather than race it.
        await until(a.client, "state", () => a.states.includes("disconnected"), "alice to lose her node");
        await assertStored(harness, conversationId, all);
      },
      // Alice starts on the node that is killed, Bob on the other.
      ({ urls: [n0, n1] }) => [[n0, n1], [n1, n0]],
    ));
});

describe("NATS restarted", () => {
  test("sends answered UNAVAILABLE are retried until they are durable, once each", () =>
    inRoom([], async ({ harness, conversationId, a, b }) => {
      const before = await sendAll(a.client, conversationId, "before", 3);
      await harness.command({ cmd: "stop-nats" });
      const during = ["during-0", "during-1"].map((c) => a.client.send(conversationId, c));
      await until(a.client, "retry", () => a.retries.some((r) => r.code === "UNAVAILABLE"), "UNAVAILABLE while NATS is down");
      await harness.command({ cmd: "start-nats" });
      await Promise.all(during);
      const all = [...before, "during-0", "during-1"];
      await assertConversation(a, all);
      await assertConversation(b, all);
      await assertStored(harness, conversationId, all);
    }));
});

describe("a burst over the rate limit", () => {
  test("RATE_LIMITED sends wait retryAfterMs and all arrive, once and in order", () =>
    inRoom(
      ["--env", "COACHWIRE_MESSAGE_LIMIT=5", "--env", "COACHWIRE_MESSAGE_WINDOW_MS=1000"],
      async ({ harness, conversationId, a, b }) => {
        const burst = await sendBurst(a.client, conversationId, "burst", 15);
        assert.ok(a.retries.some((r) => r.code === "RATE_LIMITED" && r.inMs > 0), "the limit was hit");
        await assertConversation(b, burst);
        await assertConversation(a, burst);
        await assertStored(harness, conversationId, burst);
      },
    ));
});
