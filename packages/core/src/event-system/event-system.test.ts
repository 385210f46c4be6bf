/**
 * The event system over memory transports: routes (priority, topics, leading wildcards),
 * origins (header and topic prefix), consumer groups, the poison handler, filters,
 * idempotency, validation and the lifecycle.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ErrorCode, NonRetryableError, isWatchtowerError } from '../errors.js';
import { EventBus } from '../event-bus.js';
import type { Event } from '../event.js';
import { MemoryBroker, MemoryTransport } from '../memory-transport.js';
import { defineEvents } from '../schema.js';
import { collectEvents, settlement, waitFor } from '../testing.js';
import type { DeadLetterReason } from '../transport.js';
import { createEventSystemBuilder } from './builder.js';
import { createEventSystem, type EventSystem } from './event-system.js';
import { MemoryIdempotencyStore } from './idempotency.js';
import { quiet } from './test-support.js';

const open: { close(): Promise<void> }[] = [];
function track<T extends { close(): Promise<void> }>(closable: T): T {
  open.push(closable);
  return closable;
}
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((closable) => closable.close()));
});

/** A plain bus on `broker`: sees the wire form the system writes. */
function rawBus(broker: MemoryBroker): EventBus {
  return track(new EventBus({ transport: new MemoryTransport({ broker }), logger: quiet }));
}

describe('EventSystem routing', () => {
  it('publishes to two transports by route; subscribers on each get exactly their own events', async () => {
    const ordersBroker = new MemoryBroker();
    const notifyBroker = new MemoryBroker();
    const system = track(
      createEventSystemBuilder()
        .withService('shop')
        .withTransport('orders', new MemoryTransport({ broker: ordersBroker }))
        .withTransport('notify', new MemoryTransport({ broker: notifyBroker }))
        .withRoute('order.>', { transport: 'orders' })
        .withDefaultTransport('notify')
        .withLogger(quiet)
        .build(),
    );
    const onOrders = collectEvents();
    const onNotify = collectEvents();
    await rawBus(ordersBroker).subscribe('>', onOrders.handler);
    await rawBus(notifyBroker).subscribe('>', onNotify.handler);
    const all = collectEvents();
    await system.subscribe('>', all.handler);

    await system.publish('order.created', { id: 1 });
    await system.publish('order.line.added', { id: 2 });
    await system.publish('email.sent', { id: 3 });
    await all.waitForCount(3);
    await onNotify.waitForCount(1);

    expect(onOrders.events.map((event) => event.type)).toEqual([
      'order.created',
      'order.line.added',
    ]);
    expect(onNotify.events.map((event) => event.type)).toEqual(['email.sent']);
    expect(all.events.map((event) => event.type).sort()).toEqual([
      'email.sent',
      'order.created',
      'order.line.added',
    ]);
    expect(all.events.every((event) => event.source === 'shop')).toBe(true);
  });

  it('sends an event matching several routes to the highest priority one', async () => {
    const high = new MemoryBroker();
    const low = new MemoryBroker();
    const system = track(
      createEventSystem({
        service: 'shop',
        transports: {
          high: new MemoryTransport({ broker: high }),
          low: new MemoryTransport({ broker: low }),
        },
        routes: [
          { pattern: 'order.>', transport: 'low' },
          { pattern: '*.priority', transport: 'high', priority: 10 },
        ],
        defaultTransport: 'low',
        logger: quiet,
      }),
    );
    const onHigh = collectEvents();
    const onLow = collectEvents();
    await rawBus(high).subscribe('>', onHigh.handler);
    await rawBus(low).subscribe('>', onLow.handler);

    await system.publish('order.priority', {});
    await system.publish('order.created', {});
    await onHigh.waitForCount(1);
    await onLow.waitForCount(1);
    expect(onHigh.events.map((event) => event.type)).toEqual(['order.priority']);
    expect(onLow.events.map((event) => event.type)).toEqual(['order.created']);
  });

  it('publishes under a route topic and reads the event back under its own type', async () => {
    const broker = new MemoryBroker();
    const system = track(
      createEventSystem({
        service: 'shop',
        transports: { main: new MemoryTransport({ broker }) },
        routes: [{ pattern: 'order.>', transport: 'main', topic: 'orders' }],
        logger: quiet,
      }),
    );
    const wire = collectEvents();
    await rawBus(broker).subscribe('>', wire.handler);
    const created = collectEvents();
    const everyOrder = collectEvents();
    await system.subscribe('order.created', created.handler);
    await system.subscribe('order.>', everyOrder.handler);

    await system.publish('order.created', { id: 1 });
    await system.publish('order.cancelled', { id: 2 });
    await everyOrder.waitForCount(2);
    await created.waitForCount(1);
    await wire.waitForCount(2);

    expect(wire.events.map((event) => event.type)).toEqual(['orders', 'orders']);
    expect(wire.events[0]?.headers['event-type']).toBe('order.created');
    expect(created.events.map((event) => event.type)).toEqual(['order.created']);
    expect(everyOrder.events.map((event) => event.type)).toEqual([
      'order.created',
      'order.cancelled',
    ]);
    // The cancelled event shares the topic but is not for `order.created`: acked, counted.
    await waitFor(() => system.stats().filtered === 1);
  });

  it('routes by a leading wildcard (*.user.*)', async () => {
    const users = new MemoryBroker();
    const system = track(
      createEventSystem({
        service: 'crm',
        transports: { users: new MemoryTransport({ broker: users }), rest: new MemoryTransport() },
        routes: [{ pattern: '*.user.*', transport: 'users' }],
        defaultTransport: 'rest',
        logger: quiet,
      }),
    );
    const onUsers = collectEvents();
    await rawBus(users).subscribe('>', onUsers.handler);
    await system.publish('eu.user.created', {});
    await system.publish('user.created', {});
    await onUsers.waitForCount(1);
    expect(system.stats().transports.rest?.published).toBe(1);
    expect(onUsers.events.map((event) => event.type)).toEqual(['eu.user.created']);
  });

  it('rejects a publish of an invalid type with VALIDATION before routing', async () => {
    const system = track(
      createEventSystem({ service: 's', transports: { m: new MemoryTransport() }, logger: quiet }),
    );
    const error = await settlement(system.publish('bad..type', {}));
    expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
    expect(system.stats().publishFailed).toBe(1);
  });
});

describe('EventSystem origins', () => {
  function regional(broker: MemoryBroker, origin: string, asTopicPrefix = false): EventSystem {
    return track(
      createEventSystemBuilder()
        .withService('users')
        .withOrigin(origin, { asTopicPrefix })
        .withTransport('main', new MemoryTransport({ broker }))
        .withLogger(quiet)
        .build(),
    );
  }

  it.each([false, true])(
    'gives subscribers their own origin by default, others on request (topic prefix: %s)',
    async (asTopicPrefix) => {
      const broker = new MemoryBroker();
      const eu = regional(broker, 'eu.de', asTopicPrefix);
      const us = regional(broker, 'us.ca', asTopicPrefix);
      const own = collectEvents();
      const fromUs = collectEvents();
      const every = collectEvents();
      await eu.subscribe('user.*', own.handler);
      await eu.subscribe('user.*', fromUs.handler, { origins: ['us.ca'] });
      await eu.subscribe('user.*', every.handler, { origins: '*' });

      await eu.publish('user.created', { from: 'eu' });
      await us.publish('user.created', { from: 'us' });
      await every.waitForCount(2);
      await own.waitForCount(1);
      await fromUs.waitForCount(1);

      expect(own.events.map((event) => event.payload)).toEqual([{ from: 'eu' }]);
      expect(fromUs.events.map((event) => event.payload)).toEqual([{ from: 'us' }]);
      expect(every.events.map((event) => event.headers.origin).sort()).toEqual(['eu.de', 'us.ca']);
      expect(every.events.every((event) => event.type === 'user.created')).toBe(true);
    },
  );

  it('puts the origin before the topic on the wire with asTopicPrefix', async () => {
    const broker = new MemoryBroker();
    const eu = regional(broker, 'eu.de', true);
    const wire = collectEvents();
    await rawBus(broker).subscribe('>', wire.handler);
    await eu.publish('user.created', {});
    await wire.waitForCount(1);
    expect(wire.events[0]?.type).toBe('eu.de.user.created');
    expect(wire.events[0]?.headers).toMatchObject({
      origin: 'eu.de',
      'event-type': 'user.created',
    });
  });

  it('refuses origins that are not origins', async () => {
    const eu = regional(new MemoryBroker(), 'eu.de');
    const error = await settlement(eu.subscribe('user.*', () => undefined, { origins: ['eu.*'] }));
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
  });
});

describe('EventSystem consumers', () => {
  /** An instance of the billing service on `broker`, its subscriptions in consumer groups. */
  const groupMember = (broker: MemoryBroker): EventSystem =>
    track(
      createEventSystem({
        service: 'billing',
        transports: { main: new MemoryTransport({ broker }) },
        consumer: { groups: true },
        logger: quiet,
      }),
    );

  it('shares events among the instances of a service with consumer groups', async () => {
    const broker = new MemoryBroker();
    const instance = (): EventSystem => groupMember(broker);
    const a = instance();
    const b = instance();
    const gotA = collectEvents();
    const gotB = collectEvents();
    await a.subscribe('invoice.*', gotA.handler);
    await b.subscribe('invoice.*', gotB.handler);
    for (let i = 0; i < 10; i++) await a.publish('invoice.issued', { i });
    await waitFor(() => gotA.events.length + gotB.events.length >= 10);
    // Closing waits for every delivery under way: without a shared group there would be 20.
    await Promise.all([a.close(), b.close()]);
    const seen = [...gotA.events, ...gotB.events].map(
      (event) => (event.payload as { i: number }).i,
    );
    expect(seen.sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('keeps groups apart by origin, so each region gets all of its own events', async () => {
    const broker = new MemoryBroker();
    const region = (origin: string): EventSystem =>
      track(
        createEventSystem({
          service: 'billing',
          origin,
          transports: { main: new MemoryTransport({ broker }) },
          consumer: { groups: true },
          logger: quiet,
        }),
      );
    const euWorker = region('eu.de');
    const usWorker = region('us.ca');
    const euPublisher = region('eu.de');
    const gotEu = collectEvents();
    const gotUs = collectEvents();
    await euWorker.subscribe('invoice.*', gotEu.handler);
    await usWorker.subscribe('invoice.*', gotUs.handler);
    for (let i = 0; i < 10; i++) await euPublisher.publish('invoice.issued', { i });
    await gotEu.waitForCount(10);
    // The us group got its own copy of each and skipped them all.
    await waitFor(() => usWorker.stats().filtered === 10);
    expect(gotUs.events).toEqual([]);
  });

  it('names the consumer group after the subscription name: the same name shares, others do not', async () => {
    const broker = new MemoryBroker();
    const instance = (): EventSystem => groupMember(broker);
    const [a, b, c] = [instance(), instance(), instance()];
    const gotA = collectEvents();
    const gotB = collectEvents();
    const gotC = collectEvents();
    await a.subscribe('invoice.*', gotA.handler, { name: 'ledger' });
    await b.subscribe('invoice.*', gotB.handler, { name: 'ledger' });
    await c.subscribe('invoice.*', gotC.handler, { name: 'audit' });
    for (let i = 0; i < 10; i++) await a.publish('invoice.issued', { i });
    await gotC.waitForCount(10);
    await waitFor(() => gotA.events.length + gotB.events.length >= 10);
    await Promise.all([a.close(), b.close()]);
    expect(gotA.events.length + gotB.events.length).toBe(10);
  });

  it('calls the poison handler after the dead-letter write, with the original type', async () => {
    const transport = new MemoryTransport();
    const poisoned: { event: Event | undefined; reason: DeadLetterReason; stored: number }[] = [];
    const system = track(
      createEventSystem({
        service: 'shop',
        transports: { main: transport },
        routes: [{ pattern: 'order.>', transport: 'main', topic: 'orders' }],
        consumer: {
          poisonHandler: (event, reason) => {
            poisoned.push({ event, reason, stored: transport.deadLetterQueue.size });
          },
        },
        logger: quiet,
      }),
    );
    await system.subscribe('order.created', () => {
      throw new NonRetryableError('cannot bill');
    });
    await system.publish('order.created', { id: 7 });
    await waitFor(() => poisoned.length === 1);
    expect(poisoned[0]?.event?.type).toBe('order.created');
    expect(poisoned[0]?.reason.code).toBe(ErrorCode.NON_RETRYABLE);
    expect(poisoned[0]?.stored).toBe(1);
  });

  it('keeps the dead letter when the poison handler throws, and counts the failure', async () => {
    const transport = new MemoryTransport();
    const system = track(
      createEventSystem({
        service: 'shop',
        transports: { main: transport },
        consumer: {
          poisonHandler: () => Promise.reject(new Error('pager down')),
        },
        logger: quiet,
      }),
    );
    await system.subscribe('order.created', () => {
      throw new NonRetryableError('cannot bill');
    });
    await system.publish('order.created', {});
    await waitFor(() => system.stats().poisonHandlerFailures === 1);
    expect(transport.deadLetterQueue.size).toBe(1);
  });

  it('refuses a group on subscribe when the transport has no consumer groups', async () => {
    const { withInfo } = await import('./test-support.js');
    const system = track(
      createEventSystem({
        service: 's',
        transports: { main: withInfo(new MemoryTransport(), { consumerGroups: false }) },
        logger: quiet,
      }),
    );
    const error = await settlement(system.subscribe('a.b', () => undefined, { group: 'g' }));
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
  });

  it('acks events the filter refuses without running the handler', async () => {
    const system = track(
      createEventSystem({ service: 's', transports: { m: new MemoryTransport() }, logger: quiet }),
    );
    const big = collectEvents();
    await system.subscribe('order.placed', big.handler, {
      filter: (event) => (event.payload as { amount: number }).amount > 100,
    });
    await system.publish('order.placed', { amount: 5 });
    await system.publish('order.placed', { amount: 500 });
    await big.waitForCount(1);
    await waitFor(() => system.stats().filtered === 1);
    expect(big.events.map((event) => event.payload)).toEqual([{ amount: 500 }]);
    expect(system.stats().transports.m?.handled).toBe(2);
  });

  it('skips a redelivered event id with an idempotency store; a failed run does not mark it', async () => {
    const system = track(
      createEventSystem({ service: 's', transports: { m: new MemoryTransport() }, logger: quiet }),
    );
    const store = new MemoryIdempotencyStore();
    let runs = 0;
    let failNext = true;
    await system.subscribe(
      'payment.captured',
      () => {
        runs++;
        if (failNext) {
          failNext = false;
          throw new Error('flaky');
        }
      },
      {
        idempotency: { store, ttlMs: 60_000 },
        retry: { maxAttempts: 3, minDelayMs: 0, jitter: 0 },
      },
    );
    await system.publish('payment.captured', {}, { id: 'pay-1' });
    await waitFor(() => system.stats().transports.m?.handled === 1);
    await system.publish('payment.captured', {}, { id: 'pay-1' });
    await system.publish('payment.captured', {}, { headers: { 'idempotency-key': 'pay-1' } });
    await waitFor(() => system.stats().duplicates === 2);
    // The first run failed and was retried: two runs for the first delivery, none for the copies.
    expect(runs).toBe(2);
  });

  it('refuses idempotency without a store', async () => {
    const system = track(
      createEventSystem({ service: 's', transports: { m: new MemoryTransport() }, logger: quiet }),
    );
    const error = await settlement(
      system.subscribe('a', () => undefined, { idempotency: { ttlMs: 1 } as never }),
    );
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
  });

  it('refuses an unknown subscribe option', async () => {
    const system = track(
      createEventSystem({ service: 's', transports: { m: new MemoryTransport() }, logger: quiet }),
    );
    const error = await settlement(
      system.subscribe('a', () => undefined, { partitionBy: 'orderId' } as never),
    );
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
  });
});

describe('EventSystem validation', () => {
  const events = defineEvents({ 'user.created': z.object({ email: z.email() }) });

  it('refuses an invalid payload on publish in strict mode', async () => {
    const system = track(
      createEventSystem({
        service: 's',
        transports: { m: new MemoryTransport() },
        events,
        logger: quiet,
      }),
    );
    const error = await settlement(system.publish('user.created', { email: 'nope' }));
    expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
    expect(system.stats().transports.m?.published).toBe(0);
  });

  it('dead-letters an invalid payload on consume with VALIDATION, under a topic too', async () => {
    const broker = new MemoryBroker();
    const transport = new MemoryTransport({ broker });
    const system = track(
      createEventSystem({
        service: 's',
        transports: { m: transport },
        routes: [{ pattern: 'user.>', transport: 'm', topic: 'users' }],
        events,
        logger: quiet,
      }),
    );
    const got = collectEvents();
    await system.subscribe('user.created', got.handler);
    // Another producer writes the wire form with a bad payload.
    await rawBus(broker).publish(
      'users',
      { email: 'nope' },
      { headers: { 'event-type': 'user.created' } },
    );
    await system.publish('user.created', { email: 'a@b.co' });
    await got.waitForCount(1);
    await waitFor(() => transport.deadLetterQueue.size === 1);
    expect(transport.deadLetterQueue.list()[0]?.reason.code).toBe(ErrorCode.VALIDATION);
  });

  it('lets an invalid payload through with a warning in warn mode', async () => {
    const warnings: string[] = [];
    const system = track(
      createEventSystemBuilder()
        .withService('s')
        .withTransport('m', new MemoryTransport())
        .withEvents(events)
        .withValidationMode('warn')
        .withLogger({ warn: (_d, message) => warnings.push(message), error: () => undefined })
        .build(),
    );
    const got = collectEvents();
    await system.subscribe('user.created', got.handler);
    await system.publish('user.created', { email: 'nope' });
    await got.waitForCount(1);
    expect(warnings.length).toBe(2);
  });
});

describe('EventSystem bus options and validation modes', () => {
  it('hands bus options to the bus of every transport', async () => {
    const system = track(
      createEventSystemBuilder()
        .withService('s')
        .withTransport('a', new MemoryTransport())
        .withTransport('b', new MemoryTransport())
        .withRoute('a.>', { transport: 'a' })
        .withDefaultTransport('b')
        .withBusOptions({ backpressure: { maxQueueSize: 7, strategy: 'drop-newest' } })
        .withLogger(quiet)
        .build(),
    );
    const { transports } = system.stats();
    expect(transports.a?.backpressure.maxQueueSize).toBe(7);
    expect(transports.b?.backpressure.maxQueueSize).toBe(7);
  });

  it('refuses a bad bus option with CONFIG naming it', () => {
    const error = (() => {
      try {
        createEventSystem({
          service: 's',
          transports: { m: new MemoryTransport() },
          bus: { publishTimeoutMs: 0 },
          logger: quiet,
        });
      } catch (thrown) {
        return thrown;
      }
      return undefined;
    })();
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
    expect((error as Error).message).toContain('publishTimeoutMs');
  });

  it('runs no schema in ignore mode', async () => {
    const events = defineEvents({ 'user.created': z.object({ email: z.email() }) });
    const warnings: string[] = [];
    const system = track(
      createEventSystem({
        service: 's',
        transports: { m: new MemoryTransport() },
        events,
        validationMode: 'ignore',
        logger: { warn: (_d, message) => warnings.push(message), error: () => undefined },
      }),
    );
    const got = collectEvents();
    await system.subscribe('user.created', got.handler);
    await system.publish('user.created', { email: 'nope' });
    await got.waitForCount(1);
    expect(warnings).toEqual([]);
  });
});

describe('EventSystem lifecycle', () => {
  it('reports stats and health per transport, and refuses publishes after close', async () => {
    const system = createEventSystem({
      service: 's',
      transports: { a: new MemoryTransport(), b: new MemoryTransport() },
      routes: [{ pattern: 'a.>', transport: 'a' }],
      defaultTransport: 'b',
      logger: quiet,
    });
    await system.publish('a.one', {});
    await system.publish('b.one', {});
    const stats = system.stats();
    expect(stats.published).toBe(2);
    expect(stats.transports.a?.published).toBe(1);
    expect(stats.transports.b?.published).toBe(1);
    const health = await system.health();
    expect(health.healthy).toBe(true);
    expect(Object.keys(health.transports)).toEqual(['a', 'b']);
    await system.close();
    await system.close();
    const error = await settlement(system.publish('a.two', {}));
    expect(isWatchtowerError(error, ErrorCode.CLOSED)).toBe(true);
    expect((await system.health()).healthy).toBe(false);
  });
});
