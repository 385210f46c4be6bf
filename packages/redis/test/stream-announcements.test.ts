import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createEvent, type Delivery, type WatchtowerError } from '@watchtower/core';
import { RedisTransport, type RedisConfig } from '../src/index.js';
import { FAST, REDIS_URL, TestContext, ackAll, eventually } from './helpers.js';

/*
 * Stream announcements against the real Redis: discovery is set to a minute, so that a
 * wildcard subscription that reads a new type within the bounds below can only have heard of
 * it from the announcement of its first publish.
 */

/** Longer than an announcement takes (a few ms), far shorter than the discovery interval. */
const ANNOUNCED_WITHIN_MS = 1000;
const NO_DISCOVERY = { discoveryIntervalMs: 60_000 } as const;

let ctx: TestContext;

beforeEach(() => {
  ctx = new TestContext();
});

afterEach(async () => {
  await ctx.cleanup();
});

function transport(config: RedisConfig = {}): RedisTransport {
  return ctx.defer(
    new RedisTransport({
      url: REDIS_URL,
      prefix: ctx.prefix,
      consumerPrefix: ctx.prefix,
      ...FAST,
      ...NO_DISCOVERY,
      ...config,
    }),
  );
}

function payloads(deliveries: readonly Delivery[]): number[] {
  return deliveries.map((d) => (d.kind === 'event' ? (d.event.payload as { n: number }).n : -1));
}

/** Resolves when `deliveries` holds `count` items; rejects after `timeoutMs`. */
async function received(
  deliveries: readonly Delivery[],
  count: number,
  timeoutMs = ANNOUNCED_WITHIN_MS,
): Promise<number> {
  const started = Date.now();
  await eventually(() => expect(deliveries.length).toBeGreaterThanOrEqual(count), timeoutMs);
  return Date.now() - started;
}

describe('stream announcements', () => {
  it('reads a type first published after a wildcard subscription started at once, not at the next discovery', async () => {
    const t = transport();
    const sub = ackAll(await t.subscribe('order.*'));
    await t.publish(createEvent('order.created', { n: 1 }));
    await received(sub.deliveries, 1);
    await t.publish(createEvent('order.shipped', { n: 2 }));
    await received(sub.deliveries, 2);
    expect(payloads(sub.deliveries)).toEqual([1, 2]);
    expect((await ctx.redis.smembers(`${ctx.prefix}:registry:streams`)).sort()).toEqual([
      `${ctx.prefix}:order.created`,
      `${ctx.prefix}:order.shipped`,
    ]);
  });

  it('loses none of the events published to a new stream before its announcement was heard', async () => {
    const t = transport();
    const sub = ackAll(await t.subscribe('burst.*'));
    // The first publish announces; the rest follow in the same and in the next turns, before
    // the subscription can have created its group on the stream.
    const sent: Promise<void>[] = [];
    for (let n = 1; n <= 200; n++) {
      sent.push(t.publish(createEvent('burst.started', { n })));
      if (n % 20 === 0) await Promise.resolve();
    }
    await Promise.all(sent);
    await received(sub.deliveries, 200);
    expect(payloads(sub.deliveries).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 200 }, (_, i) => i + 1),
    );
  });

  it("hears the announcements of another transport on the prefix, and it hears this one's", async () => {
    const a = transport();
    const b = transport();
    const atA = ackAll(await a.subscribe('from.b.*'));
    const atB = ackAll(await b.subscribe('from.a.*', { group: 'readers' }));
    await b.publish(createEvent('from.b.hello', { n: 1 }));
    await a.publish(createEvent('from.a.hello', { n: 2 }));
    await received(atA.deliveries, 1);
    await received(atB.deliveries, 1);
    expect(payloads(atA.deliveries)).toEqual([1]);
    expect(payloads(atB.deliveries)).toEqual([2]);
  });

  it('catches up from the registry on what was announced while its listening connection was away', async () => {
    const t = transport();
    const publisher = transport();
    const sub = ackAll(await t.subscribe('late.*'));
    const listener = `name=watchtower:${ctx.prefix}`;
    const line = ((await ctx.redis.client('LIST')) as string)
      .split('\n')
      .find((l) => l.includes(listener) && l.includes('-announcements'));
    const id = /\bid=(\d+)/.exec(line ?? '')?.[1];
    expect(id).toBeDefined();
    await ctx.redis.client('KILL', 'ID', id as string);
    await publisher.publish(createEvent('late.arrived', { n: 1 }));
    await received(sub.deliveries, 1, 5000);
    expect(payloads(sub.deliveries)).toEqual([1]);
  });

  it('reports an announcement Redis refused, still stores the event, and announces with the next publish', async () => {
    const t = transport();
    const errors: WatchtowerError[] = [];
    t.on('error', (error) => errors.push(error));
    const registry = `${ctx.prefix}:registry:streams`;
    await ctx.redis.set(registry, 'not a set');
    await t.publish(createEvent('refused.once', { n: 1 }));
    expect(await ctx.redis.xlen(`${ctx.prefix}:refused.once`)).toBe(1);
    await eventually(() => expect(errors.map((e) => e.message).join()).toContain(registry));
    await ctx.redis.del(registry);
    await t.publish(createEvent('refused.once', { n: 2 }));
    expect(await ctx.redis.smembers(registry)).toEqual([`${ctx.prefix}:refused.once`]);
  });

  it('neither announces nor listens with announceStreams: false, and discovery still finds new streams', async () => {
    const t = transport({ announceStreams: false, discoveryIntervalMs: 100 });
    const sub = ackAll(await t.subscribe('quiet.*'));
    await t.publish(createEvent('quiet.created', { n: 1 }));
    await received(sub.deliveries, 1, 5000);
    expect(await ctx.redis.exists(`${ctx.prefix}:registry:streams`)).toBe(0);
    const ours = ((await ctx.redis.client('LIST')) as string)
      .split('\n')
      .filter((l) => l.includes(`name=watchtower:${ctx.prefix}`));
    expect(ours.length).toBeGreaterThan(0);
    expect(ours.filter((l) => l.includes('-announcements'))).toEqual([]);
  });
});
