import { Fifo } from './fifo.js';

/**
 * An unbounded FIFO that is also an async iterator: producers `push`, one consumer iterates.
 * Transports use it to turn broker callbacks into a `TransportSubscription`. Taking an item
 * that is already buffered resolves without waiting for a timer or I/O turn.
 */
export class AsyncQueue<T> implements AsyncIterableIterator<T> {
  readonly #items = new Fifo<T>();
  #waiter: ((result: IteratorResult<T>) => void) | undefined;
  #waiterReject: ((error: unknown) => void) | undefined;
  #ended = false;
  #failure: { error: unknown } | undefined;

  /** Items buffered and not yet taken. */
  get size(): number {
    return this.#items.size;
  }

  /** True once `end()` or `fail()` was called. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Adds an item; ignored after `end()` (returns false then). */
  push(item: T): boolean {
    if (this.#ended) return false;
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      this.#waiter = undefined;
      this.#waiterReject = undefined;
      waiter({ value: item, done: false });
      return true;
    }
    this.#items.push(item);
    return true;
  }

  /** Ends iteration once the buffered items have been taken. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#wakeEnded();
  }

  /** Ends iteration with an error once the buffered items have been taken. */
  fail(error: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#failure = { error };
    this.#wakeEnded();
  }

  /** Removes and returns every buffered item (e.g. to hand them back to a broker). */
  drain(): T[] {
    return this.#items.drain();
  }

  /** The oldest buffered item, taken without waiting, or undefined when none is buffered. */
  tryShift(): T | undefined {
    return this.#items.shift();
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#items.size > 0) {
      return Promise.resolve({ value: this.#items.shift() as T, done: false });
    }
    if (this.#ended) return this.#endResult();
    if (this.#waiter !== undefined) {
      return Promise.reject(new Error('AsyncQueue supports one consumer at a time'));
    }
    return new Promise<IteratorResult<T>>((resolve, reject) => {
      this.#waiter = resolve;
      this.#waiterReject = reject;
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  #endResult(): Promise<IteratorResult<T>> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure.error);
    return Promise.resolve({ value: undefined, done: true });
  }

  #wakeEnded(): void {
    const waiter = this.#waiter;
    const reject = this.#waiterReject;
    this.#waiter = undefined;
    this.#waiterReject = undefined;
    if (waiter === undefined) return;
    if (this.#failure !== undefined) reject?.(this.#failure.error);
    else waiter({ value: undefined, done: true });
  }
}
