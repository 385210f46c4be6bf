/**
 * An idempotency store on Redis for the event system's `idempotency` subscribe option: a key
 * per handled event, written with `SET key 1 NX PX ttl`, so every process of a service (and
 * a restarted one) skips an event another has handled within the TTL.
 */
import { rejectUnknownOptions, stringOption } from '@watchtower/core/transport-kit';
import { configError, type IdempotencyStore } from '@watchtower/core';
import { Redis, type Cluster } from 'ioredis';
import { mapRedisError } from './map-error.js';

/** Options of {@link RedisIdempotencyStore}. */
export interface RedisIdempotencyStoreOptions {
  /**
   * The Redis to use, as a URL; the store opens its own connection and `close()` ends it.
   * @defaultValue `'redis://127.0.0.1:6379'`
   */
  url?: string;
  /** A connection of yours to use instead of `url` (left open by `close()`). */
  client?: Redis | Cluster;
  /**
   * Keys are `{prefix}:{key}`; put a hash tag in it on a cluster if you like them in one slot.
   * @defaultValue `'watchtower:idempotency'`
   */
  prefix?: string;
}

const OPTION_KEYS = ['url', 'client', 'prefix'] as const;

/** An {@link IdempotencyStore} shared by every process that uses the same Redis and prefix. */
export class RedisIdempotencyStore implements IdempotencyStore {
  readonly prefix: string;
  readonly #client: Redis | Cluster;
  readonly #owned: boolean;

  /** @throws a `CONFIG` error naming the field when an option is invalid. */
  constructor(options: RedisIdempotencyStoreOptions = {}) {
    rejectUnknownOptions(options, OPTION_KEYS, 'RedisIdempotencyStore');
    this.prefix = stringOption('prefix', options.prefix ?? 'watchtower:idempotency');
    if (options.client !== undefined) {
      const client = options.client as Partial<Redis> | null;
      if (typeof client?.set !== 'function' || typeof client.exists !== 'function') {
        throw configError('client', 'must be an ioredis Redis or Cluster connection');
      }
      this.#client = options.client;
      this.#owned = false;
    } else {
      const url = stringOption('url', options.url ?? 'redis://127.0.0.1:6379', {
        pattern: /^rediss?:\/\//,
        hint: 'a redis:// or rediss:// URL',
      });
      this.#client = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 3 });
      // Failures reach the caller of seen()/mark(); the client's own reports are not needed.
      this.#client.on('error', () => undefined);
      this.#owned = true;
    }
  }

  async seen(key: string): Promise<boolean> {
    try {
      return (await this.#client.exists(this.#key(key))) === 1;
    } catch (error) {
      throw mapRedisError(error, `EXISTS ${this.#key(key)}`);
    }
  }

  async mark(key: string, ttlMs: number): Promise<void> {
    try {
      await this.#client.set(this.#key(key), '1', 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX');
    } catch (error) {
      throw mapRedisError(error, `SET ${this.#key(key)}`);
    }
  }

  /** Ends the store's own connection (one given as `client` is left open). */
  async close(): Promise<void> {
    if (!this.#owned) return;
    await this.#client.quit().catch(() => this.#client.disconnect());
  }

  #key(key: string): string {
    return `${this.prefix}:${key}`;
  }
}
