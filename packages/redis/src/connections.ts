/**
 * How the transport's ioredis connections are made (the shared one, and one per subscription
 * for its blocking reads) and how they are dropped so that their pending commands end. Kept
 * apart from the transport because it is all ioredis settings and quirks; nothing here sends a
 * command or keeps state.
 */
import { CLOSE_MARGIN_MS } from '@watchtower/core/transport-kit';
import { Cluster, Redis, type ClusterNode, type RedisOptions } from 'ioredis';
import type { ResolvedRedisConfig } from './config.js';
import { XADD_ONCE, XADD_ONCE_COMMAND } from './publish-batcher.js';

/** A standalone connection or a cluster. */
export type RedisClient = Redis | Cluster;

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

/**
 * How long a dropped connection waits for a server that does not answer its FIN (a paused
 * process) before its socket is destroyed, which is what ends its pending commands: within the
 * margin `close()` has beyond its deadline. `redis.disconnectTimeout` overrides it.
 */
const DROP_TIMEOUT_MS = Math.floor(CLOSE_MARGIN_MS / 2);

/**
 * Waits between reconnect attempts, unless `redis.retryStrategy` says otherwise: 50 ms more
 * per attempt, at most 500 ms, so a server that is back is found within about half a second
 * (ioredis' own default grows to 2 s).
 */
export function reconnectDelay(attempt: number): number {
  return Math.min(attempt * 50, MAX_RECONNECT_DELAY_MS);
}

const MAX_RECONNECT_DELAY_MS = 500;

/** The shared connection (not yet connected). */
export function createClient(config: ResolvedRedisConfig, name: string): RedisClient {
  const cluster = config.cluster;
  if (cluster === undefined) {
    const options: RedisOptions = {
      connectionName: name,
      disconnectTimeout: DROP_TIMEOUT_MS,
      retryStrategy: reconnectDelay,
      ...config.redis,
      autoPipeliningIgnoredCommands: withCallExcluded(config.redis.autoPipeliningIgnoredCommands),
      lazyConnect: true,
    };
    return withScripts(new Redis(config.url, options));
  }
  const url = new URL(config.url);
  const urlOptions: RedisOptions = {};
  if (url.username !== '') urlOptions.username = decodeURIComponent(url.username);
  if (url.password !== '') urlOptions.password = decodeURIComponent(url.password);
  if (url.protocol === 'rediss:') urlOptions.tls = {};
  const nodes: ClusterNode[] = cluster.nodes ?? [
    { host: url.hostname, port: url.port === '' ? 6379 : Number(url.port) },
  ];
  return withScripts(
    new Cluster(nodes, {
      ...cluster.options,
      autoPipeliningIgnoredCommands: withCallExcluded(
        cluster.options?.autoPipeliningIgnoredCommands,
      ),
      lazyConnect: true,
      redisOptions: {
        connectionName: name,
        disconnectTimeout: DROP_TIMEOUT_MS,
        retryStrategy: reconnectDelay,
        ...urlOptions,
        ...config.redis,
        ...cluster.options?.redisOptions,
      },
    }),
  );
}

/** Defines the transport's scripts on `client` (sent with `EVALSHA`, loaded when missing). */
function withScripts<C extends RedisClient>(client: C): C {
  client.defineCommand(XADD_ONCE_COMMAND, { numberOfKeys: 2, lua: XADD_ONCE });
  return client;
}

/**
 * A connection of its own (not yet connected): for one subscription's blocking reads, or for
 * listening to stream announcements.
 */
export function createBlockingConnection(
  client: RedisClient,
  config: ResolvedRedisConfig,
  consumer: string,
): RedisClient {
  const timeout = config.redis.commandTimeout;
  const overrides: Partial<RedisOptions> = {
    connectionName: `watchtower:${consumer}`,
    lazyConnect: true,
    enableAutoPipelining: false,
    // The read loop retries on its own; a read waits in the offline queue while reconnecting.
    maxRetriesPerRequest: null,
  };
  // A blocking read takes blockMs by design: a command timeout must not cut it.
  if (timeout !== undefined) overrides.commandTimeout = config.blockMs + timeout;
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

/**
 * Drops a connection so that its pending commands end (with "Connection is closed."), whatever
 * the server does. `disconnect()` alone leaves them queued while ioredis waits to reconnect
 * (status `reconnecting`: there is no socket whose close would flush the offline queue), so a
 * connect attempt is started and closed at once, which flushes it.
 */
export function dropConnection(client: RedisClient): void {
  client.disconnect();
  if (client.status === 'reconnecting') {
    client.connect().catch(() => {
      // Closed below on purpose.
    });
    client.disconnect();
  }
}

/** What the connection goes to, for messages: the URL without its password, or the cluster. */
export function describeTarget(config: ResolvedRedisConfig): string {
  if (config.cluster !== undefined) {
    return `Redis Cluster (${config.cluster.nodes?.length ?? 1} startup nodes)`;
  }
  try {
    const parsed = new URL(config.url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return '<invalid url>';
  }
}
