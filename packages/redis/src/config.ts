import { configError, rejectUnknownOptions } from '@watchtower/core';
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
   * received.
   * @defaultValue 1000
   */
  discoveryIntervalMs?: number;
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
   * How long `close()` waits for in-flight deliveries when no `timeoutMs` is given. The steps
   * around that wait that talk to Redis (stopping the subscriptions, sending the acks, `QUIT`)
   * are limited to this value kept between 1 and 5 s each, so `close()` also ends while Redis
   * is unreachable.
   * @defaultValue 10000
   */
  closeTimeoutMs?: number;
  /**
   * Time limit of the `PING` in `healthCheck()`, in milliseconds.
   * @defaultValue 2000
   */
  healthCheckTimeoutMs?: number;
}

/** Every field of {@link RedisConfig}: anything else is refused, so a misspelt one is not ignored. */
export const REDIS_CONFIG_KEYS = [
  'url',
  'redis',
  'cluster',
  'prefix',
  'dlqStream',
  'maxLen',
  'dlqMaxLen',
  'approximateTrim',
  'blockMs',
  'count',
  'maxInFlight',
  'discoveryIntervalMs',
  'claimMinIdleMs',
  'claimIntervalMs',
  'staleGroupMs',
  'startFrom',
  'consumerPrefix',
  'dlqGroup',
  'closeTimeoutMs',
  'healthCheckTimeoutMs',
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
  blockMs: 2000,
  count: 100,
  maxInFlight: 256,
  discoveryIntervalMs: 1000,
  claimMinIdleMs: 30_000,
  claimIntervalMs: 1000,
  staleGroupMs: 600_000,
  startFrom: 'new',
  dlqGroup: 'watchtower-dlq',
  closeTimeoutMs: 10_000,
  healthCheckTimeoutMs: 2000,
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
  readonly blockMs: number;
  readonly count: number;
  readonly maxInFlight: number;
  readonly discoveryIntervalMs: number;
  readonly claimMinIdleMs: number;
  readonly claimIntervalMs: number;
  readonly staleGroupMs: number;
  readonly startFrom: RedisStartFrom;
  readonly consumerPrefix: string | undefined;
  readonly dlqGroup: string;
  readonly closeTimeoutMs: number;
  readonly healthCheckTimeoutMs: number;
}

function integer(field: string, value: unknown, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw configError(field, `expected an integer >= ${min}, got ${describe(value)}`);
  }
  return value;
}

function trimLength(field: string, value: unknown): number | null {
  if (value === null) return null;
  return integer(field, value, 1);
}

function nonEmptyString(field: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) {
    throw configError(field, `expected a non-empty string, got ${describe(value)}`);
  }
  return value;
}

function rejectKeyPrefix(field: string, options: { keyPrefix?: unknown } | undefined): void {
  if (options?.keyPrefix !== undefined && options.keyPrefix !== '') {
    throw configError(
      field,
      `is not supported: the transport names its keys itself; use \`prefix\` instead (got ${describe(options.keyPrefix)})`,
    );
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value == null)
    return String(value);
  return typeof value;
}

/**
 * Merges `config` over {@link DEFAULT_REDIS_CONFIG} and validates it.
 *
 * @throws a `CONFIG` error naming the first bad field.
 */
export function resolveRedisConfig(config: RedisConfig = {}): ResolvedRedisConfig {
  if (typeof config !== 'object' || config === null) {
    throw configError('config', `expected an object, got ${describe(config)}`);
  }
  rejectUnknownOptions(config, REDIS_CONFIG_KEYS, 'RedisTransport');
  const d = DEFAULT_REDIS_CONFIG;
  const url = nonEmptyString('url', config.url ?? d.url);
  if (!/^rediss?:\/\//.test(url)) {
    throw configError('url', `expected a redis:// or rediss:// URL, got ${JSON.stringify(url)}`);
  }
  if (config.redis !== undefined && (typeof config.redis !== 'object' || config.redis === null)) {
    throw configError(
      'redis',
      `expected ioredis options (an object), got ${describe(config.redis)}`,
    );
  }
  const cluster = config.cluster;
  if (cluster !== undefined) {
    if (typeof cluster !== 'object' || cluster === null) {
      throw configError('cluster', `expected an object, got ${describe(cluster)}`);
    }
    rejectUnknownOptions(cluster, CLUSTER_KEYS, 'cluster');
    if (
      cluster.nodes !== undefined &&
      (!Array.isArray(cluster.nodes) || cluster.nodes.length === 0)
    ) {
      throw configError('cluster.nodes', 'expected a non-empty array of startup nodes');
    }
    if (
      cluster.options !== undefined &&
      (typeof cluster.options !== 'object' || cluster.options === null)
    ) {
      throw configError(
        'cluster.options',
        `expected ioredis Cluster options (an object), got ${describe(cluster.options)}`,
      );
    }
    // A Redis Cluster has database 0 only; a database in the URL would be ignored.
    const db = new URL(url).pathname.replace(/^\//, '');
    if (db !== '' && db !== '0') {
      throw configError(
        'url',
        `a Redis Cluster has only database 0, got database ${JSON.stringify(db)} in the URL`,
      );
    }
  }
  // ioredis adds `keyPrefix` to command keys but neither to SCAN's pattern nor strips it from
  // SCAN's results, so discovered streams would be prefixed twice and never read: use `prefix`.
  rejectKeyPrefix('redis.keyPrefix', config.redis);
  rejectKeyPrefix('cluster.options.keyPrefix', cluster?.options);
  rejectKeyPrefix('cluster.options.redisOptions.keyPrefix', cluster?.options?.redisOptions);
  const prefix = nonEmptyString(
    'prefix',
    config.prefix ?? (cluster === undefined ? d.prefix : DEFAULT_CLUSTER_PREFIX),
  );
  if (/\s/.test(prefix))
    throw configError('prefix', `must not contain whitespace, got ${JSON.stringify(prefix)}`);
  if (cluster !== undefined && hashTagOf(prefix) === undefined) {
    throw configError(
      'prefix',
      `on a Redis Cluster the prefix must contain a hash tag such as "{${prefix}}" so that all streams share one slot, got ${JSON.stringify(prefix)}`,
    );
  }
  const dlqStream = nonEmptyString('dlqStream', config.dlqStream ?? defaultDlqKey(prefix));
  const startFrom = config.startFrom ?? d.startFrom;
  if (startFrom !== 'new' && startFrom !== 'earliest') {
    throw configError('startFrom', `expected 'new' or 'earliest', got ${describe(startFrom)}`);
  }
  const approximateTrim = config.approximateTrim ?? d.approximateTrim;
  if (typeof approximateTrim !== 'boolean') {
    throw configError('approximateTrim', `expected a boolean, got ${describe(approximateTrim)}`);
  }
  const claimMinIdleMs = integer('claimMinIdleMs', config.claimMinIdleMs ?? d.claimMinIdleMs, 1);
  const claimIntervalMs = integer(
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
  // BLOCK 0 would block forever; at least 1 ms keeps the read loop responsive.
  const blockMs = integer('blockMs', config.blockMs ?? d.blockMs, 1);
  const staleGroupMs = integer('staleGroupMs', config.staleGroupMs ?? d.staleGroupMs, 0);
  // A live consumer reads at least once per blockMs: a shorter limit would take it for dead.
  if (staleGroupMs !== 0 && staleGroupMs <= blockMs) {
    throw configError(
      'staleGroupMs',
      `must be 0 or more than blockMs (${blockMs}), got ${staleGroupMs}`,
    );
  }
  const consumerPrefix =
    config.consumerPrefix === undefined
      ? undefined
      : nonEmptyString('consumerPrefix', config.consumerPrefix);
  return {
    url,
    redis: config.redis ?? {},
    cluster,
    prefix,
    dlqStream,
    maxLen: trimLength('maxLen', config.maxLen === undefined ? d.maxLen : config.maxLen),
    dlqMaxLen: trimLength(
      'dlqMaxLen',
      config.dlqMaxLen === undefined ? d.dlqMaxLen : config.dlqMaxLen,
    ),
    approximateTrim,
    blockMs,
    count: integer('count', config.count ?? d.count, 1),
    maxInFlight: integer('maxInFlight', config.maxInFlight ?? d.maxInFlight, 1),
    discoveryIntervalMs: integer(
      'discoveryIntervalMs',
      config.discoveryIntervalMs ?? d.discoveryIntervalMs,
      1,
    ),
    claimMinIdleMs,
    claimIntervalMs,
    staleGroupMs,
    startFrom,
    consumerPrefix,
    dlqGroup: nonEmptyString('dlqGroup', config.dlqGroup ?? d.dlqGroup),
    closeTimeoutMs: integer('closeTimeoutMs', config.closeTimeoutMs ?? d.closeTimeoutMs, 0),
    healthCheckTimeoutMs: integer(
      'healthCheckTimeoutMs',
      config.healthCheckTimeoutMs ?? d.healthCheckTimeoutMs,
      1,
    ),
  };
}
