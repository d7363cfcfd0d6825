// The offline coach's rule table, without a stack: each topic gets its own answer, and
// the two messages that once got the same paragraph now get different ones.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FALLBACK, RULES, answerFor, ruleBasedResponder } from "../examples/coach-bot/responders.mjs";

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

test("the two messages that once got the same paragraph now get different ones", async () => {
  const responder = ruleBasedResponder();
  const first = await responder.respond({ message: { content: "Should I add to my NVDA position before earnings?" } });
  const second = await responder.respond({ message: { content: "What position size should I use?" } });
  assert.notEqual(first, second);
  assert.match(first, /earnings/i);
});
