// The AI coach: a client with role `ai` that joins the conversations it takes part in and
// answers each person's message with a `type: "ai"` reply, showing `typing` while it works.
//
// - It never answers a message of type "ai" (its own, or another bot's), nor anything
//   sent with its own user id, so two bots in a room cannot talk to each other forever.
// - Each message is answered at most once: the client library hands over every message
//   once, and the coach also remembers what it answered in this run.
// - It joins without history: after a restart it answers what arrives, not the backlog.
// - Conversations: at start-up the most recently active ones (newest activity first, up
//   to `maxConversations`); then it looks at the first page again every `discoverEveryMs`,
//   which is where a conversation that just became active appears. With a million
//   conversations that stays a handful of small requests.
// - A responder that fails or times out gets a short apology in the room (APOLOGY), so
//   the person is not left waiting; the error goes to the log.
import { connect } from "../../dist/index.js";

export const APOLOGY = "Sorry, I can't put together an answer right now. Please ask me again in a moment.";
/** Messages of context kept per conversation for the responder. */
const HISTORY = 20;
/** `typing: true` is repeated while an answer takes long, as people's clients do. */
const TYPING_REFRESH_MS = 3_000;
const PAGE = 200;

/** The `sub` of a JWT (the coach's user id), without verifying it: the server does. */
export function subjectOf(token) {
  const payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8"));
  if (typeof payload.sub !== "string") throw new Error("the token has no sub");
  return payload.sub;
}

export class Coach {
  constructor({ url, token, responder, maxConversations = 1000, discoverEveryMs = 5_000, log = console.error }) {
    this.urls = Array.isArray(url) ? url : [url];
    this.token = token;
    this.userId = subjectOf(token);
    this.responder = responder;
    this.maxConversations = maxConversations;
    this.discoverEveryMs = discoverEveryMs;
    this.log = log;
    this.history = new Map();
    this.answered = new Set();
    this.queues = new Map();
    this.joining = new Map();
    this.replies = 0;
  }

  async start() {
    this.client = connect(this.urls, { token: this.token });
    this.client.on("message", (m) => this.onMessage(m));
    this.client.on("error", (e) => this.log(`coach: ${e.message}`));
    await this.discover(this.maxConversations);
    this.timer = setInterval(() => {
      this.discover(PAGE).catch((e) => this.log(`coach: listing conversations failed: ${e.message}`));
    }, this.discoverEveryMs);
  }

  async stop() {
    clearInterval(this.timer);
    await Promise.allSettled([...this.queues.values()]);
    this.client?.close();
  }

  /** Joins the `limit` most recently active conversations not joined yet. */
  async discover(limit) {
    let cursor;
    let seen = 0;
    do {
      const query = new URLSearchParams({ limit: String(Math.min(PAGE, limit - seen)) });
      if (cursor) query.set("cursor", cursor);
      const page = await this.api(`/api/conversations?${query}`);
      for (const conversation of page.conversations) {
        if (!this.joining.has(conversation.id)) this.joining.set(conversation.id, this.join(conversation.id));
      }
      seen += page.conversations.length;
      cursor = page.nextCursor;
    } while (cursor && seen < limit);
    await Promise.all(this.joining.values());
  }

  async join(conversationId) {
    const { lastSeq } = await this.client.join(conversationId);
    const recent = await this.api(
      `/api/conversations/${conversationId}/messages?afterSeq=${Math.max(0, lastSeq - HISTORY)}&limit=${HISTORY}`,
    );
    const history = this.historyOf(conversationId);
    history.unshift(...recent.messages.filter((m) => m.seq <= lastSeq));
  }

  historyOf(conversationId) {
    let history = this.history.get(conversationId);
    if (!history) {
      history = [];
      this.history.set(conversationId, history);
    }
    return history;
  }

  onMessage(message) {
    const history = this.historyOf(message.conversationId);
    history.push(message);
    if (history.length > HISTORY) history.splice(0, history.length - HISTORY);
    if (message.type === "ai" || message.userId === this.userId || this.answered.has(message.id)) return;
    this.answered.add(message.id);
    // One answer at a time per conversation, in the order the messages came.
    const previous = this.queues.get(message.conversationId) ?? Promise.resolve();
    const next = previous.then(() => this.answer(message, [...history]));
    this.queues.set(message.conversationId, next);
  }

  async answer(message, history) {
    const conversationId = message.conversationId;
    this.client.typing(conversationId, true);
    const typing = setInterval(() => this.client.typing(conversationId, true), TYPING_REFRESH_MS);
    let reply;
    try {
      reply = await this.responder.respond({ message, history, coachUserId: this.userId });
    } catch (e) {
      this.log(`coach: the ${this.responder.name} responder failed: ${e.message}`);
      reply = APOLOGY;
    } finally {
      clearInterval(typing);
      this.client.typing(conversationId, false);
    }
    if (!reply) return;
    try {
      await this.client.send(conversationId, reply, { type: "ai" });
      this.replies += 1;
    } catch (e) {
      this.log(`coach: replying in ${conversationId} failed: ${e.message}`);
    }
  }

  async api(path) {
    const response = await fetch(new URL(path, this.urls[0]), {
      headers: { authorization: `Bearer ${this.token}` },
    });
    if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${await response.text()}`);
    return response.json();
  }
}
