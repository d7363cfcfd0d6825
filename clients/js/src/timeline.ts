/**
 * One conversation's events, handed to the application once each and in `seq` order:
 * new messages, and later versions of messages (the end of a streamed reply).
 *
 * Events reach a client from several places that race: live `message` and
 * `message_updated` events, its own acks and `message_delivered`, and `sync` pages after a
 * gap or a reconnect. The server numbers every conversation's events 1, 2, 3 … with no
 * gaps, so the timeline only needs the last `seq` it handed over: anything at or below it
 * is a repeat, the next one goes out, and anything beyond is held until the missing ones
 * arrive (which `sync` guarantees).
 */
export class Timeline<T extends { seq: number } = { seq: number }> {
  private readonly held = new Map<number, T>();

  /** `lastSeq`: the highest `seq` the application already has (0 for none). */
  constructor(private last: number) {}

  /** The highest `seq` handed to the application; everything below it was handed too. */
  get lastSeq(): number {
    return this.last;
  }

  /** Whether a later message is held while an earlier one is missing: only a `sync`
   * from {@link lastSeq} can fill that gap. */
  get hasGap(): boolean {
    return this.held.size > 0;
  }

  /** Takes one event; returns those now ready for the application, in order. */
  accept(event: T): T[] {
    if (event.seq <= this.last || this.held.has(event.seq)) return [];
    this.held.set(event.seq, event);
    const ready: T[] = [];
    for (let next = this.held.get(this.last + 1); next; next = this.held.get(this.last + 1)) {
      this.held.delete(next.seq);
      this.last = next.seq;
      ready.push(next);
    }
    return ready;
  }
}
