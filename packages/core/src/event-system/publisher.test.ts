/**
 * The publishing side of the event system: `publishBatch`, the batching window, retries and
 * rate limits, all on a `FakeClock` where time matters.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ErrorCode, isWatchtowerError } from '../errors.js';
import { MemoryTransport } from '../memory-transport.js';
import { defineEvents } from '../schema.js';
import { FakeClock, collectEvents, settlement, waitFor } from '../testing.js';
import type { EventSystemConfig } from './config.js';
import type { RetryPolicyOptions } from '../retry-policy.js';
import type { RateLimitOptions } from './rate-limiter.js';
import { createEventSystemBuilder } from './builder.js';
import { createEventSystem, type EventSystem } from './event-system.js';
import { failingFirst, quiet } from './test-support.js';

const open: EventSystem[] = [];
function system(config: Omit<EventSystemConfig, 'service' | 'logger'>): EventSystem {
  const made = createEventSystem({ service: 'shop', logger: quiet, ...config });
  open.push(made);
  return made;
}
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((made) => made.close()));
});

/** A system on memory whose publishes pass `rateLimit`, on `clock`. */
function limited(rateLimit: RateLimitOptions, clock: FakeClock): EventSystem {
  return system({ transports: { m: new MemoryTransport() }, publisher: { rateLimit }, clock });
}

/** Tracks a promise's state without awaiting it. */
function watch(promise: Promise<unknown>): {
  state: 'pending' | 'resolved' | 'rejected';
  error?: unknown;
} {
  const status: { state: 'pending' | 'resolved' | 'rejected'; error?: unknown } = {
    state: 'pending',
  };
  promise.then(
    () => (status.state = 'resolved'),
    (error: unknown) => {
      status.state = 'rejected';
      status.error = error;
    },
  );
  return status;
}

describe('publishBatch', () => {
  const events = defineEvents({ 'order.placed': z.object({ id: z.number() }) });

  it('publishes each event as an ordinary event and reports each outcome on its own', async () => {
    const a = new MemoryTransport();
    const made = system({ transports: { a }, events });
    const got = collectEvents();
    await made.subscribe('order.placed', got.handler);

    const outcomes = await made.publishBatch([
      { type: 'order.placed', payload: { id: 1 } },
      { type: 'order.placed', payload: { id: 'two' as unknown as number } },
      { type: 'order.placed', payload: { id: 3 } },
    ]);
    expect(outcomes.map((outcome) => outcome.ok)).toEqual([true, false, true]);
    const failed = outcomes[1];
    expect(failed !== undefined && !failed.ok && failed.error.code).toBe(ErrorCode.VALIDATION);
    await got.waitForCount(2);
    expect(got.events.map((event) => event.payload)).toEqual([{ id: 1 }, { id: 3 }]);
    expect(made.stats()).toMatchObject({ published: 2, publishFailed: 1, batches: 1 });
  });

  it('sends a batch across routes, each event to its own transport', async () => {
    const a = new MemoryTransport();
    const b = new MemoryTransport();
    const made = system({
      transports: { a, b },
      routes: [{ pattern: 'a.>', transport: 'a' }],
      defaultTransport: 'b',
    });
    const outcomes = await made.publishBatch([
      { type: 'a.one', payload: {} },
      { type: 'b.one', payload: {} },
      { type: 'a.two', payload: {} },
    ]);
    expect(outcomes.every((outcome) => outcome.ok)).toBe(true);
    expect(made.stats().transports.a?.published).toBe(2);
    expect(made.stats().transports.b?.published).toBe(1);
  });
});

describe('publisher batching', () => {
  it('holds publishes until maxWaitMs passes, then sends them together', async () => {
    const clock = new FakeClock();
    const transport = new MemoryTransport();
    const made = system({
      transports: { m: transport },
      publisher: { batching: { maxSize: 10, maxWaitMs: 50 } },
      clock,
    });
    const got = collectEvents();
    await made.subscribe('tick', got.handler);
    const first = watch(made.publish('tick', { n: 1 }));
    const second = watch(made.publish('tick', { n: 2 }));
    await clock.advanceAsync(49);
    expect([first.state, second.state]).toEqual(['pending', 'pending']);
    expect(made.stats().transports.m?.published).toBe(0);

    await clock.advanceAsync(1);
    await waitFor(() => first.state === 'resolved' && second.state === 'resolved');
    expect(made.stats()).toMatchObject({ batches: 1, published: 2 });
    await got.waitForCount(2);
  });

  it('batches by the builder: withPublisher on the clock given to withClock', async () => {
    const clock = new FakeClock();
    const made = createEventSystemBuilder()
      .withService('shop')
      .withTransport('m', new MemoryTransport())
      .withPublisher({ batching: { maxSize: 10, maxWaitMs: 50 } })
      .withClock(clock)
      .withLogger(quiet)
      .build();
    open.push(made);
    const sent = watch(made.publish('tick', {}));
    await clock.advanceAsync(49);
    expect(sent.state).toBe('pending');
    await clock.advanceAsync(1);
    await waitFor(() => sent.state === 'resolved');
    expect(made.stats().batches).toBe(1);
  });

  it('sends a batch as soon as it holds maxSize events', async () => {
    const clock = new FakeClock();
    const made = system({
      transports: { m: new MemoryTransport() },
      publisher: { batching: { maxSize: 3, maxWaitMs: 60_000 } },
      clock,
    });
    const sent = [1, 2, 3].map((n) => made.publish('tick', { n }));
    await Promise.all(sent);
    expect(made.stats()).toMatchObject({ batches: 1, published: 3 });
    const fourth = watch(made.publish('tick', { n: 4 }));
    await clock.advanceAsync(59_999);
    expect(fourth.state).toBe('pending');
    await clock.advanceAsync(1);
    await waitFor(() => fourth.state === 'resolved');
  });

  it('sends the open batch on close', async () => {
    const clock = new FakeClock();
    const made = system({
      transports: { m: new MemoryTransport() },
      publisher: { batching: { maxSize: 10, maxWaitMs: 60_000 } },
      clock,
    });
    const pending = made.publish('tick', {});
    await made.close();
    expect(await settlement(pending)).toBe('resolved');
  });

  it('retries a failed batch event per the retry policy, without an unhandled rejection', async () => {
    const clock = new FakeClock();
    const flaky = failingFirst(new MemoryTransport(), 1);
    const made = system({
      transports: { m: flaky },
      publisher: {
        batching: { maxSize: 2, maxWaitMs: 10 },
        retry: { strategy: 'fixed', maxAttempts: 2, minDelayMs: 100, jitter: 0 },
      },
      clock,
    });
    const one = watch(made.publish('tick', { n: 1 }));
    const two = watch(made.publish('tick', { n: 2 }));
    await waitFor(() => two.state === 'resolved');
    expect(one.state).toBe('pending');
    await clock.advanceAsync(100);
    await waitFor(() => one.state === 'resolved');
    expect(flaky.attempts.length).toBe(3);
  });
});

describe('publisher retry', () => {
  it('rejects after maxAttempts runs; maxAttempts 1 means no retry', async () => {
    const flaky = failingFirst(new MemoryTransport(), 5);
    const made = system({ transports: { m: flaky }, publisher: { retry: { maxAttempts: 1 } } });
    const error = await settlement(made.publish('tick', {}));
    expect(isWatchtowerError(error, ErrorCode.CONNECTION)).toBe(true);
    expect(flaky.attempts.length).toBe(1);
  });

  it('waits by the fibonacci strategy between attempts', async () => {
    const clock = new FakeClock();
    const flaky = failingFirst(new MemoryTransport(), 3);
    const made = system({
      transports: { m: flaky },
      publisher: { retry: { strategy: 'fibonacci', maxAttempts: 4, minDelayMs: 100, jitter: 0 } },
      clock,
    });
    const sent = watch(made.publish('tick', {}));
    await waitFor(() => flaky.attempts.length === 1);
    // fib: 100, 100, 200
    await clock.advanceAsync(100);
    await waitFor(() => flaky.attempts.length === 2);
    await clock.advanceAsync(100);
    await waitFor(() => flaky.attempts.length === 3);
    await clock.advanceAsync(199);
    expect(flaky.attempts.length).toBe(3);
    await clock.advanceAsync(1);
    await waitFor(() => sent.state === 'resolved');
    expect(flaky.attempts.length).toBe(4);
  });
});

describe('publisher retry strategies by name', () => {
  /** The gaps between the attempts of one publish that fails `failures` times, on a fake clock. */
  async function gaps(retry: RetryPolicyOptions, failures: number): Promise<number[]> {
    const clock = new FakeClock();
    const flaky = failingFirst(new MemoryTransport(), failures);
    const made = system({ transports: { m: flaky }, publisher: { retry }, clock });
    const sent = watch(made.publish('tick', {}));
    await waitFor(() => flaky.attempts.length === 1);
    const times = [clock.now()];
    while (flaky.attempts.length <= failures) {
      await clock.advanceAsync(1);
      if (flaky.attempts.length > times.length) times.push(clock.now());
    }
    await waitFor(() => sent.state === 'resolved');
    return times.slice(1).map((at, i) => at - (times[i] as number));
  }

  it('waits minDelayMs times factor to the power of the retry with exponential, capped', async () => {
    const retry = {
      strategy: 'exponential',
      maxAttempts: 5,
      minDelayMs: 100,
      factor: 3,
      maxDelayMs: 1000,
      jitter: 0,
    } as const;
    expect(await gaps(retry, 4)).toEqual([100, 300, 900, 1000]);
  });

  it('waits minDelayMs between every attempt with fixed', async () => {
    const retry = { strategy: 'fixed', maxAttempts: 4, minDelayMs: 250, jitter: 0 } as const;
    expect(await gaps(retry, 3)).toEqual([250, 250, 250]);
  });
});

describe('publisher rate limits', () => {
  it('rejects publishes over a token bucket with onLimit reject, and refills on the clock', async () => {
    const clock = new FakeClock();
    const made = system({
      transports: { m: new MemoryTransport() },
      publisher: {
        rateLimit: { strategy: 'token-bucket', limit: 2, intervalMs: 1000, onLimit: 'reject' },
      },
      clock,
    });
    await made.publish('tick', {});
    await made.publish('tick', {});
    const refused = await settlement(made.publish('tick', {}));
    expect(isWatchtowerError(refused, ErrorCode.BACKPRESSURE_FULL)).toBe(true);
    await clock.advanceAsync(500);
    await made.publish('tick', {});
    expect(made.stats()).toMatchObject({ published: 3, publishFailed: 1, rateLimitRejections: 1 });
  });

  it('makes publishes over the limit wait for a permit, in order', async () => {
    const clock = new FakeClock();
    const made = system({
      transports: { m: new MemoryTransport() },
      publisher: { rateLimit: { strategy: 'sliding-window', limit: 2, intervalMs: 1000 } },
      clock,
    });
    const got = collectEvents();
    await made.subscribe('tick', got.handler);
    const states = [1, 2, 3, 4, 5].map((n) => watch(made.publish('tick', { n })));
    await got.waitForCount(2);
    expect(states.map((state) => state.state)).toEqual([
      'resolved',
      'resolved',
      'pending',
      'pending',
      'pending',
    ]);
    await clock.advanceAsync(1000);
    await got.waitForCount(4);
    expect(states[4]?.state).toBe('pending');
    await clock.advanceAsync(1000);
    await got.waitForCount(5);
    expect(got.events.map((event) => (event.payload as { n: number }).n)).toEqual([1, 2, 3, 4, 5]);
    expect(made.stats().rateLimitWaits).toBe(3);
  });

  it('limits each event type on its own with per: type', async () => {
    const clock = new FakeClock();
    const made = limited(
      { strategy: 'token-bucket', limit: 1, intervalMs: 1000, onLimit: 'reject', per: 'type' },
      clock,
    );
    await made.publish('a', {});
    await made.publish('b', {});
    expect(
      isWatchtowerError(await settlement(made.publish('a', {})), ErrorCode.BACKPRESSURE_FULL),
    ).toBe(true);
  });

  it('limits a route without limiting the others', async () => {
    const clock = new FakeClock();
    const made = system({
      transports: { m: new MemoryTransport() },
      routes: [
        {
          pattern: 'sms.>',
          transport: 'm',
          rateLimit: { strategy: 'token-bucket', limit: 1, intervalMs: 1000, onLimit: 'reject' },
        },
      ],
      defaultTransport: 'm',
      clock,
    });
    await made.publish('sms.sent', {});
    const refused = await settlement(made.publish('sms.sent', {}));
    expect(isWatchtowerError(refused, ErrorCode.BACKPRESSURE_FULL)).toBe(true);
    await made.publish('email.sent', {});
    await made.publish('email.sent', {});
  });

  it("lets a token bucket's burst through at once, then limit per interval", async () => {
    const clock = new FakeClock();
    const made = limited(
      { strategy: 'token-bucket', limit: 1, intervalMs: 1000, burst: 3, onLimit: 'reject' },
      clock,
    );
    const outcomes = async (count: number): Promise<string[]> =>
      Promise.all(
        Array.from({ length: count }, () =>
          made.publish('tick', {}).then(
            () => 'sent',
            (error: unknown) =>
              isWatchtowerError(error, ErrorCode.BACKPRESSURE_FULL) ? 'refused' : 'other',
          ),
        ),
      );
    expect(await outcomes(4)).toEqual(['sent', 'sent', 'sent', 'refused']);
    await clock.advanceAsync(1000);
    expect(await outcomes(2)).toEqual(['sent', 'refused']);
    expect(made.stats()).toMatchObject({ published: 4, rateLimitRejections: 2 });
  });

  it('refuses a publish past maxWaiting with BACKPRESSURE_FULL while the others wait', async () => {
    const clock = new FakeClock();
    const made = limited(
      { strategy: 'token-bucket', limit: 1, intervalMs: 1000, maxWaiting: 2 },
      clock,
    );
    await made.publish('tick', { n: 1 });
    const waiting = [watch(made.publish('tick', { n: 2 })), watch(made.publish('tick', { n: 3 }))];
    const refused = await settlement(made.publish('tick', { n: 4 }));
    expect(isWatchtowerError(refused, ErrorCode.BACKPRESSURE_FULL)).toBe(true);
    expect(waiting.map((state) => state.state)).toEqual(['pending', 'pending']);
    await clock.advanceAsync(2000);
    await waitFor(() => waiting.every((state) => state.state === 'resolved'));
    expect(made.stats()).toMatchObject({ published: 3, rateLimitWaits: 2, rateLimitRejections: 1 });
  });

  it('ends rate-limit waits with CLOSED on close', async () => {
    const clock = new FakeClock();
    const made = system({
      transports: { m: new MemoryTransport() },
      publisher: { rateLimit: { strategy: 'token-bucket', limit: 1, intervalMs: 60_000 } },
      clock,
    });
    await made.publish('tick', {});
    const waiting = made.publish('tick', {});
    await made.close();
    expect(isWatchtowerError(await settlement(waiting), ErrorCode.CLOSED)).toBe(true);
  });
});

describe('consume rate limits', () => {
  it('starts at most limit handlers per interval', async () => {
    const clock = new FakeClock();
    const made = system({ transports: { m: new MemoryTransport() }, clock });
    const got = collectEvents();
    await made.subscribe('job.run', got.handler, {
      rateLimit: { strategy: 'token-bucket', limit: 2, intervalMs: 1000, burst: 2 },
      timeoutMs: 0,
    });
    for (let n = 0; n < 5; n++) await made.publish('job.run', { n });
    await got.waitForCount(2);
    expect(made.stats().transports.m?.handled).toBe(2);
    await clock.advanceAsync(500);
    await got.waitForCount(3);
    await clock.advanceAsync(500);
    await got.waitForCount(4);
    expect(got.events.length).toBe(4);
    await clock.advanceAsync(500);
    await got.waitForCount(5);
  });

  it('refuses per on a subscription limit', async () => {
    const made = system({ transports: { m: new MemoryTransport() } });
    const error = await settlement(
      made.subscribe('a', () => undefined, {
        rateLimit: { strategy: 'token-bucket', limit: 1, intervalMs: 1, per: 'type' },
      }),
    );
    expect(isWatchtowerError(error, ErrorCode.CONFIG)).toBe(true);
  });
});
