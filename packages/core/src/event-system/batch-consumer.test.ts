import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode, NonRetryableError, isWatchtowerError } from '../errors.js';
import type { Event } from '../event.js';
import { MemoryTransport } from '../memory-transport.js';
import { FakeClock, settlement, waitFor } from '../testing.js';
import { createEventSystem, type EventSystem } from './event-system.js';
import { quiet } from './test-support.js';

const open: EventSystem[] = [];
function system(transport: MemoryTransport, clock: FakeClock): EventSystem {
  const made = createEventSystem({
    service: 's',
    transports: { m: transport },
    logger: quiet,
    clock,
  });
  open.push(made);
  return made;
}
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((made) => made.close({ timeoutMs: 100 })));
});

const n = (event: Event): number => (event.payload as { n: number }).n;

describe('subscribeBatch', () => {
  it('hands over maxBatchSize events at once, and a partial batch after maxWaitMs', async () => {
    const clock = new FakeClock();
    const made = system(new MemoryTransport(), clock);
    const batches: number[][] = [];
    await made.subscribeBatch(
      'metric.recorded',
      (events) => {
        batches.push(events.map(n));
      },
      { maxBatchSize: 3, maxWaitMs: 100 },
    );
    for (let i = 1; i <= 4; i++) await made.publish('metric.recorded', { n: i });
    await waitFor(() => batches.length === 1);
    expect(batches).toEqual([[1, 2, 3]]);
    await clock.advanceAsync(99);
    expect(batches.length).toBe(1);
    await clock.advanceAsync(1);
    await waitFor(() => batches.length === 2);
    expect(batches[1]).toEqual([4]);
    await waitFor(() => made.stats().transports.m?.handled === 4);
  });

  it('handles up to concurrency batches at once', async () => {
    const clock = new FakeClock();
    const made = system(new MemoryTransport(), clock);
    const started: number[][] = [];
    const finish: (() => void)[] = [];
    await made.subscribeBatch(
      'metric.recorded',
      (events) =>
        new Promise<void>((resolve) => {
          started.push(events.map(n));
          finish.push(resolve);
        }),
      { maxBatchSize: 2, maxWaitMs: 100, concurrency: 2 },
    );
    for (let i = 1; i <= 6; i++) await made.publish('metric.recorded', { n: i });
    await waitFor(() => started.length === 2);
    // Two batches run; the third waits for a slot.
    expect(started).toEqual([
      [1, 2],
      [3, 4],
    ]);
    await clock.advanceAsync(100);
    expect(started.length).toBe(2);
    finish[0]?.();
    await waitFor(() => started.length === 3);
    expect(started[2]).toEqual([5, 6]);
    finish.forEach((resolve) => resolve());
    await waitFor(() => made.stats().transports.m?.handled === 6);
  });

  it('retries the whole batch when the handler throws', async () => {
    const clock = new FakeClock();
    const made = system(new MemoryTransport(), clock);
    const calls: number[][] = [];
    await made.subscribeBatch(
      'metric.recorded',
      (events) => {
        calls.push(events.map(n));
        if (calls.length === 1) throw new Error('store down');
      },
      { maxBatchSize: 2, maxWaitMs: 10, retry: { maxAttempts: 2, minDelayMs: 0, jitter: 0 } },
    );
    await made.publish('metric.recorded', { n: 1 });
    await made.publish('metric.recorded', { n: 2 });
    await waitFor(() => made.stats().transports.m?.handled === 2, {
      message: String(calls.length),
    });
    expect(calls[0]).toEqual([1, 2]);
    expect(calls.flat().sort()).toEqual([1, 1, 2, 2]);
    expect(made.stats().transports.m?.retried).toBe(2);
  });

  it('dead-letters only the events the handler reports as failed', async () => {
    const clock = new FakeClock();
    const transport = new MemoryTransport();
    const made = system(transport, clock);
    await made.subscribeBatch(
      'metric.recorded',
      (events) =>
        events.map((event) => (n(event) === 2 ? new NonRetryableError('bad metric') : true)),
      { maxBatchSize: 3, maxWaitMs: 10 },
    );
    for (let i = 1; i <= 3; i++) await made.publish('metric.recorded', { n: i });
    await waitFor(() => transport.deadLetterQueue.size === 1);
    await waitFor(() => made.stats().transports.m?.handled === 2);
    const letter = transport.deadLetterQueue.list()[0];
    expect(letter?.event?.payload).toEqual({ n: 2 });
    expect(letter?.reason.code).toBe(ErrorCode.NON_RETRYABLE);
  });

  it('fails every event when the handler returns the wrong number of results', async () => {
    const clock = new FakeClock();
    const transport = new MemoryTransport();
    const made = system(transport, clock);
    await made.subscribeBatch('metric.recorded', () => [true], {
      maxBatchSize: 2,
      maxWaitMs: 10,
      retry: { maxAttempts: 1 },
    });
    await made.publish('metric.recorded', { n: 1 });
    await made.publish('metric.recorded', { n: 2 });
    await waitFor(() => transport.deadLetterQueue.size === 2);
    expect(transport.deadLetterQueue.list()[0]?.reason.message).toContain('1 results for 2 events');
  });

  it.each([
    [{ maxBatchSize: 0, maxWaitMs: 1 }],
    [{ maxBatchSize: 2 }],
    [{ maxBatchSize: 2, maxWaitMs: 1, orderingKey: () => 'k' }],
    [{ maxBatchSize: 2, maxWaitMs: 1, batchSize: 3 }],
  ])('refuses %o with CONFIG', async (options) => {
    const made = system(new MemoryTransport(), new FakeClock());
    const error = await settlement(made.subscribeBatch('a', () => undefined, options as never));
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
  });
});
