// The AI coach bot (examples/coach-bot) against the real binaries, with the rules and
// with an OpenAI-compatible streaming endpoint played by a local HTTP server.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { Harness } from "./harness.mjs";
import { recordingClient, until } from "./helpers.mjs";
import { APOLOGY, CUT_SHORT, Coach, replyIdFor } from "../examples/coach-bot/coach.mjs";
import { openAiCompatibleResponder, ruleBasedResponder } from "../examples/coach-bot/responders.mjs";

/** A person's client in the room, recording each reply's deltas and final version. */
async function person(harness, user, conversationId, coachUser) {
  const record = recordingClient(harness.urls, user.token);
  record.replyTo = (messageId) => record.messages.find((m) => m.clientMessageId === replyIdFor(messageId, coachUser.userId));
  record.deltas = new Map();
  record.finals = new Map();
  record.client.on("delta", (d) => record.deltas.set(d.id, (record.deltas.get(d.id) ?? "") + d.text));
  record.client.on("updated", (u) => record.finals.set(u.message.id, u.message));
  await record.client.join(conversationId);
  return record;
}

/** The coach's replies `record` saw start, in order. */
const repliesIn = (record, coachUser) => record.messages.filter((m) => m.userId === coachUser.userId);

/** Sends `content` and resolves with the final version of the coach's reply to it. */
async function ask(record, conversationId, content) {
  const { message } = await record.client.send(conversationId, content);
  return finalReplyTo(record, message.id);
}

async function finalReplyTo(record, messageId) {
  const reply = () => record.replyTo(messageId);
  await until(record.client, "updated", () => reply() && record.finals.has(reply().id), `the reply to ${messageId}`);
  return { start: reply(), final: record.finals.get(reply().id), streamed: record.deltas.get(reply().id) ?? "" };
}

const quietCoach = (harness, user, responder) =>
  new Coach({ url: harness.urls, token: user.token, responder, discoverEveryMs: 200, log: process.env.COACH_TEST_LOG ? console.error : () => {} });

describe("the coach bot with its built-in rules", () => {
  let harness, alice, bob, coachUser, otherBot, oneToOne, group, coach, room, firstId;
  before(async () => {
    harness = await Harness.start();
    [alice, bob, coachUser, otherBot] = [await harness.user(), await harness.user(), await harness.user("ai"), await harness.user("ai")];
    oneToOne = await harness.conversation(alice, coachUser);
    group = await harness.conversation(alice, bob, coachUser, otherBot);
    room = await person(harness, alice, oneToOne, coachUser);
    await room.client.join(group);
    // Sent before the coach runs: it must answer it when it joins.
    firstId = (await room.client.send(oneToOne, "Where should my stop loss go?")).message.id;
    coach = quietCoach(harness, coachUser, ruleBasedResponder({ wordDelayMs: 2 }));
    await coach.start();
  });
  after(async () => {
    await coach.stop();
    room.client.close();
    await harness.stop();
  });

  test("answers the message sent before it joined, streamed into one reply", async () => {
    const { start, final, streamed } = await finalReplyTo(room, firstId);
    assert.equal(start.type, "ai");
    assert.equal(start.status, "streaming");
    assert.equal(start.content, "");
    assert.equal(final.status, "complete");
    assert.match(final.content, /stop/i);
    assert.equal(streamed, final.content, "the deltas spell the final text");
    assert.ok(final.seq === start.seq, "the reply keeps the seq it started with");
  });

  test("in a group, answers only what says @coach, and never another ai sender", async () => {
    const bot = recordingClient(harness.urls, otherBot.token);
    await bot.client.join(group);
    await bot.client.send(group, "@coach I am another bot. Where should my stop loss go?", { type: "ai" });
    await room.client.send(group, "How big should my position be?");
    // Answers go in order: when this one is answered, the ones above would have been.
    const { start, final } = await ask(room, group, "@coach how do I keep a trading journal?");
    assert.match(final.content, /log each trade/i);
    assert.deepEqual(repliesIn(room, coachUser).filter((m) => m.conversationId === group).map((m) => m.id), [start.id]);
    bot.client.close();
  });

  test("a second coach with the same user does not double the answers, and a restarted one catches up", async () => {
    const second = quietCoach(harness, coachUser, ruleBasedResponder({ wordDelayMs: 2 }));
    await second.start();
    const { message } = await room.client.send(oneToOne, "Should I add to my position?");
    await finalReplyTo(room, message.id);
    await Promise.all([coach.queues.get(oneToOne), second.queues.get(oneToOne)]);
    await second.stop();
    assert.equal(coach.replies + second.replies, 3, "one of the two wrote it, the other was told duplicate");
    const replyId = replyIdFor(message.id, coachUser.userId);
    assert.equal(repliesIn(room, coachUser).filter((m) => m.clientMessageId === replyId).length, 1);

    await coach.stop();
    const missed = (await room.client.send(oneToOne, "I keep chasing breakouts I missed")).message.id;
    coach = quietCoach(harness, coachUser, ruleBasedResponder({ wordDelayMs: 2 }));
    await coach.start();
    const { final } = await finalReplyTo(room, missed);
    assert.match(final.content, /missed move/i);
    await coach.queues.get(oneToOne);
    const replies = repliesIn(room, coachUser).filter((m) => m.conversationId === oneToOne);
    const asked = [firstId, message.id, missed].map((id) => replyIdFor(id, coachUser.userId));
    assert.deepEqual(replies.map((m) => m.clientMessageId), asked, "each answered once, in order");
  });

  test("the reply id is derived from the message and the coach", () => {
    assert.equal(replyIdFor(firstId, coachUser.userId), replyIdFor(firstId, coachUser.userId));
    assert.notEqual(replyIdFor(firstId, coachUser.userId), replyIdFor(firstId, otherBot.userId));
  });
});

/** An OpenAI-compatible endpoint streaming `answer to: <last message>` word by word;
 * "fail" gets a 500, "break" drops the connection mid-answer, "long" writes for ~10 s. */
function fakeLlm() {
  const llm = { requests: [] };
  llm.aborted = new Promise((resolve) => (llm.abort = resolve));
  llm.server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", async () => {
      const request = JSON.parse(body);
      llm.requests.push({ path: req.url, auth: req.headers.authorization, body: request });
      const last = request.messages.at(-1).content;
      if (last.includes("fail")) {
        res.writeHead(500, { "content-type": "application/json" });
        return res.end(JSON.stringify({ error: { message: "model overloaded" } }));
      }
      res.on("close", () => {
        if (!res.writableFinished) llm.abort();
      });
      res.writeHead(200, { "content-type": "text/event-stream" });
      const words = last.includes("long") ? Array(200).fill("and ") : `answer to: ${last}`.split(/(?<= )/);
      for (const [i, word] of words.entries()) {
        if (res.destroyed) return;
        if (last.includes("break") && i === 2) return res.destroy();
        res.write(`data: ${JSON.stringify({ choices: [{ delta: { content: word } }] })}\n\n`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      res.end("data: [DONE]\n\n");
    });
  });
  return llm;
}

describe("the coach bot with an OpenAI-compatible endpoint", () => {
  let harness, alice, coachUser, conversationId, coach, room, llm;
  before(async () => {
    llm = fakeLlm();
    await new Promise((resolve) => llm.server.listen(0, "127.0.0.1", resolve));
    harness = await Harness.start();
    [alice, coachUser] = [await harness.user(), await harness.user("ai")];
    conversationId = await harness.conversation(alice, coachUser);
    room = await person(harness, alice, conversationId, coachUser);
    const responder = openAiCompatibleResponder({
      url: `http://127.0.0.1:${llm.server.address().port}/v1`,
      model: "coach-test-model",
      apiKey: "test-key",
      timeoutMs: 15_000,
    });
    coach = quietCoach(harness, coachUser, responder);
    await coach.start();
  });
  after(async () => {
    await coach.stop();
    room.client.close();
    llm.server.close();
    await harness.stop();
  });

  test("streams the completion, sending the conversation's recent history", async () => {
    const first = await ask(room, conversationId, "first question");
    const second = await ask(room, conversationId, "second question");
    assert.deepEqual([first.final.content, second.final.content], ["answer to: first question", "answer to: second question"]);
    assert.equal(second.streamed, second.final.content);
    const request = llm.requests[1];
    assert.equal(request.path, "/v1/chat/completions");
    assert.equal(request.auth, "Bearer test-key");
    assert.equal(request.body.model, "coach-test-model");
    assert.equal(request.body.stream, true);
    assert.deepEqual(
      request.body.messages.slice(1).map((m) => [m.role, m.content]),
      [
        ["user", "first question"],
        ["assistant", "answer to: first question"],
        ["user", "second question"],
      ],
      "the history, oldest first, with the coach's own answers as the assistant's",
    );
  });

  test("Stop ends the reply cancelled with the text so far, and aborts the model's request", async () => {
    const { message } = await room.client.send(conversationId, "a long answer please");
    await until(room.client, "delta", () => {
      const reply = room.replyTo(message.id);
      return reply && (room.deltas.get(reply.id) ?? "").length > 0;
    }, "the first words");
    const reply = room.replyTo(message.id);
    await room.client.stopReply(conversationId, reply.id);
    const { final } = await finalReplyTo(room, message.id);
    assert.equal(final.status, "cancelled");
    assert.match(final.content, /^(and )+$/);
    assert.ok(final.content.length < 200 * 4, "stopped before the end");
    await llm.aborted; // the model's request was aborted (else this times out)
  });

  test("an endpoint error ends the reply failed with an apology", async () => {
    const { final } = await ask(room, conversationId, "please fail");
    assert.equal(final.status, "failed");
    assert.equal(final.content, APOLOGY);
  });

  test("a stream cut mid-answer ends failed, keeping what was written", async () => {
    const { final } = await ask(room, conversationId, "break");
    assert.equal(final.status, "failed");
    assert.equal(final.content, `answer to: ${CUT_SHORT}`);
  });
});
