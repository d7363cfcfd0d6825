/**
 * The AI coach's side of a streamed reply (docs/protocol.md §14): a writer that sends the
 * model's text as it comes, in order, each piece once.
 *
 * Appends go out one at a time, each at the offset of the text already acked, so a retry
 * after `UNAVAILABLE`, a timeout or `RATE_LIMITED` resends the same piece at the same
 * offset and the server stores it once. A reply belongs to the socket that started it: if
 * that socket goes, the server ends the reply `interrupted`, and the writer's next call
 * rejects with `DISCONNECTED`.
 */
import type { Message } from "./protocol.js";

/** What the writer needs from the client: one request on the socket that started it. */
export interface ReplyChannel {
  request<T>(event: string, payload: unknown): Promise<T>;
  /** Delay before retry `attempt` (0-based) of a failure with this code, or `null` when
   * the failure cannot be fixed by retrying. */
  retryDelay(code: string, attempt: number, retryAfterMs?: number): number | null;
  /** The reply has ended. */
  ended(): void;
}

export class ReplyWriter {
  private length = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly stopHandlers: ((by: string) => void)[] = [];
  /** Whether a participant asked this reply to stop (its end is then `cancelled`). */
  stopped = false;

  constructor(
    /** The reply as started: `status` `streaming`, no text yet. */
    readonly message: Message,
    private readonly channel: ReplyChannel,
    /** Whether `reply_start` answered an earlier start with the same `clientMessageId`
     * (§7.2): the reply exists already, as `message` shows. */
    readonly duplicate = false,
  ) {}

  get id(): string {
    return this.message.id;
  }

  /** Appends `text` after everything appended before; resolves with the reply's length
   * (in Unicode scalar values) once the server stored it. */
  append(text: string): Promise<number> {
    return this.enqueue(async () => {
      const payload = { conversationId: this.message.conversationId, id: this.id, offset: this.length, text };
      const ack = await this.retrying<{ length: number }>("reply_append", payload);
      this.length = ack.length;
      return ack.length;
    });
  }

  /** Ends the reply as `complete` (or `cancelled`, after a stop); resolves with the final version. */
  end(): Promise<Message> {
    return this.finish("complete");
  }

  /** Ends the reply as `failed` (or `cancelled`, after a stop), keeping the text so far. */
  fail(): Promise<Message> {
    return this.finish("failed");
  }

  /** Calls `handler` with the id of the user who asked this reply to stop. */
  onStop(handler: (by: string) => void): void {
    this.stopHandlers.push(handler);
  }

  /** A `reply_stop` for this reply arrived. */
  stop(by: string): void {
    this.stopped = true;
    for (const handler of this.stopHandlers) handler(by);
  }

  private finish(status: "complete" | "failed"): Promise<Message> {
    return this.enqueue(async () => {
      const payload = { conversationId: this.message.conversationId, id: this.id, status };
      const ack = await this.retrying<{ message: Message }>("reply_end", payload);
      this.channel.ended();
      return ack.message;
    });
  }

  /** Runs `step` after every call made before it. (Not named `then`: that would make the
   * writer a thenable, which `await` would unwrap.) */
  private enqueue<T>(step: () => Promise<T>): Promise<T> {
    const next = this.queue.then(step, step);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async retrying<T>(event: string, payload: unknown): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.channel.request<T>(event, payload);
      } catch (e) {
        const error = e as { code?: string; retryAfterMs?: number };
        const delay = this.channel.retryDelay(error.code ?? "INTERNAL", attempt, error.retryAfterMs);
        if (delay === null) throw e;
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
  }
}
