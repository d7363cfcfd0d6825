// The demo chat page, on @coachwire/client (bundled into vendor/coachwire.js).
//
// Everything a person writes is rendered with textContent, never as HTML: content is
// plain text (docs/protocol.md), and the page's CSP forbids inline scripts besides.
// `?server=<url>` points the page at an ingest on another origin (allowed there by
// COACHWIRE_CORS_ORIGINS); by default it talks to the origin that served it.
import { connect, newClientMessageId } from "./vendor/coachwire.js";

const server = new URLSearchParams(location.search).get("server") ?? location.origin;
const $ = (id) => document.getElementById(id);
/** How long a "typing" lasts without a refresh, and how long after the last keystroke
 * this page says it stopped. */
const TYPING_SHOWN_MS = 6000;
const TYPING_IDLE_MS = 2500;
const DISCOVER_EVERY_MS = 5000;
/** The single ✓ (acked) stays at least this long before ✓✓ (stored and delivered): the
 * two usually come a few ms apart, and a person should see that the send went through
 * before it was delivered. */
const ACKED_SHOWN_MS = 400;
/** What the page says about a streamed reply that did not end `complete` (§14). */
const REPLY_NOTES = { cancelled: "stopped", interrupted: "interrupted", failed: "could not finish" };

const page = {
  users: [],
  me: null,
  client: null,
  conversations: new Map(),
  current: null,
  typers: new Map(),
  typingSent: false,
  typingTimer: null,
  discoverTimer: null,
  everConnected: false,
};

function nameOf(userId) {
  return page.users.find((u) => u.userId === userId)?.name ?? userId.slice(0, 8);
}

async function request(path, init = {}) {
  const headers = { ...(init.body ? { "content-type": "application/json" } : {}) };
  if (page.me) headers.authorization = `Bearer ${page.me.token}`;
  const response = await fetch(new URL(path, server), { ...init, headers });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const error = new Error(`${init.method ?? "GET"} ${path}: ${response.status} ${body.error ?? ""}`.trim());
    error.code = body.code ?? `HTTP ${response.status}`;
    throw error;
  }
  return response.json();
}

/** Shows a problem the person should know about (a refused connection, a refused
 * token, a failed request) until it is dismissed or the connection is back. */
function notify(error) {
  $("notice-text").textContent = error.code ? `${error.code}: ${error.message.replace(`${error.code}: `, "")}` : error.message;
  $("notice").hidden = false;
}

async function freshToken(userId) {
  const answer = await request("/demo/api/token", { method: "POST", body: JSON.stringify({ userId }) });
  if (page.me) page.me.token = answer.token;
  return answer;
}

async function start() {
  page.users = (await request("/demo/api/users")).users;
  const box = $("users");
  for (const user of page.users.filter((u) => u.role === "user")) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = user.name;
    button.dataset.userId = user.userId;
    button.addEventListener("click", () => login(user).catch(notify));
    box.append(button);
  }
  $("logout").addEventListener("click", logout);
  $("notice-close").addEventListener("click", () => ($("notice").hidden = true));
  $("back").addEventListener("click", () => $("app").classList.remove("in-chat"));
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      send();
    }
  });
  $("input").addEventListener("input", typed);
  $("new-conversation").addEventListener("submit", (e) => {
    e.preventDefault();
    createConversation($("new-with").value).catch(notify);
  });
}

async function login(user) {
  const { token } = await freshToken(user.userId);
  page.me = { ...user, token };
  $("me-name").textContent = user.name;
  const select = $("new-with");
  select.replaceChildren();
  for (const other of page.users.filter((u) => u.role === "user" && u.userId !== user.userId)) {
    select.append(new Option(other.name, other.userId));
  }
  const client = connect(server, { token: async () => (await freshToken(user.userId)).token });
  page.client = client;
  client.on("state", ({ state }) => {
    if (state === "connected") {
      page.everConnected = true;
      $("notice").hidden = true;
    }
    $("banner").hidden = state === "connected" || state === "closed" || !page.everConnected;
    document.body.dataset.connection = state;
  });
  client.on("message", received);
  client.on("delivered", delivered);
  client.on("typing", typing);
  client.on("delta", replyDelta);
  client.on("updated", ({ message }) => replyUpdated(message));
  client.on("error", notify);
  $("login").hidden = true;
  $("app").hidden = false;
  await discover();
  page.discoverTimer = setInterval(() => discover().catch(notify), DISCOVER_EVERY_MS);
}

function logout() {
  clearInterval(page.discoverTimer);
  page.client?.close();
  Object.assign(page, { me: null, client: null, current: null, everConnected: false });
  page.conversations.clear();
  $("conversations").replaceChildren();
  $("messages").replaceChildren();
  $("chat-title").textContent = "Pick a conversation";
  $("banner").hidden = true;
  $("notice").hidden = true;
  $("app").hidden = true;
  $("login").hidden = false;
}

/** Lists this user's conversations and joins the new ones (with their history). */
async function discover() {
  const { conversations } = await request("/api/conversations?limit=50");
  for (const c of conversations) {
    if (page.conversations.has(c.id)) continue;
    page.conversations.set(c.id, { ...c, entries: [], drafts: new Map() });
    await page.client.join(c.id, { afterSeq: 0 });
  }
  renderConversations();
  if (!page.current && conversations.length > 0) open(conversations[0].id);
}

function titleOf(conversation) {
  const others = conversation.participantIds.filter((id) => id !== page.me.userId).map(nameOf);
  return conversation.title ? `${conversation.title}` : others.join(", ");
}

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren();
  if (page.conversations.size === 0) {
    list.append(Object.assign(document.createElement("li"), { className: "empty", textContent: "No conversations yet. Start one below." }));
  }
  for (const conversation of page.conversations.values()) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = titleOf(conversation);
    button.dataset.conversationId = conversation.id;
    button.setAttribute("aria-current", String(conversation.id === page.current));
    button.addEventListener("click", () => open(conversation.id));
    item.append(button);
    list.append(item);
  }
}

async function createConversation(otherId) {
  const coach = page.users.find((u) => u.role === "ai");
  const participantIds = [page.me.userId, otherId, ...(coach ? [coach.userId] : [])];
  const created = await request("/api/conversations", {
    method: "POST",
    body: JSON.stringify({ title: `${page.me.name} & ${nameOf(otherId)}`, participantIds }),
  });
  page.conversations.set(created.id, { ...created, entries: [], drafts: new Map() });
  await page.client.join(created.id, { afterSeq: 0 });
  renderConversations();
  open(created.id);
}

function open(id) {
  page.current = id;
  for (const timer of page.typers.values()) clearTimeout(timer);
  page.typers.clear();
  $("chat-title").textContent = titleOf(page.conversations.get(id));
  $("input").disabled = false;
  $("send").disabled = false;
  $("app").classList.add("in-chat");
  renderConversations();
  renderMessages();
  renderTyping();
}

/** An entry per message: found by `clientMessageId` (own sends, before any id) or id. */
function entryFor(conversationId, { id, clientMessageId }) {
  const entries = page.conversations.get(conversationId)?.entries;
  if (!entries) return null;
  return entries.find((e) => (clientMessageId && e.clientMessageId === clientMessageId) || (id && e.id === id));
}

function received(message) {
  const conversation = page.conversations.get(message.conversationId);
  if (!conversation) return;
  const entry = entryFor(message.conversationId, message);
  if (entry) {
    Object.assign(entry, { id: message.id, seq: message.seq });
    markDelivered(entry);
  } else {
    // A streamed reply's text may have begun to arrive before the reply itself.
    const content = conversation.drafts.get(message.id) ?? message.content;
    conversation.entries.push({
      ...message,
      content,
      reply: message.status,
      // Own messages sent earlier (history, another tab) are long delivered.
      ...(message.userId === page.me.userId ? { mine: true, ackedAt: 0, deliveredAt: 0 } : {}),
    });
  }
  // A message ends its author's typing.
  clearTimeout(page.typers.get(message.userId));
  page.typers.delete(message.userId);
  if (message.conversationId === page.current) renderTyping();
  renderIfCurrent(message.conversationId);
}

function delivered(d) {
  const entry = entryFor(d.conversationId, d);
  if (!entry) return;
  Object.assign(entry, { id: d.id, seq: d.seq });
  markDelivered(entry);
}

/** Notes when an own send was stored; its ✓✓ shows once its ✓ has been seen
 * ACKED_SHOWN_MS (see `tickOf`). */
function markDelivered(entry) {
  if (!entry.mine || entry.deliveredAt !== undefined) return;
  entry.deliveredAt = Date.now();
  renderIfCurrent(entry.conversationId);
  setTimeout(() => renderIfCurrent(entry.conversationId), ACKED_SHOWN_MS);
}

/** What an own send's ticks say, from when it was acked and stored: ✓ from the first of
 * the two, for at least ACKED_SHOWN_MS, then ✓✓. */
function tickOf(entry, now) {
  if (!entry.mine) return null;
  if (entry.error) return "failed";
  const ackedAt = entry.ackedAt ?? entry.deliveredAt;
  if (ackedAt === undefined) return "pending";
  return entry.deliveredAt !== undefined && now >= ackedAt + ACKED_SHOWN_MS ? "delivered" : "acked";
}

function renderIfCurrent(conversationId) {
  if (conversationId === page.current) renderMessages();
}

/** New text of a streamed reply (also its text so far after a join or a reload). */
function replyDelta(d) {
  const conversation = page.conversations.get(d.conversationId);
  if (!conversation) return;
  const text = (conversation.drafts.get(d.id) ?? "") + d.text;
  conversation.drafts.set(d.id, text);
  const entry = entryFor(d.conversationId, d);
  if (entry?.reply !== "streaming") return;
  entry.content = text;
  renderIfCurrent(d.conversationId);
}

/** A reply's final version: its whole text and how it ended. */
function replyUpdated(message) {
  const conversation = page.conversations.get(message.conversationId);
  const entry = entryFor(message.conversationId, message);
  conversation?.drafts.delete(message.id);
  if (!entry) return;
  Object.assign(entry, { content: message.content, reply: message.status });
  renderIfCurrent(message.conversationId);
}

function send() {
  const input = $("input");
  const content = input.value.trim();
  const conversationId = page.current;
  if (!content || !conversationId) return;
  input.value = "";
  stopTyping();
  const entry = {
    clientMessageId: newClientMessageId(),
    conversationId,
    userId: page.me.userId,
    content,
    type: "user",
    seq: null,
    mine: true,
    createdAt: new Date().toISOString(),
  };
  page.conversations.get(conversationId).entries.push(entry);
  renderMessages();
  page.client.send(conversationId, content, { clientMessageId: entry.clientMessageId }).then(
    ({ message }) => {
      entry.id = message.id;
      entry.ackedAt ??= Date.now();
      renderIfCurrent(conversationId);
      if (entry.deliveredAt !== undefined) setTimeout(() => renderIfCurrent(conversationId), ACKED_SHOWN_MS);
    },
    (error) => {
      entry.error = error.message;
      renderIfCurrent(conversationId);
    },
  );
}

const TICKS = { pending: "…", acked: "✓", delivered: "✓✓", failed: "not sent" };

function renderMessages() {
  const list = $("messages");
  const entries = page.conversations.get(page.current)?.entries ?? [];
  // Stored messages in seq order, then own sends still waiting for theirs.
  const ordered = [...entries].sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity));
  const items = [];
  let day = null;
  for (const entry of ordered) {
    const date = new Date(entry.createdAt);
    if (date.toDateString() !== day) {
      day = date.toDateString();
      items.push(Object.assign(document.createElement("li"), { className: "day", textContent: dayLabel(date) }));
    }
    items.push(renderMessage(entry));
  }
  list.replaceChildren(...items);
  list.scrollTop = list.scrollHeight;
}

/** "Today", "Yesterday", or the date, for the separator above a day's messages. */
function dayLabel(date) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (date.toDateString() === today.toDateString()) return "Today";
  if (date.toDateString() === yesterday.toDateString()) return "Yesterday";
  const sameYear = date.getFullYear() === today.getFullYear();
  return date.toLocaleDateString([], { weekday: "short", day: "numeric", month: "short", ...(sameYear ? {} : { year: "numeric" }) });
}

function renderMessage(entry) {
  const item = document.createElement("li");
  item.className = "message";
  if (entry.userId === page.me.userId) item.classList.add("mine");
  if (entry.type === "ai") item.classList.add("ai");
  if (entry.seq) item.dataset.seq = String(entry.seq);
  const tick = tickOf(entry, Date.now());
  if (tick) item.dataset.status = tick;
  if (entry.reply) item.dataset.reply = entry.reply;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = entry.type === "ai" ? `${nameOf(entry.userId)} (AI coach)` : nameOf(entry.userId);
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = entry.content;
  item.append(who, text);
  if (entry.reply === "streaming") item.append(caret(), stopButton(entry));
  if (REPLY_NOTES[entry.reply]) {
    item.append(Object.assign(document.createElement("span"), { className: "reply-note", textContent: REPLY_NOTES[entry.reply] }));
  }
  item.append(metaOf(entry, tick));
  return item;
}

function caret() {
  return Object.assign(document.createElement("span"), { className: "caret", ariaHidden: "true", textContent: "▍" });
}

/** Anyone in the conversation may stop a reply (§14); its author then ends it. */
function stopButton(entry) {
  const button = Object.assign(document.createElement("button"), { type: "button", className: "stop", textContent: "Stop" });
  button.disabled = Boolean(entry.stopping);
  button.addEventListener("click", () => {
    entry.stopping = true;
    button.disabled = true;
    page.client.stopReply(entry.conversationId, entry.id).catch(notify);
  });
  return button;
}

function metaOf(entry, tick) {
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = new Date(entry.createdAt).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (tick) {
    const ticks = document.createElement("span");
    ticks.className = `ticks ${tick}`;
    ticks.textContent = TICKS[tick];
    ticks.title = entry.error ?? tick;
    meta.append(ticks);
  }
  return meta;
}

function typed() {
  if (!page.current) return;
  if (!page.typingSent) {
    page.client.typing(page.current, true);
    page.typingSent = true;
  }
  clearTimeout(page.typingTimer);
  page.typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(page.typingTimer);
  if (page.typingSent && page.current) page.client.typing(page.current, false);
  page.typingSent = false;
}

function typing(t) {
  if (t.conversationId !== page.current) return;
  clearTimeout(page.typers.get(t.userId));
  if (t.isTyping) {
    page.typers.set(
      t.userId,
      setTimeout(() => {
        page.typers.delete(t.userId);
        renderTyping();
      }, TYPING_SHOWN_MS),
    );
  } else {
    page.typers.delete(t.userId);
  }
  renderTyping();
}

function renderTyping() {
  const names = [...page.typers.keys()].map(nameOf);
  $("typing").textContent = names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
}

start().catch((e) => {
  $("login").append(Object.assign(document.createElement("p"), { textContent: `Could not start: ${e.message}` }));
});
