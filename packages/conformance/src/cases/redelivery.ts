/**
 * Cases about deliveries that come again: a failed handler, a nack (plain and delayed), and a
 * delivery its consumer never acked before it went away. The nack cases drive a transport's
 * subscription directly, since the bus hides `nack()`; the rest go through a bus.
 */
import { expect } from 'vitest';
import { createEvent, type Event } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import type { ConformanceCase } from '../harness.js';
import { nextWithin } from '../next-within.js';

/** A throwing handler is retried by the bus on every transport, with no dead letter. */
export const redeliversAFailedHandlerWithAttemptTwo: ConformanceCase = {
  name: 'redelivers an event whose handler failed, with attempt 2, and handles it once',
  requires: [],
  run: async ({ newBus, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    const attempts: number[] = [];
    let handled = 0;
    await sub.bus.subscribe(type('resend'), (_event, context) => {
      attempts.push(context.attempt);
      if (context.attempt === 1) throw new Error('first try fails');
      handled++;
    });
    const pub = await newBus();
    await pub.bus.publish(type('resend'), { ok: true });
    await waitFor(() => handled === 1, { timeoutMs, message: 'handled on the second attempt' });
    expect(attempts).toEqual([1, 2]);
    expect(sub.bus.stats().deadLettered).toBe(0);
    expectNoBusErrors(sub, pub);
  },
};

/** `nack()` on a transport delivery brings the same event back with `attempt` 2. */
export const redeliversANackedDelivery: ConformanceCase = {
  name: 'redelivers a nacked delivery with a higher attempt number',
  requires: ['redelivery'],
  run: async ({ newTransport, newBus, type, timeoutMs }) => {
    const transport = await newTransport();
    const subscription = await transport.subscribe(type('nack'));
    const pub = await newBus();
    const iterator = subscription[Symbol.asyncIterator]();
    const published = pub.bus.publish(type('nack'), { n: 1 });
    const first = await nextWithin(iterator, timeoutMs);
    await published;
    expect(first.attempt).toBe(1);
    await first.nack();
    const second = await nextWithin(iterator, timeoutMs);
    expect(second.kind).toBe('event');
    expect(second.kind === 'event' && first.kind === 'event' ? second.event.id : '').toBe(
      first.kind === 'event' ? first.event.id : 'x',
    );
    expect(second.attempt).toBe(2);
    await second.ack();
    await subscription.unsubscribe();
  },
};

/** A group member that closes holding an unacked delivery does not lose it for the group. */
export const redeliversToTheGroupWhatAClosedClientNeverAcked: ConformanceCase = {
  name: 'delivers again to the group a delivery that a closed client never acked',
  requires: ['redelivery', 'consumerGroups'],
  run: async ({
    newTransport,
    newBus,
    type,
    namespace,
    timeoutMs,
    redeliveryTimeoutMs,
    expectNoBusErrors,
  }) => {
    const group = `g-${namespace}`;
    const leaving = await newTransport();
    const leavingSub = await leaving.subscribe(type('noack'), { group });
    const staying = await newBus();
    const seen: Event[] = [];
    const pub = await newBus();
    const event = createEvent(type('noack'), { n: 1 });
    const published = pub.bus.publish(event);
    const taken = await nextWithin(leavingSub[Symbol.asyncIterator](), timeoutMs);
    await published;
    expect(taken.kind === 'event' && taken.event.id).toBe(event.id);
    await staying.bus.subscribe(
      type('noack'),
      (e) => {
        seen.push(e);
      },
      { group },
    );
    await leaving.close({ timeoutMs: 100 });
    await waitFor(() => seen.some((e) => e.id === event.id), {
      timeoutMs: redeliveryTimeoutMs,
      message: 'the unacked event delivered to the other member',
    });
    expectNoBusErrors(staying, pub);
  },
};

/** `nack({ delayMs })` is not redelivered before the delay has passed. */
export const holdsBackADelayedNack: ConformanceCase = {
  name: 'holds back a delayed nack until its delay has passed',
  requires: ['redelivery', 'delayedRetry'],
  run: async ({ newTransport, newBus, type, timeoutMs }) => {
    const transport = await newTransport();
    const subscription = await transport.subscribe(type('delay'));
    const iterator = subscription[Symbol.asyncIterator]();
    const pub = await newBus();
    const published = pub.bus.publish(type('delay'), {});
    const first = await nextWithin(iterator, timeoutMs);
    await published;
    const delayMs = 1500;
    const nackedAt = Date.now();
    await first.nack({ delayMs });
    const second = await nextWithin(iterator, timeoutMs + delayMs);
    // A lower bound only: redelivery before the delay breaks the contract; later is fine.
    expect(Date.now() - nackedAt).toBeGreaterThanOrEqual(delayMs - 50);
    expect(second.attempt).toBe(2);
    await second.ack();
    await subscription.unsubscribe();
  },
};
