/**
 * What the RabbitMQ transport does on the real broker beyond the contract suite: the Rust
 * dead-letter layout read by a raw amqplib consumer, Rust-format messages published raw,
 * garbage bytes, bounded retries counted exactly, every exchange type, `mandatory` returns,
 * overflow nacks (and the publish channel not replaced more than once a second for them), the
 * nacks of a stuck channel ridden out, and TTLs dead-lettered by the broker itself.
 */
import { describe, expect, it } from 'vitest';
import {
  createEvent,
  type DeadLetter,
  type Delivery,
  type Event,
  type WatchtowerError,
} from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import {
  RabbitMQSubscriber,
  RabbitMQTransport,
  type RabbitMQConfig,
  type RabbitMQSubscriberOptions,
} from '../src/index.js';
import { NACKS_BEFORE_REPLACEMENT, REPLACEMENT_FLOOR_MS } from '../src/publisher.js';
import {
  AMQP_URL,
  consumerPrefetches,
  messageCount,
  perTest,
  rabbitmqctl,
  takeMessages,
  unackedCount,
  uniqueName,
  withRawChannel,
} from './helpers.js';

const { newExchange, closers } = perTest('rmq');

function subscriber(exchange: string, options: RabbitMQSubscriberOptions = {}): RabbitMQSubscriber {
  const bus = new RabbitMQSubscriber({
    url: AMQP_URL,
    exchange,
    connectionName: `${exchange}-bus`,
    logger: { warn: () => undefined, error: () => undefined },
    ...options,
  });
  closers.push(() => bus.close({ timeoutMs: 2000 }));
  return bus;
}

function transport(exchange: string, config: RabbitMQConfig = {}): RabbitMQTransport {
  const t = new RabbitMQTransport({
    url: AMQP_URL,
    exchange,
    connectionName: `${exchange}-t`,
    ...config,
  });
  closers.push(() => t.close({ timeoutMs: 2000 }));
  return t;
}

const FAST_RETRY = { minDelayMs: 10, maxDelayMs: 50 } as const;

describe('dead letters', () => {
  it('puts a rejected event in {exchange}.dlq via {exchange}.dlx with x-error and the original routing key, readable by raw amqplib', async () => {
    const exchange = newExchange();
    const bus = subscriber(exchange);
    await bus.subscribe(
      'order.created.eu',
      () => {
        throw new Error('card declined');
      },
      { retry: { maxAttempts: 1 } },
    );
    const event = createEvent('order.created.eu', { id: 7 });
    await bus.publish(event);
    await waitFor(async () => (await messageCount(`${exchange}.dlq`)) === 1, {
      message: 'one dead letter in the DLQ',
    });
    const [letter] = await takeMessages(`${exchange}.dlq`);
    expect(letter?.fields.exchange).toBe(`${exchange}.dlx`);
    expect(letter?.fields.routingKey).toBe('dlq.order.created.eu');
    expect(letter?.properties.headers?.['x-error']).toBe('card declined');
    expect(letter?.properties.headers?.['x-original-routing-key']).toBe('order.created.eu');
    expect(letter?.properties.messageId).toBe(event.id);
    const body = JSON.parse(letter?.content.toString() ?? '{}') as {
      metadata: { id: string; event_type: string };
      payload: unknown;
    };
    expect(body.metadata).toMatchObject({ id: event.id, event_type: 'order.created.eu' });
    expect(body.payload).toEqual({ id: 7 });
    const reason = JSON.parse(String(letter?.properties.headers?.['x-watchtower-reason'])) as {
      attempts: number;
      originalType: string;
    };
    expect(reason).toMatchObject({ attempts: 1, originalType: 'order.created.eu' });
  });

  it('reads back a dead letter that Rust wrote (x-error only) and one the broker dead-lettered for its TTL', async () => {
    const exchange = newExchange();
    const t = transport(exchange, { queueMessageTtlMs: 1 });
    await t.connect();
    const rust =
      '{"metadata":{"id":"5f0c6a8e-7d2b-4a57-9a39-2a8e1c2d4b6f","event_type":"user.created",' +
      '"timestamp":"2026-11-22T10:00:00.123456789Z","source":"rust-service","correlation_id":null},' +
      '"payload":{"user_id":42}}';
    await withRawChannel(async (channel) => {
      channel.publish(`${exchange}.dlx`, 'dlq.user.created', Buffer.from(rust), {
        persistent: true,
        headers: { 'x-error': 'handler panicked', 'x-original-routing-key': 'user.created' },
      });
      await channel.waitForConfirms();
    });
    // A group queue with a 1 ms TTL and no consumer: the broker dead-letters what arrives.
    const sub = await t.subscribe('audit.log', { group: 'slow' });
    await sub.unsubscribe();
    await t.publish(createEvent('audit.log', { n: 1 }));
    const letters: DeadLetter[] = [];
    await t.consumeDlq((letter) => {
      letters.push(letter);
    });
    await waitFor(() => letters.length === 2, { message: 'both dead letters' });
    const fromRust = letters.find((l) => l.event?.type === 'user.created');
    expect(fromRust?.reason).toMatchObject({
      message: 'handler panicked',
      originalType: 'user.created',
      attempts: 0,
    });
    expect(fromRust?.event?.payload).toEqual({ user_id: 42 });
    const expired = letters.find((l) => l.event?.type === 'audit.log');
    expect(expired?.reason.message).toContain('expired');
    expect(expired?.reason.originalType).toBe('audit.log');
  });

  it('lands garbage bytes in the DLQ at once, as they came, and the subscription goes on', async () => {
    const exchange = newExchange();
    const bus = subscriber(exchange);
    const received: Event[] = [];
    await bus.subscribe('job.run', (event) => {
      received.push(event);
    });
    const garbage = Buffer.from([0xff, 0xfe, 0x00, 0x42]);
    await withRawChannel(async (channel) => {
      channel.publish(exchange, 'job.run', garbage, { persistent: true });
      await channel.waitForConfirms();
    });
    await bus.publish('job.run', { n: 2 });
    await waitFor(() => received.length === 1, { message: 'the event after the garbage' });
    const letters: DeadLetter[] = [];
    await bus.transport.consumeDlq((letter) => {
      letters.push(letter);
    });
    await waitFor(() => letters.length === 1, { message: 'the garbage in the DLQ' });
    expect(Buffer.from(letters[0]?.raw ?? new Uint8Array())).toEqual(garbage);
    expect(letters[0]?.reason).toMatchObject({
      code: 'SERIALIZATION',
      attempts: 1,
      originalType: 'job.run',
    });
    expect(received[0]?.payload).toEqual({ n: 2 });
  });

  it('runs a handler that always fails exactly maxAttempts times, then dead-letters it once', async () => {
    const exchange = newExchange();
    const bus = subscriber(exchange);
    const attempts: number[] = [];
    await bus.subscribe(
      'mail.send',
      (_event, { attempt }) => {
        attempts.push(attempt);
        throw new Error('smtp down');
      },
      { retry: { maxAttempts: 4, ...FAST_RETRY } },
    );
    await bus.publish('mail.send', { to: 'a@b' });
    await waitFor(async () => (await messageCount(`${exchange}.dlq`)) === 1, {
      message: 'the dead letter',
    });
    // Nothing is left to come: the main queue and every delay queue are empty.
    await waitFor(() => bus.stats().deadLettered === 1);
    expect(attempts).toEqual([1, 2, 3, 4]);
    const [letter] = await takeMessages(`${exchange}.dlq`);
    expect(JSON.parse(String(letter?.properties.headers?.['x-watchtower-reason']))).toMatchObject({
      attempts: 4,
      message: 'smtp down',
    });
  });
});

describe('retries', () => {
  it('declares the delay queue again for every retry: one deleted (or expired) under it loses nothing', async () => {
    const exchange = newExchange();
    const t = transport(exchange);
    const sub = await t.subscribe('retry.item', { group: 'g' });
    const iterator = sub[Symbol.asyncIterator]();
    await t.publish(createEvent('retry.item', { n: 1 }));
    const first = (await iterator.next()).value as Delivery;
    await first.nack({ delayMs: 100 });
    const second = (await iterator.next()).value as Delivery;
    expect(second.attempt).toBe(2);
    // Gone as an unused delay queue goes by its x-expires.
    await withRawChannel(async (channel) => {
      await channel.deleteQueue(`${exchange}.group.g:retry.item~delay.100`);
    });
    await second.nack({ delayMs: 100 });
    const third = (await iterator.next()).value as Delivery;
    expect(third.attempt).toBe(3);
    expect(third.kind === 'event' && third.event.payload).toEqual({ n: 1 });
    await third.ack();
    await sub.unsubscribe();
  });
});

describe('the wire format', () => {
  it('receives a Rust-format JSON message published with raw amqplib as an Event', async () => {
    const exchange = newExchange();
    const bus = subscriber(exchange);
    const received: Event[] = [];
    await bus.subscribe('user.created', (event) => {
      received.push(event);
    });
    const rust =
      '{"metadata":{"id":"5f0c6a8e-7d2b-4a57-9a39-2a8e1c2d4b6f","event_type":"user.created",' +
      '"timestamp":"2026-11-22T10:00:00.123456789Z","source":"rust-service","correlation_id":null},' +
      '"payload":{"user_id":42,"name":"Zoë"}}';
    await withRawChannel(async (channel) => {
      channel.publish(exchange, 'user.created', Buffer.from(rust), {
        persistent: true,
        headers: { traceparent: '00-abc-def-01' },
      });
      await channel.waitForConfirms();
    });
    await waitFor(() => received.length === 1);
    expect(received[0]).toEqual({
      id: '5f0c6a8e-7d2b-4a57-9a39-2a8e1c2d4b6f',
      type: 'user.created',
      timestamp: '2026-11-22T10:00:00.123456789Z',
      source: 'rust-service',
      // The body has no headers: those of the AMQP message are taken.
      headers: { traceparent: '00-abc-def-01' },
      payload: { user_id: 42, name: 'Zoë' },
    });
  });

  it('publishes persistent JSON with message_id the event id and the event headers as AMQP headers', async () => {
    const exchange = newExchange();
    const t = transport(exchange);
    await t.connect();
    const queue = `${exchange}.raw`;
    await withRawChannel(async (channel) => {
      await channel.assertQueue(queue, { durable: false });
      await channel.bindQueue(queue, exchange, 'shop.#');
    });
    const event = createEvent('shop.cart.updated', { n: 1 }, { headers: { tenant: 'acme' } });
    await t.publish(event);
    const [message] = await takeMessages(queue);
    expect(message?.fields.routingKey).toBe('shop.cart.updated');
    expect(message?.properties).toMatchObject({
      messageId: event.id,
      contentType: 'application/json',
      deliveryMode: 2,
    });
    expect(message?.properties.headers).toMatchObject({ tenant: 'acme' });
  });
});

describe('exchange types', () => {
  it('routes by exact type on a direct exchange and refuses a wildcard there with CONFIG', async () => {
    const exchange = newExchange();
    const bus = subscriber(exchange, { exchangeType: 'direct' });
    const seen: string[] = [];
    await bus.subscribe('a.b', (event) => {
      seen.push(event.type);
    });
    await bus.publish('a.c', {});
    await bus.publish('a.b', {});
    await waitFor(() => seen.length === 1);
    expect(seen).toEqual(['a.b']);
    await expect(bus.transport.subscribe('a.*')).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringContaining('direct exchange') as unknown,
    });
    expect(bus.transport.info.capabilities.wildcards).toBe(false);
  });

  it.each(['fanout', 'headers'] as const)(
    'delivers only the types a pattern matches on a %s exchange',
    async (exchangeType) => {
      const exchange = newExchange();
      const bus = subscriber(exchange, { exchangeType });
      const literal: string[] = [];
      const wildcard: string[] = [];
      await bus.subscribe('a.b', (event) => {
        literal.push(event.type);
      });
      await bus.subscribe('a.>', (event) => {
        wildcard.push(event.type);
      });
      for (const type of ['x.y', 'a', 'a.b', 'a.b.c']) await bus.publish(type, {});
      await waitFor(() => literal.length === 1 && wildcard.length === 2);
      // The last one published arrived everywhere it should; nothing else came before it.
      await bus.publish('a.b', {});
      await waitFor(() => literal.length === 2);
      expect(literal).toEqual(['a.b', 'a.b']);
      expect(wildcard.slice(0, 2)).toEqual(['a.b', 'a.b.c']);
    },
  );
});

describe('publish outcomes', () => {
  it('rejects an unroutable publish with mandatory, and resolves it without', async () => {
    const exchange = newExchange();
    const strict = transport(exchange, { mandatory: true, connectionName: `${exchange}-m` });
    const lax = transport(exchange);
    const event = createEvent('nobody.listens', {});
    await expect(strict.publish(event)).rejects.toMatchObject({
      code: 'TRANSPORT',
      retryable: false,
      message: expect.stringContaining('unroutable') as unknown,
    });
    await expect(lax.publish(event)).resolves.toBeUndefined();
    // Once a queue is bound, the same publish goes through.
    const sub = await strict.subscribe('nobody.listens');
    await expect(strict.publish(event)).resolves.toBeUndefined();
    await sub.unsubscribe();
  });

  /** Publishes `event` with `publishTo`; what its receipt was told, every time. */
  function publishToReports(t: RabbitMQTransport, event: Event): Promise<unknown[]> {
    const reports: unknown[] = [];
    return new Promise((resolve) => {
      t.publishTo(event, {
        published: () => {
          reports.push('published');
          setTimeout(() => resolve(reports), 50);
        },
        failed: (error) => {
          reports.push(error);
          setTimeout(() => resolve(reports), 50);
        },
      });
    });
  }

  it('tells a publishTo receipt published once, when the broker has confirmed the message', async () => {
    const exchange = newExchange();
    const t = transport(exchange);
    const sub = await t.subscribe('receipt.ok', { group: 'g' });
    await sub.unsubscribe();
    const event = createEvent('receipt.ok', { n: 1 });
    expect(await publishToReports(t, event)).toEqual(['published']);
    const [message] = await takeMessages(`${exchange}.group.g:receipt.ok`);
    expect(message?.properties.messageId).toBe(event.id);
  });

  it('tells a publishTo receipt failed once, with the error publish rejects with', async () => {
    const exchange = newExchange();
    const strict = transport(exchange, { mandatory: true });
    const [unroutable] = await publishToReports(strict, createEvent('nobody.listens', {}));
    expect(unroutable).toMatchObject({ code: 'TRANSPORT', retryable: false });
    expect(await publishToReports(strict, { ...createEvent('a.b', {}), type: 'a..b' })).toEqual([
      expect.objectContaining({ code: 'VALIDATION' }),
    ]);
    await strict.close();
    expect(await publishToReports(strict, createEvent('a.b', {}))).toEqual([
      expect.objectContaining({ code: 'CLOSED' }),
    ]);
  });

  /** A transport whose group queue `g` for `full.q` holds one message, its most (`reject-publish`). */
  async function fullQueue(exchange: string): Promise<RabbitMQTransport> {
    const t = transport(exchange, { maxLength: 1, overflow: 'reject-publish' });
    const sub = await t.subscribe('full.q', { group: 'g' });
    await sub.unsubscribe();
    await t.publish(createEvent('full.q', { n: 1 }));
    return t;
  }

  it('rejects a publish the broker nacks for a full queue with overflow reject-publish, retryably', async () => {
    const exchange = newExchange();
    const t = await fullQueue(exchange);
    const refused = (await t
      .publish(createEvent('full.q', { n: 2 }))
      .catch((e: unknown) => e)) as WatchtowerError;
    expect(refused).toMatchObject({ code: 'TRANSPORT', retryable: true });
    expect(await messageCount(`${exchange}.group.g:full.q`)).toBe(1);
  });

  it('replaces its publish channel about once a second at most while a full queue nacks every publish, each publish rejecting retryably', async () => {
    const exchange = newExchange();
    const t = await fullQueue(exchange);
    const started = performance.now();
    let refused = 0;
    // Batches of nacked publishes for 2.5 s: the channel is taken for stuck, and replaced.
    while (performance.now() - started < 2500) {
      const outcomes = await Promise.allSettled(
        Array.from({ length: 20 }, (_, n) => t.publish(createEvent('full.q', { n }))),
      );
      for (const outcome of outcomes) {
        expect(outcome).toMatchObject({
          status: 'rejected',
          reason: { code: 'TRANSPORT', retryable: true },
        });
        refused++;
      }
    }
    const elapsedMs = performance.now() - started;
    const health = await t.healthCheck();
    const replaced = health.details?.['publishChannelsReplaced'] as number;
    expect(replaced).toBeGreaterThanOrEqual(1);
    // Once a second, after two sooner ones (250 and 500 ms after the first).
    expect(replaced).toBeLessThanOrEqual(Math.floor(elapsedMs / REPLACEMENT_FLOOR_MS) + 3);
    expect(refused).toBeGreaterThan(replaced * NACKS_BEFORE_REPLACEMENT);
    expect(health.healthy).toBe(true);
    expect(await messageCount(`${exchange}.group.g:full.q`)).toBe(1);
    // The transport goes on publishing: a type that no full queue takes is confirmed.
    await t.publish(createEvent('elsewhere', {}));
  });

  it('holds a publish that finds its channel stuck nacking (default overflow), sends it on each replacement, and confirms it once a queue takes it', async () => {
    const exchange = newExchange();
    const t = transport(exchange);
    await t.connect();
    // A queue of someone else's, full and refusing: every publish routed to it is nacked.
    const refusing = `${exchange}.refusing`;
    await withRawChannel(async (channel) => {
      await channel.assertQueue(refusing, {
        durable: false,
        arguments: { 'x-max-length': 1, 'x-overflow': 'reject-publish' },
      });
      await channel.bindQueue(refusing, exchange, 'held.q');
      channel.sendToQueue(refusing, Buffer.from('{}'));
      await channel.waitForConfirms();
    });
    // One publish at a time, as the bus retries one: rejected until the channel is stuck.
    for (let n = 1; n < NACKS_BEFORE_REPLACEMENT; n++) {
      const refused = (await t
        .publish(createEvent('held.q', { n }))
        .catch((e: unknown) => e)) as WatchtowerError;
      expect(refused).toMatchObject({ code: 'TRANSPORT', retryable: true });
    }
    let outcome: 'pending' | 'confirmed' | WatchtowerError = 'pending';
    const held = t.publish(createEvent('held.q', { n: NACKS_BEFORE_REPLACEMENT })).then(
      () => (outcome = 'confirmed'),
      (error: unknown) => (outcome = error as WatchtowerError),
    );
    // Sent again on the replacements (250 and 500 ms apart), nacked on each, still held.
    await waitFor(
      async () => ((await t.healthCheck()).details?.['publishChannelsReplaced'] as number) >= 3,
      { timeoutMs: 5000, message: 'three replacements' },
    );
    expect(outcome).toBe('pending');
    // The queue takes one again: the next channel's send of it is acked.
    await withRawChannel((channel) => channel.purgeQueue(refusing));
    await held;
    expect(outcome).toBe('confirmed');
    expect(await messageCount(refusing)).toBe(1);
  });

  it('expires a message after messageTtlMs into the DLQ when nobody consumes it', async () => {
    const exchange = newExchange();
    const t = transport(exchange, { messageTtlMs: 1 });
    const sub = await t.subscribe('short.lived', { group: 'g' });
    await sub.unsubscribe();
    const event = createEvent('short.lived', {});
    await t.publish(event);
    await waitFor(async () => (await messageCount(`${exchange}.dlq`)) === 1);
    const [letter] = await takeMessages(`${exchange}.dlq`);
    expect(letter?.properties.messageId).toBe(event.id);
    expect(letter?.properties.headers?.['x-death']?.[0]?.reason).toBe('expired');
  });
});

describe('options', () => {
  it('refuses options RabbitMQ cannot honour with CONFIG naming them', async () => {
    const exchange = newExchange();
    const t = transport(exchange);
    await expect(t.subscribe('a.b', { startFrom: 'earliest' })).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringContaining('startFrom') as unknown,
    });
    await expect(t.subscribe('a.b', { group: 'billing:eu' })).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringContaining('group') as unknown,
    });
    await expect(t.consumeDlq(() => undefined, { group: 'x' })).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringContaining('group') as unknown,
    });
    await expect(t.consumeDlq(() => undefined, { fromStart: false })).rejects.toMatchObject({
      code: 'CONFIG',
      message: expect.stringContaining('fromStart') as unknown,
    });
  });

  it('gives prefetch = maxInFlight: no more than that many unacked deliveries at once', async () => {
    const exchange = newExchange();
    const t = transport(exchange);
    const sub = await t.subscribe('batch.item', { maxInFlight: 3, group: 'g' });
    for (let i = 0; i < 10; i++) await t.publish(createEvent('batch.item', { i }));
    const iterator = sub[Symbol.asyncIterator]();
    const taken: Delivery[] = [];
    for (let i = 0; i < 3; i++) taken.push((await iterator.next()).value as Delivery);
    // The broker holds the other 7 back (ready in the queue) until one is acked.
    const queue = `${exchange}.group.g:batch.item`;
    await waitFor(async () => (await messageCount(queue)) === 7, { message: '7 held back' });
    expect(sub.tryNext?.()).toBeUndefined();
    await taken[0]?.ack();
    await waitFor(async () => (await messageCount(queue)) === 6, { message: 'one more sent' });
    await Promise.all(taken.slice(1).map((delivery) => delivery?.ack()));
    await sub.unsubscribe();
  });
});

describe('prefetch', () => {
  it('gives a subscription with concurrency N a consumer with prefetch N, and 1 by default', async () => {
    const exchange = newExchange();
    const bus = subscriber(exchange);
    await bus.subscribe('job.run', () => undefined, { group: 'four', concurrency: 4 });
    await bus.subscribe('job.run', () => undefined, { group: 'one' });
    expect(await consumerPrefetches(`${exchange}.group.four:job.run`)).toEqual([4]);
    expect(await consumerPrefetches(`${exchange}.group.one:job.run`)).toEqual([1]);
  });

  it('lets an explicit prefetch, and a subscription maxInFlight, win over the concurrency', async () => {
    const exchange = newExchange();
    const bus = subscriber(exchange, { prefetch: 20 });
    await bus.subscribe('job.run', () => undefined, { group: 'wide', concurrency: 4 });
    await bus.subscribe('job.run', () => undefined, {
      group: 'capped',
      concurrency: 4,
      maxInFlight: 6,
    });
    expect(await consumerPrefetches(`${exchange}.group.wide:job.run`)).toEqual([20]);
    expect(await consumerPrefetches(`${exchange}.group.capped:job.run`)).toEqual([6]);
  });
});

describe('acks', () => {
  it('acks 2 000 events whose handlers finish out of order at concurrency 8 exactly once each, never one still being handled', async () => {
    const exchange = newExchange();
    const bus = subscriber(exchange);
    const errors: string[] = [];
    bus.on('error', (error) => errors.push(`${error.code}: ${error.message}`));
    const calls = new Map<number, number>();
    let handled = 0;
    let seed = 11;
    const delayMs = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % 4;
    };
    // The first event's handler runs until the other 1 999 are done: their acks, joined or not,
    // must leave its delivery unacked.
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    await bus.subscribe(
      'job.run',
      async (event: Event) => {
        const { n } = event.payload as { n: number };
        calls.set(n, (calls.get(n) ?? 0) + 1);
        await (n === 0 ? gate : new Promise((resolve) => setTimeout(resolve, delayMs())));
        handled++;
      },
      { group: 'shuffled', concurrency: 8 },
    );
    await bus.publish(createEvent('job.run', { n: 0 }));
    await Promise.all(
      Array.from({ length: 1999 }, (_, i) => bus.publish(createEvent('job.run', { n: i + 1 }))),
    );
    const queue = `${exchange}.group.shuffled:job.run`;
    await waitFor(() => handled === 1999, { timeoutMs: 30_000, message: '1 999 handled' });
    await waitFor(async () => (await unackedCount(queue)) <= 1, {
      timeoutMs: 10_000,
      message: 'the acks of the 1 999 at the broker',
    });
    expect(await unackedCount(queue)).toBe(1);
    release();
    await waitFor(() => handled === 2000, { message: 'the first one handled' });
    await waitFor(async () => (await unackedCount(queue)) === 0, {
      timeoutMs: 10_000,
      message: 'no delivery left unacked',
    });
    expect(await messageCount(queue)).toBe(0);
    expect([...calls.values()].every((count) => count === 1)).toBe(true);
    expect(calls.size).toBe(2000);
    expect(errors).toEqual([]);
  });
});

describe('connection settings', () => {
  it('gives two transports with the same (default) connection name each a queue of its own', async () => {
    const exchange = newExchange();
    const first = new RabbitMQTransport({ url: AMQP_URL, exchange });
    const second = new RabbitMQTransport({ url: AMQP_URL, exchange });
    closers.push(
      () => first.close({ timeoutMs: 2000 }),
      () => second.close({ timeoutMs: 2000 }),
    );
    expect(first.config.connectionName).toBe(second.config.connectionName);
    const subs = [await first.subscribe('twin.event'), await second.subscribe('twin.event')];
    await first.publish(createEvent('twin.event', { n: 1 }));
    for (const sub of subs) {
      const delivery = (await sub[Symbol.asyncIterator]().next()).value as Delivery;
      expect(delivery.kind === 'event' && delivery.event.payload).toEqual({ n: 1 });
      await delivery.ack();
      await sub.unsubscribe();
    }
  });

  it('connects to the vhost named in the URL, with the credentials of the URL', async () => {
    const vhost = uniqueName('vhost');
    await rabbitmqctl(['add_vhost', vhost]);
    try {
      await rabbitmqctl(['set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*']);
      const exchange = newExchange();
      const url = new URL(AMQP_URL);
      url.pathname = `/${encodeURIComponent(vhost)}`;
      const t = transport(exchange, { url: url.toString() });
      const sub = await t.subscribe('in.vhost');
      await t.publish(createEvent('in.vhost', { n: 1 }));
      const delivery = (await sub[Symbol.asyncIterator]().next()).value as Delivery;
      expect(delivery.kind === 'event' && delivery.event.payload).toEqual({ n: 1 });
      await delivery.ack();
      // Declared in that vhost, not in the default one.
      await expect(
        withRawChannel((channel) => channel.checkExchange(exchange)),
      ).rejects.toMatchObject({ code: 404 });
      await t.close();
    } finally {
      await rabbitmqctl(['delete_vhost', vhost]);
    }
  });

  it('refuses to connect with a wrong password: CONNECTION, and nothing is left open', async () => {
    const url = new URL(AMQP_URL);
    url.password = 'not-the-password';
    const t = transport(newExchange(), { url: url.toString() });
    await expect(t.connect()).rejects.toMatchObject({ code: 'CONNECTION' });
    expect((await t.healthCheck()).healthy).toBe(false);
  });
});
