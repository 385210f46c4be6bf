/**
 * Idempotency stores: where a subscription remembers the events it has handled, so that a
 * redelivery within the TTL is acked without running the handler again.
 */
import { systemClock, type Clock } from '../clock.js';
import { clockOption, integerOption, rejectUnknownOptions } from '../options.js';

/**
 * Remembers handled keys for a time. `seen` and `mark` may answer synchronously or with a
 * promise (a store on a broker, `SET NX PX` on Redis).
 */
export interface IdempotencyStore {
  /** True when `key` was marked and its TTL has not passed. */
  seen(key: string): boolean | Promise<boolean>;
  /** Remembers `key` for `ttlMs`. */
  mark(key: string, ttlMs: number): void | Promise<void>;
}

/** Options of {@link MemoryIdempotencyStore}. */
export interface MemoryIdempotencyStoreOptions {
  /**
   * Keys kept at most; past it the oldest is forgotten (a redelivery of it would run again).
   * @defaultValue 100000
   */
  maxKeys?: number;
  /** @defaultValue `systemClock` */
  clock?: Clock;
}

/** Defaults of {@link MemoryIdempotencyStoreOptions}. */
export const DEFAULT_MEMORY_IDEMPOTENCY_OPTIONS = { maxKeys: 100_000 } as const;

/** An {@link IdempotencyStore} in process memory: bounded, each key with its own TTL. */
export class MemoryIdempotencyStore implements IdempotencyStore {
  /** Key to expiry time; a Map iterates in insertion order, oldest first. */
  readonly #expiries = new Map<string, number>();
  readonly #maxKeys: number;
  readonly #clock: Clock;

  constructor(options: MemoryIdempotencyStoreOptions = {}) {
    rejectUnknownOptions(options, ['maxKeys', 'clock'], 'MemoryIdempotencyStore');
    this.#maxKeys = integerOption(
      'maxKeys',
      options.maxKeys ?? DEFAULT_MEMORY_IDEMPOTENCY_OPTIONS.maxKeys,
      1,
    );
    this.#clock = clockOption('clock', options.clock ?? systemClock);
  }

  /** Keys held now (expired ones included until they are looked at or pushed out). */
  get size(): number {
    return this.#expiries.size;
  }

  seen(key: string): boolean {
    const expiry = this.#expiries.get(key);
    if (expiry === undefined) return false;
    if (expiry > this.#clock.now()) return true;
    this.#expiries.delete(key);
    return false;
  }

  mark(key: string, ttlMs: number): void {
    this.#expiries.delete(key);
    this.#expiries.set(key, this.#clock.now() + ttlMs);
    if (this.#expiries.size > this.#maxKeys) {
      const oldest = this.#expiries.keys().next();
      if (oldest.done !== true) this.#expiries.delete(oldest.value);
    }
  }
}
