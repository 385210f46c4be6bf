/**
 * {@link RedisTransport}: Redis Streams behind the Watchtower `Transport` contract. What is
 * here is what Redis asks for: the commands that publish and dead-letter, the start ids of new
 * groups, stream discovery for wildcards, and the order of the close steps. The life of the
 * transport (connect once, close once within its deadline, background work, `on('error')`),
 * subscriptions, the dead-letter loop and option checks are the transport kit's; reading a
 * group is {@link GroupConsumer}'s. Nothing here may wait on Redis without a deadline.
 */
import { Buffer } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import {
  ConnectionError,
  ErrorCode,
  ValidationError,
  assertEventType,
  compilePattern,
  encodeEvent,
  isWatchtowerError,
  type CloseOptions,
  type CompiledPattern,
  type ConsumeDlqOptions,
  type DeadLetterHandler,
  type DeadLetterReason,
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
  type WatchtowerError,
} from '@watchtower/core';
import {
  BoundedMemo,
  DeadLetterConsumer,
  RESOLVED,
  SourceSubscription,
  TransportLifecycle,
  checkConsumeDlqOptions,
  checkPublishOptions,
  checkSubscribeOptions,
  isMalformedMessage,
  repeat,
  throwIfAborted,
  withTimeout,
  type Deadline,
  type TransportErrorEvents,
} from '@watchtower/core/transport-kit';
import { Cluster, type Redis } from 'ioredis';
import { AckBatcher } from './ack-batcher.js';
import { ClusterReachability } from './cluster-reachability.js';
import { resolveRedisConfig, type RedisConfig, type ResolvedRedisConfig } from './config.js';
import {
  createBlockingConnection,
  createClient,
  describeTarget,
  dropConnection,
  type RedisClient,
} from './connections.js';
import {
  RedisDeadLetterEntry,
  toDelivery,
  type RedisEventDelivery,
  type RedisMalformedDelivery,
} from './deliveries.js';
import {
  GroupConsumer,
  type ConsumerHost,
  type GroupConsumerOptions,
  type HandledItem,
} from './group-consumer.js';
import {
  dedupeKey,
  probeKey,
  scanPattern,
  streamKey,
  streamRegistryKey,
  typeOfKey,
} from './keys.js';
import { mapClusterWriteError, mapRedisError } from './map-error.js';
import {
  PublishBatcher,
  replicaShortfall,
  type PublishTarget,
  type ReplicaWait,
} from './publish-batcher.js';
import { StaleGroupSweeper, ownGroupName } from './stale-groups.js';
import { StreamAnnouncements } from './stream-announcements.js';

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

/**
 * Listener map of {@link RedisTransport.on}: `error` for a background step that failed (a
 * blocking read, a claim, a discovery scan, an ack, a dead-letter handler). The transport
 * retries on its own; this is for logs and metrics. Nothing is reported after `close()`.
 */
export type RedisTransportEvents = TransportErrorEvents;

type SubscriptionConsumer = GroupConsumer<RedisEventDelivery | RedisMalformedDelivery>;
/** What close() does with every consumer, of a subscription or of the DLQ. */
type AnyConsumer = Pick<GroupConsumer<HandledItem>, 'stop' | 'whenIdle' | 'disconnect'>;

const SUBSCRIBE_RULES = {
  startFrom: ['new', 'earliest', 'time'],
  startFromHint: 'Redis stream ids are times, not sequence numbers',
} as const;

/** Just before `ms`: a group created here receives every entry added at `ms` or later. */
function idJustBefore(ms: number): string {
  return ms <= 0 ? '0' : `${ms - 1}-18446744073709551615`;
}

/**
 * Redis Streams behind the Watchtower `Transport` contract.
 *
 * - Publish: `XADD {prefix}:{type} MAXLEN ~ n * event <json>` on one shared connection;
 *   resolves when Redis has the entry. The publishes of one turn go out as one pipeline; a
 *   publish alone in its turn as a plain command.
 * - Subscribe: a consumer group per subscription (`group` for competing consumers, else a group
 *   of its own, destroyed on unsubscribe), read with `XREADGROUP ... BLOCK` on a connection of
 *   its own. Wildcard patterns read every matching stream, found by `SCAN` and found again every
 *   `discoveryIntervalMs`, and at once a stream a publisher announces (`announceStreams`): the
 *   first publish to a stream also `SADD`s its key to `{prefix}:registry:streams` and
 *   `PUBLISH`es it on that channel, which wildcard subscriptions listen to.
 * - Redelivery: an entry is acked (`XACK`) only by `ack()`; nacked or abandoned entries stay
 *   pending and come back through `XCLAIM`/`XAUTOCLAIM`, with the delivery count as attempt.
 * - Dead letters: the stream `{prefix}:dlq`, fields `event`, `error`, `original_type` (as Rust
 *   Watchtower writes them) and `reason` (the full reason as JSON).
 */
export class RedisTransport implements Transport {
  readonly info: TransportInfo = REDIS_TRANSPORT_INFO;
  /** The validated configuration, defaults filled in. */
  readonly config: ResolvedRedisConfig;
  readonly #life: TransportLifecycle;
  readonly #consumerBase: string;
  readonly #acks: AckBatcher;
  readonly #publishes: PublishBatcher;
  /** What writes wait for after the master has them (`waitReplicas`), if anything. */
  readonly #wait: ReplicaWait | undefined;
  /** The stream of each event type published, remembered, and whether it is announced. */
  readonly #streamKeys: BoundedMemo<PublishTarget>;
  /** Announced streams, heard while there are wildcard subscriptions (`announceStreams`). */
  readonly #announcements: StreamAnnouncements | undefined;
  /** Subscriptions' and dead-letter consumers', until nothing they handed out is unsettled. */
  readonly #consumers = new Set<AnyConsumer>();
  readonly #wildcards = new Map<SubscriptionConsumer, CompiledPattern>();
  readonly #dlqConsumers = new Set<DeadLetterConsumer>();
  #client: RedisClient | undefined;
  #lastError: unknown;
  #sweeper: StaleGroupSweeper | undefined;
  #stopDiscovery: (() => void) | undefined;
  /** On a cluster: whether the transport's slot answers, for the connection reports. */
  #reachability: ClusterReachability | undefined;
  #consumerSeq = 0;

  /** @throws a `CONFIG` error naming the first bad option. */
  constructor(config: RedisConfig = {}) {
    this.config = resolveRedisConfig(config);
    const base = this.config.consumerPrefix ?? `${hostname()}-${process.pid}`;
    this.#consumerBase = `${base}-${randomBytes(3).toString('hex')}`;
    this.#life = new TransportLifecycle({
      name: 'the Redis transport',
      clock: this.config.clock,
      closeTimeoutMs: this.config.closeTimeoutMs,
      mapError: mapRedisError,
    });
    this.#acks = new AckBatcher(
      () => this.#requireClient('XACK'),
      (error) => this.#life.report(error),
    );
    const { maxLen, approximateTrim, prefix, announceStreams, dedupeWindowMs } = this.config;
    const { waitReplicas, waitTimeoutMs } = this.config;
    this.#wait =
      waitReplicas === 0 ? undefined : { replicas: waitReplicas, timeoutMs: waitTimeoutMs };
    const registry = streamRegistryKey(prefix);
    this.#publishes = new PublishBatcher(
      () => this.#requireClient('XADD'),
      maxLen === null
        ? ['*', 'event']
        : ['MAXLEN', approximateTrim ? '~' : '=', maxLen, '*', 'event'],
      (error, key) =>
        this.#life.closed ? this.#life.closedError('publish') : this.#writeError(error, key),
      announceStreams
        ? {
            registry,
            failed: (error, key) =>
              this.#life.report(mapRedisError(error, `announce ${key} on ${registry}`)),
          }
        : undefined,
      dedupeWindowMs,
      this.#wait,
    );
    // Forgotten with the memo past its bound: announced again then, which is harmless.
    this.#streamKeys = new BoundedMemo((type) => ({
      key: streamKey(prefix, type),
      dedupeKey: dedupeKey(prefix, type),
      unannounced: announceStreams,
    }));
    this.#announcements = announceStreams
      ? new StreamAnnouncements({
          registry,
          command: () => this.#requireClient(`SMEMBERS ${registry}`),
          createConnection: () =>
            createBlockingConnection(
              this.#requireClient('SUBSCRIBE'),
              this.config,
              `${this.#consumerBase}-announcements`,
            ),
          announced: (key) => this.#onAnnounced(key),
          report: (error) => this.#life.report(error),
          track: (work, operation) => this.#life.track(work, operation),
        })
      : undefined;
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof RedisTransportEvents>(
    name: K,
    listener: (...args: RedisTransportEvents[K]) => void,
  ): () => void {
    return this.#life.on(name, listener);
  }

  /**
   * Connects the shared connection; idempotent. Rejects with a `CONNECTION` error when Redis
   * cannot be reached (and stops trying: call again to retry), `CLOSED` after `close()`.
   */
  connect(): Promise<void> {
    return this.#life.connect(() => this.#open());
  }

  async #open(): Promise<void> {
    const client = createClient(this.config, `watchtower:${this.#consumerBase}`);
    let lastError: unknown;
    client.on('error', (error: unknown) => {
      lastError = error;
      this.#lastError = error;
    });
    // Kept from the start, so that close() can drop it while it connects.
    this.#client = client;
    try {
      await client.connect();
    } catch (error) {
      this.#client = undefined;
      dropConnection(client);
      throw mapRedisError(lastError ?? error, `connect to ${describeTarget(this.config)}`);
    }
    if (client instanceof Cluster) {
      this.#watchCluster(client);
    } else {
      // The publishing connection speaks for the transport: 'close' after it was ready is a
      // lost connection (ioredis then reconnects), 'ready' again is the way back.
      client.on('close', () =>
        this.#life.connectionLost(
          new ConnectionError(`the connection to ${describeTarget(this.config)} was lost`, {
            cause: this.#lastError,
          }),
        ),
      );
      client.on('ready', () => this.#life.connectionRestored());
    }
    if (this.config.staleGroupMs === 0 || this.#life.closed) return;
    const { prefix, dlqStream, staleGroupMs, clock } = this.config;
    this.#sweeper = new StaleGroupSweeper({
      client: () => this.#requireClient('sweep stale groups'),
      clock,
      prefix,
      consumerBase: this.#consumerBase,
      staleMs: staleGroupMs,
      streams: async (c) =>
        (await this.#scanStreams(c)).filter(
          (key) => typeOfKey(prefix, dlqStream, key) !== undefined,
        ),
      report: (error, operation) => this.#life.report(mapRedisError(error, operation)),
    });
    // Marked alive before any own group of this transport exists.
    await this.#sweeper.start();
  }

  /**
   * On a cluster the client's own status says little (see {@link ClusterReachability}): the
   * transport's slot is probed at each sign of trouble instead.
   */
  #watchCluster(client: Cluster): void {
    const reachability = new ClusterReachability({
      cluster: client,
      probeKey: probeKey(this.config.prefix),
      clock: this.config.clock,
      probeTimeoutMs: this.config.healthCheckTimeoutMs,
      target: describeTarget(this.config),
      lost: (error) => this.#life.connectionLost(error),
      restored: () => this.#life.connectionRestored(),
    });
    this.#reachability = reachability;
    reachability.start();
  }

  #requireClient(what: string): RedisClient {
    if (this.#client === undefined) {
      throw new ConnectionError(`${what}: the Redis transport is not connected`);
    }
    return this.#client;
  }

  #host(client: RedisClient): ConsumerHost {
    return {
      command: client,
      isCluster: client instanceof Cluster,
      acks: this.#acks,
      clock: this.config.clock,
      createBlockingConnection: (name) => createBlockingConnection(client, this.config, name),
      report: (error) => this.#life.report(error),
      track: (work, operation) => this.#life.track(work, operation),
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
   * The publishes made in one turn of promise work are sent together, as one `pipeline()` (one
   * write, one round trip); a publish alone in its turn goes out as a plain `XADD`. Each
   * publish still settles on its own: one whose command Redis refuses rejects, the others of
   * the batch resolve. Entries of one stream keep the order of the `publish` calls.
   *
   * @throws `VALIDATION` for an invalid event type, `SERIALIZATION` when the event cannot be
   * written as JSON, `CONFIG` for bad options, `ABORTED` when `signal` is already aborted,
   * `CLOSED` after `close()`, `CONNECTION`/`TRANSPORT` when Redis fails.
   */
  publish(event: Event, options?: PublishOptions): Promise<void> {
    let target: PublishTarget;
    let body: string;
    try {
      this.#life.assertOpen('publish');
      if (options !== undefined) {
        checkPublishOptions(options);
        throwIfAborted(options.signal, 'the publish');
      }
      assertEventType(event.type);
      target = this.#streamKeys.get(event.type);
      if (target.key === this.config.dlqStream) {
        throw new ValidationError(
          `event type ${JSON.stringify(event.type)} would be written to the dead-letter stream ${target.key}`,
          [{ message: 'event type collides with the DLQ stream', path: ['type'] }],
        );
      }
      body = encodeEvent(event);
    } catch (error) {
      return Promise.reject(error);
    }
    // Not async: a connected publish hands back the batcher's promise, one promise per event.
    if (this.#life.phase !== 'open') {
      return this.connect().then(() => this.#publishes.xadd(target, body, event.id));
    }
    return this.#publishes.xadd(target, body, event.id);
  }

  // -----------------------------------------------------------------------------------------------
  // Subscribe

  /**
   * Subscribes to an event type or a pattern. Resolves once the consumer group exists on every
   * matching stream and reading has started: events published after that are delivered.
   *
   * `options.group` joins a named consumer group (competing consumers); without it the
   * subscription gets a group of its own, destroyed on unsubscribe. `startFrom` applies when the
   * group is created: `'new'` (default), `'earliest'`, or `{ time }`. `unsubscribe()` resolves
   * within `unsubscribeTimeoutMs` whatever Redis does.
   *
   * @throws `VALIDATION` for an invalid pattern, `CONFIG` for bad options (`startFrom:
   * { sequence }` included: stream ids are times), `CONNECTION` when Redis cannot be reached,
   * `CLOSED`.
   */
  async subscribe(
    pattern: string,
    options?: TransportSubscribeOptions,
  ): Promise<TransportSubscription> {
    const { group, maxInFlight, startFrom } = checkSubscribeOptions(options, SUBSCRIBE_RULES);
    try {
      this.#life.assertOpen('subscribe');
      const compiled = compilePattern(pattern);
      await this.connect();
      return await this.#subscribe(pattern, compiled, group, {
        maxInFlight: maxInFlight ?? this.config.maxInFlight,
        start: startFrom ?? this.config.startFrom,
      });
    } catch (error) {
      // Whatever failed because close() ran meanwhile (a connection quitting) is CLOSED.
      if (this.#life.closed && !isWatchtowerError(error, ErrorCode.CLOSED)) {
        throw this.#life.closedError('subscribe');
      }
      throw error;
    }
  }

  async #subscribe(
    pattern: string,
    compiled: CompiledPattern,
    group: string | undefined,
    { maxInFlight, start }: { maxInFlight: number; start: StartPosition },
  ): Promise<TransportSubscription> {
    const client = this.#requireClient('subscribe');
    const { startId, laterStartId } = await this.#startIds(client, start);
    this.#life.assertOpen('subscribe');
    const consumerName = this.#nextConsumerName();
    const consumer: SubscriptionConsumer = new GroupConsumer(
      this.#host(client),
      {
        ...this.#readSettings(maxInFlight),
        group: group ?? ownGroupName(consumerName),
        consumer: consumerName,
        ownGroup: group === undefined,
        streams: compiled.literal ? [streamKey(this.config.prefix, pattern)] : [],
        mkstream: compiled.literal,
        startId,
        laterStartId,
      },
      toDelivery,
      // Breaking out of `for await` unsubscribes (the subscription exists by then).
      () => this.#life.track(subscription.unsubscribe(), `unsubscribe from ${pattern}`),
    );
    if (!compiled.literal) {
      // Listening (and hearing of streams for this consumer) before the scan: a stream created
      // after the scan is announced to it.
      this.#wildcards.set(consumer, compiled);
      await this.#announcements?.start();
    }
    try {
      await this.#startConsumer(consumer, `subscribe ${pattern}`, async () => {
        if (!compiled.literal) {
          await consumer.addInitialStreams(await this.#matchingStreams(client, compiled));
        }
      });
    } catch (error) {
      this.#wildcards.delete(consumer);
      throw error;
    }
    if (!compiled.literal) this.#startDiscovery();
    const subscription = new SourceSubscription(pattern, consumer, {
      clock: this.config.clock,
      stopTimeoutMs: this.config.unsubscribeTimeoutMs,
      onStop: () => this.#forget(consumer),
      background: (stop, operation) => this.#life.track(stop, operation),
    });
    return subscription;
  }

  #readSettings(
    maxInFlight: number,
  ): Pick<
    GroupConsumerOptions,
    'maxInFlight' | 'count' | 'blockMs' | 'claimMinIdleMs' | 'claimIntervalMs'
  > {
    const { count, blockMs, claimMinIdleMs, claimIntervalMs } = this.config;
    return { maxInFlight, count, blockMs, claimMinIdleMs, claimIntervalMs };
  }

  /** Starts `consumer` after `prepare`; on failure stops it and rejects with the failure. */
  async #startConsumer<T extends HandledItem>(
    consumer: GroupConsumer<T>,
    what: string,
    prepare: () => Promise<void>,
  ): Promise<void> {
    this.#consumers.add(consumer);
    try {
      await prepare();
      await consumer.start();
      this.#life.assertOpen(what);
    } catch (error) {
      await consumer.stop();
      this.#consumers.delete(consumer);
      throw mapRedisError(error, what);
    }
  }

  /** Stops tracking a stopped consumer once nothing it handed out is pending any more. */
  #forget(consumer: SubscriptionConsumer): void {
    if (this.#wildcards.delete(consumer) && this.#wildcards.size === 0) {
      this.#stopDiscovery?.();
      this.#stopDiscovery = undefined;
    }
    // Not tracked for close(): a handler that never finishes must not hold close() up; close()
    // waits for handed-out deliveries within its deadline.
    void consumer.whenIdle().then(() => {
      this.#consumers.delete(consumer);
    });
  }

  /** Where a new group starts on the first streams, and on streams found later. */
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
    // checkSubscribeOptions let only { time } through besides those two.
    const id = idJustBefore((start as { time: Date }).time.getTime());
    return { startId: id, laterStartId: id };
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

  #matching(keys: readonly string[], pattern: CompiledPattern): string[] {
    const { prefix, dlqStream } = this.config;
    return keys.filter((key) => {
      const type = typeOfKey(prefix, dlqStream, key);
      return type !== undefined && pattern.matches(type);
    });
  }

  async #matchingStreams(client: RedisClient, pattern: CompiledPattern): Promise<string[]> {
    const keys = await this.#scanStreams(client).catch((error: unknown) => {
      throw mapRedisError(error, `SCAN ${scanPattern(this.config.prefix)}`);
    });
    return this.#matching(keys, pattern);
  }

  #startDiscovery(): void {
    if (this.#stopDiscovery !== undefined || this.#life.closed) return;
    this.#stopDiscovery = repeat(
      this.config.clock,
      this.config.discoveryIntervalMs,
      () => {
        const discovery = this.#discover();
        this.#life.track(discovery, 'discover streams');
        return discovery;
      },
      (error) => this.#life.report(mapRedisError(error, 'discover streams')),
    );
  }

  /** A stream was announced: wildcard subscriptions it matches read it from now on. */
  #onAnnounced(key: string): void {
    const type = typeOfKey(this.config.prefix, this.config.dlqStream, key);
    if (type === undefined) return;
    for (const [consumer, pattern] of this.#wildcards) {
      if (!pattern.matches(type)) continue;
      this.#life.track(
        consumer.addStreams([key]),
        `add announced stream ${key} to ${consumer.group}`,
      );
    }
  }

  async #discover(): Promise<void> {
    const client = this.#client;
    if (client === undefined || this.#life.closed) return;
    let keys: string[];
    try {
      keys = await this.#scanStreams(client);
    } catch (error) {
      this.#life.report(mapRedisError(error, `SCAN ${scanPattern(this.config.prefix)}`));
      return;
    }
    for (const [consumer, pattern] of this.#wildcards) {
      try {
        await consumer.addStreams(this.#matching(keys, pattern));
      } catch (error) {
        this.#life.report(mapRedisError(error, `add streams to ${consumer.group}`));
      }
    }
  }

  // -----------------------------------------------------------------------------------------------
  // Health

  /** `PING` within `healthCheckTimeoutMs`. Never rejects. */
  async healthCheck(): Promise<HealthStatus> {
    if (this.#life.closed) {
      return { healthy: false, state: 'closed', message: 'the Redis transport is closed' };
    }
    const client = this.#client;
    if (client === undefined || this.#life.phase !== 'open') {
      return { healthy: false, state: 'disconnected', message: 'not connected' };
    }
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
    // A cluster stays 'ready' with its nodes down; the probe of the slot knows better.
    if (this.#life.isConnectionLost) {
      return {
        healthy: false,
        state: 'reconnecting',
        message: `the master of the slot of ${this.config.prefix} does not answer`,
        details,
      };
    }
    const clock = this.config.clock;
    const started = clock.now();
    try {
      await withTimeout(clock, client.ping(), this.config.healthCheckTimeoutMs, 'PING');
      return { healthy: true, state: 'connected', latencyMs: clock.now() - started, details };
    } catch (error) {
      return {
        healthy: false,
        state: 'connected',
        message: error instanceof Error ? error.message : String(error),
        details,
      };
    }
  }

  // -----------------------------------------------------------------------------------------------
  // Dead letters

  /**
   * `XADD {prefix}:dlq [MAXLEN ~ n] * event <json or raw bytes> error <message>
   * original_type <type> reason <reason as JSON>`; resolves when Redis has the entry.
   */
  async publishToDlq(message: Event | MalformedMessage, reason: DeadLetterReason): Promise<void> {
    this.#life.assertOpen('publish a dead letter');
    await this.connect();
    const client = this.#requireClient('publishToDlq');
    const key = this.config.dlqStream;
    // Redis fields hold bytes: undecodable ones are stored as they came.
    const body = isMalformedMessage(message)
      ? Buffer.from(message.raw.buffer, message.raw.byteOffset, message.raw.byteLength)
      : encodeEvent(message);
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
    const { dlqMaxLen, approximateTrim } = this.config;
    const head =
      dlqMaxLen === null ? ['*'] : ['MAXLEN', approximateTrim ? '~' : '=', dlqMaxLen, '*'];
    const wait = this.#wait;
    try {
      if (wait === undefined) {
        await client.xadd(key, ...head, ...fields);
        return;
      }
      // WAIT answers for the writes of its own connection: sent in the pipeline of the XADD.
      const replies = await client
        .pipeline()
        .xadd(key, ...head, ...fields)
        .call('WAIT', wait.replicas, wait.timeoutMs)
        .exec();
      const written = replies?.[0];
      if (written?.[0] != null) throw written[0];
      const shortfall = replicaShortfall(wait, replies?.[1], `XADD ${key}`);
      if (shortfall !== undefined) throw shortfall;
    } catch (error) {
      throw this.#life.closed ? mapRedisError(error, `XADD ${key}`) : this.#writeError(error, key);
    }
  }

  /** The error of an `XADD` to `key` that failed while the transport is open. */
  #writeError(error: unknown, key: string): WatchtowerError {
    if (!(this.#client instanceof Cluster)) return mapRedisError(error, `XADD ${key}`);
    const mapped = mapClusterWriteError(error, `XADD ${key}`);
    if (mapped.code === ErrorCode.CONNECTION) this.#reachability?.suspect();
    return mapped;
  }

  /**
   * Calls `handler` for each dead letter in the DLQ stream, one at a time, reading with the
   * consumer group `options.group` (default `config.dlqGroup`), which keeps the position: a
   * letter handled by one consumer of the group is not seen by the others nor by later ones. A
   * letter whose handler returned is acked; one whose handler threw stays pending and comes
   * back after `claimMinIdleMs`. `fromStart` (default true) creates a new group at the start of
   * the stream instead of its end. `unsubscribe()` waits at most `unsubscribeTimeoutMs` for
   * Redis, and for the handler running now.
   */
  async consumeDlq(
    handler: DeadLetterHandler,
    options?: ConsumeDlqOptions,
  ): Promise<SubscriptionHandle> {
    this.#life.assertOpen('consume dead letters');
    const { group, fromStart } = checkConsumeDlqOptions(handler, options);
    await this.connect();
    const client = this.#requireClient('consumeDlq');
    const consumerName = this.#nextConsumerName();
    const batch = Math.min(this.config.count, 16);
    const source = new GroupConsumer<RedisDeadLetterEntry>(
      this.#host(client),
      {
        ...this.#readSettings(batch),
        count: batch,
        group: group ?? this.config.dlqGroup,
        consumer: consumerName,
        ownGroup: false,
        streams: [this.config.dlqStream],
        mkstream: true,
        startId: fromStart ? '0' : '$',
        laterStartId: '0',
      },
      (entry, handle) => new RedisDeadLetterEntry(entry, handle),
      () => {},
    );
    await this.#startConsumer(source, 'consume dead letters', () => RESOLVED);
    const consumer: DeadLetterConsumer = new DeadLetterConsumer({
      id: consumerName,
      source,
      handler,
      afterFailure: 'the letter stays pending and comes back after claimMinIdleMs',
      report: (error) => this.#life.report(error),
      mapError: mapRedisError,
      clock: this.config.clock,
      stopTimeoutMs: this.config.unsubscribeTimeoutMs,
      background: (stop, operation) => this.#life.track(stop, operation),
      onStop: () => {
        this.#dlqConsumers.delete(consumer);
        void source.whenIdle().then(() => this.#consumers.delete(source));
      },
    });
    this.#dlqConsumers.add(consumer);
    return consumer.start();
  }

  // -----------------------------------------------------------------------------------------------
  // Close

  /**
   * Stops every subscription (entries no handler has seen go back to their groups; own groups
   * are destroyed), waits for handed-out deliveries to be acked or nacked, sends the
   * outstanding acks, then quits the connection. Every step shares one deadline, `timeoutMs`
   * (default `closeTimeoutMs`): when Redis does not answer by then (paused, unreachable), every
   * connection is dropped and close resolves at most `CLOSE_MARGIN_MS` later; entries not
   * settled stay pending and are delivered again. Idempotent; a step that fails does not stop
   * the others; rejects only with `CONFIG` for a bad option; failures after the connections
   * are let go are not reported.
   */
  close(options?: CloseOptions): Promise<void> {
    return this.#life.close(
      options,
      (deadline) => this.#close(deadline),
      () => this.#dropConnections(),
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(deadline: Deadline): Promise<void> {
    // Publishes made before close() go out now, ahead of everything close() sends.
    this.#publishes.flush();
    this.#stopDiscovery?.();
    this.#announcements?.drop();
    await deadline.within(this.#life.connecting?.catch(() => {}) ?? RESOLVED);
    const consumers = [...this.#consumers];
    await deadline.within(Promise.allSettled(consumers.map((consumer) => consumer.stop())));
    // In-flight handlers (dead-letter handlers included) may still settle.
    await deadline.within(
      Promise.allSettled([
        ...consumers.map((consumer) => consumer.whenIdle()),
        ...[...this.#dlqConsumers].map((consumer) => consumer.unsubscribe()),
      ]),
    );
    await this.#life.settleBackground(deadline);
    await deadline.within(this.#acks.flush());
    await deadline.within(this.#sweeper?.stop() ?? RESOLVED);
    // What still fails now (work cut off by the deadline, acks of handlers that finish later)
    // fails because of close(); such entries stay pending and are delivered again.
    this.#life.silence();
    this.#reachability?.stop();
    const client = this.#client;
    if (client === undefined) return;
    // A publish whose connect() had resolved when close() began queues after the flush above.
    this.#publishes.flush();
    if (client.status === 'ready') {
      // Acks queued meanwhile go out before the QUIT, which waits for their replies.
      const quit = Promise.all([this.#acks.flush(), client.quit()]).then(
        () => true,
        () => false,
      );
      if ((await deadline.within(quit)) === true) return;
    }
    // QUIT would only wait in the offline queue for a connection that is not there.
    this.#dropConnections();
  }

  /** Drops every connection, so that the commands still pending on them end now. */
  #dropConnections(): void {
    this.#reachability?.stop();
    this.#announcements?.drop();
    for (const consumer of this.#consumers) consumer.disconnect();
    if (this.#client !== undefined) dropConnection(this.#client);
  }
}
