import { describe, expect, it } from 'vitest';
import { ClosedError, ErrorCode, isWatchtowerError } from '../errors.js';
import { FakeClock, configErrorField, settlement } from '../testing.js';
import { RateLimiter, resolveRateLimit, type RateLimitOptions } from './rate-limiter.js';

function limiter(options: RateLimitOptions, clock = new FakeClock()): RateLimiter {
  return new RateLimiter(
    resolveRateLimit('rateLimit', options, true),
    clock,
    { waited: 0, rejected: 0 },
    'test',
  );
}

/** How many of `n` acquires are granted at once (the others are left waiting). */
function grantedAtOnce(target: RateLimiter, n: number): number {
  let granted = 0;
  for (let i = 0; i < n; i++) {
    const wait = target.acquire();
    if (wait === undefined) granted++;
    else wait.catch(() => undefined);
  }
  return granted;
}

describe('RateLimiter', () => {
  it('grants a token bucket burst at once, then refills limit per interval', async () => {
    const clock = new FakeClock();
    const bucket = limiter(
      { strategy: 'token-bucket', limit: 10, intervalMs: 1000, burst: 3, onLimit: 'reject' },
      clock,
    );
    expect(grantedAtOnce(bucket, 5)).toBe(3);
    clock.advance(100); // one token per 100 ms
    expect(grantedAtOnce(bucket, 5)).toBe(1);
    clock.advance(10_000); // refills up to burst only
    expect(grantedAtOnce(bucket, 10)).toBe(3);
    await Promise.resolve();
  });

  it('never grants more than limit in any interval with a sliding window', () => {
    const clock = new FakeClock();
    const window = limiter(
      { strategy: 'sliding-window', limit: 3, intervalMs: 1000, onLimit: 'reject' },
      clock,
    );
    expect(grantedAtOnce(window, 2)).toBe(2);
    clock.advance(600);
    expect(grantedAtOnce(window, 3)).toBe(1);
    clock.advance(399); // the first two are 999 ms old
    expect(grantedAtOnce(window, 3)).toBe(0);
    clock.advance(1); // now they have left the window
    expect(grantedAtOnce(window, 3)).toBe(2);
  });

  it('serves waiters in arrival order as permits free up', async () => {
    const clock = new FakeClock();
    const bucket = limiter({ strategy: 'token-bucket', limit: 1, intervalMs: 1000 }, clock);
    expect(bucket.acquire()).toBeUndefined();
    const order: number[] = [];
    const waits = [1, 2, 3].map((n) =>
      (bucket.acquire() as Promise<void>).then(() => order.push(n)),
    );
    await clock.advanceAsync(999);
    expect(order).toEqual([]);
    await clock.advanceAsync(1);
    expect(order).toEqual([1]);
    await clock.advanceAsync(2000);
    await Promise.all(waits);
    expect(order).toEqual([1, 2, 3]);
  });

  it('refuses a caller past maxWaiting, and rejects waiters on close', async () => {
    const bucket = limiter({ strategy: 'token-bucket', limit: 1, intervalMs: 1000, maxWaiting: 1 });
    expect(bucket.acquire()).toBeUndefined();
    const waiting = bucket.acquire() as Promise<void>;
    const refused = await settlement(bucket.acquire() as Promise<void>);
    expect(isWatchtowerError(refused, ErrorCode.BACKPRESSURE_FULL)).toBe(true);
    bucket.close(new ClosedError('closed'));
    expect(isWatchtowerError(await settlement(waiting), ErrorCode.CLOSED)).toBe(true);
    expect(
      isWatchtowerError(await settlement(bucket.acquire() as Promise<void>), ErrorCode.CLOSED),
    ).toBe(true);
  });

  it.each([
    [{ strategy: 'token-bucket', limit: 0, intervalMs: 1 }, 'rateLimit.limit'],
    [{ strategy: 'token-bucket', limit: 1, intervalMs: 0 }, 'rateLimit.intervalMs'],
    [{ strategy: 'token-bucket', limit: 1, intervalMs: 1, burst: 0 }, 'rateLimit.burst'],
    [{ strategy: 'token-bucket', limit: 1, intervalMs: 1, onLimit: 'drop' }, 'rateLimit.onLimit'],
    [{ strategy: 'token-bucket', limit: 1, intervalMs: 1, maxWaiting: 0 }, 'rateLimit.maxWaiting'],
    [{ strategy: 'token-bucket', limit: 1, intervalMs: 1, window: 5 }, 'rateLimit.window'],
  ])('refuses %o naming %s', (options, field) => {
    expect(
      configErrorField(() => resolveRateLimit('rateLimit', options as RateLimitOptions, true)),
    ).toBe(field);
  });
});
