/**
 * The options of {@link RedisTransport}: their types with documented defaults, and
 * `resolveRedisConfig`, which merges them over the defaults and checks each section with core's
 * option validators. Only rules of Redis itself (the URL, hash tags on a cluster, settings of
 * ioredis the transport cannot honour) are written here; nothing here talks to a server.
 */
import { configError, systemClock, type Clock } from '@watchtower/core';
import {
  DEFAULT_UNSUBSCRIBE_TIMEOUT_MS,
  booleanOption,
  clockOption,
  describeValue,
  integerOption,
  objectOption,
  oneOfOption,
  recordOption,
  rejectUnknownOptions,
  stringOption,
} from '@watchtower/core/transport-kit';
import type { ClusterNode, ClusterOptions, RedisOptions } from 'ioredis';
import { defaultDlqKey, hashTagOf } from './keys.js';

/** Where a new consumer group starts reading. */
export type RedisStartFrom = 'new' | 'earliest';

/** Redis Cluster settings of {@link RedisConfig.cluster}. */
export interface RedisClusterConfig {
  /**
   * Startup nodes.
   * @defaultValue the host and port of {@link RedisConfig.url}
   */
  nodes?: ClusterNode[];
  /**
   * ioredis Cluster options. {@link RedisConfig.redis} is passed on as `redisOptions`.
   * `keyPrefix` (here or in `redisOptions`) is a `CONFIG` error: use {@link RedisConfig.prefix}.
   */
  options?: ClusterOptions;
}

/** Options of {@link RedisTransport}. Every field is optional; see the defaults. */
export interface RedisConfig {
  /**
   * Redis URL (`redis://` or `rediss://` for TLS; user, password and db in the URL work). With
   * {@link RedisConfig.cluster} only user, password, TLS and (without `nodes`) host and port are
   * used, and a database other than 0 is a `CONFIG` error.
   * @defaultValue `'redis://127.0.0.1:6379'`
   */
  url?: string;
  /**
   * ioredis options, applied over the URL: TLS, auth, timeouts, `retryStrategy` and the rest
   * pass through unchanged. `lazyConnect` is always set (the transport connects in
   * `connect()`). `keyPrefix` is a `CONFIG` error: use {@link RedisConfig.prefix}.
   */
  redis?: RedisOptions;
  /**
   * Connect to a Redis Cluster through ioredis `Cluster`. All streams must then share one hash
   * slot, so the prefix must contain a hash tag (the default prefix becomes `{watchtower}`).
   * @defaultValue not set: a single Redis server
   */
  cluster?: RedisClusterConfig;
  /**
   * Key prefix: events of type `t` go to the stream `{prefix}:{t}`.
   * @defaultValue `'watchtower'`, or `'{watchtower}'` with `cluster`
   */
  prefix?: string;
  /**
   * The dead-letter stream (fields `event`, `error`, `original_type`, `reason`).
   * @defaultValue `'{prefix}:dlq'`
   */
  dlqStream?: string;
  /**
   * Trim each event stream to about this many entries on every `XADD` (`MAXLEN`). `null`
   * keeps everything. Trimming can remove entries that a group has not yet acknowledged, so
   * keep it well above the largest backlog you expect.
   * @defaultValue 100000
   */
  maxLen?: number | null;
  /**
   * Trim the dead-letter stream to about this many entries; `null` keeps everything.
   * @defaultValue 100000
   */
  dlqMaxLen?: number | null;
  /**
   * Makes a publish idempotent by event id for this long, in milliseconds: each `XADD` runs in
   * a script that first sets `{stream}:id:{event id}` with `SET NX PX`, and skips the write
   * when the key is there. A publish sent again (the client resending a write whose reply was
   * lost with the connection, a retry of the bus, a caller publishing the same event twice)
   * is then stored once, across restarts of an append-only Redis too. It costs a key per
   * event for the window and a script call instead of a plain `XADD`; `0` writes plain
   * `XADD`s, and a republish can be stored twice (delivery is at least once either way).
   * @defaultValue 0
   */
  dedupeWindowMs?: number;
  /**
   * Makes a publish, and a dead-letter write, resolve only once this many replicas of the
   * master that took it have it: the writes of a turn are followed by `WAIT n waitTimeoutMs`
   * on the same connection, and a write that fewer replicas acknowledged in time rejects with
   * a `ReplicationTimeoutError` (`TIMEOUT`, retryable; the master has the entry). On a
   * Redis Cluster the replicas are those of the master of the prefix's slot. `WAIT` holds the
   * shared connection until it answers (acks and reads of other commands wait behind it), so
   * keep `waitTimeoutMs` short. `0` confirms a write once the master has it.
   * @defaultValue 0
   */
  waitReplicas?: number;
  /**
   * How long `WAIT` waits for {@link RedisConfig.waitReplicas} replicas, in milliseconds (at
   * least 1: `WAIT` with 0 would wait for ever). Only with `waitReplicas`, and below
   * `redis.commandTimeout` when that is set.
   * @defaultValue 1000
   */
  waitTimeoutMs?: number;
  /**
   * Trim with `MAXLEN ~` (whole radix-tree nodes, cheap; the stream may stay up to about one
   * node, 100 entries by default, above the bound) instead of the exact `MAXLEN =`.
   * @defaultValue true
   */
  approximateTrim?: boolean;
  /**
   * How long one `XREADGROUP` blocks waiting for entries, in milliseconds. It bounds how long
   * a stream discovered on a Redis Cluster waits to be read, and how long `close()` waits for a
   * blocking read on a cluster.
   * @defaultValue 2000
   */
  blockMs?: number;
  /**
   * Entries read per `XREADGROUP` (`COUNT`), also the batch size of `XAUTOCLAIM`.
   * @defaultValue 100
   */
  count?: number;
  /**
   * Deliveries a subscription holds (read and not yet acked or nacked) before it stops
   * reading; `TransportSubscribeOptions.maxInFlight` overrides it per subscription.
   * @defaultValue 256
   */
  maxInFlight?: number;
  /**
   * How often wildcard subscriptions look for new streams under the prefix (`SCAN`), in
   * milliseconds; it bounds how soon a type first published after the subscription started is
   * received when its publisher did not announce it (see `announceStreams`).
   * @defaultValue 1000
   */
  discoveryIntervalMs?: number;
  /**
   * Publishers announce a stream the first time they publish to it: `SADD` of its key to the
   * set `{prefix}:registry:streams` and `PUBLISH` of it on the channel of that name, in the
   * pipeline of the `XADD` (no extra round trip; later publishes to the key send nothing
   * more). Each transport with wildcard subscriptions listens on that channel on a connection
   * of its own and starts reading an announced stream that matches within milliseconds (on a
   * Redis Cluster within `blockMs`); the `SCAN` every `discoveryIntervalMs` stays as the
   * fallback, for publishers that do not announce (older versions, Rust Watchtower, `false`
   * here) and announcements missed. After the listening connection reconnects it reads the set
   * for what was announced meanwhile. `false` neither announces nor listens (for a Redis whose
   * ACL refuses `PUBLISH`/`SUBSCRIBE`).
   * @defaultValue true
   */
  announceStreams?: boolean;
  /**
   * An entry delivered to a consumer and neither acked nor nacked for this long is taken over
   * by another consumer of the group (`XAUTOCLAIM`): this is how the entries of a crashed
   * consumer come back. Keep it above your longest handler run; a consumer refreshes the
   * entries its handlers hold, so a live slow handler does not lose its entry.
   * @defaultValue 30000
   */
  claimMinIdleMs?: number;
  /**
   * How often each subscription runs `XAUTOCLAIM` and refreshes the entries it holds, in
   * milliseconds; at most half of `claimMinIdleMs`.
   * @defaultValue 1000
   */
  claimIntervalMs?: number;
  /**
   * Own consumer groups (those of subscriptions without a group) that a process left behind
   * without closing (a crash) are destroyed, by any transport on the same prefix, once that
   * process has shown no sign of life for this long: each transport refreshes a key
   * `{prefix}:alive:{consumer base}` every third of it, and a group also stays while any of its
   * consumers read more recently. Must exceed `blockMs`; `0` keeps such groups.
   * @defaultValue 600000
   */
  staleGroupMs?: number;
  /**
   * Where a new consumer group starts when `TransportSubscribeOptions.startFrom` is not given:
   * `'new'` (events published after the subscription started) or `'earliest'` (everything
   * still in the stream). An existing group continues where it is.
   * @defaultValue `'new'`
   */
  startFrom?: RedisStartFrom;
  /**
   * Start of every consumer name; a unique suffix per subscription is added.
   * @defaultValue `'{hostname}-{pid}'`
   */
  consumerPrefix?: string;
  /**
   * Consumer group of `consumeDlq` when none is given.
   * @defaultValue `'watchtower-dlq'`
   */
  dlqGroup?: string;
  /**
   * The `timeoutMs` of a `close()` that gives none. Every step of `close()` (stopping the
   * subscriptions, waiting for in-flight deliveries, sending the acks, `QUIT`) shares this one
   * deadline; when Redis does not answer by then, the connections are dropped and `close()`
   * resolves (entries not settled stay pending and are delivered again).
   * @defaultValue 10000
   */
  closeTimeoutMs?: number;
  /**
   * How long `unsubscribe()` waits for Redis (handing back what no handler saw, destroying an
   * own group) before it resolves anyway; the rest goes on in the background, and `close()`
   * waits for it within its own deadline.
   * @defaultValue 5000
   */
  unsubscribeTimeoutMs?: number;
  /**
   * Time limit of the `PING` in `healthCheck()`, in milliseconds; on a Redis Cluster also of
   * the probe that decides whether the connection is reported lost (no answer in time: lost).
   * @defaultValue 2000
   */
  healthCheckTimeoutMs?: number;
  /**
   * Timers and timestamps: retries, claim passes, discovery, the health check's limit, the
   * stale-group sweep, backoff after a failed read and the deadlines of `close()` and
   * `unsubscribe()`. Redis' own `TIME` still gives the start of a new group.
   * @defaultValue `systemClock`
   */
  clock?: Clock;
}

/** Every field of {@link RedisConfig}: anything else is refused, so a misspelt one is not ignored. */
export const REDIS_CONFIG_KEYS = [
  'url',
  'redis',
  'cluster',
  'prefix',
  'dlqStream',
  'maxLen',
  'dedupeWindowMs',
  'waitReplicas',
  'waitTimeoutMs',
  'dlqMaxLen',
  'approximateTrim',
  'blockMs',
  'count',
  'maxInFlight',
  'discoveryIntervalMs',
  'announceStreams',
  'claimMinIdleMs',
  'claimIntervalMs',
  'staleGroupMs',
  'startFrom',
  'consumerPrefix',
  'dlqGroup',
  'closeTimeoutMs',
  'unsubscribeTimeoutMs',
  'healthCheckTimeoutMs',
  'clock',
] as const satisfies ReadonlyArray<keyof RedisConfig>;

const CLUSTER_KEYS = Object.keys({
  nodes: true,
  options: true,
} satisfies Record<keyof RedisClusterConfig, true>);

// A field added to RedisConfig and not listed above fails to compile.
type Unlisted = Exclude<keyof RedisConfig, (typeof REDIS_CONFIG_KEYS)[number]>;
const everyFieldListed: [Unlisted] extends [never] ? true : Unlisted = true;
void everyFieldListed;

/** The default prefix with {@link RedisConfig.cluster}: a hash tag, so all streams share a slot. */
export const DEFAULT_CLUSTER_PREFIX = '{watchtower}';

/** The defaults of {@link RedisConfig}. */
export const DEFAULT_REDIS_CONFIG = Object.freeze({
  url: 'redis://127.0.0.1:6379',
  prefix: 'watchtower',
  maxLen: 100_000,
  dlqMaxLen: 100_000,
  approximateTrim: true,
  dedupeWindowMs: 0,
  waitReplicas: 0,
  waitTimeoutMs: 1000,
  blockMs: 2000,
  count: 100,
  maxInFlight: 256,
  discoveryIntervalMs: 1000,
  announceStreams: true,
  claimMinIdleMs: 30_000,
  claimIntervalMs: 1000,
  staleGroupMs: 600_000,
  startFrom: 'new',
  dlqGroup: 'watchtower-dlq',
  closeTimeoutMs: 10_000,
  unsubscribeTimeoutMs: DEFAULT_UNSUBSCRIBE_TIMEOUT_MS,
  healthCheckTimeoutMs: 2000,
  clock: systemClock,
});

/** A validated {@link RedisConfig} with every default filled in. */
export interface ResolvedRedisConfig {
  readonly url: string;
  readonly redis: RedisOptions;
  readonly cluster: RedisClusterConfig | undefined;
  readonly prefix: string;
  readonly dlqStream: string;
  readonly maxLen: number | null;
  readonly dlqMaxLen: number | null;
  readonly approximateTrim: boolean;
  readonly dedupeWindowMs: number;
  readonly waitReplicas: number;
  readonly waitTimeoutMs: number;
  readonly blockMs: number;
  readonly count: number;
  readonly maxInFlight: number;
  readonly discoveryIntervalMs: number;
  readonly announceStreams: boolean;
  readonly claimMinIdleMs: number;
  readonly claimIntervalMs: number;
  readonly staleGroupMs: number;
  readonly startFrom: RedisStartFrom;
  readonly consumerPrefix: string | undefined;
  readonly dlqGroup: string;
  readonly closeTimeoutMs: number;
  readonly unsubscribeTimeoutMs: number;
  readonly healthCheckTimeoutMs: number;
  readonly clock: Clock;
}

const REDIS_URL = /^rediss?:\/\//;
const NO_WHITESPACE = /^\S+$/;

/**
 * Merges `config` over {@link DEFAULT_REDIS_CONFIG} and validates it, one section at a time.
 *
 * @throws a `CONFIG` error naming the first bad field.
 */
export function resolveRedisConfig(config: RedisConfig = {}): ResolvedRedisConfig {
  if (typeof config !== 'object' || config === null) {
    throw configError('config', `must be an options object, got ${describeValue(config)}`);
  }
  rejectUnknownOptions(config, REDIS_CONFIG_KEYS, 'RedisTransport');
  const connection = resolveConnection(config);
  return {
    ...connection,
    ...resolveKeys(config, connection.cluster !== undefined),
    ...resolveTrimming(config),
    ...resolveReplication(config, connection),
    ...resolveReading(config),
    ...resolveClaiming(config),
    ...resolveTimeouts(config),
  };
}

function resolveConnection(
  config: RedisConfig,
): Pick<ResolvedRedisConfig, 'url' | 'redis' | 'cluster'> {
  const url = stringOption('url', config.url ?? DEFAULT_REDIS_CONFIG.url, {
    pattern: REDIS_URL,
    hint: 'a redis:// or rediss:// URL',
  });
  const redis = recordOption('redis', config.redis, 'an object of ioredis options') ?? {};
  const cluster = config.cluster === undefined ? undefined : resolveCluster(config.cluster, url);
  // ioredis adds `keyPrefix` to command keys but neither to SCAN's pattern nor strips it from
  // SCAN's results, so discovered streams would be prefixed twice and never read: use `prefix`.
  rejectKeyPrefix('redis.keyPrefix', redis);
  rejectKeyPrefix('cluster.options.keyPrefix', cluster?.options);
  rejectKeyPrefix('cluster.options.redisOptions.keyPrefix', cluster?.options?.redisOptions);
  return { url, redis, cluster };
}

function resolveCluster(input: RedisClusterConfig, url: string): RedisClusterConfig {
  const cluster = objectOption('cluster', input, CLUSTER_KEYS);
  const { nodes } = cluster;
  if (nodes !== undefined && (!Array.isArray(nodes) || nodes.length === 0)) {
    throw configError(
      'cluster.nodes',
      `must be a non-empty array of startup nodes, got ${describeValue(nodes)}`,
    );
  }
  recordOption('cluster.options', cluster.options, 'an object of ioredis Cluster options');
  // A Redis Cluster has database 0 only; a database in the URL would be ignored.
  const db = new URL(url).pathname.replace(/^\//, '');
  if (db !== '' && db !== '0') {
    throw configError(
      'url',
      `must name no database or database 0 on a Redis Cluster (the only one it has), got database ${describeValue(db)}`,
    );
  }
  return cluster;
}

function rejectKeyPrefix(field: string, options: { keyPrefix?: unknown } | undefined): void {
  if (options?.keyPrefix !== undefined && options.keyPrefix !== '') {
    throw configError(
      field,
      `must not be set: the transport names its keys itself, use \`prefix\` instead; got ${describeValue(options.keyPrefix)}`,
    );
  }
}

function resolveKeys(
  config: RedisConfig,
  onCluster: boolean,
): Pick<ResolvedRedisConfig, 'prefix' | 'dlqStream' | 'consumerPrefix' | 'dlqGroup'> {
  const defaultPrefix = onCluster ? DEFAULT_CLUSTER_PREFIX : DEFAULT_REDIS_CONFIG.prefix;
  const prefix = stringOption('prefix', config.prefix ?? defaultPrefix, {
    pattern: NO_WHITESPACE,
    hint: 'a non-empty string without whitespace',
  });
  if (onCluster && hashTagOf(prefix) === undefined) {
    throw configError(
      'prefix',
      `must contain a hash tag such as "{${prefix}}" on a Redis Cluster, so that all streams share one slot; got ${describeValue(prefix)}`,
    );
  }
  const { consumerPrefix } = config;
  return {
    prefix,
    dlqStream: stringOption('dlqStream', config.dlqStream ?? defaultDlqKey(prefix)),
    consumerPrefix:
      consumerPrefix === undefined ? undefined : stringOption('consumerPrefix', consumerPrefix),
    dlqGroup: stringOption('dlqGroup', config.dlqGroup ?? DEFAULT_REDIS_CONFIG.dlqGroup),
  };
}

function resolveTrimming(
  config: RedisConfig,
): Pick<ResolvedRedisConfig, 'maxLen' | 'dlqMaxLen' | 'approximateTrim' | 'dedupeWindowMs'> {
  const d = DEFAULT_REDIS_CONFIG;
  return {
    maxLen: trimLengthOption('maxLen', config.maxLen === undefined ? d.maxLen : config.maxLen),
    dlqMaxLen: trimLengthOption(
      'dlqMaxLen',
      config.dlqMaxLen === undefined ? d.dlqMaxLen : config.dlqMaxLen,
    ),
    approximateTrim: booleanOption('approximateTrim', config.approximateTrim ?? d.approximateTrim),
    dedupeWindowMs: redisInteger('dedupeWindowMs', config.dedupeWindowMs ?? d.dedupeWindowMs, 0),
  };
}

function resolveReplication(
  config: RedisConfig,
  connection: Pick<ResolvedRedisConfig, 'redis' | 'cluster'>,
): Pick<ResolvedRedisConfig, 'waitReplicas' | 'waitTimeoutMs'> {
  const d = DEFAULT_REDIS_CONFIG;
  const waitReplicas = redisInteger('waitReplicas', config.waitReplicas ?? d.waitReplicas, 0);
  if (config.waitTimeoutMs !== undefined && waitReplicas === 0) {
    throw configError(
      'waitTimeoutMs',
      `has no effect without waitReplicas (writes wait for no replica), got ${describeValue(config.waitTimeoutMs)}`,
    );
  }
  const waitTimeoutMs = redisInteger('waitTimeoutMs', config.waitTimeoutMs ?? d.waitTimeoutMs, 1);
  // A command timeout shorter than WAIT's would cut every WAIT that has to wait.
  const commandTimeout =
    connection.cluster?.options?.redisOptions?.commandTimeout ?? connection.redis.commandTimeout;
  if (waitReplicas > 0 && commandTimeout !== undefined && commandTimeout <= waitTimeoutMs) {
    throw configError(
      'waitTimeoutMs',
      `must be below the ioredis commandTimeout (${commandTimeout} ms), which would cut off the WAIT, got ${waitTimeoutMs}`,
    );
  }
  return { waitReplicas, waitTimeoutMs };
}

/** A `MAXLEN` bound: `null` (keep everything) or an integer >= 1. */
function trimLengthOption(field: string, value: unknown): number | null {
  return value === null ? null : redisInteger(field, value, 1);
}

function resolveReading(
  config: RedisConfig,
): Pick<
  ResolvedRedisConfig,
  | 'blockMs'
  | 'count'
  | 'maxInFlight'
  | 'discoveryIntervalMs'
  | 'announceStreams'
  | 'staleGroupMs'
  | 'startFrom'
> {
  const d = DEFAULT_REDIS_CONFIG;
  // BLOCK 0 would block forever; at least 1 ms keeps the read loop responsive.
  const blockMs = redisInteger('blockMs', config.blockMs ?? d.blockMs, 1);
  const staleGroupMs = redisInteger('staleGroupMs', config.staleGroupMs ?? d.staleGroupMs, 0);
  // A live consumer reads at least once per blockMs: a shorter limit would take it for dead.
  if (staleGroupMs !== 0 && staleGroupMs <= blockMs) {
    throw configError(
      'staleGroupMs',
      `must be 0 or more than blockMs (${blockMs}), got ${staleGroupMs}`,
    );
  }
  return {
    blockMs,
    count: redisInteger('count', config.count ?? d.count, 1),
    maxInFlight: redisInteger('maxInFlight', config.maxInFlight ?? d.maxInFlight, 1),
    discoveryIntervalMs: redisInteger(
      'discoveryIntervalMs',
      config.discoveryIntervalMs ?? d.discoveryIntervalMs,
      1,
    ),
    announceStreams: booleanOption('announceStreams', config.announceStreams ?? d.announceStreams),
    staleGroupMs,
    startFrom: oneOfOption('startFrom', config.startFrom ?? d.startFrom, ['new', 'earliest']),
  };
}

function resolveClaiming(
  config: RedisConfig,
): Pick<ResolvedRedisConfig, 'claimMinIdleMs' | 'claimIntervalMs'> {
  const d = DEFAULT_REDIS_CONFIG;
  const claimMinIdleMs = redisInteger(
    'claimMinIdleMs',
    config.claimMinIdleMs ?? d.claimMinIdleMs,
    1,
  );
  const claimIntervalMs = redisInteger(
    'claimIntervalMs',
    config.claimIntervalMs ?? d.claimIntervalMs,
    1,
  );
  // Held entries are refreshed once per interval; at more than half the idle time a slow but
  // live handler could lose its entry to another consumer.
  if (claimIntervalMs * 2 > claimMinIdleMs) {
    throw configError(
      'claimIntervalMs',
      `must be at most half of claimMinIdleMs (${claimMinIdleMs}), got ${claimIntervalMs}`,
    );
  }
  return { claimMinIdleMs, claimIntervalMs };
}

function resolveTimeouts(
  config: RedisConfig,
): Pick<
  ResolvedRedisConfig,
  'closeTimeoutMs' | 'unsubscribeTimeoutMs' | 'healthCheckTimeoutMs' | 'clock'
> {
  const d = DEFAULT_REDIS_CONFIG;
  return {
    closeTimeoutMs: redisInteger('closeTimeoutMs', config.closeTimeoutMs ?? d.closeTimeoutMs, 0),
    unsubscribeTimeoutMs: redisInteger(
      'unsubscribeTimeoutMs',
      config.unsubscribeTimeoutMs ?? d.unsubscribeTimeoutMs,
      0,
    ),
    healthCheckTimeoutMs: redisInteger(
      'healthCheckTimeoutMs',
      config.healthCheckTimeoutMs ?? d.healthCheckTimeoutMs,
      1,
    ),
    clock: config.clock === undefined ? d.clock : clockOption('clock', config.clock),
  };
}

// Redis reads these as integers; past 2^53 a JavaScript number no longer holds the one meant.
function redisInteger(field: string, value: unknown, min: number): number {
  return integerOption(field, value, min, { max: Number.MAX_SAFE_INTEGER });
}
