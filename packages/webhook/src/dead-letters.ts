/**
 * Where deliveries go that failed for good: the store contract of webhook dead letters (each
 * with the URL it failed at, so that it can be replayed there) and the default store in
 * memory, bounded by core's `InMemoryDeadLetterQueue` (the oldest dropped and counted when
 * full). The Redis-backed store, whose letters survive a restart, is in `redis-dead-letters.ts`.
 */
import { randomUUID } from 'node:crypto';
import {
  InMemoryDeadLetterQueue,
  type DeadLetter,
  type DeadLetterReason,
  type Event,
} from '@watchtower/core';
import { integerOption, rejectUnknownOptions } from '@watchtower/core/transport-kit';

/** A delivery that failed for good. */
export interface WebhookDeadLetter {
  /** Given by the store when the letter is added. */
  readonly id: string;
  readonly event: Event;
  /** The endpoint it failed at (also `reason.subscription`). */
  readonly url: string;
  /** The endpoint's `id`. */
  readonly endpointId: string;
  /** Why: message, code (`TRANSPORT`, `TIMEOUT`, `CIRCUIT_OPEN`, ...), attempts, time. */
  readonly reason: DeadLetterReason;
  /** The last HTTP status answered, when there was one. */
  readonly status?: number;
}

/** A letter before the store has given it an id. */
export type NewWebhookDeadLetter = Omit<WebhookDeadLetter, 'id'>;

/**
 * A store of webhook dead letters. `add` resolves only once the letter is stored (a delivery
 * is given up only then) and rejects with a typed error whose `retryable` tells whether a
 * later try may pass.
 */
export interface WebhookDeadLetterStore {
  /** Stores a letter; resolves with its id. */
  add(letter: NewWebhookDeadLetter): Promise<string>;
  /** Letters held, oldest first, at most `limit` of them. */
  list(options?: { limit?: number }): Promise<WebhookDeadLetter[]>;
  /** The letter with this id, or undefined. */
  get(id: string): Promise<WebhookDeadLetter | undefined>;
  /** Removes a letter; false when it was not held. */
  remove(id: string): Promise<boolean>;
  /** Letters held now. */
  size(): Promise<number>;
}

/** Options of {@link MemoryWebhookDeadLetterStore}. */
export interface MemoryWebhookDeadLetterStoreOptions {
  /**
   * Most letters held; when full the oldest is dropped and counted in `stats().dropped`.
   * @defaultValue 10000
   */
  capacity?: number;
}

type HeldLetter = DeadLetter & { readonly letter: WebhookDeadLetter };

/**
 * Dead letters in process memory, bounded: lost when the process exits. The default of
 * `WebhookClient`; use `RedisWebhookDeadLetterStore` where they must survive a restart.
 */
export class MemoryWebhookDeadLetterStore implements WebhookDeadLetterStore {
  readonly #queue: InMemoryDeadLetterQueue;

  /** @throws `CONFIG` naming the field. */
  constructor(options: MemoryWebhookDeadLetterStoreOptions = {}) {
    rejectUnknownOptions(options, ['capacity'], 'MemoryWebhookDeadLetterStore');
    const capacity = integerOption('capacity', options.capacity ?? 10_000, 1);
    this.#queue = new InMemoryDeadLetterQueue({ capacity });
  }

  async add(letter: NewWebhookDeadLetter): Promise<string> {
    const id = randomUUID();
    const held: HeldLetter = {
      event: letter.event,
      reason: letter.reason,
      letter: { ...letter, id },
    };
    await this.#queue.add(held);
    return id;
  }

  async list(options: { limit?: number } = {}): Promise<WebhookDeadLetter[]> {
    const limit = integerOption('limit', options.limit ?? Infinity, 0, { allowInfinity: true });
    return this.#held()
      .slice(0, limit)
      .map((held) => held.letter);
  }

  async get(id: string): Promise<WebhookDeadLetter | undefined> {
    return this.#held().find((held) => held.letter.id === id)?.letter;
  }

  async remove(id: string): Promise<boolean> {
    const held = this.#held().find((entry) => entry.letter.id === id);
    return held !== undefined && this.#queue.remove(held);
  }

  async size(): Promise<number> {
    return this.#queue.size;
  }

  /** Held, capacity, added and dropped (the oldest, when full). */
  stats(): ReturnType<InMemoryDeadLetterQueue['stats']> {
    return this.#queue.stats();
  }

  #held(): HeldLetter[] {
    return this.#queue.list() as HeldLetter[];
  }
}
