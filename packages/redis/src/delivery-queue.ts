/**
 * A FIFO that one consumer iterates: producers `push` slots, `next()` hands out their items.
 * `onTake` runs as a slot is handed out, so the owner knows which deliveries a handler has seen
 * and which are only buffered (those go back to the consumer group when the subscription stops).
 */
export class DeliveryQueue<S extends { readonly item: T }, T> implements AsyncIterableIterator<T> {
  #items: S[] = [];
  #head = 0;
  #waiter: ((result: IteratorResult<T>) => void) | undefined;
  #ended = false;

  constructor(
    private readonly onTake: (slot: S) => void,
    /** Called when the consumer stops iterating early (`break` out of `for await`). */
    private readonly onReturn: () => void,
  ) {}

  /** Items buffered and not yet handed out. */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** Adds a slot; returns false (and drops it) after `end()`. */
  push(slot: S): boolean {
    if (this.#ended) return false;
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      this.#waiter = undefined;
      this.onTake(slot);
      waiter({ value: slot.item, done: false });
      return true;
    }
    this.#items.push(slot);
    return true;
  }

  /** Removes and returns what is buffered. */
  drain(): S[] {
    const items = this.#items.slice(this.#head);
    this.#items = [];
    this.#head = 0;
    return items;
  }

  /** Ends iteration after the buffered items. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#head < this.#items.length) {
      const slot = this.#items[this.#head] as S;
      this.#items[this.#head] = undefined as unknown as S;
      this.#head++;
      if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
        this.#items = this.#items.slice(this.#head);
        this.#head = 0;
      }
      this.onTake(slot);
      return Promise.resolve({ value: slot.item, done: false });
    }
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    if (this.#waiter !== undefined) {
      return Promise.reject(new Error('a Redis subscription supports one iterator at a time'));
    }
    return new Promise((resolve) => {
      this.#waiter = resolve;
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.onReturn();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
