// The offline coach's rule table, without a stack: each topic gets its own answer, and
// the two messages that once got the same paragraph now get different ones.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FALLBACK, RULES, answerFor, openAiCompatibleResponder, ruleBasedResponder, sseData } from "../examples/coach-bot/responders.mjs";

const asked = [
  ["Should I add to my NVDA position before earnings?", "earnings"],
  ["I'd wait for the print", "earnings"],
  ["Is it smart to average down on this one?", "adding"],
  ["Where should my stop loss go?", "stops"],
  ["What position size should I use?", "position size"],
  ["How much should I risk per trade?", "position size"],
  ["How do I keep a trading journal?", "journaling"],
  ["What is a good entry for this setup?", "entries"],
  ["When do I take profit?", "exits"],
  ["I keep chasing breakouts, FOMO is killing me", "fomo"],
  ["Lost again today, I'm so frustrated", "tilt"],
  ["Is 10x leverage too much?", "leverage"],
];

test("each question is answered by its topic's rule", () => {
  for (const [question, topic] of asked) {
    assert.equal(answerFor(question).topic, topic, question);
  }
});

test("every topic has its own answer, and unrelated chat gets the fallback", () => {
  const answers = new Set(RULES.map(([, , answer]) => answer));
  assert.equal(answers.size, RULES.length, "no two rules share an answer");
  assert.ok(!answers.has(FALLBACK));
  assert.deepEqual(answerFor("good morning everyone"), { topic: null, answer: FALLBACK });
});

/** Everything an async iterable yields, in order. */
async function collect(pieces) {
  const all = [];
  for await (const piece of pieces) all.push(piece);
  return all;
}

test("the two messages that once got the same paragraph now get different ones, word by word", async () => {
  const responder = ruleBasedResponder({ wordDelayMs: 0 });
  const first = await collect(responder.respond({ message: { content: "Should I add to my NVDA position before earnings?" } }));
  const second = await collect(responder.respond({ message: { content: "What position size should I use?" } }));
  assert.ok(first.length > 10, "streamed in many pieces");
  assert.equal(first.join(""), answerFor("before earnings").answer);
  assert.notEqual(first.join(""), second.join(""));
});

test("Stop ends the rules' stream", async () => {
  const controller = new AbortController();
  const pieces = ruleBasedResponder({ wordDelayMs: 0 }).respond({ message: { content: "stop loss?" }, signal: controller.signal });
  const seen = [];
  await assert.rejects(async () => {
    for await (const piece of pieces) {
      seen.push(piece);
      controller.abort();
    }
  }, { name: "AbortError" });
  assert.equal(seen.length, 1);
});

test("server-sent events are read whatever the chunking, with multi-line data and comments", async () => {
  const text = ": keep-alive\r\ndata: {\"a\":1}\r\n\r\ndata: line one\r\ndata: line two\nid: 7\n\ndata: [DONE]\n\n";
  for (const size of [1, 3, 7, text.length]) {
    const chunks = [];
    for (let i = 0; i < text.length; i += size) chunks.push(text.slice(i, i + size));
    const body = new ReadableStream({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
        controller.close();
      },
    });
    assert.deepEqual(await collect(sseData(body)), ['{"a":1}', "line one\nline two", "[DONE]"], `chunks of ${size}`);
  }
});

test("an unreachable model is reported with its URL and the cause", async () => {
  const fetchImpl = async () => {
    throw new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED 127.0.0.1:9") });
  };
  const responder = openAiCompatibleResponder({ url: "http://127.0.0.1:9/v1", model: "m", fetchImpl });
  await assert.rejects(collect(responder.respond({ history: [], coachUserId: "c" })), {
    message: "POST http://127.0.0.1:9/v1/chat/completions: connect ECONNREFUSED 127.0.0.1:9",
  });
});
