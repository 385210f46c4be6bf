import type { Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Redis } from 'ioredis';
import { PublishBatcher, type PublishTarget } from '../src/publish-batcher.js';
import { REDIS_URL, deleteKeysAndQuit, rawClient, uniquePrefix } from './helpers.js';

let redis: Redis;
let prefix: string;

beforeEach(async () => {
  redis = rawClient();
  prefix = uniquePrefix('batcher');
  await redis.ping();
});

afterEach(async () => {
  vi.restoreAllMocks();
  await deleteKeysAndQuit(redis, prefix);
});

const target = (type: string): PublishTarget => ({
  key: `${prefix}:${type}`,
  dedupeKey: `${prefix}:dedupe:${type}`,
  unannounced: false,
});

/** A batcher on `client`, writing `XADD key * event body`, with no announcements. */
function batcherOn(
  client: Redis,
  mapError: (error: unknown, key: string) => unknown = (error) => error,
): PublishBatcher {
  return new PublishBatcher(() => client, ['*', 'event'], mapError, undefined);
}

/** Counts what reaches the socket: one call of `_write` or `_writev` is one system call. */
function countSocketWrites(client: Redis): () => number {
  const socket = client.stream as Socket & {
    _write: (...args: unknown[]) => unknown;
    _writev: (...args: unknown[]) => unknown;
  };
  const single = vi.spyOn(socket, '_write');
  const vector = vi.spyOn(socket, '_writev');
  return () => single.mock.calls.length + vector.mock.calls.length;
}

async function storedNs(key: string): Promise<number[]> {
  const entries = await redis.xrange(key, '-', '+');
  return entries.map(([, fields]) => (JSON.parse(fields[1] as string) as { n: number }).n);
}

describe('PublishBatcher on a single Redis', () => {
  it('writes the XADDs of one turn in one socket write, each entry stored in call order', async () => {
    const batcher = batcherOn(redis);
    const stream = target('burst');
    const writes = countSocketWrites(redis);
    await Promise.all(
      Array.from({ length: 50 }, (_, n) => batcher.xadd(stream, JSON.stringify({ n }), `id-${n}`)),
    );
    expect(writes()).toBe(1);
    expect(await storedNs(stream.key)).toEqual(Array.from({ length: 50 }, (_, n) => n));
  });

  it('rejects only the XADDs of a burst that Redis refused, with the mapped error of their key', async () => {
    await redis.set(`${prefix}:broken`, 'not a stream');
    const batcher = batcherOn(
      redis,
      (error, key) => new Error(`${key}: ${(error as Error).message}`),
    );
    const fine = target('fine');
    const broken = target('broken');
    const outcomes = await Promise.allSettled([
      batcher.xadd(fine, '{"n":0}', 'a'),
      batcher.xadd(broken, '{"n":1}', 'b'),
      batcher.xadd(fine, '{"n":2}', 'c'),
    ]);
    expect(outcomes.map((outcome) => outcome.status)).toEqual([
      'fulfilled',
      'rejected',
      'fulfilled',
    ]);
    const refused = outcomes[1] as PromiseRejectedResult;
    expect((refused.reason as Error).message).toMatch(new RegExp(`^${prefix}:broken: WRONGTYPE`));
    expect(await storedNs(fine.key)).toEqual([0, 2]);
  });

  it('sends a burst made before the connection is ready once it is, every entry stored', async () => {
    const late = new Redis(REDIS_URL, { lazyConnect: true });
    try {
      const batcher = batcherOn(late);
      const stream = target('late');
      expect(late.status).toBe('wait');
      await Promise.all(
        Array.from({ length: 5 }, (_, n) => batcher.xadd(stream, JSON.stringify({ n }), `l-${n}`)),
      );
      expect(await storedNs(stream.key)).toEqual([0, 1, 2, 3, 4]);
    } finally {
      late.disconnect();
    }
  });
});
