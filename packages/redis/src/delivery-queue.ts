import {
  Fifo,
} from '@watchtower/core/transport-kit';

/**
 * A FIFO that one consumer iterates: producers `push` slots, `next()` hands out their items.
 * `onTake` runs as a slot is handed out, so the owner knows which deliveries a handler has seen
 * and which are only buffered (those go back to the consumer group when the subscription stops).
 */
export class DeliveryQueue<S extends { readonly item: T }, T> implements AsyncIterableIterator<T> {
  readonly #slots = new Fifo<S>();
  #waiter: ((result: IteratorResult<T>) => void) | undefined;
  #ended = false;

  constructor(
    private readonly onTake: (slot: S) => void,
    /** Called when the consumer stops iterating early (`break` out of `for await`). */
    private readonly onReturn: () => void,
  ) {}

  /** Items buffered and not yet handed out. */
  get size(): number {
    return this.#slots.size;
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
    this.#slots.push(slot);
    return true;
  }

  /** Removes and returns what is buffered. */
  drain(): S[] {
    return this.#slots.drain();
  }

  /** Ends iteration after the buffered items. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.({ value: undefined, done: true });
  }

  /** A buffered item, handed out without waiting, or undefined. */
  tryNext(): T | undefined {
    const slot = this.#slots.shift();
    if (slot === undefined) return undefined;
    this.onTake(slot);
    return slot.item;
  }

  next(): Promise<IteratorResult<T>> {
    const slot = this.#slots.shift();
    if (slot !== undefined) {
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
