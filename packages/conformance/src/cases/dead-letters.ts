/**
 * Cases about events that cannot be handled: failures are dead-lettered with their reason,
 * `consumeDlq` hands the letters back, malformed bytes become a letter too, and the
 * subscription goes on delivering the rest.
 */
import { expect } from 'vitest';
import {
  NonRetryableError,
  createEvent,
  encodeEventBytes,
  type DeadLetter,
} from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import type { ConformanceCase } from '../harness.js';

/** Half the handlers throw `NonRetryableError`: the other half are still handled, all of them. */
export const goesOnDeliveringAfterHandlerFailures: ConformanceCase = {
  name: 'goes on delivering after handlers fail, dead-lettering the failures',
  requires: [],
  run: async ({ newBus, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    const handled: number[] = [];
    await sub.bus.subscribe(type('errors'), (event) => {
      const n = (event.payload as { n: number }).n;
      if (n % 2 === 1) throw new NonRetryableError(`odd ${n}`);
      handled.push(n);
    });
    const pub = await newBus();
    for (let n = 0; n < 20; n++) await pub.bus.publish(type('errors'), { n });
    await waitFor(() => handled.length >= 10 && sub.bus.stats().deadLettered >= 10, {
      timeoutMs,
    });
    expect(handled.sort((a, b) => a - b)).toEqual([0, 2, 4, 6, 8, 10, 12, 14, 16, 18]);
    expectNoBusErrors(sub, pub);
  },
};

/** After the last retry the letter carries the event, the error, the attempts and the subscription. */
export const deadLettersAfterRetriesWithTheReason: ConformanceCase = {
  name: 'dead-letters an event after its retries with the reason, and consumeDlq returns it',
  requires: [],
  run: async ({ newBus, newTransport, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    let calls = 0;
    await sub.bus.subscribe(
      type('dlq.target'),
      () => {
        calls++;
        throw new Error('always fails');
      },
      { retry: { maxAttempts: 3, minDelayMs: 10, maxDelayMs: 50 }, name: 'dlq-case' },
    );
    const pub = await newBus();
    const event = createEvent(type('dlq.target'), { important: true });
    await pub.bus.publish(event);
    await waitFor(() => sub.bus.stats().deadLettered >= 1, {
      timeoutMs,
      message: 'a dead letter',
    });
    expect(calls).toBe(3);
    const letters: DeadLetter[] = [];
    const reader = await newTransport();
    const handle = await reader.consumeDlq((letter) => {
      letters.push(letter);
    });
    await waitFor(() => letters.some((letter) => letter.event?.id === event.id), {
      timeoutMs,
      message: 'the dead letter through consumeDlq',
    });
    await handle.unsubscribe();
    const letter = letters.find((l) => l.event?.id === event.id) as DeadLetter;
    expect(letter.event?.payload).toEqual({ important: true });
    expect(letter.reason).toMatchObject({
      message: 'always fails',
      code: 'HANDLER_FAILED',
      attempts: 3,
      originalType: type('dlq.target'),
      subscription: 'dlq-case',
    });
    expect(Number.isNaN(Date.parse(letter.reason.failedAt))).toBe(false);
    expectNoBusErrors(sub, pub);
  },
};

/** Bytes that are not an event become a `SERIALIZATION` letter with the raw bytes; the next event arrives. */
export const deadLettersMalformedBytes: ConformanceCase = {
  name: 'dead-letters malformed bytes and keeps the subscription running',
  requires: ['publishRaw'],
  run: async ({ newBus, newTransport, publishRaw, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    const seen: string[] = [];
    await sub.bus.subscribe(type('raw'), (event) => {
      seen.push(event.id);
    });
    await newTransport();
    const garbage = new TextEncoder().encode('{"this is": not json');
    await publishRaw(type('raw'), garbage);
    const pub = await newBus();
    const valid = createEvent(type('raw'), { fine: true });
    await pub.bus.publish(valid);
    await waitFor(() => seen.includes(valid.id) && sub.bus.stats().deadLettered >= 1, {
      timeoutMs,
    });
    const letters: DeadLetter[] = [];
    const handle = await sub.transport.consumeDlq((letter) => {
      letters.push(letter);
    });
    await waitFor(() => letters.length >= 1, { timeoutMs });
    await handle.unsubscribe();
    expect(letters[0]?.event).toBeUndefined();
    expect(new TextDecoder().decode(letters[0]?.raw)).toBe('{"this is": not json');
    expect(letters[0]?.reason.code).toBe('SERIALIZATION');
    expect(sub.bus.stats().malformed).toBe(1);
    expectNoBusErrors(sub, pub);
  },
};

/**
 * An event put where another type's events go (a producer's mistake) is dead-lettered with
 * `MISROUTED`, not acked unseen, and the subscription goes on.
 */
export const deadLettersAMisroutedEvent: ConformanceCase = {
  name: 'dead-letters an event found where another type belongs as MISROUTED, and goes on',
  requires: ['publishRaw'],
  run: async ({ newBus, newTransport, publishRaw, type, timeoutMs, expectNoBusErrors }) => {
    const sub = await newBus();
    const seen: string[] = [];
    await sub.bus.subscribe(type('routed'), (event) => {
      seen.push(event.type);
    });
    await newTransport();
    const stray = createEvent(type('elsewhere'), { lost: false });
    await publishRaw(type('routed'), encodeEventBytes(stray));
    const pub = await newBus();
    const valid = createEvent(type('routed'), { fine: true });
    await pub.bus.publish(valid);
    await waitFor(() => seen.length === 1 && sub.bus.stats().deadLettered >= 1, { timeoutMs });
    const letters: DeadLetter[] = [];
    const handle = await sub.transport.consumeDlq((letter) => {
      letters.push(letter);
    });
    await waitFor(() => letters.length >= 1, { timeoutMs });
    await handle.unsubscribe();
    expect(letters[0]?.event?.id).toBe(stray.id);
    expect(letters[0]?.reason.code).toBe('MISROUTED');
    expect(seen).toEqual([type('routed')]);
    expect(sub.bus.stats().misrouted).toBe(1);
    expectNoBusErrors(sub, pub);
  },
};
