/**
 * The queue between a broker's callbacks and a subscription's one consumer, and the record of
 * which deliveries the consumer has seen.
 *
 * A delivery is either buffered (received, not yet taken by the consumer) or handed out (taken,
 * not yet settled). The difference matters when a subscription stops: buffered deliveries were
 * never seen and go back to the broker at once (`drain()`), handed-out ones belong to a handler
 * and are settled by it, or, when the transport closes first, handed back (`unsettled()`).
 * Every transport needs exactly this, so it is written once, here. It never talks to a broker.
 */
import { Fifo } from './fifo.js';
import { OrderedSlots } from './ordered-slots.js';

/** What takes deliveries as they arrive: the bus's consumer, in effect a `DeliveryReceiver`. */
export interface BufferReceiver<T> {
  ready(): boolean;
  take(item: T): void;
}

/** Settings of a {@link DeliveryBuffer}. */
export interface DeliveryBufferOptions<T> {
  /**
   * Keep a record of the handed-out deliveries until `settled()` is called for each. Off for
   * deliveries that need no settling (core NATS): `handedOut` stays 0 then.
   * @defaultValue true
   */
  readonly track?: boolean;
  /** Called as a delivery is handed to the consumer. */
  readonly onTake?: (item: T) => void;
  /**
   * The consumer stopped iterating early (`break` out of `for await`): the transport should
   * unsubscribe. Iteration ends either way.
   */
  readonly onReturn?: () => void;
}

/**
 * A FIFO that one consumer iterates: the transport `push`es, the consumer takes with `next()`
 * (or `tryNext()` for what is already there, without a promise per delivery). Taking a buffered
 * item resolves without waiting for a timer or an I/O turn.
 */
export class DeliveryBuffer<T> implements AsyncIterableIterator<T> {
  readonly #items = new Fifo<T>();
  readonly #handed: OrderedSlots<T> | undefined;
  readonly #onTake: ((item: T) => void) | undefined;
  readonly #onReturn: (() => void) | undefined;
  #waiter: ((result: IteratorResult<T>) => void) | undefined;
  #waiterReject: ((error: unknown) => void) | undefined;
  /** Offered what arrives while the consumer waits in `next()` (see {@link receive}). */
  #receiver: BufferReceiver<T> | undefined;
  #ended = false;
  #failure: { error: unknown } | undefined;
  #idleWaiters: (() => void)[] = [];

  constructor(options: DeliveryBufferOptions<T> = {}) {
    this.#handed = options.track === false ? undefined : new OrderedSlots();
    this.#onTake = options.onTake;
    this.#onReturn = options.onReturn;
  }

  /** Deliveries buffered, not yet taken. */
  get size(): number {
    return this.#items.size;
  }

  /** Deliveries handed out and not yet settled. */
  get handedOut(): number {
    return this.#handed?.size ?? 0;
  }

  /** True once `end()` or `fail()` was called. */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Adds a delivery: handed straight to a consumer that waits, else buffered. Returns false
   * (and keeps nothing) after `end()`: the caller gives the delivery back to the broker.
   */
  push(item: T): boolean {
    if (this.#ended) return false;
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      // Only while the consumer waits: nothing is buffered then, nor on its way to it, so
      // taking this one now keeps the order.
      const receiver = this.#receiver;
      if (receiver !== undefined && receiver.ready()) {
        this.#take(item);
        receiver.take(item);
        return true;
      }
      this.#waiter = undefined;
      this.#waiterReject = undefined;
      this.#take(item);
      waiter({ value: item, done: false });
      return true;
    }
    this.#items.push(item);
    return true;
  }

  /**
   * Sets (undefined: clears) what an arriving delivery is offered to, synchronously, while the
   * consumer waits in `next()`: one it takes is handed out as if `next()` had returned it, and
   * `next()` goes on waiting.
   */
  receive(receiver: BufferReceiver<T> | undefined): void {
    this.#receiver = receiver;
  }

  /** A buffered delivery, handed out without waiting, or undefined. */
  tryNext(): T | undefined {
    const item = this.#items.shift();
    if (item !== undefined) this.#take(item);
    return item;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#items.size > 0) {
      const item = this.#items.shift() as T;
      this.#take(item);
      return Promise.resolve({ value: item, done: false });
    }
    if (this.#ended) {
      return this.#failure === undefined
        ? Promise.resolve({ value: undefined, done: true })
        : Promise.reject(this.#failure.error);
    }
    if (this.#waiter !== undefined) {
      return Promise.reject(new Error('a subscription supports one iterator at a time'));
    }
    return new Promise<IteratorResult<T>>((resolve, reject) => {
      this.#waiter = resolve;
      this.#waiterReject = reject;
    });
  }

  /** The consumer stopped iterating: ends iteration and tells the owner (`onReturn`). */
  return(): Promise<IteratorResult<T>> {
    this.end();
    this.#onReturn?.();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  /** Ends iteration once the buffered deliveries have been taken. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#wakeEnded();
  }

  /** Ends iteration with `error` once the buffered deliveries have been taken. */
  fail(error: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#failure = { error };
    this.#wakeEnded();
  }

  /** Removes and returns the buffered deliveries, which the consumer never saw. */
  drain(): T[] {
    return this.#items.drain();
  }

  /** The buffered deliveries, oldest first, left in place (to keep them alive at the broker). */
  buffered(): IterableIterator<T> {
    return this.#items.values();
  }

  /**
   * The consumer settled `item` (ack or nack). Returns true when it was handed out and not
   * settled before; a second call, or one for a delivery never handed out, returns false.
   */
  settled(item: T): boolean {
    const handed = this.#handed;
    if (handed === undefined || !handed.delete(item)) return false;
    if (handed.size === 0 && this.#idleWaiters.length > 0) {
      for (const wake of this.#idleWaiters.splice(0)) wake();
    }
    return true;
  }

  /**
   * Removes and returns the handed-out deliveries not settled yet (to hand them back when the
   * transport closes before their handlers finished). Later `settled()` calls for them return
   * false.
   */
  takeUnsettled(): T[] {
    const handed = this.#handed;
    if (handed === undefined || handed.size === 0) return [];
    const items = handed.takeAll();
    for (const wake of this.#idleWaiters.splice(0)) wake();
    return items;
  }

  /** Resolves once no handed-out delivery is left unsettled. */
  whenIdle(): Promise<void> {
    if (this.handedOut === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  #take(item: T): void {
    this.#handed?.add(item);
    this.#onTake?.(item);
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
