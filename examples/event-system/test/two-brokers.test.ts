/**
 * The event system across two real transports at once: memory and NATS core on the local
 * nats-server (`WATCHTOWER_NATS_URL`). One system publishes to both by route; subscribers on
 * each receive exactly their own events, with origins, batching, idempotency and ordering
 * keys (on publish, the `partition-key` header on the wire). NATS core keeps nothing, so the test leaves no state behind; its subjects are its own.
 */
import { randomUUID } from 'node:crypto';
import {
  EventBus,
  MemoryBroker,
  MemoryIdempotencyStore,
  MemoryTransport,
  createEventSystemBuilder,
  type EventSystem,
  type OrderingKey,
} from '@watchtower/core';
import { collectEvents, waitFor, type EventCollector } from '@watchtower/core/testing';
import { NatsTransport } from '@watchtower/nats';
import { afterEach, describe, expect, it } from 'vitest';

const servers = process.env['WATCHTOWER_NATS_URL'] ?? 'nats://127.0.0.1:4222';
const quiet = { warn: (): void => undefined, error: (): void => undefined };
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.allSettled(closers.splice(0).map((close) => close()));
});

function natsTransport(prefix: string): NatsTransport {
  return new NatsTransport({
    servers,
    mode: 'core',
    subjectPrefix: prefix,
    dlqPrefix: `${prefix}-dlq`,
  });
}

function system(
  origin: string,
  broker: MemoryBroker,
  prefix: string,
  batching = false,
  orderingKey?: OrderingKey,
): EventSystem {
  const builder = createEventSystemBuilder()
    .withService('shop')
    .withOrigin(origin)
    .withTransport('orders', natsTransport(prefix))
    .withTransport('local', new MemoryTransport({ broker }))
    .withRoute('order.>', {
      transport: 'orders',
      topic: 'orders',
      ...(orderingKey === undefined ? {} : { orderingKey }),
    })
    .withDefaultTransport('local')
    .withLogger(quiet);
  if (batching) builder.withPublisher({ batching: { maxSize: 20, maxWaitMs: 5 } });
  const made = builder.build();
  closers.push(() => made.close());
  return made;
}

/** Plain buses on each broker, reading every event: what is on the wire there. */
async function wireOf(
  prefix: string,
  broker: MemoryBroker,
): Promise<{ natsWire: EventCollector; memoryWire: EventCollector }> {
  const onNats = new EventBus({ transport: natsTransport(prefix), logger: quiet });
  const onMemory = new EventBus({ transport: new MemoryTransport({ broker }), logger: quiet });
  closers.push(
    () => onNats.close(),
    () => onMemory.close(),
  );
  const natsWire = collectEvents();
  const memoryWire = collectEvents();
  await onNats.subscribe('>', natsWire.handler);
  await onMemory.subscribe('>', memoryWire.handler);
  return { natsWire, memoryWire };
}

describe('the event system over memory and NATS', () => {
  it('publishes to both by route; each broker holds exactly its own events', async () => {
    const prefix = `test.es.${randomUUID().slice(0, 8)}`;
    const broker = new MemoryBroker();
    const shop = system('eu.de', broker, prefix, true);
    const { natsWire, memoryWire } = await wireOf(prefix, broker);
    const orders = collectEvents();
    const mails = collectEvents();
    await shop.subscribe('order.*', orders.handler);
    await shop.subscribe('mail.sent', mails.handler);

    const outcomes = await shop.publishBatch([
      { type: 'order.placed', payload: { n: 1 } },
      { type: 'mail.sent', payload: { n: 2 } },
      { type: 'order.shipped', payload: { n: 3 } },
    ]);
    await Promise.all([
      shop.publish('order.placed', { n: 4 }),
      shop.publish('mail.sent', { n: 5 }),
    ]);
    expect(outcomes.every((outcome) => outcome.ok)).toBe(true);

    await orders.waitForCount(3);
    await mails.waitForCount(2);
    await natsWire.waitForCount(3);
    await memoryWire.waitForCount(2);
    expect(natsWire.events.every((event) => event.type === 'orders')).toBe(true);
    expect(natsWire.events.map((event) => event.headers['event-type'])).toEqual([
      'order.placed',
      'order.shipped',
      'order.placed',
    ]);
    expect(memoryWire.events.map((event) => event.type)).toEqual(['mail.sent', 'mail.sent']);
    expect(orders.events.map((event) => event.type)).toEqual([
      'order.placed',
      'order.shipped',
      'order.placed',
    ]);
    expect(mails.events.map((event) => event.payload)).toEqual([{ n: 2 }, { n: 5 }]);
    expect(shop.stats().transports['orders']?.published).toBe(3);
    expect(shop.stats().transports['local']?.published).toBe(2);
  });

  it('keeps two origins apart on one NATS server unless a subscriber asks for both', async () => {
    const prefix = `test.es.${randomUUID().slice(0, 8)}`;
    const eu = system('eu.de', new MemoryBroker(), prefix);
    const us = system('us.ca', new MemoryBroker(), prefix);
    const euOwn = collectEvents();
    const euAll = collectEvents();
    await eu.subscribe('order.placed', euOwn.handler);
    await eu.subscribe('order.placed', euAll.handler, { origins: '*' });
    await us.publish('order.placed', { from: 'us' });
    await eu.publish('order.placed', { from: 'eu' });
    await euAll.waitForCount(2);
    await waitFor(() => eu.stats().filtered === 1);
    expect(euOwn.events.map((event) => event.payload)).toEqual([{ from: 'eu' }]);
  });

  it('handles a redelivered event id once with an idempotency store, on NATS', async () => {
    const prefix = `test.es.${randomUUID().slice(0, 8)}`;
    const shop = system('eu.de', new MemoryBroker(), prefix);
    const got = collectEvents();
    await shop.subscribe('order.placed', got.handler, {
      idempotency: { store: new MemoryIdempotencyStore(), ttlMs: 60_000 },
    });
    await shop.publish('order.placed', { n: 1 }, { id: 'order-1' });
    await shop.publish('order.placed', { n: 1 }, { id: 'order-1' });
    await shop.publish('order.placed', { n: 2 }, { id: 'order-2' });
    await got.waitForCount(2);
    await waitFor(() => shop.stats().duplicates === 1);
    expect(got.events.map((event) => event.id)).toEqual(['order-1', 'order-2']);
  });

  it('keeps the order of each ordering key on NATS, with a failed run retried in place', async () => {
    const prefix = `test.es.${randomUUID().slice(0, 8)}`;
    const shop = system('eu.de', new MemoryBroker(), prefix);
    const runs: string[] = [];
    let failures = 1;
    let bDone: () => void = () => undefined;
    const bFinished = new Promise<void>((resolve) => (bDone = resolve));
    await shop.subscribe(
      'order.updated',
      async (event) => {
        const { key, n } = event.payload as { key: string; n: number };
        runs.push(`${key}${n}`);
        if (key === 'b' && n === 2) bDone();
        // Key a's first run waits for key b to finish (b does not wait behind a), then fails
        // once: a2 still waits for a1's retry.
        if (key === 'a' && n === 1 && failures-- > 0) {
          await bFinished;
          throw new Error('flaky');
        }
      },
      {
        orderingKey: (event) => (event.payload as { key: string }).key,
        concurrency: 4,
        retry: { maxAttempts: 3, minDelayMs: 0, jitter: 0 },
      },
    );
    await shop.publishBatch([
      { type: 'order.updated', payload: { key: 'a', n: 1 } },
      { type: 'order.updated', payload: { key: 'a', n: 2 } },
      { type: 'order.updated', payload: { key: 'b', n: 1 } },
      { type: 'order.updated', payload: { key: 'b', n: 2 } },
    ]);
    await waitFor(() => runs.length === 5);
    const ofKey = (key: string): string[] => runs.filter((run) => run.startsWith(key));
    expect(ofKey('a')).toEqual(['a1', 'a1', 'a2']);
    expect(ofKey('b')).toEqual(['b1', 'b2']);
  });

  it("carries the route's ordering key as the partition-key header over NATS, and orders by it", async () => {
    const prefix = `test.es.${randomUUID().slice(0, 8)}`;
    const broker = new MemoryBroker();
    const orderOf: OrderingKey = (event) => (event.payload as { orderId: string }).orderId;
    const shop = system('eu.de', broker, prefix, true, orderOf);
    const { natsWire, memoryWire } = await wireOf(prefix, broker);
    const runs: string[] = [];
    let release: () => void = () => undefined;
    const firstHeld = new Promise<void>((resolve) => (release = resolve));
    await shop.subscribe(
      'order.updated',
      async (event) => {
        const { orderId, n } = event.payload as { orderId: string; n: number };
        runs.push(`${orderId}${n}`);
        if (orderId === 'a' && n === 1) await firstHeld;
      },
      { orderingKey: (event) => event.headers['partition-key'], concurrency: 4 },
    );

    await shop.publishBatch([
      { type: 'order.updated', payload: { orderId: 'a', n: 1 } },
      { type: 'order.updated', payload: { orderId: 'a', n: 2 } },
      { type: 'order.updated', payload: { orderId: 'b', n: 1 } },
      { type: 'mail.sent', payload: { orderId: 'a', n: 3 } },
    ]);
    await natsWire.waitForCount(3);
    await memoryWire.waitForCount(1);
    expect(natsWire.events.map((event) => event.headers['partition-key'])).toEqual(['a', 'a', 'b']);
    expect(memoryWire.events[0]?.headers['partition-key']).toBeUndefined();
    // a2 waits behind the held a1; b1, another key, does not.
    await waitFor(() => runs.includes('b1'));
    expect(runs).toEqual(['a1', 'b1']);
    release();
    await waitFor(() => runs.length === 3);
    expect(runs).toEqual(['a1', 'b1', 'a2']);
  });
});
