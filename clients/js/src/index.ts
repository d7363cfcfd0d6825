/**
 * @coachwire/client: a chat client for coachwire that does the client's part of the
 * delivery guarantees. See README.md for a walk-through and docs/protocol.md in the
 * repository for the wire protocol.
 */
export { CoachwireClient, CoachwireError, connect, newClientMessageId } from "./client.js";
export type {
  ClientErrorCode,
  ClientEvents,
  ClientOptions,
  ConnectionState,
  JoinOptions,
  SendOptions,
  SendResult,
} from "./client.js";
export { Timeline } from "./timeline.js";
export { ReplyWriter } from "./reply.js";
export type * from "./protocol.js";
