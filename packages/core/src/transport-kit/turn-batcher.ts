/**
 * Collects what a transport sends per item (an ack, a publish) during one run of promise work
 * and hands it over in one go: one socket write instead of one per item.
 *
 * The scheduling choice, made once here for every transport: the first item of a batch
 * schedules the flush with `process.nextTick`. Queued from promise code (where acks and
 * publishes come from: a handler finished, an `await` resumed) a tick runs once the microtask
 * queue is empty, so it collects every item of the burst, including those that arrive after
 * different numbers of `await`s; a microtask would flush with the first of them. It still runs
 * before any I/O, so nothing waits a turn of the event loop (a broker at its unacked limit waits
 * for those acks; `setImmediate` would hold them behind every socket read of the turn). The cost
 * for an item alone in its turn is the tick itself, well under a microsecond.
 */
export class TurnBatcher<T> {
  #items: T[] = [];
  readonly #send: (items: T[]) => void;
  readonly #scheduled = (): void => this.flush();

  /**
   * @param send - receives the items of a batch, oldest first. It must not throw: it owns the
   * failures of what it sends (reject the items' promises, or report them).
   */
  constructor(send: (items: T[]) => void) {
    this.#send = send;
  }

  /** Items waiting for the next flush. */
  get size(): number {
    return this.#items.length;
  }

  /** Queues `item` for this turn's flush. */
  add(item: T): void {
    if (this.#items.push(item) === 1) process.nextTick(this.#scheduled);
  }

  /**
   * Sends what is queued now, without waiting for the scheduled flush (which then finds
   * nothing): `close()` calls it so that what was queued before goes out before the connection
   * is let go.
   */
  flush(): void {
    const items = this.#items;
    if (items.length === 0) return;
    this.#items = [];
    this.#send(items);
  }
}
