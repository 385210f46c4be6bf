import { describe, expect, it } from 'vitest';
import { ErrorCode, WatchtowerError } from '../errors.js';
import { createEvent } from '../event.js';
import { FakeClock } from '../testing/fake-clock.js';
import { waitFor } from '../testing/wait-for.js';
import type { DeadLetter } from '../transport.js';
import {
  DeadLetterConsumer,
  deadLetterRetryDelayMs,
  type DeadLetterEntry,
  type DeadLetterSource,
} from './dead-letter-consumer.js';
import { DeliveryBuffer } from './delivery-buffer.js';

interface Settled {
  acked: string[];
  retried: [string, number][];
}

function source(): {
  buffer: DeliveryBuffer<DeadLetterEntry>;
  source: DeadLetterSource;
  stops: number;
} {
  const buffer = new DeliveryBuffer<DeadLetterEntry>({ track: false });
  const state = {
    buffer,
    stops: 0,
    source: {
      [Symbol.asyncIterator]: () => buffer,
      stop: async () => {
        state.stops++;
        buffer.end();
      },
    },
  };
  return state;
}

function entry(id: string, attempt: number, settled: Settled): DeadLetterEntry {
  const letter: DeadLetter = {
    event: createEvent('a.b', { id }),
    reason: { message: 'm', code: 'C', attempts: 1, failedAt: 'now', originalType: 'a.b' },
  };
  return {
    letter,
    attempt,
    origin: `dlq.a.b#${id}`,
    ack: () => void settled.acked.push(id),
    retryLater: (delayMs) => void settled.retried.push([id, delayMs]),
  };
}

function consumer(
  src: DeadLetterSource,
  handler: (letter: DeadLetter) => void | Promise<void>,
  errors: WatchtowerError[],
  onStop?: () => void,
): DeadLetterConsumer {
  return new DeadLetterConsumer({
    id: 'dlq-1',
    source: src,
    handler,
    afterFailure: 'it comes back later',
    report: (error) => errors.push(error),
    clock: new FakeClock(),
    mapError: (error, operation) =>
      new WatchtowerError(ErrorCode.TRANSPORT, `${operation}: ${String(error)}`),
    ...(onStop === undefined ? {} : { onStop }),
  }).start();
}

describe('DeadLetterConsumer', () => {
  it('acks each letter whose handler returned, one at a time in order', async () => {
    const s = source();
    const settled: Settled = { acked: [], retried: [] };
    const seen: unknown[] = [];
    let running = 0;
    let most = 0;
    const errors: WatchtowerError[] = [];
    consumer(
      s.source,
      async (letter) => {
        running++;
        most = Math.max(most, running);
        await new Promise((resolve) => setImmediate(resolve));
        seen.push((letter.event?.payload as { id: string }).id);
        running--;
      },
      errors,
    );
    for (const id of ['1', '2', '3']) s.buffer.push(entry(id, 1, settled));
    await waitFor(() => settled.acked.length === 3);
    expect(seen).toEqual(['1', '2', '3']);
    expect(settled.acked).toEqual(['1', '2', '3']);
    expect(most).toBe(1);
    expect(errors).toEqual([]);
  });

  it('leaves a letter whose handler threw for later with a growing delay, and reports HANDLER_FAILED', async () => {
    const s = source();
    const settled: Settled = { acked: [], retried: [] };
    const errors: WatchtowerError[] = [];
    consumer(
      s.source,
      () => {
        throw new Error('store down');
      },
      errors,
    );
    s.buffer.push(entry('1', 1, settled));
    s.buffer.push(entry('1', 4, settled));
    await waitFor(() => settled.retried.length === 2);
    expect(settled.retried).toEqual([
      ['1', 1000],
      ['1', 8000],
    ]);
    expect(settled.acked).toEqual([]);
    expect(errors.map((e) => e.code)).toEqual([ErrorCode.HANDLER_FAILED, ErrorCode.HANDLER_FAILED]);
    expect(errors[0]?.message).toContain('dlq.a.b#1; it comes back later: store down');
  });

  it('reports a settle that failed and goes on', async () => {
    const s = source();
    const errors: WatchtowerError[] = [];
    const handled: string[] = [];
    consumer(
      s.source,
      (letter) => void handled.push((letter.event?.payload as { id: string }).id),
      errors,
    );
    const broken = entry('1', 1, { acked: [], retried: [] });
    s.buffer.push({ ...broken, ack: () => Promise.reject(new Error('socket closed')) });
    s.buffer.push(entry('2', 1, { acked: [], retried: [] }));
    await waitFor(() => handled.length === 2);
    await waitFor(() => errors.length === 1);
    expect(errors[0]?.message).toBe('ack the dead letter from dlq.a.b#1: Error: socket closed');
  });

  it('reports a source that fails, but not one stopped by unsubscribe', async () => {
    const failing = source();
    const errors: WatchtowerError[] = [];
    consumer(failing.source, () => undefined, errors);
    failing.buffer.fail(new Error('subscription refused'));
    await waitFor(() => errors.length === 1);
    expect(errors[0]?.message).toContain('dead-letter consumer dlq-1');

    const stopped = source();
    const quiet: WatchtowerError[] = [];
    await consumer(stopped.source, () => undefined, quiet).unsubscribe();
    expect(quiet).toEqual([]);
  });

  it('unsubscribe stops the source once, waits for the running handler, then calls onStop', async () => {
    const s = source();
    const settled: Settled = { acked: [], retried: [] };
    let release: (() => void) | undefined;
    let stopped = 0;
    const c = consumer(
      s.source,
      () => new Promise<void>((resolve) => (release = resolve)),
      [],
      () => stopped++,
    );
    s.buffer.push(entry('1', 1, settled));
    await waitFor(() => release !== undefined);
    let done = false;
    const first = c.unsubscribe().then(() => (done = true));
    const second = c.unsubscribe();
    await new Promise((resolve) => setImmediate(resolve));
    expect(done).toBe(false);
    release?.();
    await Promise.all([first, second]);
    expect(s.stops).toBe(1);
    expect(stopped).toBe(1);
    expect(settled.acked).toEqual(['1']);
  });

  it('unsubscribe waits at most stopTimeoutMs for a source that does not stop, and hands the stop to background', async () => {
    const buffer = new DeliveryBuffer<DeadLetterEntry>({ track: false });
    let finishStop: (() => void) | undefined;
    const hanging: DeadLetterSource = {
      [Symbol.asyncIterator]: () => buffer,
      // Iteration ends at once; the broker never confirms the stop.
      stop: () => {
        buffer.end();
        return new Promise<void>((resolve) => (finishStop = resolve));
      },
    };
    const clock = new FakeClock();
    const background: string[] = [];
    let stopped = 0;
    const c = new DeadLetterConsumer({
      id: 'dlq-2',
      source: hanging,
      handler: () => undefined,
      afterFailure: 'it comes back later',
      report: () => undefined,
      mapError: (error) => new WatchtowerError(ErrorCode.TRANSPORT, String(error)),
      clock,
      stopTimeoutMs: 1000,
      background: (_stop, operation) => void background.push(operation),
      onStop: () => stopped++,
    }).start();
    let done = false;
    const unsubscribed = c.unsubscribe().then(() => (done = true));
    await clock.advanceAsync(999);
    expect(done).toBe(false);
    await clock.advanceAsync(1);
    await unsubscribed;
    expect(background).toEqual(['stop dead-letter consumer dlq-2']);
    expect(stopped).toBe(1);
    finishStop?.();
  });

  it('deadLetterRetryDelayMs doubles from a second up to a minute', () => {
    expect([0, 1, 2, 3, 7, 8, 100].map(deadLetterRetryDelayMs)).toEqual([
      1000, 1000, 2000, 4000, 60_000, 60_000, 60_000,
    ]);
  });
});
