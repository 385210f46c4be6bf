/**
 * `BackpressureController`: the bounded queue of accepted, not yet confirmed publishes, with
 * its strategies (`drop-oldest`, `drop-newest`, `block` with an optional wait) and the warning
 * threshold. It only admits, orders and evicts entries: it never sends anything, and every
 * entry it drops is rejected with a typed error, never lost silently.
 */
import { systemClock, type Clock, type TimerHandle } from './clock.js';
import { Emitter } from './emitter.js';
import { BackpressureError, ClosedError, ErrorCode } from './errors.js';
import { Fifo } from './transport-kit/fifo.js';
import { checkClock, checkInteger, checkNumber, checkOneOf, withDefaults } from './options.js';

/**
 * What {@link BackpressureController.admit} does when the queue is full.
 *
 * - `drop-oldest`: evict the oldest waiting item (reported through `dropped` with
 *   `BACKPRESSURE_DROPPED`) and queue the new one.
 * - `drop-newest`: refuse the new item with `BACKPRESSURE_FULL`.
 * - `block`: wait for room, up to `blockTimeoutMs`.
 */
export type BackpressureStrategy = 'drop-oldest' | 'drop-newest' | 'block';

/** Options of {@link BackpressureController}. */
export interface BackpressureOptions {
  /**
   * Most items held at once: waiting plus taken but not yet released. Integer >= 1.
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
  /** Waiting items plus taken items not yet released. */
  currentQueueSize: number;
  maxQueueSize: number;
  /** Items queued and not yet taken. */
  waiting: number;
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
 * The bounded publish queue of an EventBus: items accepted but not yet confirmed.
 *
 * A producer calls `admit(item)`; a worker `take()`s items (on `available`) and calls
 * `release()` once each is done, which frees its slot. Size counts both waiting and taken
 * items, so a slow broker fills the queue even when the worker keeps up with taking.
 */
export class BackpressureController<T> {
  readonly #options: Readonly<Required<BackpressureOptions>>;
  readonly #emitter = new Emitter<BackpressureEvents<T>>();
  readonly #queue = new Fifo<T>();
  readonly #blocked = new Fifo<BlockedAdmit<T>>();
  #blockedCount = 0;
  #inFlight = 0;
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

  /** Waiting items plus taken items not yet released. */
  get size(): number {
    return this.#queue.size + this.#inFlight;
  }

  /** Items queued and not yet taken. */
  get waiting(): number {
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
   * waiting item and queues this one, or throws `BACKPRESSURE_FULL` when every held item is
   * already taken; `block` returns a promise that resolves once the item is queued (blocked
   * callers are served first come, first served) and rejects with `BACKPRESSURE_FULL` after
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
        if (this.#queue.size === 0) throw this.#full();
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

  /**
   * Takes a slot for an item that goes straight to the worker, skipping the queue: true when
   * nothing waits or is blocked ahead of it and there is room (then release it like a taken
   * item); false otherwise, and the caller should `admit` instead. The hot path of a queue
   * that is keeping up: no item is stored and nothing is allocated.
   */
  tryAcquire(): boolean {
    if (
      this.#closed ||
      this.#queue.size !== 0 ||
      this.#blockedCount !== 0 ||
      this.size >= this.#options.maxQueueSize
    ) {
      return false;
    }
    this.#inFlight++;
    if (!this.#warned && this.size / this.#options.maxQueueSize >= this.#options.warningThreshold) {
      this.#warned = true;
      this.#emitter.emit('warning', this.stats());
    }
    return true;
  }

  /**
   * Removes and returns the oldest waiting item, or `undefined` when none waits. The item keeps
   * its slot until {@link BackpressureController.release}.
   */
  take(): T | undefined {
    if (this.#queue.size === 0) return undefined;
    this.#inFlight++;
    return this.#queue.shift();
  }

  /**
   * Frees the slot of one taken item and lets the first blocked `admit` in. A release with no
   * taken item outstanding is ignored. Still valid after `close()`, for items taken before.
   */
  release(): void {
    if (this.#inFlight === 0) return;
    this.#inFlight--;
    if (!this.#closed && this.#admitBlocked()) return;
    this.#checkRecovered();
  }

  /**
   * Stops accepting: blocked `admit` calls reject with `reason`, later ones throw
   * `ClosedError`. Returns the items still waiting (never taken), oldest first, so the caller
   * can fail them; taken items keep their slots until released. Idempotent: later calls return
   * an empty array.
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
      waiting: this.#queue.size,
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
   * Timed-out and aborted entries are only skipped when their turn comes; without releases they
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
