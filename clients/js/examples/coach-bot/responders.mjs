// Where the coach's answers come from. A responder is `{ name, respond(turn) }`, where
// `turn` is `{ message, history, coachUserId, signal }` (the person's message, the
// conversation's recent messages oldest first with the message itself last, and an
// AbortSignal raised when someone presses Stop) and `respond` is an async iterable of
// the answer's text, piece by piece, as it is written. The coach streams those pieces
// into one reply (docs/protocol.md §14).
import { setTimeout as delay } from "node:timers/promises";

/**
 * Trading-coach rules that need no network, so the demo works offline: the first rule
 * whose pattern matches the message picks the answer (earnings before sizing, so that
 * "add to my position before earnings?" is answered about the event risk).
 */
export const RULES = [
  ["earnings", /earnings|\bthe print\b|\breports? (date|day|season)|guidance|\bevent risk/i, "Earnings are a coin flip with a gap: price can open far past your stop, so the stop does not cap the loss. Hold through the print only a size you could lose entirely, or wait and trade the reaction once the number is out."],
  ["adding", /\badd(ing)? to (my|a|the|this)\b|average (down|in)|scal(e|ing) in/i, "Add only to a position that is working, and only if the whole position still fits your risk: move the stop so that the combined size loses no more than 1% of your account. Never add to a loser to lower your average."],
  ["stops", /stop[- ]?loss|\bstop\b/i, "Set the stop where your trade idea is proven wrong, not where the loss feels bearable. Then size the position so that stop costs at most 1% of your account."],
  ["position size", /position siz|how (big|much|many)|lot size|risk per trade/i, "Size from risk: account × risk per trade (say 1%) ÷ distance to your stop. The stop comes first; the size follows from it."],
  ["tilt", /revenge|tilt|angry|frustrat|lost (again|big)|losing streak/i, "After a string of losses, step away before the next trade. Write down what happened, cut your size in half, and return only with a setup from your plan."],
  ["fomo", /fomo|missed|chas/i, "A missed move costs nothing. Chasing one usually means a late entry and a wide stop. Wait for the next setup that meets your plan."],
  ["journaling", /journal|review/i, "Log each trade with its setup, entry, stop, target, result and how you felt. Every week, look for the mistake you made most often."],
  ["entries", /entry|enter|setup/i, "Define the setup before the market opens: the trigger, the invalidation level and the target. If price does not give you the trigger, there is no trade."],
  ["exits", /target|take profit|exit/i, "Plan the exit before the entry. A target at least twice the distance to your stop lets you be right less than half the time and still grow."],
  ["leverage", /leverage|margin/i, "Leverage magnifies mistakes as much as wins. Keep it low enough that a normal losing streak of five trades leaves your account almost intact."],
];

/** The answer when no rule matches. */
export const FALLBACK = "Tell me about the trade you are planning: the setup, where you would enter, where your stop goes and what you are aiming for. I will help you check the risk.";

/** The rule answering `content`: `{ topic, answer }` (topic `null` for the fallback). */
export function answerFor(content) {
  const rule = RULES.find(([, pattern]) => pattern.test(content));
  return rule ? { topic: rule[0], answer: rule[2] } : { topic: null, answer: FALLBACK };
}

/** The rules, written out word by word (`wordDelayMs` apart) as a model would, so the
 * demo streams without one. */
export function ruleBasedResponder({ wordDelayMs = 40 } = {}) {
  return {
    name: "rules",
    async *respond({ message, signal }) {
      for (const word of answerFor(message.content).answer.split(/(?<=\s)/)) {
        await delay(wordDelayMs, undefined, { signal });
        yield word;
      }
    },
  };
}

const SYSTEM_PROMPT =
  "You are the AI trading coach of Elite Trading Coach. You help people trade with discipline: " +
  "risk management, position sizing, trade plans, journaling and trading psychology. Be concise " +
  "(at most a few sentences), concrete and kind. You do not give financial advice or predict prices.";

/**
 * An OpenAI-compatible chat-completions endpoint, streamed (`stream: true`: server-sent
 * events, each a `data:` line with a `choices[0].delta.content` piece, then
 * `data: [DONE]`). `url` is the API base (`https://api.openai.com/v1`) or the full
 * `…/chat/completions` URL. `timeoutMs` bounds the whole answer; Stop aborts the request.
 */
export function openAiCompatibleResponder({ url, model, apiKey, timeoutMs = 30_000, fetchImpl = fetch }) {
  const endpoint = /\/chat\/completions\/?$/.test(url) ? url : `${url.replace(/\/+$/, "")}/chat/completions`;
  return {
    name: "llm",
    async *respond({ history, coachUserId, signal }) {
      const messages = [
        { role: "system", content: SYSTEM_PROMPT },
        ...history.map((m) => ({
          role: m.userId === coachUserId || m.type === "ai" ? "assistant" : "user",
          content: m.content,
        })),
      ];
      const timeout = AbortSignal.timeout(timeoutMs);
      const response = await post(fetchImpl, endpoint, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "text/event-stream",
          ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}),
        },
        body: JSON.stringify({ model, messages, stream: true }),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      if (!response.ok) throw new Error(`POST ${endpoint} answered ${response.status}`);
      let pieces = 0;
      for await (const data of sseData(response.body)) {
        if (data === "[DONE]") break;
        const piece = JSON.parse(data)?.choices?.[0]?.delta?.content;
        if (typeof piece === "string" && piece !== "") {
          pieces += 1;
          yield piece;
        }
      }
      if (pieces === 0) throw new Error("chat completions gave no content");
    },
  };
}

/** `fetch`, whose failure names the URL and the cause ("fetch failed" alone says neither). */
async function post(fetchImpl, endpoint, init) {
  try {
    return await fetchImpl(endpoint, init);
  } catch (e) {
    if (e.name === "AbortError" || e.name === "TimeoutError") throw e;
    throw new Error(`POST ${endpoint}: ${e.cause?.message ?? e.message}`, { cause: e });
  }
}

/**
 * The `data` of each server-sent event in `body` (multi-line data joined by "\n";
 * comments and other fields ignored), per the WHATWG event-stream format, which is all
 * the chat-completions stream uses.
 */
export async function* sseData(body) {
  let buffer = "";
  let data = null;
  const line = (text) => {
    if (text === "") {
      const event = data;
      data = null;
      return event;
    }
    if (text.startsWith("data:")) {
      const value = text.slice(5).replace(/^ /, "");
      data = data === null ? value : `${data}\n${value}`;
    }
    return null;
  };
  for await (const chunk of body.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    let newline;
    // A "\r" at the very end may be the first half of "\r\n": wait for the next chunk.
    while ((newline = buffer.search(/\r\n|\r(?!$)|\n/)) >= 0) {
      const event = line(buffer.slice(0, newline));
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      if (event !== null) yield event;
    }
  }
  for (const rest of buffer.split(/\r\n|\r|\n/)) {
    const event = line(rest);
    if (event !== null) yield event;
  }
  if (data !== null) yield data;
}

/** The LLM responder when `COACH_LLM_URL` is set, else the rules. */
export function responderFromEnv(env = process.env) {
  if (!env.COACH_LLM_URL) return ruleBasedResponder();
  return openAiCompatibleResponder({
    url: env.COACH_LLM_URL,
    model: env.COACH_LLM_MODEL || "gpt-4o-mini",
    apiKey: env.COACH_LLM_API_KEY || env.OPENAI_API_KEY,
    timeoutMs: Number(env.COACH_LLM_TIMEOUT_MS ?? 30_000),
  });
}
