import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import {
  ErrorCode,
  ValidationError,
  WatchtowerError,
  assertEventType,
  compilePattern,
  configError,
  encodeEvent,
  isWatchtowerError,
  type CloseOptions,
  type CompiledPattern,
  type ConsumeDlqOptions,
  type DeadLetterHandler,
  type DeadLetterReason,
  type Delivery,
  type Event,
  type HealthStatus,
  type MalformedMessage,
  type PublishOptions,
  type StartPosition,
  type SubscriptionHandle,
  type Transport,
  type TransportInfo,
  type TransportSubscribeOptions,
  type TransportSubscription,
} from '@watchtower/core';
import {
  BoundedMemo,
  TRANSPORT_OPTION_KEYS,
  checkOptionKeys,
  rejectedForUnknownKeys,
} from '@watchtower/core/transport-kit';
import { Cluster, Redis, type ClusterNode, type RedisOptions } from 'ioredis';
import { AckBatcher } from './ack-batcher.js';
import { resolveRedisConfig, type RedisConfig, type ResolvedRedisConfig } from './config.js';
import { toDeadLetter, toDelivery, type DlqItem } from './deliveries.js';
import { GroupConsumer, type ConsumerHost, type RedisClient } from './group-consumer.js';
import { scanPattern, streamKey, typeOfKey } from './keys.js';
import { closedError, mapRedisError } from './map-error.js';
import { PublishBatcher } from './publish-batcher.js';
import { StaleGroupSweeper, ownGroupName } from './stale-groups.js';

/**
 * What Redis Streams give, as data. `delayedRetry` is false: a nack's delay is timed by the
 * consumer that nacked (the entry stays pending in Redis meanwhile). If that consumer dies, the
 * entry survives with its delivery count and another member takes it over after
 * `claimMinIdleMs`, not after the nack's `delayMs`.
 */
export const REDIS_TRANSPORT_INFO: TransportInfo = Object.freeze({
  name: 'redis',
  capabilities: Object.freeze({
    persistence: true,
    replay: true,
    consumerGroups: true,
    ordering: true,
    redelivery: true,
    delayedRetry: false,
    brokerAttemptCount: true,
    nativeDlq: true,
    wildcards: true,
    headers: true,
    reconnect: true,
  }),
});

/** Listener map of {@link RedisTransport.on}. */
export interface RedisTransportEvents {
  /**
   * A background step failed: a blocking read, a claim, a discovery scan. The transport retries
   * on its own; this is for logs and metrics.
   */
  error: [error: WatchtowerError];
}

/** Just before `ms`: a group created here receives every entry added at `ms` or later. */
function idJustBefore(ms: number): string {
  return ms <= 0 ? '0' : `${ms - 1}-18446744073709551615`;
}

/**
 * With `enableAutoPipelining` (an ioredis option a user may still turn on, though publishes do
 * not need it: they are pipelined per event-loop turn here), ioredis loses the command name of
 * the generic `call(name, ...)` form, used here for XAUTOCLAIM, XCLAIM, XINFO and CLIENT (their
 * typed forms cannot return Buffers or are missing). Those commands therefore always go out
 * directly.
 */
const SENT_WITH_CALL = ['XAUTOCLAIM', 'XCLAIM', 'XINFO', 'CLIENT'];

function withCallExcluded(ignored: string[] | undefined): string[] {
  return [...new Set([...(ignored ?? []), ...SENT_WITH_CALL])];
}

function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return '<invalid url>';
  }
}

/**
 * Redis Streams behind the Watchtower `Transport` contract.
 *
 * - Publish: `XADD {prefix}:{type} MAXLEN ~ n * event <json>` on one shared connection;
 *   resolves when Redis has the entry. The publishes of one event-loop turn go out as one
 *   pipeline; a publish alone in its turn as a plain command.
 * - Subscribe: a consumer group per subscription (`group` for competing consumers, else a group
 *   of its own, destroyed on unsubscribe), read with `XREADGROUP ... BLOCK` on a connection of
 *   its own. Wildcard patterns read every matching stream, found by `SCAN` and found again every
 *   `discoveryIntervalMs`.
 * - Redelivery: an entry is acked (`XACK`) only by `ack()`; nacked or abandoned entries stay
 *   pending and come back through `XCLAIM`/`XAUTOCLAIM`, with the delivery count as attempt.
 * - Dead letters: the stream `{prefix}:dlq`, fields `event`, `error`, `original_type` (as Rust
 *   Watchtower writes them) and `reason` (the full reason as JSON).
 */
export class RedisTransport implements Transport {
  readonly info: TransportInfo = REDIS_TRANSPORT_INFO;
  /** The validated configuration, defaults filled in. */
  readonly config: ResolvedRedisConfig;
  readonly #consumerBase: string;
  readonly #acks: AckBatcher;
  readonly #publishes: PublishBatcher;
  /** The stream key of each event type published, remembered. */
  readonly #streamKeys: BoundedMemo<string>;
  readonly #consumers = new Set<GroupConsumer<unknown>>();
  readonly #wildcards = new Map<GroupConsumer<Delivery>, CompiledPattern>();
  readonly #dlqHandles = new Set<SubscriptionHandle>();
  readonly #background = new Set<Promise<unknown>>();
  readonly #errorListeners = new Set<(error: WatchtowerError) => void>();
  #client: RedisClient | undefined;
  #connecting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #closed = false;
  /** Set once close() lets go of the connection: later failures are not reported. */
  #silenced = false;
  #lastError: unknown;
  #sweeper: StaleGroupSweeper | undefined;
  #discoveryTimer: NodeJS.Timeout | undefined;
  #discovering: Promise<void> | undefined;
  #consumerSeq = 0;

  /** @throws a `CONFIG` error naming the first bad option. */
  constructor(config: RedisConfig = {}) {
    this.config = resolveRedisConfig(config);
    const base = this.config.consumerPrefix ?? `${hostname()}-${process.pid}`;
    this.#consumerBase = `${base}-${randomBytes(3).toString('hex')}`;
    this.#acks = new AckBatcher(
      () => this.#requireClient('XACK'),
      (error) => this.#reportError(error),
    );
    const { maxLen, approximateTrim } = this.config;
    this.#publishes = new PublishBatcher(
      () => this.#requireClient('XADD'),
      maxLen === null
        ? ['*', 'event']
        : ['MAXLEN', approximateTrim ? '~' : '=', maxLen, '*', 'event'],
      (error, key) => (this.#closed ? closedError('publish') : mapRedisError(error, `XADD ${key}`)),
    );
    const { prefix } = this.config;
    this.#streamKeys = new BoundedMemo((type) => streamKey(prefix, type));
  }

  /**
   * Adds a listener; returns a function that removes it.
   */
  on<K extends keyof RedisTransportEvents>(
    name: K,
    listener: (...args: RedisTransportEvents[K]) => void,
  ): () => void {
    if (name !== 'error') return () => {};
    this.#errorListeners.add(listener);
    return () => {
      this.#errorListeners.delete(listener);
    };
  }

  /**
   * Connects the shared connection; idempotent. Rejects with a `CONNECTION` error when Redis
   * cannot be reached (and stops trying: call again to retry), `CLOSED` after `close()`.
   */
  connect(): Promise<void> {
    if (this.#closed) return Promise.reject(closedError('connect'));
    this.#connecting ??= this.#connect().catch((error: unknown) => {
      this.#connecting = undefined;
      throw error;
    });
    return this.#connecting;
  }

  async #connect(): Promise<void> {
    const client = this.#createClient();
    let lastError: unknown;
    client.on('error', (error: unknown) => {
      lastError = error;
      this.#lastError = error;
    });
    try {
      await client.connect();
    } catch (error) {
      client.disconnect();
      throw mapRedisError(lastError ?? error, `connect to ${this.#describeTarget()}`);
    }
    if (this.#closed) {
      client.disconnect();
      throw closedError('connect');
    }
    this.#client = client;
    if (this.config.staleGroupMs > 0) {
      const { prefix, dlqStream, staleGroupMs } = this.config;
      const sweeper = new StaleGroupSweeper({
        client: () => this.#requireClient('sweep stale groups'),
        prefix,
        consumerBase: this.#consumerBase,
        staleMs: staleGroupMs,
        streams: async (c) =>
          (await this.#scanStreams(c)).filter(
            (key) => typeOfKey(prefix, dlqStream, key) !== undefined,
          ),
        report: (error, operation) => this.#reportError(mapRedisError(error, operation)),
      });
      this.#sweeper = sweeper;
      // Marked alive before any own group of this transport exists.
      await sweeper.start();
    }
  }

  #describeTarget(): string {
    if (this.config.cluster === undefined) return redactUrl(this.config.url);
    return `Redis Cluster (${this.config.cluster.nodes?.length ?? 1} startup nodes)`;
  }

  #createClient(): RedisClient {
    const name = `watchtower:${this.#consumerBase}`;
    const cluster = this.config.cluster;
    if (cluster === undefined) {
      const options: RedisOptions = {
        connectionName: name,
        ...this.config.redis,
        autoPipeliningIgnoredCommands: withCallExcluded(
          this.config.redis.autoPipeliningIgnoredCommands,
        ),
        lazyConnect: true,
      };
      return new Redis(this.config.url, options);
    }
    const url = new URL(this.config.url);
    const urlOptions: RedisOptions = {};
    if (url.username !== '') urlOptions.username = decodeURIComponent(url.username);
    if (url.password !== '') urlOptions.password = decodeURIComponent(url.password);
    if (url.protocol === 'rediss:') urlOptions.tls = {};
    const nodes: ClusterNode[] = cluster.nodes ?? [
      { host: url.hostname, port: url.port === '' ? 6379 : Number(url.port) },
    ];
    return new Cluster(nodes, {
      ...cluster.options,
      autoPipeliningIgnoredCommands: withCallExcluded(
        cluster.options?.autoPipeliningIgnoredCommands,
      ),
      lazyConnect: true,
      redisOptions: {
        connectionName: name,
        ...urlOptions,
        ...this.config.redis,
        ...cluster.options?.redisOptions,
      },
    });
  }

  /** A connection for one subscription's blocking reads. */
  #createBlockingConnection(client: RedisClient, consumer: string): RedisClient {
    const timeout = this.config.redis.commandTimeout;
    const overrides: Partial<RedisOptions> = {
      connectionName: `watchtower:${consumer}`,
      lazyConnect: true,
      enableAutoPipelining: false,
      // The read loop retries on its own; a read waits in the offline queue while reconnecting.
      maxRetriesPerRequest: null,
    };
    // A blocking read takes blockMs by design: a command timeout must not cut it.
    if (timeout !== undefined) overrides.commandTimeout = this.config.blockMs + timeout;
    if (client instanceof Cluster) {
      const redisOptions = { ...client.options.redisOptions, ...overrides };
      return client.duplicate(undefined, {
        ...client.options,
        lazyConnect: true,
        enableAutoPipelining: false,
        redisOptions,
      });
    }
    return client.duplicate(overrides);
  }

  #requireClient(what: string): RedisClient {
    if (this.#client === undefined) {
      throw new WatchtowerError(
        ErrorCode.CONNECTION,
        `${what}: the Redis transport is not connected`,
      );
    }
    return this.#client;
  }

  #assertOpen(what: string): void {
    if (this.#closed) throw closedError(what);
  }

  #reportError(error: WatchtowerError): void {
    this.#lastError = error;
    if (this.#silenced) return;
    for (const listener of this.#errorListeners) {
      try {
        listener(error);
      } catch {
        // A listener must not break the transport.
      }
    }
  }

  #host(client: RedisClient): ConsumerHost {
    return {
      command: client,
      isCluster: client instanceof Cluster,
      acks: this.#acks,
      createBlockingConnection: (name) => this.#createBlockingConnection(client, name),
      reportError: (error) => this.#reportError(error),
    };
  }

  #nextConsumerName(): string {
    return `${this.#consumerBase}-${++this.#consumerSeq}`;
  }

  // -----------------------------------------------------------------------------------------------
  // Publish

  /**
   * `XADD {prefix}:{type} [MAXLEN ~ n] * event <json>`; resolves when Redis has the entry.
   * Connects first when needed.
   *
   * The publishes made in one event-loop turn are sent together, as one `pipeline()` (one write,
   * one round trip), at the end of the turn's synchronous and promise work; a publish alone in
   * its turn goes out as a plain `XADD`. Each publish still settles on its own: one whose
   * command Redis refuses rejects, the others of the batch resolve. Entries of one stream keep
   * the order of the `publish` calls.
   *
   * @throws `VALIDATION` for an invalid event type, `SERIALIZATION` when the event cannot be
   * written as JSON, `ABORTED` when `signal` is already aborted, `CLOSED` after `close()`,
   * `CONNECTION`/`TRANSPORT` when Redis fails.
   */
  publish(event: Event, options?: PublishOptions): Promise<void> {
    let key: string;
    let body: string;
    try {
      this.#assertOpen('publish');
      checkOptionKeys(options, TRANSPORT_OPTION_KEYS.publish, 'publish options');
      assertEventType(event.type);
      key = this.#streamKeys.get(event.type);
      if (key === this.config.dlqStream) {
        throw new ValidationError(
          `event type ${JSON.stringify(event.type)} would be written to the dead-letter stream ${key}`,
          [{ message: 'event type collides with the DLQ stream', path: ['type'] }],
        );
      }
      if (options?.signal?.aborted === true) {
        throw new WatchtowerError(ErrorCode.ABORTED, 'publish aborted', {
          cause: options.signal.reason,
        });
      }
      body = encodeEvent(event);
    } catch (error) {
      return Promise.reject(error);
    }
    // Not async: a connected publish hands back the batcher's promise, one promise per event.
    if (this.#client === undefined) {
      return this.connect().then(() => this.#publishes.xadd(key, body));
    }
    return this.#publishes.xadd(key, body);
  }

  // -----------------------------------------------------------------------------------------------
  // Subscribe

  /**
   * Subscribes to an event type or a pattern. Resolves once the consumer group exists on every
   * matching stream and reading has started: events published after that are delivered.
   *
   * `options.group` joins a named consumer group (competing consumers); without it the
   * subscription gets a group of its own, destroyed on unsubscribe. `startFrom` applies when the
   * group is created: `'new'` (default), `'earliest'`, or `{ time }`.
   *
   * @throws `VALIDATION` for an invalid pattern, `CONFIG` for bad options, `UNSUPPORTED` for
   * `startFrom: { sequence }`, `CONNECTION` when Redis cannot be reached, `CLOSED`.
   */
  async subscribe(
    pattern: string,
    options: TransportSubscribeOptions = {},
  ): Promise<TransportSubscription> {
    checkOptionKeys(options, TRANSPORT_OPTION_KEYS.subscribe, 'subscribe options');
    try {
      return await this.#subscribe(pattern, options);
    } catch (error) {
      // Whatever failed because close() ran meanwhile (a connection quitting) is CLOSED.
      if (this.#closed && !isWatchtowerError(error, ErrorCode.CLOSED)) {
        throw closedError('subscribe');
      }
      throw error;
    }
  }

  async #subscribe(
    pattern: string,
    options: TransportSubscribeOptions,
  ): Promise<TransportSubscription> {
    this.#assertOpen('subscribe');
    const compiled = compilePattern(pattern);
    const maxInFlight = options.maxInFlight ?? this.config.maxInFlight;
    if (!Number.isSafeInteger(maxInFlight) || maxInFlight < 1) {
      throw configError('maxInFlight', `expected an integer >= 1, got ${String(maxInFlight)}`);
    }
    if (
      options.group !== undefined &&
      (typeof options.group !== 'string' || options.group.length === 0)
    ) {
      throw configError('group', 'expected a non-empty string');
    }
    await this.connect();
    const client = this.#requireClient('subscribe');
    const { startId, laterStartId } = await this.#startIds(
      client,
      options.startFrom ?? this.config.startFrom,
    );
    this.#assertOpen('subscribe');

    const consumerName = this.#nextConsumerName();
    const own = options.group === undefined;
    const group = options.group ?? ownGroupName(consumerName);
    // Set below; breaking out of `for await` unsubscribes.
    const created: { subscription?: RedisSubscription } = {};
    const consumer = new GroupConsumer<Delivery>(
      this.#host(client),
      {
        group,
        consumer: consumerName,
        ownGroup: own,
        streams: compiled.literal ? [streamKey(this.config.prefix, pattern)] : [],
        mkstream: compiled.literal,
        startId,
        laterStartId,
        maxInFlight,
        count: this.config.count,
        blockMs: this.config.blockMs,
        claimMinIdleMs: this.config.claimMinIdleMs,
        claimIntervalMs: this.config.claimIntervalMs,
      },
      (entry, handle) => toDelivery(compiled, entry, handle),
      () => {
        if (created.subscription !== undefined) this.#track(created.subscription.unsubscribe());
      },
    );
    this.#consumers.add(consumer as GroupConsumer<unknown>);
    try {
      if (!compiled.literal)
        await consumer.addInitialStreams(await this.#matchingStreams(client, compiled));
      await consumer.start();
      this.#assertOpen('subscribe');
    } catch (error) {
      await consumer.stop();
      this.#consumers.delete(consumer as GroupConsumer<unknown>);
      throw mapRedisError(error, `subscribe ${pattern}`);
    }
    if (!compiled.literal) {
      this.#wildcards.set(consumer, compiled);
      this.#scheduleDiscovery();
    }
    const subscription = new RedisSubscription(pattern, consumer, () => this.#forget(consumer));
    created.subscription = subscription;
    return subscription;
  }

  /** Stops tracking a stopped consumer once nothing it handed out is pending any more. */
  #forget(consumer: GroupConsumer<Delivery>): void {
    this.#wildcards.delete(consumer);
    // Not tracked for close(): a handler that never finishes must not hold close() up; close()
    // waits for handed-out deliveries with its own time limit.
    void consumer.whenIdle().then(() => {
      this.#consumers.delete(consumer as GroupConsumer<unknown>);
    });
  }

  async #startIds(
    client: RedisClient,
    start: StartPosition,
  ): Promise<{ startId: string; laterStartId: string }> {
    if (start === 'earliest') return { startId: '0', laterStartId: '0' };
    if (start === 'new') {
      let ms: number;
      try {
        const [seconds, micros] = await client.time();
        ms = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
      } catch (error) {
        throw mapRedisError(error, 'TIME');
      }
      return { startId: '$', laterStartId: idJustBefore(ms) };
    }
    if (typeof start === 'object' && start !== null && 'time' in start) {
      const ms = start.time instanceof Date ? start.time.getTime() : Number.NaN;
      if (!Number.isFinite(ms)) throw configError('startFrom.time', 'expected a valid Date');
      const id = idJustBefore(ms);
      return { startId: id, laterStartId: id };
    }
    if (typeof start === 'object' && start !== null && 'sequence' in start) {
      throw new WatchtowerError(
        ErrorCode.UNSUPPORTED,
        'startFrom: { sequence } is not supported by Redis Streams (entry ids are times); use { time } instead',
        { retryable: false },
      );
    }
    throw configError('startFrom', `expected 'new', 'earliest' or { time }, got ${String(start)}`);
  }

  // -----------------------------------------------------------------------------------------------
  // Stream discovery for wildcard subscriptions

  /** Every stream key under the prefix (all master nodes on a cluster). */
  async #scanStreams(client: RedisClient): Promise<string[]> {
    const nodes: Redis[] = client instanceof Cluster ? client.nodes('master') : [client];
    const keys = new Set<string>();
    for (const node of nodes) {
      const stream = node.scanStream({
        match: scanPattern(this.config.prefix),
        type: 'stream',
        count: 1000,
      });
      for await (const batch of stream as AsyncIterable<string[]>) {
        for (const key of batch) keys.add(key);
      }
    }
    return [...keys];
  }

  async #matchingStreams(client: RedisClient, pattern: CompiledPattern): Promise<string[]> {
    const keys = await this.#scanStreams(client).catch((error: unknown) => {
      throw mapRedisError(error, `SCAN ${scanPattern(this.config.prefix)}`);
    });
    return keys.filter((key) => {
      const type = typeOfKey(this.config.prefix, this.config.dlqStream, key);
      return type !== undefined && pattern.matches(type);
    });
  }

  #scheduleDiscovery(): void {
    if (this.#discoveryTimer !== undefined || this.#discovering !== undefined || this.#closed)
      return;
    if (this.#wildcards.size === 0) return;
    this.#discoveryTimer = setTimeout(() => {
      this.#discoveryTimer = undefined;
      this.#discovering = this.#discover().finally(() => {
        this.#discovering = undefined;
        this.#scheduleDiscovery();
      });
    }, this.config.discoveryIntervalMs);
  }

  async #discover(): Promise<void> {
    const client = this.#client;
    if (client === undefined || this.#closed) return;
    let keys: string[];
    try {
      keys = await this.#scanStreams(client);
    } catch (error) {
      this.#reportError(mapRedisError(error, `SCAN ${scanPattern(this.config.prefix)}`));
      return;
    }
    for (const [consumer, pattern] of this.#wildcards) {
      const matching = keys.filter((key) => {
        const type = typeOfKey(this.config.prefix, this.config.dlqStream, key);
        return type !== undefined && pattern.matches(type);
      });
      try {
        await consumer.addStreams(matching);
      } catch (error) {
        this.#reportError(mapRedisError(error, `add streams to ${consumer.group}`));
      }
    }
  }

  // -----------------------------------------------------------------------------------------------
  // Health

  /** `PING` with a time limit. Never rejects. */
  async healthCheck(): Promise<HealthStatus> {
    if (this.#closed)
      return { healthy: false, state: 'closed', message: 'the Redis transport is closed' };
    const client = this.#client;
    if (client === undefined)
      return { healthy: false, state: 'disconnected', message: 'not connected' };
    const details: Record<string, unknown> = {
      cluster: client instanceof Cluster,
      subscriptions: this.#consumers.size,
      status: client.status,
    };
    if (client.status !== 'ready') {
      return {
        healthy: false,
        state: client.status === 'end' ? 'disconnected' : 'reconnecting',
        message:
          this.#lastError instanceof Error
            ? this.#lastError.message
            : `connection is ${client.status}`,
        details,
      };
    }
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        client.ping(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`PING took longer than ${this.config.healthCheckTimeoutMs} ms`)),
            this.config.healthCheckTimeoutMs,
          );
        }),
      ]);
      return { healthy: true, state: 'connected', latencyMs: performance.now() - started, details };
    } catch (error) {
      return {
        healthy: false,
        state: 'connected',
        message: error instanceof Error ? error.message : String(error),
        details,
      };
    } finally {
      clearTimeout(timer);
    }
  }

  // -----------------------------------------------------------------------------------------------
  // Dead letters

  /**
   * `XADD {prefix}:dlq [MAXLEN ~ n] * event <json or raw bytes> error <message>
   * original_type <type> reason <reason as JSON>`; resolves when Redis has the entry.
   */
  async publishToDlq(message: Event | MalformedMessage, reason: DeadLetterReason): Promise<void> {
    this.#assertOpen('publishToDlq');
    if (this.#client === undefined) await this.connect();
    const client = this.#client as RedisClient;
    const key = this.config.dlqStream;
    const body =
      'raw' in message && message.raw instanceof Uint8Array
        ? Buffer.from(message.raw.buffer, message.raw.byteOffset, message.raw.byteLength)
        : encodeEvent(message as Event);
    const fields = [
      'event',
      body,
      'error',
      reason.message,
      'original_type',
      reason.originalType,
      'reason',
      JSON.stringify(reason),
    ];
    try {
      if (this.config.dlqMaxLen === null) await client.xadd(key, '*', ...fields);
      else
        await client.xadd(
          key,
          'MAXLEN',
          this.config.approximateTrim ? '~' : '=',
          this.config.dlqMaxLen,
          '*',
          ...fields,
        );
    } catch (error) {
      throw mapRedisError(error, `XADD ${key}`);
    }
  }

  /**
   * Calls `handler` for each dead letter in the DLQ stream, one at a time, reading with the
   * consumer group `options.group` (default `config.dlqGroup`), which keeps the position: a
   * letter handled by one consumer of the group is not seen by the others nor by later ones. A
   * letter whose handler returned is acked; one whose handler threw stays pending and comes
   * back after `claimMinIdleMs`. `fromStart` (default true) creates a new group at the start of
   * the stream instead of its end.
   */
  async consumeDlq(
    handler: DeadLetterHandler,
    options: ConsumeDlqOptions = {},
  ): Promise<SubscriptionHandle> {
    this.#assertOpen('consumeDlq');
    if (typeof handler !== 'function') throw configError('handler', 'expected a function');
    checkOptionKeys(options, TRANSPORT_OPTION_KEYS.consumeDlq, 'consumeDlq options');
    if (
      options.group !== undefined &&
      (typeof options.group !== 'string' || options.group.length === 0)
    ) {
      throw configError('group', 'expected a non-empty string');
    }
    if (options.fromStart !== undefined && typeof options.fromStart !== 'boolean') {
      throw configError('fromStart', `expected a boolean, got ${typeof options.fromStart}`);
    }
    await this.connect();
    const client = this.#requireClient('consumeDlq');
    const consumerName = this.#nextConsumerName();
    const consumer = new GroupConsumer<DlqItem>(
      this.#host(client),
      {
        group: options.group ?? this.config.dlqGroup,
        consumer: consumerName,
        ownGroup: false,
        streams: [this.config.dlqStream],
        mkstream: true,
        startId: options.fromStart === false ? '$' : '0',
        laterStartId: '0',
        maxInFlight: Math.min(this.config.count, 16),
        count: Math.min(this.config.count, 16),
        blockMs: this.config.blockMs,
        claimMinIdleMs: this.config.claimMinIdleMs,
        claimIntervalMs: this.config.claimIntervalMs,
      },
      (entry, handle) => ({ letter: toDeadLetter(entry), handle }),
      () => {},
    );
    this.#consumers.add(consumer as GroupConsumer<unknown>);
    try {
      await consumer.start();
    } catch (error) {
      await consumer.stop();
      this.#consumers.delete(consumer as GroupConsumer<unknown>);
      throw error;
    }
    const loop = (async () => {
      for await (const item of consumer.iterator) {
        try {
          await handler(item.letter);
        } catch (error) {
          item.handle.leave();
          this.#reportError(
            new WatchtowerError(
              ErrorCode.HANDLER_FAILED,
              `the dead-letter handler failed; the letter stays pending and comes back after claimMinIdleMs: ${error instanceof Error ? error.message : String(error)}`,
              { cause: error },
            ),
          );
          continue;
        }
        await item.handle.ack().catch((error: unknown) => {
          this.#reportError(mapRedisError(error, `XACK ${this.config.dlqStream}`));
        });
      }
    })();
    let stopping: Promise<void> | undefined;
    const handle: SubscriptionHandle = {
      id: consumerName,
      unsubscribe: () => {
        stopping ??= (async () => {
          await consumer.stop();
          await loop;
          await consumer.whenIdle();
          this.#consumers.delete(consumer as GroupConsumer<unknown>);
          this.#dlqHandles.delete(handle);
        })();
        return stopping;
      },
    };
    this.#dlqHandles.add(handle);
    return handle;
  }

  // -----------------------------------------------------------------------------------------------
  // Close

  /**
   * Stops every subscription (entries no handler has seen go back to their groups; own groups
   * are destroyed), waits up to `timeoutMs` for handed-out deliveries to be acked or nacked,
   * sends the outstanding acks, then quits the connections (pending replies are awaited). Each
   * step that talks to Redis (stopping, sending the acks, `QUIT`) has a limit of its own,
   * `timeoutMs` kept between 1 and 5 s: while Redis is unreachable those steps cannot finish, and
   * the connections are dropped instead of waiting for a reconnect; entries not settled stay
   * pending and are delivered again. Idempotent; a step that fails does not stop the others;
   * rejects only with `CONFIG` for an unknown option; failures after the connections are let
   * go are not reported.
   */
  close(options: CloseOptions = {}): Promise<void> {
    if (this.#closing === undefined) {
      const refused = rejectedForUnknownKeys(options, TRANSPORT_OPTION_KEYS.close, 'close options');
      if (refused !== undefined) return refused;
    }
    this.#closing ??= this.#close(options.timeoutMs ?? this.config.closeTimeoutMs);
    return this.#closing;
  }

  async #close(timeoutMs: number): Promise<void> {
    this.#closed = true;
    // Publishes made before close() go out now, ahead of everything close() sends.
    this.#publishes.flush();
    if (this.#discoveryTimer !== undefined) clearTimeout(this.#discoveryTimer);
    this.#discoveryTimer = undefined;
    // While Redis is unreachable its commands wait for a reconnect: each step that talks to
    // Redis gets a limit of its own, and the wait for handlers gets timeoutMs.
    const grace = Math.max(1000, Math.min(timeoutMs, 5000));
    const consumers = [...this.#consumers];
    await within(grace, async () => {
      await Promise.allSettled(consumers.map((consumer) => consumer.stop()));
      await Promise.allSettled([this.#discovering]);
    });
    // In-flight handlers (dead-letter handlers included) get up to timeoutMs to settle.
    await within(timeoutMs, () =>
      Promise.allSettled([
        ...consumers.map((consumer) => consumer.whenIdle()),
        ...[...this.#dlqHandles].map((handle) => handle.unsubscribe()),
      ]),
    );
    await within(grace, async () => {
      await Promise.allSettled(consumers.map((consumer) => consumer.settledBackground()));
      await this.#acks.flush().catch(() => {});
      await Promise.allSettled([...this.#background]);
      await this.#sweeper?.stop();
    });
    const client = this.#client;
    this.#connecting = undefined;
    // What still fails now (work cut off by a limit, acks of handlers that finish later) fails
    // because of close(); such entries stay pending and are delivered again.
    this.#silenced = true;
    if (client === undefined) return;
    // A publish whose connect() had resolved when close() began queues after the flush above.
    this.#publishes.flush();
    if (client.status !== 'ready') {
      // QUIT would only wait in the offline queue for a connection that is not there.
      client.disconnect();
      return;
    }
    try {
      // Acks queued meanwhile go out before the QUIT, which waits for their replies.
      const quit = Promise.all([this.#acks.flush(), client.quit()]);
      if ((await within(grace, () => quit)) === TIMED_OUT) client.disconnect();
    } catch {
      client.disconnect();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #track(promise: Promise<unknown>): void {
    const tracked = promise.catch((error: unknown) => {
      this.#reportError(mapRedisError(error, 'background'));
    });
    this.#background.add(tracked);
    void tracked.finally(() => this.#background.delete(tracked));
  }
}

const TIMED_OUT: unique symbol = Symbol('timed out');

/** Runs `work`; resolves with its result, or with {@link TIMED_OUT} after `ms`. */
async function within<R>(ms: number, work: () => Promise<R>): Promise<R | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work(),
      new Promise<typeof TIMED_OUT>((resolve) => {
        timer = setTimeout(() => resolve(TIMED_OUT), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** A live Redis subscription: iterate it for deliveries. */
class RedisSubscription implements TransportSubscription {
  #stopping: Promise<void> | undefined;

  constructor(
    readonly pattern: string,
    private readonly consumer: GroupConsumer<Delivery>,
    private readonly onStopped: () => void,
  ) {}

  [Symbol.asyncIterator](): AsyncIterator<Delivery> {
    return this.consumer.iterator;
  }

  tryNext(): Delivery | undefined {
    return this.consumer.iterator.tryNext();
  }

  /**
   * Stops reading and ends iteration. Entries read but not yet handed out go back to the group;
   * deliveries already handed out may still be acked or nacked. An own group is destroyed.
   * Idempotent.
   */
  unsubscribe(): Promise<void> {
    this.#stopping ??= this.consumer.stop().finally(() => this.onStopped());
    return this.#stopping;
  }
}
