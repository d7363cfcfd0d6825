/**
 * The wire protocol (docs/protocol.md), as TypeScript types.
 *
 * They are generated from the server's AsyncAPI document (`GET /asyncapi.json`, copied
 * into `schema/asyncapi.json`) by `npm run gen`. The document's schemas come from the
 * same Rust types as the server's validation, and the tests fail when the running
 * server's document differs from the copy, so these types cannot drift. This file only
 * gives them the names the client uses.
 */
import type {
  CoachwireMessagePayload,
  ErrorCode,
  ErrorEvent,
  FailureAck,
  JoinAck,
  LeaveAck,
  Membership,
  Message,
  MessageAck,
  MessageDelivered,
  MessagePage,
  MessageUpdated,
  Metadata,
  ReplyDelta,
  TypingNotice,
} from "./generated/protocol.js";

export type { ErrorCode, JoinAck, LeaveAck, Message, MessageAck, Metadata };

/** What the `message` event (and `POST /api/conversations/{id}/messages`) takes. */
export type MessagePayload = CoachwireMessagePayload;

/** A message delivered to the application: always persisted, so `seq` is set. */
export type StoredMessage = Message & { seq: number };

/** What an ack callback receives when the event is refused. */
export type FailureBody = FailureAck;

/** The `sync` success ack. */
export type SyncAck = MessagePage & { messages: StoredMessage[] };

/** `message_updated`: a later version of a message, with its own `seq` (the end of a
 * streamed reply). `message.seq` stays the message's creation `seq`. */
export type Updated = MessageUpdated;

/** `reply_delta`: a piece of a streamed reply's text at `offset`. */
export type Delta = ReplyDelta;

/** One event of a conversation, as its timeline orders them. */
export type ConversationEvent = { seq: number; message: StoredMessage } | { seq: number; updated: Updated };

/** `message_delivered`: the socket's own message is stored, with its `seq`. */
export type Delivered = MessageDelivered;

/** `typing` from another participant. */
export type Typing = TypingNotice;

/** `user_joined` / `user_left`, as one event. */
export type Presence = Membership & { status: "joined" | "left" };

/** The server's `error` event: a failure of an event sent without an ack callback. */
export type ServerErrorEvent = ErrorEvent;
