/**
 * Cases about the life of a client rather than its events: concurrent and repeated close,
 * close flushing what was accepted, recovery after a broker restart, health, and refusing
 * misspelt options instead of ignoring them.
 */
import { expect } from 'vitest';
import { createEvent } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import type { ConformanceCase } from '../harness.js';
import { nextWithin } from '../next-within.js';

/** Unsubscribing twice over, concurrently, and closing three times all succeed; then `CLOSED`. */
export const closesSubscriptionsAndBusConcurrently: ConformanceCase = {
  name: 'closes many subscriptions and the bus concurrently, and close is idempotent',
  requires: [],
  run: async ({ newBus, type, expectNoBusErrors }) => {
    const sub = await newBus();
    const handles = await Promise.all(
      Array.from({ length: 10 }, (_, i) => sub.bus.subscribe(type(`close${i}`), () => undefined)),
    );
    const results = await Promise.allSettled([
      ...handles.map((handle) => handle.unsubscribe()),
      ...handles.map((handle) => sub.bus.unsubscribe(handle)),
    ]);
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    const closing = sub.bus.close();
    expect(sub.bus.close()).toBe(closing);
    await Promise.all([closing, sub.bus.close()]);
    await expect(sub.bus.publish(type('close0'), {})).rejects.toMatchObject({ code: 'CLOSED' });
    expect(sub.bus.stats().subscriptions).toBe(0);
    expectNoBusErrors(sub);
  },
};

/** 200 publishes still in flight when `close()` is called all resolve and all arrive. */
export const sendsEveryAcceptedEventBeforeClose: ConformanceCase = {
  name: 'sends every accepted event before close resolves',
  requires: [],
  run: async ({ newBus, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    const seen = new Set<string>();
    await sub.bus.subscribe(type('pending'), (event) => {
      seen.add(event.id);
    });
    const pub = await newBus();
    const events = Array.from({ length: 200 }, (_, i) => createEvent(type('pending'), { i }));
    const publishes = events.map((event) => pub.bus.publish(event));
    await pub.bus.close({ timeoutMs });
    const outcomes = await Promise.allSettled(publishes);
    expect(outcomes.filter((o) => o.status === 'rejected')).toEqual([]);
    await waitFor(() => seen.size >= 200, { timeoutMs, message: 'all 200 events after close' });
    expectNoBusErrors(sub, pub);
  },
};

/** Both buses reconnect on their own after the broker restarts and report healthy again. */
export const resumesDeliveryAfterBrokerRestart: ConformanceCase = {
  name: 'resumes delivery after the broker restarts',
  requires: ['reconnect', 'restartBroker'],
  run: async ({ newBus, restartBroker, type, timeoutMs }) => {
    const sub = await newBus();
    const seen = new Set<number>();
    await sub.bus.subscribe(type('restart'), (event) => {
      seen.add((event.payload as { n: number }).n);
    });
    const pub = await newBus();
    await pub.bus.publish(type('restart'), { n: 1 });
    await waitFor(() => seen.has(1), { timeoutMs });
    await restartBroker();
    // Publishing may fail until the client has reconnected; the bus retries, and the
    // test keeps publishing until one after the restart arrives.
    let n = 2;
    await waitFor(
      async () => {
        await pub.bus.publish(type('restart'), { n }).catch(() => undefined);
        n++;
        return [...seen].some((value) => value >= 2);
      },
      {
        timeoutMs: timeoutMs * 3,
        intervalMs: 250,
        message: 'an event published after the restart',
      },
    );
    expect((await sub.bus.healthCheck()).healthy).toBe(true);
    expect((await pub.bus.healthCheck()).healthy).toBe(true);
  },
};

/**
 * A transport that reconnects says so: `on('connection')` reports `lost` when the broker goes
 * and `restored` when it is back, and the bus, which holds publishes meanwhile, confirms every
 * publish made during the outage once the connection is back, none refused. Where the broker
 * keeps events (`persistence`), a group subscriber then receives every one of them.
 */
export const reportsTheConnectionAndConfirmsPublishesAcrossARestart: ConformanceCase = {
  name: 'reports its connection lost and restored around a broker restart, and the bus confirms every publish made meanwhile',
  requires: ['reconnect', 'restartBroker'],
  run: async ({ newBus, restartBroker, type, timeoutMs }) => {
    const sub = await newBus();
    const seen = new Set<number>();
    const { consumerGroups, persistence } = sub.transport.info.capabilities;
    await sub.bus.subscribe(
      type('outage'),
      (event) => {
        seen.add((event.payload as { n: number }).n);
      },
      consumerGroups ? { group: 'outage' } : {},
    );
    const pub = await newBus();
    const changes: string[] = [];
    expect(typeof pub.transport.on).toBe('function');
    pub.transport.on?.('connection', (change) => {
      // Failed reconnect attempts, as many as the restart takes, are reported between the two.
      if (change.state !== 'reconnect-failed') changes.push(change.state);
    });
    await pub.bus.publish(type('outage'), { n: 0 });
    await waitFor(() => seen.has(0), { timeoutMs });

    const restarting = restartBroker();
    await waitFor(() => changes.includes('lost'), { timeoutMs, message: 'connection lost' });
    // Settled as they go, so that one refused publish fails the case with every reason
    // instead of leaving the others' rejections unhandled while the broker restarts.
    const during = Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => pub.bus.publish(type('outage'), { n: i + 1 })),
    );
    await restarting;
    const refused = (await during).flatMap((outcome) =>
      outcome.status === 'rejected' ? [String(outcome.reason)] : [],
    );
    expect(refused).toEqual([]);
    await waitFor(() => changes.includes('restored'), { timeoutMs, message: 'restored' });
    expect(changes).toEqual(['lost', 'restored']);
    expect(pub.bus.stats().publishFailed).toBe(0);
    if (!persistence) return;
    await waitFor(() => seen.size === 21, {
      timeoutMs: timeoutMs * 3,
      message: 'every publish made during the outage delivered',
    });
  },
};

/**
 * A JavaScript caller's typo is a `CONFIG` error naming the key, at every option-taking call
 * of the transport; the refused call has no effect.
 */
export const refusesMisspeltOptionsWithConfig: ConformanceCase = {
  name: 'refuses a misspelt option of publish, subscribe, nack, consumeDlq and close with CONFIG naming it, instead of ignoring it',
  requires: [],
  run: async ({ newTransport, type, timeoutMs }) => {
    const transport = await newTransport();
    const refused = { code: 'CONFIG', message: expect.stringContaining('`grup`') as unknown };
    const event = createEvent(type('options'), { n: 1 });
    // As a JavaScript caller passes it: no type check, so the transport must refuse it itself.
    const misspelt = { grup: 'workers' } as never;
    await expect(transport.subscribe(type('options'), misspelt)).rejects.toMatchObject(refused);
    await expect(transport.publish(event, misspelt)).rejects.toMatchObject(refused);
    await expect(transport.consumeDlq(() => undefined, misspelt)).rejects.toMatchObject(refused);
    // The event was not published by the refused call: a subscriber sees only the next one.
    const subscription = await transport.subscribe(type('options'));
    const iterator = subscription[Symbol.asyncIterator]();
    await transport.publish(event);
    const delivery = await nextWithin(iterator, timeoutMs);
    await expect(delivery.nack(misspelt)).rejects.toMatchObject(refused);
    await delivery.ack();
    await subscription.unsubscribe();
    await expect(transport.close(misspelt)).rejects.toMatchObject(refused);
    // Refused, so still open.
    expect((await transport.healthCheck()).healthy).toBe(true);
  },
};

/** Healthy while connected; after a repeated `close()`, unhealthy and publishing is `CLOSED`. */
export const reportsHealthAndRefusesWorkAfterClose: ConformanceCase = {
  name: 'reports health while connected and refuses work after close with CLOSED',
  requires: [],
  run: async ({ newTransport, type }) => {
    const transport = await newTransport();
    const health = await transport.healthCheck();
    expect(health.healthy).toBe(true);
    await transport.close();
    await transport.close();
    expect((await transport.healthCheck()).healthy).toBe(false);
    await expect(transport.publish(createEvent(type('closed'), {}))).rejects.toMatchObject({
      code: 'CLOSED',
    });
  },
};
