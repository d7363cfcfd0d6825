/**
 * The wire protocol (docs/protocol.md), as TypeScript types.
 *
 * `MessagePayload` (what `message` takes) is generated from the server's own JSON Schema
 * (`GET /schema/message.json`, copied into `schema/message.json`) by `npm run gen`, and the
 * tests fail when the running server's schema differs from that copy, so the two cannot
 * drift. The other shapes are small and fixed by the protocol document.
 */
import type { CoachwireMessagePayload, Metadata } from "./generated/message-payload.js";

/** What the `message` event (and `POST /api/conversations/{id}/messages`) takes. */
export type MessagePayload = CoachwireMessagePayload;
export type { Metadata };

/** A stored message, as the server sends it. `seq` is null only in an ack that came
 * before the message was persisted. */
export interface Message {
  id: string;
  conversationId: string;
  userId: string;
  content: string;
  type: NonNullable<MessagePayload["type"]>;
  metadata: Metadata;
  clientMessageId: string | null;
  seq: number | null;
  createdAt: string;
}

/** A message delivered to the application: always persisted, so `seq` is set. */
export interface StoredMessage extends Message {
  seq: number;
}

/** The wire's error codes (docs/protocol.md, "Acks"). */
export type ErrorCode =
  | "VALIDATION_FAILED"
  | "UNAUTHORIZED"
  | "FORBIDDEN"
  | "RATE_LIMITED"
  | "UNAVAILABLE"
  | "INTERNAL";

export interface FailureBody {
  success: false;
  error: string;
  code: ErrorCode;
  details?: { path: string; message: string }[];
  retryAfterMs?: number;
}

export interface JoinAck {
  success: true;
  conversationId: string;
  lastSeq: number;
}

export interface LeaveAck {
  success: true;
  conversationId: string;
}

export interface MessageAck {
  success: true;
  message: Message;
  duplicate: boolean;
}

export interface SyncAck {
  success: true;
  messages: StoredMessage[];
  hasMore: boolean;
}

export interface TypingAck {
  success: true;
}

/** `message_delivered`: the socket's own message is stored, with its `seq`. */
export interface Delivered {
  id: string;
  clientMessageId: string | null;
  conversationId: string;
  seq: number;
  createdAt: string;
}

/** `typing` from another participant. */
export interface Typing {
  conversationId: string;
  userId: string;
  isTyping: boolean;
}

/** `user_joined` / `user_left`, as one event. */
export interface Presence {
  conversationId: string;
  userId: string;
  status: "joined" | "left";
}

/** The server's `error` event: a failure of an event sent without an ack callback. */
export interface ServerErrorEvent extends Omit<FailureBody, "success"> {
  event: string;
}
