/**
 * Dead letters: the memory store's bound, the Redis store against the shared Redis (its own
 * key, deleted after), and replay through the client, up to 1000 events to 5 endpoints.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createEvent, type Event } from '@watchtower/core';
import { configErrorField } from '@watchtower/core/testing';
import {
  MemoryWebhookDeadLetterStore,
  RedisWebhookDeadLetterStore,
  createWebhookReceiver,
  generateWebhookSecret,
  type NewWebhookDeadLetter,
} from '../src/index.js';
import { REDIS_URL, idOf, listen, testResources } from './helpers.js';

const secret = generateWebhookSecret();
const { defer, endpoint, client } = testResources();

function redis(): Redis {
  const r = new Redis(REDIS_URL, { maxRetriesPerRequest: 3 });
  defer(() => r.quit());
  return r;
}

function uniqueKey(): string {
  return `test-webhook-dlq-${randomBytes(5).toString('hex')}`;
}

function letter(event: Event, url = 'https://example.com/hook'): NewWebhookDeadLetter {
  return {
    event,
    url,
    endpointId: 'crm',
    status: 503,
    reason: {
      message: 'answered 503',
      code: 'TRANSPORT',
      attempts: 5,
      failedAt: new Date().toISOString(),
      originalType: event.type,
      subscription: url,
    },
  };
}

describe('MemoryWebhookDeadLetterStore', () => {
  it('keeps letters oldest first, by id, and drops the oldest when full, counting it', async () => {
    const store = new MemoryWebhookDeadLetterStore({ capacity: 2 });
    const events = [
      createEvent('a.b', { i: 1 }),
      createEvent('a.b', { i: 2 }),
      createEvent('a.b', { i: 3 }),
    ];
    const ids = [];
    for (const e of events) ids.push(await store.add(letter(e)));
    expect((await store.list()).map((l) => l.event)).toEqual(events.slice(1));
    expect(store.stats()).toMatchObject({ size: 2, capacity: 2, added: 3, dropped: 1 });
    expect(await store.get(ids[0] as string)).toBeUndefined();
    expect((await store.get(ids[2] as string))?.event).toEqual(events[2]);
    expect(await store.remove(ids[2] as string)).toBe(true);
    expect(await store.remove(ids[2] as string)).toBe(false);
    expect(await store.size()).toBe(1);
    expect(await store.list({ limit: 0 })).toEqual([]);
    expect(configErrorField(() => new MemoryWebhookDeadLetterStore({ capacity: 0 }))).toBe(
      'capacity',
    );
  });
});

describe('RedisWebhookDeadLetterStore', () => {
  it('stores letters in a stream that a new connection (a restarted process) reads back', async () => {
    const key = uniqueKey();
    const first = new Redis(REDIS_URL);
    const e = createEvent('order.failed', { id: 9, text: 'ünï' });
    const written = letter(e);
    const id = await new RedisWebhookDeadLetterStore({ client: first, key }).add(written);
    await first.quit();
    const r = redis();
    defer(() => r.del(key));
    const store = new RedisWebhookDeadLetterStore({ client: r, key });
    const [held] = await store.list();
    expect(held).toEqual({ ...written, id });
    expect(await store.get(id)).toEqual(held);
    expect(await r.xrange(key, '-', '+')).toEqual([
      [
        id,
        expect.arrayContaining([
          'event',
          'error',
          'answered 503',
          'original_type',
          'order.failed',
          'url',
        ]),
      ],
    ]);
    expect(await store.get('not-an-id')).toBeUndefined();
    expect(await store.remove(id)).toBe(true);
    expect(await store.size()).toBe(0);
  });

  it('rejects with a retryable CONNECTION error when Redis cannot be reached', async () => {
    const down = new Redis('redis://127.0.0.1:1', {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    down.on('error', () => undefined);
    const store = new RedisWebhookDeadLetterStore({ client: down, key: uniqueKey() });
    await expect(store.add(letter(createEvent('a.b', {})))).rejects.toMatchObject({
      code: 'CONNECTION',
      retryable: true,
    });
    down.disconnect();
  });

  it('refuses bad options with CONFIG naming the field', () => {
    const r = redis();
    expect(configErrorField(() => new RedisWebhookDeadLetterStore({ client: {} as never }))).toBe(
      'client',
    );
    expect(configErrorField(() => new RedisWebhookDeadLetterStore({ client: r, key: '' }))).toBe(
      'key',
    );
    expect(configErrorField(() => new RedisWebhookDeadLetterStore({ client: r, maxLen: 0 }))).toBe(
      'maxLen',
    );
  });
});

describe('WebhookClient dead letters and replay', () => {
  it('replays one letter or all of them to the endpoint they failed at, removing what was delivered', async () => {
    let healthy = false;
    const ep = await endpoint(() => (healthy ? 200 : 500));
    const other = await endpoint(() => 200);
    const c = client({
      endpointCircuitBreaker: false,
      endpoints: [
        { url: ep.url, secret, id: 'crm' },
        { url: other.url, secret, id: 'erp' },
      ],
    });
    const events = [
      createEvent('a.b', { i: 1 }),
      createEvent('a.b', { i: 2 }),
      createEvent('a.b', { i: 3 }),
    ];
    for (const e of events) await c.deliver(e);
    const letters = await c.deadLetters.list();
    expect(letters.map((l) => [l.endpointId, l.event.id])).toEqual(
      events.map((e) => ['crm', e.id]),
    );

    const again = await c.replayDeadLetter(letters[0]?.id as string);
    expect(again).toMatchObject({ code: 'TRANSPORT', status: 500 });
    expect(await c.deadLetters.size()).toBe(3);

    healthy = true;
    ep.requests.length = 0;
    expect(await c.replayDeadLetter(letters[0]?.id as string)).toBeUndefined();
    const report = await c.replayDeadLetters();
    expect(report).toMatchObject({ delivered: 2, failed: 0 });
    expect(await c.deadLetters.size()).toBe(0);
    expect(ep.requests.map((r) => idOf(r.body))).toEqual(events.map((e) => e.id));
    expect(other.requests).toHaveLength(3);
    await expect(c.replayDeadLetter('no-such-letter')).rejects.toMatchObject({
      code: 'VALIDATION',
    });
  });

  it('keeps dead letters in Redis across a restart of the client, and the new client replays them', async () => {
    const key = uniqueKey();
    const r = redis();
    defer(() => r.del(key));
    let healthy = false;
    const ep = await endpoint(() => (healthy ? 200 : 503));
    const endpoints = [{ url: ep.url, secret, id: 'crm' }];
    const first = client({
      endpoints,
      deadLetters: new RedisWebhookDeadLetterStore({ client: r, key }),
    });
    const e = createEvent('order.created', { n: 1 });
    await first.deliver(e);
    await first.close();
    healthy = true;
    const second = client({
      endpoints,
      deadLetters: new RedisWebhookDeadLetterStore({ client: r, key }),
    });
    expect((await second.deadLetters.list()).map((l) => l.event)).toEqual([e]);
    expect(await second.replayDeadLetters()).toMatchObject({ delivered: 1, failed: 0 });
    expect(await r.xlen(key)).toBe(0);
    expect(idOf(ep.requests.at(-1)?.body as string)).toBe(e.id);
  });

  it("1000 events to 5 endpoints, one failing: the others get every event, the failing one's go to the DLQ and a replay after it recovers delivers them", async () => {
    let failing = true;
    const broken = await endpoint(() => (failing ? 500 : 200));
    const healthy = await Promise.all([1, 2, 3].map(() => endpoint(() => 200)));
    const receiver = createWebhookReceiver({ secrets: secret });
    const verified: string[] = [];
    receiver.on('>', (e) => void verified.push(e.id));
    const server = await listen(receiver);
    defer(() => server.close());
    const c = client({
      endpointCircuitBreaker: { failureThreshold: 5, resetTimeoutMs: 0 },
      endpoints: [
        { url: broken.url, secret, id: 'broken' },
        ...healthy.map((ep, i) => ({ url: ep.url, secret, id: `ok-${i}` })),
        { url: server.url, secret, id: 'receiver' },
      ],
    });
    const events = Array.from({ length: 1000 }, (_, i) => createEvent('load.test', { i }));
    const reports = await Promise.all(events.map((e) => c.deliver(e)));
    const ids = events.map((e) => e.id).sort();
    for (const ep of healthy) expect(ep.requests.map((r) => idOf(r.body)).sort()).toEqual(ids);
    expect([...verified].sort()).toEqual(ids);
    expect(reports.every((r) => r.delivered.length === 4 && r.deadLettered.length === 1)).toBe(
      true,
    );
    expect(await c.deadLetters.size()).toBe(1000);
    const codes = new Set((await c.deadLetters.list()).map((l) => l.reason.code));
    expect([...codes].every((code) => code === 'TRANSPORT' || code === 'CIRCUIT_OPEN')).toBe(true);

    failing = false;
    broken.requests.length = 0;
    const replay = await c.replayDeadLetters();
    expect(replay).toMatchObject({ delivered: 1000, failed: 0 });
    expect(broken.requests.map((r) => idOf(r.body)).sort()).toEqual(ids);
    expect(await c.deadLetters.size()).toBe(0);
    expect(c.stats()['broken']?.circuit?.state).toBe('closed');
  });
});
