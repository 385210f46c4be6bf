/**
 * Faults through the entry point a user writes (`RedisSubscriber`): a dead-letter stream that
 * cannot be written, an event in another type's stream, a broker that starts after the
 * service, and one that is killed and started again while publishes are under way.
 */
import { ErrorCode, NonRetryableError, encodeEvent, createEvent } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RedisSubscriber, streamKey } from '../src/index.js';
import { FAST, PrivateRedisServer, TestContext, rawClient } from './helpers.js';

let ctx: TestContext;
afterEach(async () => {
  await ctx.cleanup();
});

function subscriber(
  options: ConstructorParameters<typeof RedisSubscriber>[0] = {},
): RedisSubscriber {
  const bus = new RedisSubscriber({
    prefix: ctx.prefix,
    consumerPrefix: ctx.prefix,
    ...FAST,
    logger: { warn: () => undefined, error: () => undefined },
    ...options,
  });
  return ctx.defer(bus);
}

describe('RedisSubscriber with a dead-letter stream it cannot write', () => {
  it('backs off between tries, reports each, and writes the dead letter once it can', async () => {
    ctx = new TestContext();
    const dlqKey = `${ctx.prefix}:dlq`;
    // A plain string where the stream should be: every XADD to it fails with WRONGTYPE.
    await ctx.redis.set(dlqKey, 'not a stream');
    const bus = subscriber({ dlqStream: dlqKey });
    const reported: string[] = [];
    bus.on('error', (error) => reported.push(error.message));
    let runs = 0;
    await bus.subscribe(
      'job.run',
      () => {
        runs++;
        throw new NonRetryableError('cannot do this job');
      },
      { group: 'workers', retry: { maxAttempts: 1, minDelayMs: 50, jitter: 0 } },
    );
    await bus.publish('job.run', { n: 1 });
    await waitFor(() => reported.length >= 4, { timeoutMs: 20_000 });
    const delays = reported.slice(0, 4).map((m) => Number(/tried again in (\d+) ms/.exec(m)?.[1]));
    expect(delays).toEqual([50, 100, 200, 400]);
    expect(reported[0]).toContain('WRONGTYPE');
    // The handler ran once; the later deliveries only try the dead letter again.
    expect(runs).toBe(1);
    expect(bus.stats().deadLetterFailures).toBeGreaterThanOrEqual(4);

    await ctx.redis.del(dlqKey);
    await waitFor(() => bus.stats().deadLettered === 1, { timeoutMs: 20_000 });
    const stored = await ctx.redis.xrange(dlqKey, '-', '+');
    expect(stored).toHaveLength(1);
    expect(runs).toBe(1);
  });
});

describe('RedisSubscriber and an event in the stream of another type', () => {
  it('dead-letters it as MISROUTED instead of acking it unseen', async () => {
    ctx = new TestContext();
    const bus = subscriber();
    const handled: string[] = [];
    await bus.subscribe('user.*', (event) => void handled.push(event.type), { group: 'users' });
    // The stream exists and is read before the stray event lands in it.
    await bus.publish('user.created', { id: 1 });
    await waitFor(() => handled.length === 1);
    const stray = createEvent('order.placed', { id: 7 });
    await ctx.redis.xadd(streamKey(ctx.prefix, 'user.created'), '*', 'event', encodeEvent(stray));
    await waitFor(() => bus.stats().deadLettered === 1);
    const [entry] = await ctx.redis.xrange(`${ctx.prefix}:dlq`, '-', '+');
    const fields = entry?.[1] ?? [];
    const reason = JSON.parse(fields[fields.indexOf('reason') + 1] ?? '{}') as { code?: string };
    expect(reason.code).toBe(ErrorCode.MISROUTED);
    expect(handled).toEqual(['user.created']);
    expect(bus.stats().misrouted).toBe(1);
  });
});

describe('RedisSubscriber and a broker that is down', () => {
  let server: PrivateRedisServer;
  beforeAll(async () => {
    server = await PrivateRedisServer.start(['--appendonly', 'yes', '--appendfsync', 'always']);
  });
  afterAll(async () => {
    await server.stop();
  });

  it('connects once a broker that starts later is up, within connectWaitMs', async () => {
    ctx = new TestContext();
    await server.kill();
    const bus = subscriber({ url: server.url, connectWaitMs: 30_000 });
    const published = bus.publish('boot.done', { n: 1 });
    const connected = bus.connect();
    await server.startProcess();
    await connected;
    await published;
    const raw = rawClient(server.url);
    try {
      expect(await raw.xlen(streamKey(ctx.prefix, 'boot.done'))).toBe(1);
    } finally {
      raw.disconnect();
    }
  });

  it('fails the first connect at once with CONNECTION by default', async () => {
    ctx = new TestContext();
    await server.kill();
    const bus = subscriber({ url: server.url });
    try {
      await expect(bus.connect()).rejects.toMatchObject({ code: ErrorCode.CONNECTION });
    } finally {
      await server.startProcess();
    }
  });

  it('stores a republished event once with dedupeWindowMs, across a restart of the server', async () => {
    ctx = new TestContext();
    const bus = subscriber({ url: server.url, dedupeWindowMs: 60_000 });
    const event = createEvent('order.paid', { n: 1 });
    await bus.publish(event);
    // Sent again, as a client resends a write whose reply was lost, or a caller retries.
    await bus.publish(event);
    await server.kill();
    await server.startProcess();
    await bus.publish(event);
    // In one pipeline too.
    const other = createEvent('order.paid', { n: 2 });
    await Promise.all([bus.publish(other), bus.publish(event), bus.publish(other)]);
    const raw = rawClient(server.url);
    try {
      const entries = await raw.xrange(streamKey(ctx.prefix, 'order.paid'), '-', '+');
      expect(entries).toHaveLength(2);
    } finally {
      raw.disconnect();
    }
  });

  it('stores a republished event twice without dedupeWindowMs (at least once)', async () => {
    ctx = new TestContext();
    const bus = subscriber({ url: server.url });
    const event = createEvent('order.paid', { n: 1 });
    await bus.publish(event);
    await bus.publish(event);
    const raw = rawClient(server.url);
    try {
      expect(await raw.xlen(streamKey(ctx.prefix, 'order.paid'))).toBe(2);
    } finally {
      raw.disconnect();
    }
  });

  it('holds publishes while the broker restarts and confirms every one after it, once', async () => {
    ctx = new TestContext();
    const bus = subscriber({ url: server.url });
    const lost: string[] = [];
    bus.transport.on('connection', (change) => lost.push(change.state));
    await bus.connect();
    await bus.publish('tick.tock', { n: 0 });
    await server.kill();
    await waitFor(() => lost.includes('lost'));
    const during = Array.from({ length: 50 }, (_, i) => bus.publish('tick.tock', { n: i + 1 }));
    await server.startProcess();
    await Promise.all(during);
    expect(lost).toEqual(['lost', 'restored']);
    expect(bus.stats()).toMatchObject({ publishFailed: 0 });
    expect(bus.circuitBreakerStats().state).toBe('closed');
    const raw = rawClient(server.url);
    try {
      const entries = await raw.xrange(streamKey(ctx.prefix, 'tick.tock'), '-', '+');
      const ns = entries.map(([, fields]) => {
        const text = fields[fields.indexOf('event') + 1] ?? '{}';
        return (JSON.parse(text) as { payload: { n: number } }).payload.n;
      });
      expect([...ns].sort((a, b) => a - b)).toEqual(Array.from({ length: 51 }, (_, i) => i));
    } finally {
      raw.disconnect();
    }
  });
});
