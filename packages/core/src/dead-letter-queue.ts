/**
 * The dead-letter queue contract and `InMemoryDeadLetterQueue`, a bounded queue that drops its
 * oldest letter when full and counts it. Transports with a broker-side DLQ implement the
 * contract on the broker; this one is for the memory transport and for tests.
 */
import { Emitter } from './emitter.js';
import { ValidationError, configError } from './errors.js';
import { Fifo } from './transport-kit/fifo.js';
import type { DeadLetter } from './transport.js';
import { checkInteger, withDefaults } from './options.js';

/** A plain snapshot from {@link DeadLetterQueue.stats}. */
export interface DeadLetterQueueStats {
  /** Dead letters held now. */
  size: number;
  /** Most dead letters held at once; the oldest is dropped to make room. */
  capacity: number;
  /** Dead letters ever added. Never reset, not even by `clear()`. */
  added: number;
  /** Dead letters dropped because the queue was full. Never reset. */
  dropped: number;
}

/** Listener signatures of {@link DeadLetterQueue.on}. */
export type DeadLetterQueueEvents = {
  /** A dead letter was stored. */
  added: [letter: DeadLetter];
};

/**
 * Where events go that could not be handled. The EventBus acks the original delivery only
 * after `add` has resolved, so an implementation must resolve only once the letter is stored.
 */
export interface DeadLetterQueue {
  /**
   * Stores a dead letter; resolves when it is stored. Rejects with a `VALIDATION` error unless
   * exactly one of `event` and `raw` is set.
   */
  add(letter: DeadLetter): Promise<void>;
  /** The letters held, oldest first, without removing them. */
  list(): DeadLetter[];
  /** Removes and returns up to `max` letters, oldest first (all of them without `max`). */
  take(max?: number): DeadLetter[];
  /**
   * Removes one letter by identity (the object `list()` or `added` gave out), e.g. once a DLQ
   * consumer has handled it. Returns false when it is no longer held.
   */
  remove(letter: DeadLetter): boolean;
  /** Letters held now. */
  readonly size: number;
  /** A plain snapshot. */
  stats(): DeadLetterQueueStats;
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof DeadLetterQueueEvents>(
    name: K,
    listener: (...args: DeadLetterQueueEvents[K]) => void,
  ): () => void;
  /** Removes every letter held (not counted as dropped). */
  clear(): void;
}

/** Options of {@link InMemoryDeadLetterQueue}. */
export interface InMemoryDeadLetterQueueOptions {
  /**
   * Most dead letters held at once; when full, the oldest is dropped and counted in
   * `stats().dropped`. Integer >= 1.
   * @defaultValue 10000
   */
  capacity?: number;
}

/** The defaults of every {@link InMemoryDeadLetterQueueOptions} field. */
export const DEFAULT_DEAD_LETTER_QUEUE_OPTIONS: Readonly<Required<InMemoryDeadLetterQueueOptions>> =
  Object.freeze({
    capacity: 10_000,
  });

/**
 * A bounded {@link DeadLetterQueue} in process memory, for tests and for transports without a
 * broker-side DLQ. Letters are lost when the process exits.
 */
export class InMemoryDeadLetterQueue implements DeadLetterQueue {
  readonly #capacity: number;
  readonly #letters = new Fifo<DeadLetter>();
  readonly #emitter = new Emitter<DeadLetterQueueEvents>();
  #added = 0;
  #dropped = 0;

  /** @throws a `CONFIG` error naming the field when an option is invalid. */
  constructor(options: InMemoryDeadLetterQueueOptions = {}) {
    const { capacity } = withDefaults(
      DEFAULT_DEAD_LETTER_QUEUE_OPTIONS,
      options,
      'InMemoryDeadLetterQueue',
    );
    checkInteger('capacity', capacity, 1);
    this.#capacity = capacity;
  }

  get size(): number {
    return this.#letters.size;
  }

  /** Stores at once; resolves right away. When full, the oldest letter is dropped first. */
  add(letter: DeadLetter): Promise<void> {
    const hasEvent = letter.event !== undefined;
    const hasRaw = letter.raw !== undefined;
    if (hasEvent === hasRaw) {
      return Promise.reject(
        new ValidationError('a dead letter needs exactly one of `event` and `raw`', [
          { message: hasEvent ? 'both event and raw are set' : 'neither event nor raw is set' },
        ]),
      );
    }
    if (this.#letters.size >= this.#capacity) {
      this.#letters.shift();
      this.#dropped++;
    }
    this.#letters.push(letter);
    this.#added++;
    this.#emitter.emit('added', letter);
    return Promise.resolve();
  }

  list(): DeadLetter[] {
    // Fifo has no non-destructive read; refilling it is O(n), like the copy list() returns anyway.
    const letters = this.#letters.drain();
    for (const letter of letters) this.#letters.push(letter);
    return letters;
  }

  /** O(n): meant for one letter at a time, as a DLQ consumer finishes it. */
  remove(letter: DeadLetter): boolean {
    return this.#letters.removeFirst((held) => held === letter) !== undefined;
  }

  /** @throws a `CONFIG` error when `max` is not an integer >= 0 (or `Infinity`). */
  take(max = Number.POSITIVE_INFINITY): DeadLetter[] {
    if (!(Number.isInteger(max) || max === Number.POSITIVE_INFINITY) || max < 0) {
      throw configError('max', `must be an integer >= 0, got ${String(max)}`);
    }
    const out: DeadLetter[] = [];
    while (out.length < max && this.#letters.size > 0) {
      out.push(this.#letters.shift() as DeadLetter);
    }
    return out;
  }

  stats(): DeadLetterQueueStats {
    return {
      size: this.#letters.size,
      capacity: this.#capacity,
      added: this.#added,
      dropped: this.#dropped,
    };
  }

  on<K extends keyof DeadLetterQueueEvents>(
    name: K,
    listener: (...args: DeadLetterQueueEvents[K]) => void,
  ): () => void {
    return this.#emitter.on(name, listener);
  }

  clear(): void {
    this.#letters.drain();
  }
}
