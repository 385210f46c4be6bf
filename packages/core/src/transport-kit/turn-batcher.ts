/**
 * Collects what a transport sends per item (an ack, a publish) during one run of promise work
 * and hands it over in one go: one socket write instead of one per item.
 *
 * When the batch goes out is the one choice a transport makes, explicitly, per batcher
 * ({@link BatchSchedule}); these are the two there are, and why:
 *
 * - `'tick'` (`process.nextTick`): for what a caller or the broker waits on (publishes; acks
 *   that the broker holds deliveries back for, like JetStream at `max_ack_pending`). Queued from
 *   promise code (where acks and publishes come from: a handler finished, an `await` resumed) a
 *   tick runs once the microtask queue is empty, so it collects every item of the burst,
 *   including those that arrive after different numbers of `await`s (a microtask would flush
 *   with the first of them), and it still runs before any I/O: nothing waits a turn of the
 *   event loop. An item alone in its turn costs the tick itself, well under a microsecond.
 * - `'immediate'` (`setImmediate`): for what nothing waits on (Redis `XACK`: the entry is only
 *   pending meanwhile, and the broker delivers the next entries regardless). It goes out after
 *   this turn's I/O callbacks, so the writes that are waited on (the next publish, the next
 *   read) leave first (measured: one-at-a-time publish-to-handler on Redis is ~5% faster than
 *   with acks at the tick), and the acks of several socket reads share one command.
 */
/** When a {@link TurnBatcher} sends its batch: see the header of this file. */
export type BatchSchedule = 'tick' | 'immediate';

/** Items added until the scheduled flush, then handed to `send` together. */
export class TurnBatcher<T> {
  #items: T[] = [];
  readonly #send: (items: T[]) => void;
  readonly #schedule: (flush: () => void) => void;
  readonly #scheduled = (): void => this.flush();

  /**
   * @param send - receives the items of a batch, oldest first. It must not throw: it owns the
   * failures of what it sends (reject the items' promises, or report them).
   * @param schedule - when a batch goes out; see {@link BatchSchedule}.
   */
  constructor(send: (items: T[]) => void, schedule: BatchSchedule) {
    this.#send = send;
    this.#schedule =
      schedule === 'tick'
        ? (flush) => process.nextTick(flush)
        : (flush) => void setImmediate(flush);
  }

  /** Items waiting for the next flush. */
  get size(): number {
    return this.#items.length;
  }

  /** Queues `item` for this turn's flush. */
  add(item: T): void {
    if (this.#items.push(item) === 1) this.#schedule(this.#scheduled);
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
