// The AI coach: a client with role `ai` that joins the conversations it takes part in and
// answers each message meant for it with a streamed reply (docs/protocol.md §14): the
// reply appears at once, its text grows as the responder writes it, and it ends as one
// stored message.
//
// - Meant for it: every message in a one-to-one conversation; in a group (two or more
//   people besides the coach), only those that say `@coach`. Never a message of type
//   "ai" (its own, or another bot's), nor anything sent with its own user id, so two bots
//   in a room cannot talk to each other forever.
// - Exactly once, whatever restarts: a reply's `clientMessageId` is derived from the
//   message it answers (`replyIdFor`), so a second coach, or this one after a restart,
//   gets `duplicate` from `reply_start` (§7.2) and leaves the answer to whoever has it.
// - Catch-up: on joining (at start, and for each conversation found later) it reads the
//   recent history and answers what is meant for it and came after the last message it
//   answered. After a reconnect the client library's `sync` hands over what was missed.
// - Stop: a participant's `reply_stop` aborts the responder, and the reply ends with the
//   text so far (the server marks it `cancelled`).
// - A responder that fails or times out: the reply ends `failed` with a short note after
//   whatever was written (APOLOGY when nothing was), so the person is not left waiting;
//   the error goes to the log.
// - Conversations: at start-up the most recently active ones (newest activity first, up
//   to `maxConversations`); then it looks at the first page again every `discoverEveryMs`,
//   which is where a conversation that just became active appears. With a million
//   conversations that stays a handful of small requests.
import { v5 as uuidv5 } from "uuid";
import { connect } from "../../dist/index.js";

export const APOLOGY = "Sorry, I can't put together an answer right now. Please ask me again in a moment.";
/** Written after a partial answer whose responder failed. */
export const CUT_SHORT = "\n\n(Sorry, I couldn't finish this answer. Please ask me again in a moment.)";
/** Messages of context kept per conversation for the responder, and read at catch-up. */
const HISTORY = 20;
const PAGE = 200;
/** How long pieces gather before one `reply_append`: a model writes a token every few
 * ms; one append per 50 ms keeps the text live and far below the 50/s limit (§14.5). */
const FLUSH_MS = 50;
/** §14: at most 2000 scalar values per append and 10000 per reply. */
const APPEND_MAX = 2000;
const REPLY_MAX = 10_000;
const ADDRESSED = /@coach\b/i;

/** The `sub` of a JWT (the coach's user id), without verifying it: the server does. */
export function subjectOf(token) {
  const payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8"));
  if (typeof payload.sub !== "string") throw new Error("the token has no sub");
  return payload.sub;
}

/** The `clientMessageId` of `coachUserId`'s reply to message `messageId`: the same for
 * every coach with that user id, every time. */
export function replyIdFor(messageId, coachUserId) {
  return uuidv5(messageId, coachUserId);
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
    this.participants = new Map();
    this.answered = new Set();
    this.queues = new Map();
    this.joining = new Map();
    this.answering = new Set();
    this.stopping = false;
    this.replies = 0;
  }

  async start() {
    this.client = connect(this.urls, { token: this.token });
    this.client.on("message", (m) => this.onMessage(m));
    this.client.on("updated", (u) => this.onUpdated(u.message));
    this.client.on("error", (e) => this.log(`coach: ${e.message}`));
    await this.discover(this.maxConversations);
    this.timer = setInterval(() => {
      this.discover(PAGE).catch((e) => this.log(`coach: listing conversations failed: ${e.message}`));
    }, this.discoverEveryMs);
  }

  /** Stops answering: replies being written end `failed` with what they have. */
  async stop() {
    clearInterval(this.timer);
    this.stopping = true;
    for (const controller of this.answering) controller.abort(new Error("the coach is stopping"));
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
        this.participants.set(conversation.id, conversation.participantIds);
        if (!this.joining.has(conversation.id)) this.joining.set(conversation.id, this.join(conversation.id));
      }
      seen += page.conversations.length;
      cursor = page.nextCursor;
    } while (cursor && seen < limit);
    await Promise.all(this.joining.values());
  }

  /** Joins, then answers from the recent history what it has not answered yet. Live
   * messages queue behind this, so answers keep the order of the messages. */
  join(conversationId) {
    const joined = this.catchUp(conversationId).catch((e) => {
      this.joining.delete(conversationId);
      this.log(`coach: joining ${conversationId} failed: ${e.message}`);
    });
    this.queues.set(conversationId, joined);
    return joined;
  }

  async catchUp(conversationId) {
    const { lastSeq } = await this.client.join(conversationId);
    const recent = await this.api(
      `/api/conversations/${conversationId}/messages?afterSeq=${Math.max(0, lastSeq - HISTORY)}&limit=${HISTORY}`,
    );
    const messages = recent.messages.filter((m) => m.seq <= lastSeq);
    this.historyOf(conversationId).unshift(...messages);
    for (const message of this.unanswered(messages)) this.enqueue(message);
  }

  /** The messages meant for the coach after the last one it answered: the one its
   * latest reply's `clientMessageId` was derived from (or, for a reply that was not,
   * the reply itself). */
  unanswered(messages) {
    const targetSeq = new Map(messages.map((m) => [replyIdFor(m.id, this.userId), m.seq]));
    let answeredUpTo = 0;
    for (const m of messages) {
      if (m.userId === this.userId) answeredUpTo = Math.max(answeredUpTo, targetSeq.get(m.clientMessageId) ?? m.seq);
    }
    return messages.filter((m) => m.seq > answeredUpTo && this.isMeantForMe(m));
  }

  isMeantForMe(message) {
    if (message.type === "ai" || message.userId === this.userId) return false;
    const people = (this.participants.get(message.conversationId) ?? []).filter((id) => id !== this.userId);
    return people.length < 2 || ADDRESSED.test(message.content);
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
    if (this.isMeantForMe(message)) this.enqueue(message);
  }

  /** A later version (a streamed reply's end) replaces the one in the history. */
  onUpdated(message) {
    const history = this.historyOf(message.conversationId);
    const index = history.findIndex((m) => m.id === message.id);
    if (index >= 0) history[index] = message;
  }

  /** One answer at a time per conversation, in the order the messages came. */
  enqueue(message) {
    if (this.answered.has(message.id)) return;
    this.answered.add(message.id);
    const conversationId = message.conversationId;
    const previous = this.queues.get(conversationId) ?? Promise.resolve();
    const next = previous.then(() => this.answer(message));
    this.queues.set(conversationId, next);
  }

  async answer(message) {
    if (this.stopping) return;
    let writer;
    try {
      writer = await this.client.startReply(message.conversationId, {
        clientMessageId: replyIdFor(message.id, this.userId),
      });
    } catch (e) {
      this.log(`coach: replying in ${message.conversationId} failed: ${e.message}`);
      return;
    }
    // Answered already, by another coach or by this one before a restart.
    if (writer.duplicate) return;
    const controller = new AbortController();
    writer.onStop(() => controller.abort(new Error("stopped")));
    this.answering.add(controller);
    try {
      // The final version into the history now: its `message_updated` may come after
      // the next message is answered.
      this.onUpdated(await this.write(writer, message, controller));
      this.replies += 1;
    } catch (e) {
      this.log(`coach: replying in ${message.conversationId} failed: ${e.message}`);
    } finally {
      this.answering.delete(controller);
    }
  }

  /** Streams the responder's pieces into `writer`, then ends it. */
  async write(writer, message, controller) {
    // The context up to the message answered (a catch-up answers older ones too), without
    // replies that have no text yet.
    const all = this.historyOf(message.conversationId);
    const upTo = all.findIndex((m) => m.id === message.id);
    const history = all.slice(0, upTo < 0 ? all.length : upTo + 1).filter((m) => m.content !== "");
    const text = new Outgoing(writer, controller);
    let failure = null;
    try {
      const pieces = this.responder.respond({ message, history, coachUserId: this.userId, signal: controller.signal });
      for await (const piece of pieces) {
        if (!text.add(piece)) break;
      }
    } catch (e) {
      failure = e;
    }
    await text.close();
    // After a Stop the reply ends `cancelled` with what it has, however short.
    if (writer.stopped) return writer.end();
    if (failure || text.length === 0) {
      this.log(`coach: the ${this.responder.name} responder failed: ${failure?.message ?? "it wrote nothing"}`);
      text.add(text.length === 0 ? APOLOGY : CUT_SHORT);
      await text.close();
      return writer.fail();
    }
    return writer.end();
  }

  async api(path) {
    const response = await fetch(new URL(path, this.urls[0]), {
      headers: { authorization: `Bearer ${this.token}` },
    });
    if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${await response.text()}`);
    return response.json();
  }
}

/**
 * The text of one reply on its way out: pieces gather for FLUSH_MS, then go as one
 * append (at most APPEND_MAX scalar values each, REPLY_MAX in all). A failed append
 * (the socket is gone, so the server ends the reply `interrupted`) aborts the responder
 * and is thrown by `close`.
 */
class Outgoing {
  constructor(writer, controller) {
    this.writer = writer;
    this.controller = controller;
    this.pending = [];
    this.length = 0;
    this.timer = null;
    this.sent = Promise.resolve();
    this.failed = null;
  }

  /** Takes a piece; `false` once no more can go (the reply is full, or an append failed). */
  add(piece) {
    const chars = [...piece].slice(0, REPLY_MAX - this.length);
    this.pending.push(...chars);
    this.length += chars.length;
    this.timer ??= setTimeout(() => this.flush(), FLUSH_MS);
    return this.length < REPLY_MAX && !this.failed;
  }

  flush() {
    clearTimeout(this.timer);
    this.timer = null;
    while (this.pending.length > 0 && !this.failed) {
      const text = this.pending.splice(0, APPEND_MAX).join("");
      // The writer sends appends in order, so the last one settles after the others.
      this.sent = this.writer.append(text).catch((e) => {
        this.failed ??= e;
        this.controller.abort(e);
      });
    }
  }

  /** Sends what is pending and waits until every append is acked. */
  async close() {
    this.flush();
    await this.sent;
    if (this.failed) throw this.failed;
  }
}
