import { execFileSync } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createEvent, type Event, type Logger } from '@watchtower/core';
import { RedisSubscriber, RedisTransport, type RedisSubscriberOptions } from '../src/index.js';
import { FAST, REDIS_URL, TestContext, eventually } from './helpers.js';

/*
 * The Redis-specific guarantees of issue 4, through the public entry point (RedisSubscriber =
 * EventBus on RedisTransport), against the real Redis.
 */

let ctx: TestContext;

beforeEach(() => {
  ctx = new TestContext();
});

afterEach(async () => {
  await ctx.cleanup();
});

const quiet: Logger = { warn: () => {}, error: () => {} };

function subscriber(options: RedisSubscriberOptions = {}): RedisSubscriber {
  return ctx.defer(
    new RedisSubscriber({
      url: REDIS_URL,
      prefix: ctx.prefix,
      consumerPrefix: ctx.prefix,
      logger: quiet,
      ...FAST,
      ...options,
    }),
  );
}

interface DlqEntry {
  id: string;
  fields: Record<string, string>;
}

async function dlqEntries(): Promise<DlqEntry[]> {
  const entries = await ctx.redis.xrange(`${ctx.prefix}:dlq`, '-', '+');
  return entries.map(([id, list]) => {
    const fields: Record<string, string> = {};
    for (let i = 0; i + 1 < list.length; i += 2) fields[list[i] as string] = list[i + 1] as string;
    return { id, fields };
  });
}

describe('Redis Streams guarantees', () => {
  it('a consumer that dies mid-handler leaves its entry pending and another member reclaims and handles it', async () => {
    const dying = subscriber({ claimMinIdleMs: 400, closeTimeoutMs: 0 });
    let started: Event | undefined;
    await dying.subscribe(
      'order.ship',
      (event) => {
        started = event;
        return new Promise(() => {}); // never finishes: the process "dies" in here
      },
      { group: 'shipping' },
    );
    await dying.publish('order.ship', { order: 7 });
    await eventually(() => expect(started).toBeDefined());
    await dying.close().catch(() => {});
    const pending = await ctx.redis.xpending(`${ctx.prefix}:order.ship`, 'shipping');
    expect(pending[0]).toBe(1);

    const heir = subscriber({ claimMinIdleMs: 400 });
    const handled: Array<{ id: string; attempt: number }> = [];
    await heir.subscribe(
      'order.ship',
      (event, context) => {
        handled.push({ id: event.id, attempt: context.attempt });
      },
      { group: 'shipping' },
    );
    await eventually(() => expect(handled).toEqual([{ id: started?.id, attempt: 2 }]));
    await eventually(async () =>
      expect((await ctx.redis.xpending(`${ctx.prefix}:order.ship`, 'shipping'))[0]).toBe(0),
    );
  });

  it('dead-letters an event whose consumers keep dying on it once it outruns its attempts, without running the handler again', async () => {
    // maxAttempts 1: one attempt, and two deliveries of grace for consumers that stopped
    // before handing it out. Three consumers die on it; the fourth delivery is dead-lettered.
    const retry = { retry: { maxAttempts: 1 } };
    const seen: Array<{ id: string; attempt: number }> = [];
    for (let i = 0; i < 3; i++) {
      const dying = subscriber({ claimMinIdleMs: 400, closeTimeoutMs: 0 });
      await dying.subscribe(
        'order.poison',
        (event, context) => {
          seen.push({ id: event.id, attempt: context.attempt });
          return new Promise(() => {}); // the process "dies" in here
        },
        { group: 'shipping', ...retry },
      );
      if (i === 0) await dying.publish('order.poison', { order: 13 });
      await eventually(() => expect(seen).toHaveLength(i + 1));
      await dying.close().catch(() => {});
    }
    expect(seen.map((s) => s.attempt)).toEqual([1, 2, 3]);

    const heir = subscriber({ claimMinIdleMs: 400 });
    let calls = 0;
    await heir.subscribe(
      'order.poison',
      () => {
        calls++;
      },
      { group: 'shipping', ...retry },
    );
    await eventually(async () => expect(await dlqEntries()).toHaveLength(1));
    const [letter] = await dlqEntries();
    expect(JSON.parse(letter?.fields['event'] ?? '{}')).toMatchObject({
      metadata: { id: seen[0]?.id },
    });
    expect(JSON.parse(letter?.fields['reason'] ?? '{}')).toMatchObject({
      code: 'TIMEOUT',
      attempts: 4,
    });
    expect(calls).toBe(0);
    await eventually(async () =>
      expect((await ctx.redis.xpending(`${ctx.prefix}:order.poison`, 'shipping'))[0]).toBe(0),
    );
  });

  it('the delivery count drives the DLQ, across consumers: attempts counted by Redis, then dead-lettered and acked', async () => {
    const retry = { maxAttempts: 3, minDelayMs: 20, maxDelayMs: 20, jitter: 0 };
    // The first consumer fails attempt 1, then crashes during attempt 2.
    const first = subscriber({ claimMinIdleMs: 400, closeTimeoutMs: 0 });
    const firstAttempts: number[] = [];
    await first.subscribe(
      'charge.card',
      (_event, context) => {
        firstAttempts.push(context.attempt);
        if (context.attempt === 1) throw new Error('card declined');
        return new Promise(() => {});
      },
      { group: 'billing', retry },
    );
    await first.publish('charge.card', { amount: 5 });
    await eventually(() => expect(firstAttempts).toEqual([1, 2]));
    await first.close().catch(() => {});

    // The second consumer sees attempt 3, the last one allowed, fails, and dead-letters.
    const second = subscriber({ claimMinIdleMs: 400 });
    const secondAttempts: number[] = [];
    await second.subscribe(
      'charge.card',
      (_event, context) => {
        secondAttempts.push(context.attempt);
        throw new Error('card declined');
      },
      { group: 'billing', retry },
    );
    await eventually(async () => expect(await dlqEntries()).toHaveLength(1));
    expect(secondAttempts).toEqual([3]);
    const [entry] = await dlqEntries();
    const reason = JSON.parse(entry?.fields['reason'] ?? '{}') as Record<string, unknown>;
    expect(reason).toMatchObject({
      attempts: 3,
      message: 'card declined',
      originalType: 'charge.card',
      subscription: 'billing',
    });
    await eventually(async () =>
      expect((await ctx.redis.xpending(`${ctx.prefix}:charge.card`, 'billing'))[0]).toBe(0),
    );
  });

  it('receives an event that a Rust service wrote with a raw XADD', async () => {
    const bus = subscriber();
    const received: Event[] = [];
    await bus.subscribe('user.created', (event) => {
      received.push(event);
    });
    // What Rust Watchtower's serde writes: nullable metadata, chrono's nanosecond timestamp,
    // no causation_id and no headers.
    const rust =
      '{"metadata":{"id":"5f0c6a8e-7d2b-4a57-9a39-2a8e1c2d4b6f","event_type":"user.created",' +
      '"timestamp":"2026-11-22T10:00:00.123456789Z","source":"rust-service","correlation_id":null},' +
      '"payload":{"user_id":42,"name":"Zoë"}}';
    await ctx.redis.xadd(`${ctx.prefix}:user.created`, '*', 'event', rust);
    await eventually(() => expect(received).toHaveLength(1));
    expect(received[0]).toEqual({
      id: '5f0c6a8e-7d2b-4a57-9a39-2a8e1c2d4b6f',
      type: 'user.created',
      timestamp: '2026-11-22T10:00:00.123456789Z',
      source: 'rust-service',
      headers: {},
      payload: { user_id: 42, name: 'Zoë' },
    });
  });

  it('dead-letters a raw XADD of garbage with the error, acks it, and the subscription goes on', async () => {
    const bus = subscriber();
    const received: unknown[] = [];
    await bus.subscribe(
      'sensor.reading',
      (event) => {
        received.push(event.payload);
      },
      { group: 'sensors' },
    );
    const key = `${ctx.prefix}:sensor.reading`;
    await ctx.redis.xadd(key, '*', 'event', '\u0000 this is not json');
    await bus.publish('sensor.reading', { celsius: 21 });
    await eventually(() => expect(received).toEqual([{ celsius: 21 }]));
    await eventually(async () => expect(await dlqEntries()).toHaveLength(1));
    const [entry] = await dlqEntries();
    expect(entry?.fields['event']).toBe('\u0000 this is not json');
    expect(entry?.fields['error']).toMatch(/not JSON/);
    expect(entry?.fields['original_type']).toBe(key);
    expect(JSON.parse(entry?.fields['reason'] ?? '{}')).toMatchObject({
      code: 'SERIALIZATION',
      attempts: 1,
    });
    await eventually(async () => expect((await ctx.redis.xpending(key, 'sensors'))[0]).toBe(0));
  });

  it('`redis-cli XRANGE {prefix}:dlq` shows the Rust fields event, error and original_type', async () => {
    const bus = subscriber();
    await bus.subscribe(
      'mail.send',
      () => {
        throw new Error('smtp down');
      },
      { retry: { maxAttempts: 1 } },
    );
    await bus.publish('mail.send', { to: 'a@example.com' });
    await eventually(async () => expect(await dlqEntries()).toHaveLength(1));
    const output = execFileSync(
      'redis-cli',
      ['-u', REDIS_URL, 'XRANGE', `${ctx.prefix}:dlq`, '-', '+'],
      {
        encoding: 'utf8',
      },
    );
    const lines = output.split('\n').map((line) => line.trim());
    const fieldAfter = (name: string): string | undefined => lines[lines.indexOf(name) + 1];
    expect(lines).toEqual(expect.arrayContaining(['event', 'error', 'original_type']));
    expect(fieldAfter('error')).toBe('smtp down');
    expect(fieldAfter('original_type')).toBe('mail.send');
    const event = JSON.parse(fieldAfter('event') ?? '{}') as { metadata: { event_type: string } };
    expect(event.metadata.event_type).toBe('mail.send');
  });

  it('MAXLEN trimming holds each stream near its bound (approximate) or exactly at it', async () => {
    const approximate = ctx.defer(
      new RedisTransport({
        url: REDIS_URL,
        prefix: ctx.prefix,
        consumerPrefix: ctx.prefix,
        maxLen: 1000,
      }),
    );
    const exact = ctx.defer(
      new RedisTransport({
        url: REDIS_URL,
        prefix: ctx.prefix,
        consumerPrefix: ctx.prefix,
        maxLen: 1000,
        approximateTrim: false,
      }),
    );
    const publishMany = async (transport: RedisTransport, type: string) => {
      for (let batch = 0; batch < 30; batch++) {
        await Promise.all(
          Array.from({ length: 100 }, (_, i) => transport.publish(createEvent(type, { i }))),
        );
      }
    };
    await publishMany(approximate, 'metric.approx');
    await publishMany(exact, 'metric.exact');
    const approxLength = await ctx.redis.xlen(`${ctx.prefix}:metric.approx`);
    // `~` trims whole radix-tree nodes (stream-node-max-entries, 100 by default).
    expect(approxLength).toBeGreaterThanOrEqual(1000);
    expect(approxLength).toBeLessThanOrEqual(1100);
    expect(await ctx.redis.xlen(`${ctx.prefix}:metric.exact`)).toBe(1000);
  });

  it('handles 10 000 events exactly once with 3 consumers in one group when no handler fails', async () => {
    const counts = new Map<string, number>();
    const perConsumer = [0, 0, 0];
    const consumers = [0, 1, 2].map(() => subscriber());
    await Promise.all(
      consumers.map((bus, index) =>
        bus.subscribe(
          'load.tick',
          (event) => {
            counts.set(event.id, (counts.get(event.id) ?? 0) + 1);
            perConsumer[index] = (perConsumer[index] ?? 0) + 1;
          },
          { group: 'load', concurrency: 16 },
        ),
      ),
    );
    const publisher = subscriber();
    const published: string[] = [];
    const sends: Array<Promise<void>> = [];
    for (let i = 0; i < 10_000; i++) {
      const event = createEvent('load.tick', { i });
      published.push(event.id);
      sends.push(publisher.publish(event));
    }
    await Promise.all(sends);
    await eventually(() => expect(counts.size).toBe(10_000), 30_000);
    // Let any duplicate that might still be on its way arrive before judging.
    await eventually(async () =>
      expect((await ctx.redis.xpending(`${ctx.prefix}:load.tick`, 'load'))[0]).toBe(0),
    );
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    expect(new Set(published)).toEqual(new Set(counts.keys()));
    expect(perConsumer.every((n) => n > 0)).toBe(true);
  }, 60_000);

  it('logs what the transport cannot throw to a caller with the subscriber logger', async () => {
    const logged: string[] = [];
    const bus = subscriber({
      logger: { warn: () => {}, error: (_details, message) => logged.push(message) },
    });
    await bus.transport.publishToDlq(createEvent('audit.logged', {}), {
      message: 'x',
      code: 'HANDLER_FAILED',
      attempts: 1,
      failedAt: new Date().toISOString(),
      originalType: 'audit.logged',
    });
    const handle = await bus.transport.consumeDlq(() => {
      throw new Error('the archive is down');
    });
    await eventually(() => expect(logged.join('\n')).toContain('the archive is down'));
    await handle.unsubscribe();
  });
});
