/**
 * The coachwire client: one logical connection to a coachwire deployment that does the
 * client's part of the delivery guarantees (docs/protocol.md, "Guarantees"), so an
 * application sees every message of its conversations exactly once, in `seq` order,
 * whatever the network does.
 *
 * - Sends get a time-ordered `clientMessageId` and are retried with that same id on a
 *   timeout, a lost connection or `UNAVAILABLE` (with backoff), and after `retryAfterMs` on
 *   `RATE_LIMITED`; the server stores a retried message once.
 * - Sends made while disconnected wait in an outbox and go out after the reconnect.
 * - Each conversation has a {@link Timeline}; a gap in `seq` triggers a `sync`.
 * - The connection is re-established by this class, not by socket.io-client, so that it
 *   can move to the next URL when a node is gone, fetch a fresh token each time, and
 *   re-join every conversation and `sync` from its last `seq` before anything else.
 */
import { io, type Socket } from "socket.io-client";
import { v7 as uuidv7 } from "uuid";
import { Emitter } from "./emitter.js";
import type {
  ConversationEvent,
  Delivered,
  Delta,
  ErrorCode,
  FailureBody,
  JoinAck,
  Message,
  MessageAck,
  MessagePayload,
  Presence,
  ServerErrorEvent,
  StoredMessage,
  SyncAck,
  Typing,
  Updated,
} from "./protocol.js";
import { ReplyWriter } from "./reply.js";
import { Timeline } from "./timeline.js";

export interface ClientOptions {
  /** The JWT, or a function returning a fresh one; it is called on every (re)connect. */
  token: string | (() => string | Promise<string>);
  /** How long one attempt waits for its ack (default 10 s, above the server's 5 s
   * durable-queue timeout, so a slow server answers `UNAVAILABLE` first). */
  ackTimeoutMs?: number;
  /** First retry and reconnect delay (default 200 ms), doubled up to {@link retryMaxMs}. */
  retryBaseMs?: number;
  /** Longest retry and reconnect delay (default 5 s). */
  retryMaxMs?: number;
  /** socket.io-client transports (default: its own, polling then WebSocket). */
  transports?: ("polling" | "websocket")[];
  /** Messages per `sync` page (1–500, default 500). */
  syncPageSize?: number;
}

export interface SendOptions {
  type?: MessagePayload["type"];
  metadata?: MessagePayload["metadata"];
  /** Reuse an id from an earlier attempt (e.g. one persisted by the application). */
  clientMessageId?: string;
}

export interface SendResult {
  message: Message;
  duplicate: boolean;
}

export interface JoinOptions {
  /** Also deliver the stored messages after this `seq` (0: the whole history). Without
   * it, the application gets the messages that arrive after the join. */
  afterSeq?: number;
}

export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed";

/** A failed request: a wire code, or what happened on the client's side. */
export type ClientErrorCode = ErrorCode | "TIMEOUT" | "DISCONNECTED" | "CLOSED";

export class CoachwireError extends Error {
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    readonly details: { path: string; message: string }[] = [],
    readonly retryAfterMs?: number,
  ) {
    super(`${code}: ${message}`);
    this.name = "CoachwireError";
  }
}

export interface ClientEvents {
  /** Every message of a joined conversation, the user's own included, once, in `seq` order. */
  message: StoredMessage;
  /** A later version of a message (a streamed reply's end), in `seq` order with the messages. */
  updated: Updated;
  /** New text of a streamed reply in progress, once, in `offset` order (also the text so
   * far after a join). */
  delta: Delta;
  /** The server stored one of this client's messages. */
  delivered: Delivered;
  typing: Typing;
  presence: Presence;
  /** Something the application may want to show: a refused connection, a server `error`. */
  error: CoachwireError;
  /** A send will be tried again (same `clientMessageId`) after `inMs`. */
  retry: { clientMessageId: string; conversationId: string; code: ClientErrorCode; inMs: number };
  state: { state: ConnectionState; url: string; reason?: string };
}

interface Conversation {
  timeline: Timeline<ConversationEvent> | null;
  /** Text length of each streamed reply in progress, to pass on each delta once. */
  replies: Map<string, number>;
  afterSeq: number | undefined;
  joined: boolean;
  syncing: Promise<void> | null;
  syncAgain: boolean;
}

interface Outgoing {
  payload: MessagePayload & { clientMessageId: string };
  resolve: (result: SendResult) => void;
  reject: (error: CoachwireError) => void;
  failures: number;
  inFlight: boolean;
  /** Numbers the attempts, so a failure reported late for an older one is ignored. */
  attemptNo: number;
  timer: ReturnType<typeof setTimeout> | null;
}

/** Codes after which the same send is tried again. */
const RETRIED: ReadonlySet<string> = new Set(["UNAVAILABLE", "RATE_LIMITED", "TIMEOUT", "DISCONNECTED"]);
/** Own acked messages kept until their `message_delivered` (bounded: the rest come by sync). */
const OWN_KEPT = 1000;

export class CoachwireClient extends Emitter<ClientEvents> {
  private readonly options: Required<Omit<ClientOptions, "transports">> & Pick<ClientOptions, "transports">;
  private readonly conversations = new Map<string, Conversation>();
  private readonly outbox: Outgoing[] = [];
  private readonly own = new Map<string, Message>();
  /** Streamed replies this client is writing, to tell each of its `reply_stop`. */
  private readonly writers = new Map<string, ReplyWriter>();
  private socket: Socket | null = null;
  private urlIndex = 0;
  private reconnects = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private current: ConnectionState = "connecting";

  constructor(
    private readonly urls: string[],
    options: ClientOptions,
  ) {
    super();
    if (urls.length === 0) throw new TypeError("coachwire: at least one URL is needed");
    this.options = {
      ackTimeoutMs: 10_000,
      retryBaseMs: 200,
      retryMaxMs: 5_000,
      syncPageSize: 500,
      ...options,
    };
    this.open();
  }

  get state(): ConnectionState {
    return this.current;
  }

  /** The highest `seq` delivered to the application in `conversationId`. */
  lastSeq(conversationId: string): number | undefined {
    return this.conversations.get(conversationId)?.timeline?.lastSeq;
  }

  /** Joins a conversation (now, or as soon as the client is connected) and keeps it
   * joined across reconnects until {@link leave}. Resolves with the stored `lastSeq`. */
  async join(conversationId: string, options: JoinOptions = {}): Promise<{ lastSeq: number }> {
    const conversation: Conversation = this.conversations.get(conversationId) ?? {
      timeline: null,
      replies: new Map(),
      afterSeq: options.afterSeq,
      joined: false,
      syncing: null,
      syncAgain: false,
    };
    this.conversations.set(conversationId, conversation);
    for (;;) {
      const socket = await this.connected();
      try {
        return await this.joinOn(socket, conversationId, conversation);
      } catch (e) {
        if (!(e instanceof CoachwireError) || e.code !== "DISCONNECTED") {
          this.conversations.delete(conversationId);
          throw e;
        }
      }
    }
  }

  /** Leaves a conversation; its messages stop arriving. */
  async leave(conversationId: string): Promise<void> {
    this.conversations.delete(conversationId);
    if (this.socket?.connected) {
      await this.request(this.socket, "leave_conversation", { conversationId });
    }
  }

  /** Leaves a conversation for good (`DELETE /api/conversations/{id}/participants/me`):
   * the user is no longer a participant, it leaves their listing, every socket of theirs
   * (on every node) leaves its room, and the others get `user_left`. Rejects with the
   * server's code: `FORBIDDEN` if the user is not a participant. */
  async leaveForGood(conversationId: string): Promise<void> {
    this.conversations.delete(conversationId);
    const token = this.options.token;
    const bearer = await (typeof token === "function" ? token() : token);
    const path = `/api/conversations/${encodeURIComponent(conversationId)}/participants/me`;
    const response = await fetch(new URL(path, this.url()), {
      method: "DELETE",
      headers: { authorization: `Bearer ${bearer}` },
    });
    if (response.status === 204) return;
    const body = (await response.json().catch(() => ({}))) as Partial<FailureBody>;
    throw new CoachwireError(body.code ?? "INTERNAL", body.error ?? `HTTP ${response.status}`, body.details ?? []);
  }

  /** Starts a streamed reply in a joined conversation (role `ai` only) on the current
   * socket; the writer appends, ends or fails it (see {@link ReplyWriter}). With the
   * `clientMessageId` of an earlier start, the writer is `duplicate` and `message` is
   * that reply as it stands now (perhaps ended, perhaps another socket's to write). */
  async startReply(conversationId: string, options: Omit<SendOptions, "type"> = {}): Promise<ReplyWriter> {
    const socket = await this.connected();
    const payload = {
      conversationId,
      clientMessageId: options.clientMessageId ?? uuidv7(),
      ...(options.metadata ? { metadata: options.metadata } : {}),
    };
    const ack = await this.request<MessageAck>(socket, "reply_start", payload);
    const writer = new ReplyWriter(ack.message, {
      // Only the socket that started it may write it: after a reconnect, requests fail.
      request: <T>(event: string, body: unknown) =>
        socket === this.socket ? this.request<T>(socket, event, body) : Promise.reject(new CoachwireError("DISCONNECTED", "the reply's socket is gone")),
      retryDelay: (code, attempt, retryAfterMs) =>
        code === "RATE_LIMITED" ? (retryAfterMs ?? this.backoff(attempt)) : code === "UNAVAILABLE" || code === "TIMEOUT" ? this.backoff(attempt) : null,
      ended: () => this.writers.delete(ack.message.id),
    }, ack.duplicate);
    // A duplicate is an earlier start's reply: this writer hears no `reply_stop` for it.
    if (!writer.duplicate) this.writers.set(writer.id, writer);
    return writer;
  }

  /** Asks the author of streamed reply `id` to stop (any participant of a joined
   * conversation); a reply no longer streaming is acked and nothing happens. */
  async stopReply(conversationId: string, id: string): Promise<void> {
    await this.request(await this.connected(), "reply_stop", { conversationId, id });
  }

  /** Sends a message and resolves once the server has made it durable, retrying as
   * needed with the same `clientMessageId`. Rejects only for a failure that retrying
   * cannot fix (`VALIDATION_FAILED`, `FORBIDDEN`, `UNAUTHORIZED`, `INTERNAL`) or on
   * {@link close}. The conversation must have been joined. */
  send(conversationId: string, content: string, options: SendOptions = {}): Promise<SendResult> {
    return new Promise((resolve, reject) => {
      const outgoing: Outgoing = {
        payload: {
          conversationId,
          content,
          clientMessageId: options.clientMessageId ?? uuidv7(),
          ...(options.type ? { type: options.type } : {}),
          ...(options.metadata ? { metadata: options.metadata } : {}),
        },
        resolve,
        reject,
        failures: 0,
        inFlight: false,
        attemptNo: 0,
        timer: null,
      };
      this.outbox.push(outgoing);
      this.attempt(outgoing);
    });
  }

  /** Tells the others in the conversation whether this user is typing (best effort). */
  typing(conversationId: string, isTyping: boolean): void {
    const socket = this.socket;
    if (!socket?.connected || !this.conversations.get(conversationId)?.joined) return;
    this.request(socket, "typing", { conversationId, isTyping }).catch(() => undefined);
  }

  /** Disconnects for good; sends not yet durable are rejected with `CLOSED`. */
  close(): void {
    this.current = "closed";
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const socket = this.socket;
    this.socket = null;
    socket?.removeAllListeners();
    socket?.disconnect();
    for (const outgoing of this.outbox.splice(0)) {
      if (outgoing.timer) clearTimeout(outgoing.timer);
      outgoing.reject(new CoachwireError("CLOSED", "the client was closed before the server confirmed"));
    }
    this.emit("state", { state: "closed", url: this.url() });
  }

  private url(): string {
    return this.urls[this.urlIndex % this.urls.length];
  }

  private open(): void {
    if (this.current === "closed") return;
    const url = this.url();
    this.setState("connecting", url);
    const token = this.options.token;
    const socket = io(url, {
      auth: (cb) => {
        Promise.resolve(typeof token === "function" ? token() : token).then(
          (t) => cb({ token: t }),
          () => cb({}),
        );
      },
      reconnection: false,
      forceNew: true,
      ...(this.options.transports ? { transports: this.options.transports } : {}),
    });
    this.socket = socket;
    socket.on("connect", () => void this.onConnect(socket));
    socket.on("connect_error", (err: Error) => {
      const code = err.message.split(/[\s:]/)[0];
      if (code === "UNAUTHORIZED" || code === "RATE_LIMITED" || code === "FORBIDDEN") {
        this.emit("error", new CoachwireError(code, err.message));
      }
      this.onDown(socket, `connect_error: ${err.message}`);
    });
    socket.on("disconnect", (reason: string) => this.onDown(socket, reason));
    socket.on("message", (m: StoredMessage) => this.deliver(m));
    socket.on("message_updated", (u: Updated) => this.deliverEvent(u.conversationId, { seq: u.seq, updated: u }));
    socket.on("reply_delta", (d: Delta) => this.onDelta(d));
    socket.on("reply_stop", (s: { id: string; userId: string }) => this.writers.get(s.id)?.stop(s.userId));
    socket.on("message_delivered", (d: Delivered) => this.onDelivered(d));
    socket.on("typing", (t: Typing) => this.emit("typing", t));
    socket.on("user_joined", (p: Omit<Presence, "status">) => this.emit("presence", { ...p, status: "joined" }));
    socket.on("user_left", (p: Omit<Presence, "status">) => this.emit("presence", { ...p, status: "left" }));
    socket.on("error", (e: ServerErrorEvent) => this.emit("error", new CoachwireError(e.code, e.error, e.details ?? [])));
  }

  private setState(state: ConnectionState, url: string, reason?: string): void {
    if (this.current === "closed") return;
    this.current = state;
    this.emit("state", { state, url, ...(reason ? { reason } : {}) });
  }

  /** The connected socket, now or once the client has (re)connected. */
  private async connected(): Promise<Socket> {
    for (;;) {
      if (this.current === "closed") throw new CoachwireError("CLOSED", "the client is closed");
      if (this.current === "connected" && this.socket?.connected) return this.socket;
      await this.once("state", (s) => s.state === "connected" || s.state === "closed");
    }
  }

  private async onConnect(socket: Socket): Promise<void> {
    if (socket !== this.socket) return;
    this.reconnects = 0;
    // Joined flags belong to the old socket: re-join everything, then catch up and flush.
    for (const conversation of this.conversations.values()) conversation.joined = false;
    this.setState("connected", this.url());
    await Promise.all(
      [...this.conversations].map(([id, conversation]) =>
        this.joinOn(socket, id, conversation).catch((e: unknown) => {
          if (e instanceof CoachwireError && e.code !== "DISCONNECTED") this.emit("error", e);
        }),
      ),
    );
  }

  /** A socket went away: forget it and connect again after a backoff. The first attempt
   * goes back to the same URL (a server-side disconnect); each failed one moves on to the
   * next URL (a node that is gone). */
  private onDown(socket: Socket, reason: string): void {
    if (socket !== this.socket || this.current === "closed") return;
    this.socket = null;
    socket.removeAllListeners();
    socket.disconnect();
    for (const conversation of this.conversations.values()) conversation.joined = false;
    for (const outgoing of this.outbox) outgoing.inFlight = false;
    this.setState("disconnected", this.url(), reason);
    if (this.reconnects > 0) this.urlIndex += 1;
    const delay = this.backoff(this.reconnects);
    this.reconnects += 1;
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }

  private backoff(failures: number): number {
    const base = Math.min(this.options.retryMaxMs, this.options.retryBaseMs * 2 ** Math.min(failures, 10));
    return base / 2 + Math.random() * (base / 2);
  }

  private async joinOn(socket: Socket, id: string, conversation: Conversation): Promise<{ lastSeq: number }> {
    const ack = await this.request<JoinAck>(socket, "join_conversation", { conversationId: id });
    if (this.conversations.get(id) !== conversation) return { lastSeq: ack.lastSeq };
    conversation.timeline ??= new Timeline<ConversationEvent>(conversation.afterSeq ?? ack.lastSeq);
    conversation.joined = true;
    for (const reply of ack.streaming) {
      this.onDelta({ conversationId: id, id: reply.id, offset: 0, text: reply.content });
    }
    if (ack.lastSeq > conversation.timeline.lastSeq) void this.sync(id, conversation);
    for (const outgoing of this.outbox) {
      if (outgoing.payload.conversationId === id) this.attempt(outgoing);
    }
    return { lastSeq: ack.lastSeq };
  }

  /** Pages `sync` from the timeline's `lastSeq` until the server has nothing more, and
   * again if another gap appeared meanwhile. A failure is left to the next reconnect. */
  private sync(id: string, conversation: Conversation): Promise<void> {
    if (conversation.syncing) {
      conversation.syncAgain = true;
      return conversation.syncing;
    }
    const run = async () => {
      do {
        conversation.syncAgain = false;
        const timeline = conversation.timeline;
        const socket = this.socket;
        if (!timeline || !socket?.connected) return;
        let afterSeq = timeline.lastSeq;
        for (;;) {
          const page = await this.request<SyncAck>(socket, "sync", {
            conversationId: id,
            afterSeq,
            limit: this.options.syncPageSize,
          });
          for (const message of page.messages) {
            this.deliver(message);
            afterSeq = Math.max(afterSeq, message.seq);
          }
          for (const updated of page.updates) {
            this.deliverEvent(id, { seq: updated.seq, updated });
            afterSeq = Math.max(afterSeq, updated.seq);
          }
          if (!page.hasMore) break;
        }
      } while (conversation.syncAgain || conversation.timeline?.hasGap);
    };
    conversation.syncing = run()
      .catch(() => undefined)
      .finally(() => {
        conversation.syncing = null;
      });
    return conversation.syncing;
  }

  private deliver(message: StoredMessage): void {
    if (typeof message.seq !== "number") return;
    this.deliverEvent(message.conversationId, { seq: message.seq, message });
  }

  private deliverEvent(conversationId: string, event: ConversationEvent): void {
    const conversation = this.conversations.get(conversationId);
    const timeline = conversation?.timeline;
    if (!conversation || !timeline) return;
    for (const ready of timeline.accept(event)) {
      if ("message" in ready) this.emit("message", ready.message);
      else {
        conversation.replies.delete(ready.updated.message.id);
        this.emit("updated", ready.updated);
      }
    }
    if (timeline.hasGap) void this.sync(conversationId, conversation);
  }

  /** Passes on what a delta adds to the reply's text; a repeat or an overlap adds only
   * what is new, and a piece past the end waits for the final version (or a re-join). */
  private onDelta(delta: Delta): void {
    const conversation = this.conversations.get(delta.conversationId);
    if (!conversation) return;
    const known = conversation.replies.get(delta.id) ?? 0;
    const chars = [...delta.text];
    if (delta.offset > known || delta.offset + chars.length <= known) return;
    const text = chars.slice(known - delta.offset).join("");
    conversation.replies.set(delta.id, known + [...text].length);
    this.emit("delta", { ...delta, offset: known, text });
  }

  private onDelivered(delivered: Delivered): void {
    this.emit("delivered", delivered);
    const message = this.own.get(delivered.id);
    this.own.delete(delivered.id);
    if (message) {
      this.deliver({ ...message, seq: delivered.seq });
      return;
    }
    // Stored before its ack reached us: the stored copy comes by sync.
    const conversation = this.conversations.get(delivered.conversationId);
    if (conversation?.timeline && delivered.seq > conversation.timeline.lastSeq) {
      void this.sync(delivered.conversationId, conversation);
    }
  }

  /** Sends one attempt of `outgoing` if it can go now; a later reconnect, re-join or
   * retry timer calls this again. */
  private attempt(outgoing: Outgoing): void {
    const socket = this.socket;
    const conversation = this.conversations.get(outgoing.payload.conversationId);
    if (outgoing.inFlight || outgoing.timer || !socket?.connected || !conversation?.joined) return;
    if (!this.outbox.includes(outgoing)) return;
    outgoing.inFlight = true;
    const attemptNo = ++outgoing.attemptNo;
    this.request<MessageAck>(socket, "message", outgoing.payload).then(
      // A success is taken from any attempt: the message is durable either way.
      (ack) => this.sent(outgoing, ack),
      (e: CoachwireError) => {
        if (attemptNo === outgoing.attemptNo) this.failed(outgoing, socket, e);
      },
    );
  }

  private sent(outgoing: Outgoing, ack: MessageAck): void {
    outgoing.inFlight = false;
    const index = this.outbox.indexOf(outgoing);
    if (index < 0) return;
    this.outbox.splice(index, 1);
    if (ack.message.seq !== null) {
      this.deliver(ack.message as StoredMessage);
    } else {
      this.own.set(ack.message.id, ack.message);
      if (this.own.size > OWN_KEPT) {
        const oldest = this.own.keys().next().value;
        if (oldest !== undefined) this.own.delete(oldest);
      }
    }
    outgoing.resolve({ message: ack.message, duplicate: ack.duplicate });
  }

  private failed(outgoing: Outgoing, socket: Socket, error: CoachwireError): void {
    outgoing.inFlight = false;
    if (!this.outbox.includes(outgoing)) return;
    if (!RETRIED.has(error.code)) {
      this.outbox.splice(this.outbox.indexOf(outgoing), 1);
      outgoing.reject(error);
      return;
    }
    if (error.code === "DISCONNECTED" || socket !== this.socket) return; // re-sent after the re-join
    outgoing.failures += 1;
    const delay = Math.max(this.backoff(outgoing.failures - 1), error.retryAfterMs ?? 0);
    this.emit("retry", {
      clientMessageId: outgoing.payload.clientMessageId,
      conversationId: outgoing.payload.conversationId,
      code: error.code,
      inMs: Math.round(delay),
    });
    outgoing.timer = setTimeout(() => {
      outgoing.timer = null;
      this.attempt(outgoing);
    }, delay);
  }

  /** One event with an ack; resolves with the success ack, rejects with a
   * {@link CoachwireError} carrying the failure's code (or `TIMEOUT`/`DISCONNECTED`). */
  private request<T>(socket: Socket, event: string, payload: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      if (!socket.connected) {
        reject(new CoachwireError("DISCONNECTED", "not connected"));
        return;
      }
      socket.timeout(this.options.ackTimeoutMs).emit(event, payload, (err: Error | null, ack: T | FailureBody) => {
        if (err) {
          const timedOut = socket.connected && socket === this.socket;
          reject(new CoachwireError(timedOut ? "TIMEOUT" : "DISCONNECTED", `${event}: ${err.message}`));
          return;
        }
        const body = ack as { success?: boolean } | null;
        if (body && body.success === true) {
          resolve(ack as T);
          return;
        }
        const failure = ack as FailureBody | null;
        reject(
          new CoachwireError(
            failure?.code ?? "INTERNAL",
            failure?.error ?? `${event}: malformed ack`,
            failure?.details ?? [],
            failure?.retryAfterMs,
          ),
        );
      });
    });
  }
}

/** A fresh time-ordered `clientMessageId`, for an application that tracks its own sends
 * before the ack (pass it in {@link SendOptions}). */
export function newClientMessageId(): string {
  return uuidv7();
}

/** Connects to coachwire. `url` may list several ingest nodes: after a node is lost, the
 * client moves to the next. */
export function connect(url: string | string[], options: ClientOptions): CoachwireClient {
  return new CoachwireClient(Array.isArray(url) ? url : [url], options);
}
