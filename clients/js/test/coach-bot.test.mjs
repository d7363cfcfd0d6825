// The AI coach bot (examples/coach-bot) against the real binaries, with the rules and
// with an OpenAI-compatible endpoint played by a local HTTP server.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { Harness } from "./harness.mjs";
import { recordingClient, until } from "./helpers.mjs";
import { APOLOGY, Coach } from "../examples/coach-bot/coach.mjs";
import { openAiCompatibleResponder, ruleBasedResponder } from "../examples/coach-bot/responders.mjs";

/** A person's client in the room, recording typing too. */
async function person(harness, user, conversationId) {
  const record = recordingClient(harness.urls, user.token);
  record.typing = [];
  record.client.on("typing", (t) => record.typing.push(t));
  await record.client.join(conversationId);
  return record;
}

const from = (record, userId) => record.messages.filter((m) => m.userId === userId);

describe("the coach bot with its built-in rules", () => {
  let harness, alice, coachUser, otherBot, conversationId, coach, room;
  before(async () => {
    harness = await Harness.start();
    [alice, coachUser, otherBot] = [await harness.user(), await harness.user("ai"), await harness.user("ai")];
    conversationId = await harness.conversation(alice, coachUser, otherBot);
    room = await person(harness, alice, conversationId);
    coach = new Coach({ url: harness.urls, token: coachUser.token, responder: ruleBasedResponder(), log: () => {} });
    await coach.start();
  });
  after(async () => {
    await coach.stop();
    room.client.close();
    await harness.stop();
  });

  test("answers a person once, typing while it works", async () => {
    await room.client.send(conversationId, "Where should my stop loss go?");
    await until(room.client, "message", () => from(room, coachUser.userId).length === 1, "the coach's answer");
    const [answer] = from(room, coachUser.userId);
    assert.equal(answer.type, "ai");
    assert.match(answer.content, /stop/i);
    assert.ok(room.typing.some((t) => t.userId === coachUser.userId && t.isTyping), "typing was shown");
  });

  test("never answers itself or another ai sender", async () => {
    const bot = recordingClient(harness.urls, otherBot.token);
    await bot.client.join(conversationId);
    await bot.client.send(conversationId, "I am another bot. Where should my stop loss go?", { type: "ai" });
    // The coach answers in order, one message at a time: when the answer to this later
    // message arrives, an answer to the bot's message would already be there.
    await room.client.send(conversationId, "How do I keep a trading journal?");
    await until(room.client, "message", () => from(room, coachUser.userId).length >= 2, "the answer to the second question");
    const answers = from(room, coachUser.userId);
    assert.equal(answers.length, 2, "one answer per person's message, none to the bot");
    assert.match(answers[1].content, /log each trade/i);
    assert.equal(coach.replies, 2);
    bot.client.close();
  });
});

describe("the coach bot with an OpenAI-compatible endpoint", () => {
  let harness, alice, coachUser, conversationId, coach, room, llm, requests;
  before(async () => {
    requests = [];
    llm = http.createServer((req, res) => {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        const request = JSON.parse(body);
        requests.push({ path: req.url, auth: req.headers.authorization, body: request });
        const last = request.messages.at(-1).content;
        const answer = (status, content) => {
          res.writeHead(status, { "content-type": "application/json" });
          res.end(JSON.stringify(status === 200 ? { choices: [{ message: { role: "assistant", content } }] } : { error: { message: content } }));
        };
        if (last.includes("fail")) answer(500, "model overloaded");
        else if (last.includes("slow")) setTimeout(() => answer(200, `slow answer to: ${last}`), 1500);
        else answer(200, `answer to: ${last}`);
      });
    });
    await new Promise((resolve) => llm.listen(0, "127.0.0.1", resolve));
    harness = await Harness.start();
    [alice, coachUser] = [await harness.user(), await harness.user("ai")];
    conversationId = await harness.conversation(alice, coachUser);
    room = await person(harness, alice, conversationId);
    const responder = openAiCompatibleResponder({
      url: `http://127.0.0.1:${llm.address().port}/v1`,
      model: "coach-test-model",
      apiKey: "test-key",
      timeoutMs: 5000,
    });
    coach = new Coach({ url: harness.urls, token: coachUser.token, responder, log: () => {} });
    await coach.start();
  });
  after(async () => {
    await coach.stop();
    room.client.close();
    llm.close();
    await harness.stop();
  });

  test("sends the conversation's recent history and replies with the completion", async () => {
    await room.client.send(conversationId, "first question");
    await until(room.client, "message", () => from(room, coachUser.userId).length === 1, "the first answer");
    await room.client.send(conversationId, "second question");
    await until(room.client, "message", () => from(room, coachUser.userId).length === 2, "the second answer");
    assert.deepEqual(from(room, coachUser.userId).map((m) => m.content), ["answer to: first question", "answer to: second question"]);
    const second = requests[1];
    assert.equal(second.path, "/v1/chat/completions");
    assert.equal(second.auth, "Bearer test-key");
    assert.equal(second.body.model, "coach-test-model");
    assert.deepEqual(
      second.body.messages.slice(1).map((m) => [m.role, m.content]),
      [
        ["user", "first question"],
        ["assistant", "answer to: first question"],
        ["user", "second question"],
      ],
      "the history, oldest first, with the coach's own answers as the assistant's",
    );
  });

  test("a slow answer arrives, with typing shown meanwhile", async () => {
    const typing = room.client.once("typing", (t) => t.userId === coachUser.userId && t.isTyping);
    await room.client.send(conversationId, "a slow question");
    await typing;
    await until(room.client, "message", () => from(room, coachUser.userId).length === 3, "the slow answer");
    assert.equal(from(room, coachUser.userId)[2].content, "slow answer to: a slow question");
  });

  test("an endpoint error gets a short apology, not silence", async () => {
    await room.client.send(conversationId, "please fail");
    await until(room.client, "message", () => from(room, coachUser.userId).length === 4, "the apology");
    assert.equal(from(room, coachUser.userId)[3].content, APOLOGY);
  });
});
