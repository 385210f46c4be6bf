/**
 * The publish path of the transport: the `XADD`s of one turn sent together, and the
 * announcement of a stream published to for the first time, in the same write. It is apart
 * from the transport because it is the hot path: nothing here may cost a publish to a known
 * stream more than the `XADD` itself.
 */
import { TurnBatcher } from '@watchtower/core/transport-kit';
import type { Redis, RedisValue } from 'ioredis';
import type { RedisClient } from './connections.js';
import { ReplicationTimeoutError } from './replication-error.js';

/**
 * A stream the transport publishes to, remembered per event type: its key, and whether it
 * still has to be announced (see {@link PublishBatcher}).
 */
export interface PublishTarget {
  readonly key: string;
  /** The sorted set of the ids written to `key` lately, when writes are deduplicated. */
  readonly dedupeKey: string;
  /** True until a publish to it has announced it (always false with announcements off). */
  unannounced: boolean;
}

interface QueuedXadd {
  readonly target: PublishTarget;
  readonly body: string;
  /** The event's id: the key of the write, when writes are deduplicated. */
  readonly id: string;
  /** This publish announces its stream (the first to it, or the first after a failed one). */
  readonly announce: boolean;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/** Where announcements go, and who hears of one that failed. */
export interface Announcing {
  /** The registry set and the channel: {@link streamRegistryKey}. */
  readonly registry: string;
  /**
   * The `SADD` or the `PUBLISH` of an announcement failed (the `XADD` did not): the stream is
   * announced again by its next publish, and the discovery scan finds it meanwhile.
   */
  readonly failed: (error: unknown, key: string) => void;
}

/** `WAIT replicas timeoutMs` after the writes of a batch (`waitReplicas`). */
export interface ReplicaWait {
  readonly replicas: number;
  readonly timeoutMs: number;
}

/**
 * Why a write confirmed by `WAIT`'s reply (`[error, count]` of a pipeline) is not to be
 * confirmed: the `WAIT` failed, or fewer replicas than asked have it. `undefined`: confirmed.
 */
export function replicaShortfall(
  wait: ReplicaWait,
  reply: [Error | null, unknown] | undefined,
  what: string,
): Error | undefined {
  if (reply === undefined) return new Error('the WAIT after the write returned no reply');
  if (reply[0] !== null) return reply[0];
  const acknowledged = Number(reply[1]);
  if (acknowledged >= wait.replicas) return undefined;
  return new ReplicationTimeoutError(what, acknowledged, wait.replicas, wait.timeoutMs);
}

/** The name under which {@link XADD_ONCE} is defined on every connection of the transport. */
export const XADD_ONCE_COMMAND = 'watchtowerXaddOnce';

/**
 * `XADD` unless the event id was written to the stream within the window: KEYS[1] the stream,
 * KEYS[2] a sorted set of ids scored by when they expire (one key per stream, trimmed as it
 * goes, expiring as a whole when the stream is idle); ARGV[1] the id, ARGV[2] the window in
 * ms, the rest the `XADD` arguments. Returns the entry id, or false for a write already made.
 */
export const XADD_ONCE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = redis.call('ZSCORE', KEYS[2], ARGV[1])
if expires and tonumber(expires) > now then return false end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('XADD', KEYS[1], unpack(ARGV, 3))
`;

/** A connection or pipeline with {@link XADD_ONCE} defined on it. */
type WithXaddOnce = Record<
  typeof XADD_ONCE_COMMAND,
  (key: string, dedupeKey: string, id: string, windowMs: number, ...args: RedisValue[]) => unknown
>;

/**
 * Sends the `XADD`s of one turn of promise work ({@link TurnBatcher}) together: one socket
 * write and one round trip, as a caller pipelining by hand gets. On a single Redis connection
 * they are plain commands written while the socket is corked (one `writev` for the batch),
 * which costs the client about 2 µs less per event than a `pipeline()` with its own bookkeeping;
 * a batch that announces a stream, waits for replicas, or goes to a Redis Cluster is a
 * `pipeline()`. A publish alone in its turn is a plain command either way.
 *
 * The first publish to a stream also announces it: `SADD registry key` and `PUBLISH registry
 * key` right after its `XADD`, in the same pipeline, so that wildcard subscriptions of every
 * process start reading it at once; the stream exists by the time they hear of it. Only that
 * publish pays for it (two small commands in a write that goes out anyway).
 *
 * Redis answers each command of a pipeline on its own: each publish settles with its own reply
 * (a `WRONGTYPE` on one stream fails only the publishes to that stream). Entries keep the order
 * of the `xadd` calls: one connection, commands written in that order.
 *
 * On a Redis Cluster a pipeline must stay within one slot. Every event stream of a transport
 * and its registry carry the prefix's hash tag (the configuration requires one on a cluster),
 * hence one slot; `PUBLISH` has no key.
 *
 * With `wait` (`waitReplicas`) every batch, one publish included, is a pipeline ending in
 * `WAIT n timeoutMs` on the same connection, which answers once `n` replicas have every write
 * before it: a publish resolves only then, and rejects with {@link ReplicationTimeoutError}
 * when fewer had it in time. One `WAIT` per batch, not per event.
 *
 * Rejections carry the driver's error as `mapError` maps it, with the key it was for.
 */
export class PublishBatcher {
  readonly #turn = new TurnBatcher<QueuedXadd>((batch) => this.#send(batch), 'tick');

  /**
   * @param client - the connection, asked at flush time; a publish connects before it queues.
   * @param head - the arguments between the key and the body: `[MAXLEN, ~, n,] *, event`.
   * @param mapError - what a publish rejects with, from the driver's error for its key.
   * @param announcing - where first publishes announce their stream; `undefined`: nowhere.
   * @param dedupeWindowMs - writes are made once per event id within this window (`0`: plain
   *   `XADD`s); the connection must have {@link XADD_ONCE} defined.
   * @param wait - publishes resolve once this many replicas have them; `undefined`: once the
   *   master has them.
   */
  constructor(
    private readonly client: () => RedisClient,
    private readonly head: readonly RedisValue[],
    private readonly mapError: (error: unknown, key: string) => unknown,
    private readonly announcing: Announcing | undefined,
    private readonly dedupeWindowMs = 0,
    private readonly wait: ReplicaWait | undefined = undefined,
  ) {}

  /**
   * Queues `XADD key ...head body` for this turn's flush, with the announcement of the stream
   * when it has not been announced yet. Resolves when Redis has the entry; rejects with
   * `mapError` of the driver's error for this command.
   */
  xadd(target: PublishTarget, body: string, id: string): Promise<void> {
    const announce = target.unannounced;
    // One publish announces; should it fail, the next one does.
    if (announce) target.unannounced = false;
    return new Promise<void>((resolve, reject) => {
      this.#turn.add({ target, body, id, announce, resolve, reject });
    });
  }

  /** The write of `item` on `on` (the connection, or a pipeline of it). */
  #write(on: RedisClient | ReturnType<RedisClient['pipeline']>, item: QueuedXadd): unknown {
    if (this.dedupeWindowMs === 0) return on.xadd(item.target.key, ...this.head, item.body);
    return (on as unknown as WithXaddOnce)[XADD_ONCE_COMMAND](
      item.target.key,
      item.target.dedupeKey,
      item.id,
      this.dedupeWindowMs,
      ...this.head,
      item.body,
    );
  }

  #fail(item: QueuedXadd, error: unknown): void {
    if (item.announce) item.target.unannounced = true;
    item.reject(this.mapError(error, item.target.key));
  }

  /**
   * Sends what is queued now, without waiting for the scheduled flush (which then finds
   * nothing to send): `close()` calls it so that publishes made before it go out before `QUIT`.
   * Never throws; failures reject the publishes concerned.
   */
  flush(): void {
    this.#turn.flush();
  }

  #send(batch: readonly QueuedXadd[]): void {
    try {
      const client = this.client();
      if (this.wait === undefined && !batch.some((item) => item.announce)) {
        const only = batch.length === 1 ? (batch[0] as QueuedXadd) : undefined;
        if (only !== undefined) this.#sendPlain(client, only);
        else if (!client.isCluster) this.#sendCorked(client as Redis, batch);
        else this.#sendPipeline(client, batch);
        return;
      }
      this.#sendPipeline(client, batch);
    } catch (error) {
      for (const item of batch) this.#fail(item, error);
    }
  }

  /** `item`'s XADD as a command of its own; settles `item` with its reply. */
  #sendPlain(client: RedisClient, item: QueuedXadd): void {
    try {
      (this.#write(client, item) as Promise<unknown>).then(
        () => item.resolve(),
        (error: unknown) => this.#fail(item, error),
      );
    } catch (error) {
      this.#fail(item, error);
    }
  }

  /**
   * The batch's XADDs as plain commands, written while the connection's socket is corked, so
   * that they leave in one write. Uncorked before returning: nothing waits for a later turn.
   * A connection not ready yet queues the commands itself and writes them once it is.
   */
  #sendCorked(client: Redis, batch: readonly QueuedXadd[]): void {
    const socket = client.status === 'ready' ? corkable(client.stream) : undefined;
    socket?.cork();
    try {
      for (const item of batch) this.#sendPlain(client, item);
    } finally {
      socket?.uncork();
    }
  }

  #sendPipeline(client: RedisClient, batch: readonly QueuedXadd[]): void {
    try {
      const pipeline = client.pipeline();
      const announcing = this.announcing;
      for (const item of batch) {
        const { key } = item.target;
        this.#write(pipeline, item);
        if (item.announce && announcing !== undefined) {
          pipeline.sadd(announcing.registry, key);
          pipeline.publish(announcing.registry, key);
        }
      }
      if (this.wait !== undefined) pipeline.call('WAIT', this.wait.replicas, this.wait.timeoutMs);
      pipeline.exec().then(
        (replies) => this.#settle(batch, replies),
        (error: unknown) => {
          // The pipeline as a whole failed (e.g. no cluster slots): none of it was sent.
          for (const item of batch) this.#fail(item, error);
        },
      );
    } catch (error) {
      for (const item of batch) this.#fail(item, error);
    }
  }

  /**
   * Settles each publish with the reply of its `XADD` (and of the `WAIT` that ends the batch,
   * with `wait`); reports failed announcements.
   */
  #settle(batch: readonly QueuedXadd[], replies: [Error | null, unknown][] | null): void {
    const announcing = this.announcing;
    const wait = this.wait;
    const waited = wait === undefined ? undefined : replies?.[replies.length - 1];
    let at = 0;
    for (const item of batch) {
      // [error, result] per command; exec() yields null only for an aborted MULTI.
      const reply = replies?.[at++];
      const shortfall =
        wait === undefined ? undefined : replicaShortfall(wait, waited, `XADD ${item.target.key}`);
      if (reply === undefined) this.#fail(item, new Error('the XADD pipeline returned no reply'));
      else if (reply[0] !== null) this.#fail(item, reply[0]);
      else if (shortfall !== undefined) this.#fail(item, shortfall);
      else item.resolve();
      if (!item.announce || announcing === undefined) continue;
      const added = replies?.[at++];
      const published = replies?.[at++];
      const error = added?.[0] ?? published?.[0];
      if (reply?.[0] === null && error !== undefined && error !== null) {
        item.target.unannounced = true;
        announcing.failed(error, item.target.key);
      }
    }
  }
}

/** The socket under a connection, where it can be corked (a net or TLS socket can). */
function corkable(stream: unknown): { cork(): void; uncork(): void } | undefined {
  const candidate = stream as { cork?: unknown; uncork?: unknown } | null | undefined;
  return typeof candidate?.cork === 'function' && typeof candidate.uncork === 'function'
    ? (candidate as { cork(): void; uncork(): void })
    : undefined;
}
