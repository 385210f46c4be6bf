/**
 * The listening side of stream announcements: one connection per transport, subscribed to the
 * registry channel, that tells the transport of every stream a publisher on the prefix (of any
 * process) has just created. It is apart from the transport because it is a connection with a
 * life of its own (opened with the first wildcard subscription, dropped on close). It never
 * makes a subscription fail: when it cannot listen, it reports why, and the discovery scan
 * still finds new streams.
 */
import type { WatchtowerError } from '@watchtower/core';
import { dropConnection, type RedisClient } from './connections.js';
import { mapRedisError } from './map-error.js';

/** What {@link StreamAnnouncements} needs from its transport. */
export interface StreamAnnouncementsOptions {
  /** The registry set and channel. */
  readonly registry: string;
  /** The shared connection, for reading the registry set. */
  readonly command: () => RedisClient;
  /** A new connection of its own (not yet connected). */
  readonly createConnection: () => RedisClient;
  /** A stream was announced (or found in the registry after a reconnect). */
  readonly announced: (key: string) => void;
  readonly report: (error: WatchtowerError) => void;
  /** Work nobody awaits, for `close()` to wait on. */
  readonly track: (work: Promise<unknown>, operation: string) => void;
}

/** Where the listener is: not started, listening (or reconnecting), or dropped for good. */
type ListenerPhase = 'idle' | 'starting' | 'listening' | 'dropped';

/** Listens on the registry channel of a prefix, from {@link StreamAnnouncements.start} on. */
export class StreamAnnouncements {
  readonly #options: StreamAnnouncementsOptions;
  #phase: ListenerPhase = 'idle';
  #connection: RedisClient | undefined;
  #starting: Promise<void> | undefined;

  constructor(options: StreamAnnouncementsOptions) {
    this.#options = options;
  }

  /**
   * Subscribes to the channel, once; later calls share the first. Resolves when Redis has
   * confirmed the subscription, or when it failed (reported; the next call tries again).
   * Never rejects.
   */
  start(): Promise<void> {
    if (this.#phase === 'listening' || this.#phase === 'dropped') return Promise.resolve();
    this.#starting ??= this.#start().finally(() => {
      this.#starting = undefined;
    });
    return this.#starting;
  }

  async #start(): Promise<void> {
    this.#phase = 'starting';
    const { registry } = this.#options;
    const connection = this.#options.createConnection();
    this.#connection = connection;
    connection.on('error', () => {
      // Reconnects (and subscribing again) are ioredis' job.
    });
    connection.on('message', (channel: string, key: string) => {
      if (channel === registry && this.#phase === 'listening') this.#options.announced(key);
    });
    try {
      await connection.connect();
      await connection.subscribe(registry);
    } catch (error) {
      dropConnection(connection);
      if (this.#connection === connection) this.#connection = undefined;
      if (this.#dropped()) return;
      this.#phase = 'idle';
      this.#options.report(mapRedisError(error, `SUBSCRIBE ${registry}`));
      return;
    }
    if (this.#dropped()) {
      dropConnection(connection);
      return;
    }
    this.#phase = 'listening';
    // A reconnect ends the subscription until ioredis subscribes again; what was announced
    // meanwhile is in the registry set.
    connection.on('ready', () => {
      if (this.#phase === 'listening') {
        this.#options.track(this.#catchUp(connection), `catch up on ${registry}`);
      }
    });
  }

  /** Subscribes (again: a no-op when ioredis already has), then reads the registry set. */
  async #catchUp(connection: RedisClient): Promise<void> {
    const { registry } = this.#options;
    await connection.subscribe(registry);
    const keys = await this.#options.command().smembers(registry);
    if (this.#phase !== 'listening') return;
    for (const key of keys) this.#options.announced(key);
  }

  // A method, not a comparison: drop() may run while start() awaits.
  #dropped(): boolean {
    return this.#phase === 'dropped';
  }

  /** Drops the connection for good (close). */
  drop(): void {
    this.#phase = 'dropped';
    const connection = this.#connection;
    this.#connection = undefined;
    if (connection !== undefined) dropConnection(connection);
  }
}
