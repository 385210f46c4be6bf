import { MemoryTransport, createEventSystem } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { RedisIdempotencyStore } from '../src/index.js';
import { REDIS_URL, rawClient, uniquePrefix } from './helpers.js';

const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((c) => c.close()));
});

function store(prefix: string): RedisIdempotencyStore {
  const created = new RedisIdempotencyStore({ url: REDIS_URL, prefix });
  open.push(created);
  return created;
}

describe('RedisIdempotencyStore', () => {
  it('answers seen once a key is marked, for every store on the same prefix, until its TTL', async () => {
    const prefix = uniquePrefix('idem');
    const one = store(prefix);
    const other = store(prefix);
    expect(await one.seen('evt-1')).toBe(false);
    await one.mark('evt-1', 200);
    expect(await other.seen('evt-1')).toBe(true);
    const raw = rawClient();
    try {
      expect(await raw.pttl(`${prefix}:evt-1`)).toBeGreaterThan(0);
    } finally {
      raw.disconnect();
    }
    await waitFor(async () => !(await other.seen('evt-1')), { timeoutMs: 5000 });
  });

  it('lets an event system skip an event handled before, across two systems', async () => {
    const prefix = uniquePrefix('idem');
    const id = `pay-${prefix}`;
    let runs = 0;
    for (const attempt of [1, 2]) {
      const system = createEventSystem({
        service: 'billing',
        transports: { m: new MemoryTransport() },
        logger: { warn: () => undefined, error: () => undefined },
      });
      open.push(system);
      await system.subscribe('payment.captured', () => void runs++, {
        idempotency: { store: store(prefix), ttlMs: 60_000 },
      });
      await system.publish('payment.captured', { amount: 5 }, { id });
      // The second system's copy is skipped as a duplicate, not run.
      await waitFor(() =>
        attempt === 1
          ? system.stats().transports.m?.handled === 1
          : system.stats().duplicates === 1,
      );
      expect(runs).toBe(1);
    }
  });

  it('refuses options it does not know and a client that is not a connection', () => {
    expect(() => new RedisIdempotencyStore({ prefx: 'x' } as never)).toThrow(/prefx/);
    expect(() => new RedisIdempotencyStore({ client: {} as never })).toThrow(/client/);
    expect(() => new RedisIdempotencyStore({ url: 'http://x' })).toThrow(/url/);
  });
});
