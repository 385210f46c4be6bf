import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, isWatchtowerError } from '../errors.js';
import type { Event } from '../event.js';
import { EventBus } from '../event-bus.js';
import { MemoryBroker, MemoryTransport } from '../memory-transport.js';
import { FakeClock, collectEvents, settlement, waitFor } from '../testing.js';
import { createEventSystem, type EventSystem } from './event-system.js';
import type { EventSystemConfig } from './config.js';
import { quiet } from './test-support.js';

const open: EventSystem[] = [];
function system(transport = new MemoryTransport(), clock?: FakeClock): EventSystem {
  const made = createEventSystem({
    service: 's',
    transports: { m: transport },
    logger: quiet,
    ...(clock === undefined ? {} : { clock }),
  });
  open.push(made);
  return made;
}
const buses: EventBus[] = [];
afterEach(async () => {
  await Promise.allSettled([
    ...open.splice(0).map((made) => made.close({ timeoutMs: 100 })),
    ...buses.splice(0).map((bus) => bus.close({ timeoutMs: 100 })),
  ]);
});

const keyOf = (event: Event): string => (event.payload as { key: string }).key;
const label = (event: Event): string => {
  const { key, n } = event.payload as { key: string; n: number };
  return `${key}${n}`;
};

/** A handler whose runs wait until the test lets each of them finish. */
function gated(): {
  handler: (event: Event) => Promise<void>;
  started: string[];
  finish: (name: string) => void;
} {
  const started: string[] = [];
  const gates = new Map<string, () => void>();
  return {
    started,
    handler: (event) =>
      new Promise<void>((resolve) => {
        started.push(label(event));
        gates.set(label(event), resolve);
      }),
    finish: (name) => gates.get(name)?.(),
  };
}

describe('ordering keys', () => {
  it('runs events of one key one at a time in arrival order, other keys side by side', async () => {
    const made = system();
    const run = gated();
    await made.subscribe('order.updated', run.handler, { orderingKey: keyOf, concurrency: 4 });
    await made.publish('order.updated', { key: 'a', n: 1 });
    await made.publish('order.updated', { key: 'a', n: 2 });
    await made.publish('order.updated', { key: 'b', n: 1 });
    await waitFor(() => run.started.length === 2);
    expect(run.started).toEqual(['a1', 'b1']);
    run.finish('b1');
    run.finish('a1');
    await waitFor(() => run.started.length === 3);
    expect(run.started).toEqual(['a1', 'b1', 'a2']);
    run.finish('a2');
    await waitFor(() => made.stats().transports.m?.handled === 3);
  });

  it('retries a failed run in place, so a later event of its key never overtakes it', async () => {
    const made = system();
    const runs: string[] = [];
    let failures = 1;
    await made.subscribe(
      'order.updated',
      (event) => {
        runs.push(label(event));
        if (label(event) === 'a1' && failures-- > 0) throw new Error('flaky');
      },
      { orderingKey: keyOf, concurrency: 4, retry: { maxAttempts: 3, minDelayMs: 0, jitter: 0 } },
    );
    await made.publish('order.updated', { key: 'a', n: 1 });
    await made.publish('order.updated', { key: 'a', n: 2 });
    await waitFor(() => runs.length === 3);
    expect(runs).toEqual(['a1', 'a1', 'a2']);
    expect(made.stats().transports.m?.retried).toBe(0);
  });

  it('dead-letters an event after its in-place runs, then lets the key go on', async () => {
    const transport = new MemoryTransport();
    const made = system(transport);
    const runs: string[] = [];
    await made.subscribe(
      'order.updated',
      (event) => {
        runs.push(label(event));
        if (label(event) === 'a1') throw new Error('always');
      },
      { orderingKey: keyOf, retry: { maxAttempts: 2, minDelayMs: 0, jitter: 0 } },
    );
    await made.publish('order.updated', { key: 'a', n: 1 });
    await made.publish('order.updated', { key: 'a', n: 2 });
    await waitFor(() => transport.deadLetterQueue.size === 1 && runs.length === 3);
    expect(runs).toEqual(['a1', 'a1', 'a2']);
    const reason = transport.deadLetterQueue.list()[0]?.reason;
    expect(reason?.code).toBe(ErrorCode.HANDLER_FAILED);
    expect(reason?.message).toContain('failed 2 time(s) in place under ordering key "a"');
  });

  it('fails a run that outlives timeoutMs with TIMEOUT, on the clock', async () => {
    const clock = new FakeClock();
    const transport = new MemoryTransport();
    const made = system(transport, clock);
    const run = gated();
    await made.subscribe('order.updated', run.handler, {
      orderingKey: keyOf,
      timeoutMs: 1000,
      retry: { maxAttempts: 1 },
    });
    await made.publish('order.updated', { key: 'a', n: 1 });
    await waitFor(() => run.started.length === 1);
    await clock.advanceAsync(1000);
    await waitFor(() => transport.deadLetterQueue.size === 1);
    expect(transport.deadLetterQueue.list()[0]?.reason.code).toBe(ErrorCode.TIMEOUT);
  });

  it('runs events without a key unordered', async () => {
    const made = system();
    const run = gated();
    await made.subscribe('order.updated', run.handler, {
      orderingKey: () => undefined,
      concurrency: 2,
    });
    await made.publish('order.updated', { key: 'a', n: 1 });
    await made.publish('order.updated', { key: 'a', n: 2 });
    await waitFor(() => run.started.length === 2);
    run.finish('a1');
    run.finish('a2');
  });

  it('refuses an orderingKey that is not a function', async () => {
    const made = system();
    const error = await settlement(
      made.subscribe('a', () => undefined, { orderingKey: 'orderId' as never }),
    );
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
  });
});

describe('ordering keys on publish: the partition-key header', () => {
  const orderOf = (event: Event): string | undefined =>
    (event.payload as { orderId?: string }).orderId;

  /** A system on `broker` and a plain bus there that shows what is on the wire. */
  async function onWire(
    config: Omit<EventSystemConfig, 'service' | 'transports' | 'logger'>,
  ): Promise<{ made: EventSystem; wire: ReturnType<typeof collectEvents> }> {
    const broker = new MemoryBroker();
    const made = createEventSystem({
      service: 's',
      transports: { m: new MemoryTransport({ broker }) },
      logger: quiet,
      ...config,
    });
    open.push(made);
    const plain = new EventBus({ transport: new MemoryTransport({ broker }), logger: quiet });
    buses.push(plain);
    const wire = collectEvents();
    await plain.subscribe('>', wire.handler);
    return { made, wire };
  }

  it("sends the route's ordering key as the partition-key header; a key given on publish wins", async () => {
    const { made, wire } = await onWire({
      routes: [{ pattern: 'order.>', transport: 'm', orderingKey: orderOf }],
    });
    await made.publish('order.placed', { orderId: 'o-1' });
    await made.publish(
      'order.placed',
      { orderId: 'o-2' },
      { headers: { 'partition-key': 'mine' } },
    );
    await made.publish('order.placed', {});
    await made.publish('mail.sent', { orderId: 'o-3' });
    await wire.waitForCount(4);
    expect(wire.events.map((event) => event.headers['partition-key'])).toEqual([
      'o-1',
      'mine',
      undefined,
      undefined,
    ]);
  });

  it("uses the publisher's orderingKey on routes without their own, in batches too", async () => {
    const { made, wire } = await onWire({
      routes: [{ pattern: 'order.>', transport: 'm', orderingKey: () => 'route' }],
      publisher: { orderingKey: orderOf, batching: { maxSize: 2, maxWaitMs: 0 } },
    });
    await Promise.all([
      made.publish('order.placed', { orderId: 'o-1' }),
      made.publish('mail.sent', { orderId: 'o-2' }),
    ]);
    await made.publishBatch([{ type: 'mail.sent', payload: { orderId: 'o-3' } }]);
    await wire.waitForCount(3);
    expect(wire.events.map((event) => event.headers['partition-key'])).toEqual([
      'route',
      'o-2',
      'o-3',
    ]);
  });

  it('orders a subscription by the partition-key header the publisher set', async () => {
    const made = createEventSystem({
      service: 's',
      transports: { m: new MemoryTransport() },
      routes: [{ pattern: 'order.>', transport: 'm', orderingKey: orderOf }],
      logger: quiet,
    });
    open.push(made);
    const run = gated();
    await made.subscribe('order.updated', run.handler, {
      orderingKey: (event) => event.headers['partition-key'],
      concurrency: 4,
    });
    await made.publish('order.updated', { orderId: 'a', key: 'a', n: 1 });
    await made.publish('order.updated', { orderId: 'a', key: 'a', n: 2 });
    await made.publish('order.updated', { orderId: 'b', key: 'b', n: 1 });
    await waitFor(() => run.started.length === 2);
    expect(run.started).toEqual(['a1', 'b1']);
    run.finish('a1');
    await waitFor(() => run.started.length === 3);
    expect(run.started).toEqual(['a1', 'b1', 'a2']);
    run.finish('a2');
    run.finish('b1');
  });

  it('rejects a publish whose orderingKey returns no string with VALIDATION, sending nothing', async () => {
    const { made, wire } = await onWire({
      routes: [{ pattern: 'order.>', transport: 'm', orderingKey: () => 42 as never }],
    });
    const error = await settlement(made.publish('order.placed', {}));
    expect(isWatchtowerError(error, ErrorCode.VALIDATION)).toBe(true);
    expect((error as Error).message).toContain('routes[0] ("order.>")');
    await made.publish('mail.sent', {});
    await wire.waitForCount(1);
    expect(wire.events.map((event) => event.type)).toEqual(['mail.sent']);
    expect(made.stats().publishFailed).toBe(1);
  });

  it('refuses a route or publisher orderingKey that is not a function, naming it', () => {
    const build = (config: Partial<EventSystemConfig>) => () =>
      createEventSystem({
        service: 's',
        transports: { m: new MemoryTransport() },
        logger: quiet,
        ...config,
      });
    expect(
      build({ routes: [{ pattern: 'a', transport: 'm', orderingKey: 'orderId' as never }] }),
    ).toThrow(/routes\[0\]\.orderingKey/);
    expect(build({ publisher: { orderingKey: 'orderId' as never } })).toThrow(
      /publisher\.orderingKey/,
    );
  });
});
