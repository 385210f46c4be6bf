/**
 * `BackpressureController`: the bounded queue of publishes accepted and not yet handed on,
 * with its strategies (`drop-oldest`, `drop-newest`, `block` with an optional wait) and the
 * warning threshold. It only admits, orders and evicts entries: it never sends anything, and
 * every entry it drops is rejected with a typed error, never lost silently. How many taken
 * entries are in flight is the taker's business (the bus bounds them with
 * `publishConcurrency`), so a full queue always holds entries that `drop-oldest` can evict.
 */
import { systemClock, type Clock, type TimerHandle } from './clock.js';
import { Emitter } from './emitter.js';
import { BackpressureError, ClosedError, ErrorCode } from './errors.js';
import { Fifo } from './transport-kit/fifo.js';
import { checkClock, checkInteger, checkNumber, checkOneOf, withDefaults } from './options.js';

/**
 * What {@link BackpressureController.admit} does when the queue is full. Each strategy always
 * has its effect, whatever the other options:
 *
 * - `drop-oldest`: evict the oldest waiting item (reported through `dropped` with
 *   `BACKPRESSURE_DROPPED`) and queue the new one.
 * - `drop-newest`: refuse the new item with `BACKPRESSURE_FULL`.
 * - `block`: wait for room (a `take()`), up to `blockTimeoutMs`.
 */
export type BackpressureStrategy = 'drop-oldest' | 'drop-newest' | 'block';

/** Options of {@link BackpressureController}. */
export interface BackpressureOptions {
  /**
   * Most items waiting at once: admitted and not yet taken. A taken item has left the queue
   * (in the `EventBus`: handed to the transport, where `publishConcurrency` bounds how many
   * are in flight). Integer >= 1.
   * @defaultValue 1000
   */
  maxQueueSize?: number;
  /**
   * What to do with an item that arrives when the queue is full.
   * @defaultValue `'block'`
   */
  strategy?: BackpressureStrategy;
  /**
   * Under `block`, how long `admit` waits for room before rejecting with `BACKPRESSURE_FULL`;
   * 0 waits without limit (an `AbortSignal` can still end the wait). Finite, >= 0.
   * @defaultValue 30000
   */
  blockTimeoutMs?: number;
  /**
   * Fill ratio (size / maxQueueSize) at which `warning` fires. In (0, 1].
   * @defaultValue 0.8
   */
  warningThreshold?: number;
  /**
   * Source of timers for `blockTimeoutMs`; pass a `FakeClock` in tests.
   * @defaultValue `systemClock`
   */
  clock?: Clock;
}

/** The defaults of every {@link BackpressureOptions} field. */
export const DEFAULT_BACKPRESSURE_OPTIONS: Readonly<Required<BackpressureOptions>> = Object.freeze({
  maxQueueSize: 1000,
  strategy: 'block',
  blockTimeoutMs: 30_000,
  warningThreshold: 0.8,
  clock: systemClock,
});

/** A plain snapshot from {@link BackpressureController.stats}. */
export interface BackpressureStats {
  /** Items admitted and not yet taken. */
  currentQueueSize: number;
  maxQueueSize: number;
  /** Items evicted by `drop-oldest`. Never reset. */
  droppedEvents: number;
  /** `admit` calls refused with `BACKPRESSURE_FULL` (full, or a block timed out). Never reset. */
  rejectedEvents: number;
  /** `admit` calls currently waiting for room under `block`. */
  blockedAdmits: number;
  /** `currentQueueSize / maxQueueSize` at the time of the snapshot, in [0, 1]. */
  fillRatio(): number;
}

/** Listener signatures of {@link BackpressureController.on}. */
export type BackpressureEvents<T> = {
  /** An item was evicted by `drop-oldest`; `error` has code `BACKPRESSURE_DROPPED`. */
  dropped: [item: T, error: BackpressureError];
  /** The fill ratio reached `warningThreshold` from below. */
  warning: [stats: BackpressureStats];
  /** The fill ratio fell back below `warningThreshold` after a `warning`. */
  recovered: [stats: BackpressureStats];
  /** An item was queued: there is something to `take()`. */
  available: [];
};

interface BlockedAdmit<T> {
  readonly item: T;
  readonly resolve: () => void;
  readonly reject: (reason: unknown) => void;
  timer: TimerHandle | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** Timed-out and aborted entries stay in the FIFO and are skipped when their turn comes. */
  settled: boolean;
}

/**
 * The bounded publish queue of an EventBus: items accepted and not yet handed on.
 *
 * A producer calls `admit(item)`; a worker `take()`s items (on `available`), which frees
 * their slots at once. A worker that bounds its own work (the bus sends at most
 * `publishConcurrency` at a time) stops taking when it is busy, so a slow broker fills the
 * queue, and the strategy decides what happens to the next item.
 */
export class BackpressureController<T> {
  readonly #options: Readonly<Required<BackpressureOptions>>;
  readonly #emitter = new Emitter<BackpressureEvents<T>>();
  readonly #queue = new Fifo<T>();
  readonly #blocked = new Fifo<BlockedAdmit<T>>();
  #blockedCount = 0;
  #dropped = 0;
  #rejected = 0;
  #warned = false;
  #closed = false;

  /** @throws a `CONFIG` error naming the field when an option is invalid. */
  constructor(options: BackpressureOptions = {}) {
    const merged = withDefaults(DEFAULT_BACKPRESSURE_OPTIONS, options, 'backpressure');
    validate(merged);
    this.#options = Object.freeze(merged);
  }

  /** Items admitted and not yet taken. */
  get size(): number {
    return this.#queue.size;
  }

  /** The strategy in force. */
  get strategy(): BackpressureStrategy {
    return this.#options.strategy;
  }

  /**
   * Offers an item to the queue.
   *
   * Returns `undefined` when the item was queued at once (no promise is made on this path).
   * When full: `drop-newest` throws `BACKPRESSURE_FULL`; `drop-oldest` evicts the oldest
   * waiting item (a full queue always has one) and queues this one; `block` returns a promise
   * that resolves once the item is queued, after a `take()` made room (blocked callers are
   * served first come, first served), and rejects with `BACKPRESSURE_FULL` after
   * `blockTimeoutMs` or with the signal's reason on abort.
   *
   * @throws `ClosedError` after {@link BackpressureController.close}; the signal's reason if it
   *   has already aborted.
   */
  admit(item: T, signal?: AbortSignal): void | Promise<void> {
    if (this.#closed) throw new ClosedError('the publish queue is closed');
    if (signal?.aborted === true) throw signal.reason;
    // Blocked callers were first: a newcomer must not take the slot they are waiting for.
    if (this.size < this.#options.maxQueueSize && this.#blockedCount === 0) {
      this.#enqueue(item);
      return undefined;
    }
    switch (this.#options.strategy) {
      case 'drop-newest':
        throw this.#full();
      case 'drop-oldest': {
        // Full means maxQueueSize (>= 1) items wait: there is always one to evict.
        const evicted = this.#queue.shift() as T;
        this.#dropped++;
        this.#enqueue(item);
        this.#emitter.emit(
          'dropped',
          evicted,
          new BackpressureError(
            ErrorCode.BACKPRESSURE_DROPPED,
            'evicted from the full publish queue by a newer event',
          ),
        );
        return undefined;
      }
      case 'block':
        return this.#block(item, signal);
    }
  }

  /** The oldest waiting item, left in place; `undefined` when none waits. */
  peek(): T | undefined {
    return this.#queue.peek();
  }

  /**
   * Removes and returns the oldest waiting item, or `undefined` when none waits. Its slot is
   * free at once: the first blocked `admit` (if any) is let in.
   */
  take(): T | undefined {
    if (this.#queue.size === 0) return undefined;
    const item = this.#queue.shift() as T;
    if (!this.#closed && this.#admitBlocked()) return item;
    this.#checkRecovered();
    return item;
  }

  /**
   * Stops accepting: blocked `admit` calls reject with `reason`, later ones throw
   * `ClosedError`. Returns the items still waiting (never taken), oldest first, so the caller
   * can fail them. Idempotent: later calls return an empty array.
   */
  close(reason: Error = new ClosedError('the publish queue is closed')): T[] {
    if (this.#closed) return [];
    this.#closed = true;
    for (let entry = this.#blocked.shift(); entry !== undefined; entry = this.#blocked.shift()) {
      if (entry.settled) continue;
      this.#settle(entry);
      entry.reject(reason);
    }
    return this.#queue.drain();
  }

  /** A plain snapshot. */
  stats(): BackpressureStats {
    const currentQueueSize = this.size;
    const maxQueueSize = this.#options.maxQueueSize;
    const ratio = currentQueueSize / maxQueueSize;
    return {
      currentQueueSize,
      maxQueueSize,
      droppedEvents: this.#dropped,
      rejectedEvents: this.#rejected,
      blockedAdmits: this.#blockedCount,
      fillRatio: () => ratio,
    };
  }

  /** Adds a listener; returns a function that removes it. A throwing listener is reported, never rethrown. */
  on<K extends keyof BackpressureEvents<T>>(
    name: K,
    listener: (...args: BackpressureEvents<T>[K]) => void,
  ): () => void {
    return this.#emitter.on(name, listener);
  }

  #enqueue(item: T): void {
    this.#queue.push(item);
    if (!this.#warned && this.size / this.#options.maxQueueSize >= this.#options.warningThreshold) {
      this.#warned = true;
      this.#emitter.emit('warning', this.stats());
    }
    this.#emitter.emit('available');
  }

  #checkRecovered(): void {
    if (this.#warned && this.size / this.#options.maxQueueSize < this.#options.warningThreshold) {
      this.#warned = false;
      this.#emitter.emit('recovered', this.stats());
    }
  }

  #full(): BackpressureError {
    this.#rejected++;
    return new BackpressureError(
      ErrorCode.BACKPRESSURE_FULL,
      `the publish queue is full (${this.#options.maxQueueSize} events)`,
    );
  }

  #block(item: T, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const entry: BlockedAdmit<T> = {
        item,
        resolve,
        reject,
        timer: undefined,
        signal,
        onAbort: undefined,
        settled: false,
      };
      const { blockTimeoutMs, clock } = this.#options;
      if (blockTimeoutMs > 0) {
        entry.timer = clock.setTimeout(() => {
          entry.timer = undefined;
          this.#settle(entry);
          reject(this.#full());
        }, blockTimeoutMs);
      }
      if (signal !== undefined) {
        entry.onAbort = () => {
          this.#settle(entry);
          reject(signal.reason);
        };
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.#compactBlocked();
      this.#blocked.push(entry);
      this.#blockedCount++;
    });
  }

  /**
   * Timed-out and aborted entries are only skipped when their turn comes; without takes they
   * would pile up, so drop them once they outnumber the live ones.
   */
  #compactBlocked(): void {
    if (this.#blocked.size < 64 || this.#blocked.size < 2 * this.#blockedCount) return;
    for (const entry of this.#blocked.drain()) {
      if (!entry.settled) this.#blocked.push(entry);
    }
  }

  /** Queues the first blocked item that is still waiting; false when there is none. */
  #admitBlocked(): boolean {
    for (let entry = this.#blocked.shift(); entry !== undefined; entry = this.#blocked.shift()) {
      if (entry.settled) continue;
      this.#settle(entry);
      this.#enqueue(entry.item);
      entry.resolve();
      return true;
    }
    return false;
  }

  /** Marks a blocked entry done and clears its timer and abort listener. */
  #settle(entry: BlockedAdmit<T>): void {
    entry.settled = true;
    this.#blockedCount--;
    if (entry.timer !== undefined) {
      this.#options.clock.clearTimeout(entry.timer);
      entry.timer = undefined;
    }
    if (entry.onAbort !== undefined) {
      entry.signal?.removeEventListener('abort', entry.onAbort);
      entry.onAbort = undefined;
    }
  }
}

function validate(options: Required<BackpressureOptions>): void {
  checkInteger('maxQueueSize', options.maxQueueSize, 1);
  checkOneOf('strategy', options.strategy, ['drop-oldest', 'drop-newest', 'block']);
  checkNumber('blockTimeoutMs', options.blockTimeoutMs, { min: 0, hint: '0 = no limit' });
  checkNumber('warningThreshold', options.warningThreshold, { above: 0, max: 1 });
  checkClock('clock', options.clock);
}
