import { describe, expect, it } from 'vitest';
import { createEvent } from '../event.js';
import { FakeClock } from '../testing/fake-clock.js';
import type { Delivery } from '../transport.js';
import { DeliveryBuffer } from './delivery-buffer.js';
import { RESOLVED } from './resolved.js';
import { SourceSubscription, type DeliverySource } from './source-subscription.js';

function delivery(n: number): Delivery {
  return {
    kind: 'event',
    event: createEvent('a.b', { n }),
    attempt: 1,
    origin: 'a.b',
    ack: () => RESOLVED,
    nack: () => RESOLVED,
  };
}

function bufferSource(stop: () => Promise<void>): {
  buffer: DeliveryBuffer<Delivery>;
  source: DeliverySource;
} {
  const buffer = new DeliveryBuffer<Delivery>();
  return {
    buffer,
    source: {
      [Symbol.asyncIterator]: () => buffer,
      tryNext: () => buffer.tryNext(),
      stop,
    },
  };
}

describe('SourceSubscription', () => {
  it('iterates the source and takes buffered deliveries with tryNext', async () => {
    const { buffer, source } = bufferSource(async () => undefined);
    const sub = new SourceSubscription('a.*', source, { clock: new FakeClock() });
    buffer.push(delivery(1));
    buffer.push(delivery(2));
    expect(sub.pattern).toBe('a.*');
    expect(sub.tryNext()?.kind).toBe('event');
    const next = await sub[Symbol.asyncIterator]().next();
    expect(next.done).toBe(false);
    expect(sub.tryNext()).toBeUndefined();
  });

  it('answers tryNext with undefined for a source without one', () => {
    const sub = new SourceSubscription(
      'a.b',
      { [Symbol.asyncIterator]: () => new DeliveryBuffer<Delivery>(), stop: async () => undefined },
      { clock: new FakeClock() },
    );
    expect(sub.tryNext()).toBeUndefined();
  });

  it('stops the source once however often unsubscribe is called, then calls onStop', async () => {
    let stops = 0;
    let stopped = 0;
    const { source } = bufferSource(async () => void stops++);
    const sub = new SourceSubscription('a.b', source, {
      clock: new FakeClock(),
      onStop: () => stopped++,
    });
    await Promise.all([sub.unsubscribe(), sub.unsubscribe()]);
    await sub.unsubscribe();
    expect(stops).toBe(1);
    expect(stopped).toBe(1);
  });

  it('resolves after stopTimeoutMs when the broker does not answer, handing the stop to background work', async () => {
    const clock = new FakeClock();
    let finish: (() => void) | undefined;
    const { source } = bufferSource(() => new Promise<void>((resolve) => (finish = resolve)));
    const background: string[] = [];
    let stopped = 0;
    const sub = new SourceSubscription('a.b', source, {
      clock,
      stopTimeoutMs: 200,
      onStop: () => stopped++,
      background: (_stop, operation) => background.push(operation),
    });
    let resolved = false;
    const unsubscribing = sub.unsubscribe().then(() => (resolved = true));
    await clock.advanceAsync(199);
    expect(resolved).toBe(false);
    await clock.advanceAsync(1);
    await unsubscribing;
    expect(resolved).toBe(true);
    expect(stopped).toBe(1);
    expect(background).toEqual(['unsubscribe from a.b']);
    finish?.();
  });
});
