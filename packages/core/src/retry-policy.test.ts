import { describe, expect, it } from 'vitest';
import { ConnectionError, ErrorCode, NonRetryableError, ValidationError } from './errors.js';
import { DEFAULT_RETRY_OPTIONS, RetryPolicy, isRetryableError } from './retry-policy.js';
import { FakeClock } from './testing/fake-clock.js';
import { thrown } from './testing/thrown.js';

const delays = (policy: RetryPolicy, n: number): number[] =>
  Array.from({ length: n }, (_, i) => policy.delayFor(i + 1));

describe('RetryPolicy.delayFor', () => {
  it('grows exponentially: minDelayMs * factor^(retry-1), capped at maxDelayMs', () => {
    expect(delays(new RetryPolicy({ jitter: 0 }), 5)).toEqual([100, 200, 400, 800, 1600]);
    expect(
      delays(new RetryPolicy({ jitter: 0, factor: 3, minDelayMs: 10, maxDelayMs: 500 }), 6),
    ).toEqual([10, 30, 90, 270, 500, 500]);
  });

  it('stays at minDelayMs with the fixed strategy', () => {
    expect(delays(new RetryPolicy({ strategy: 'fixed', jitter: 0, minDelayMs: 250 }), 4)).toEqual([
      250, 250, 250, 250,
    ]);
  });

  it('follows 1, 1, 2, 3, 5, 8 times minDelayMs with the fibonacci strategy, capped at maxDelayMs', () => {
    expect(delays(new RetryPolicy({ strategy: 'fibonacci', jitter: 0 }), 7)).toEqual([
      100, 100, 200, 300, 500, 800, 1300,
    ]);
    expect(
      delays(new RetryPolicy({ strategy: 'fibonacci', jitter: 0, maxDelayMs: 450 }), 6),
    ).toEqual([100, 100, 200, 300, 450, 450]);
  });

  it('stays at the cap, never NaN or Infinity, for huge retry numbers', () => {
    for (const strategy of ['exponential', 'fibonacci', 'fixed'] as const) {
      expect(new RetryPolicy({ strategy, jitter: 0, maxDelayMs: 5_000 }).delayFor(100_000)).toBe(
        strategy === 'fixed' ? 100 : 5_000,
      );
      expect(new RetryPolicy({ strategy, minDelayMs: 0 }).delayFor(100_000)).toBe(0);
    }
  });

  it('draws the jittered delay from [d * (1 - jitter), d]', () => {
    const low = new RetryPolicy({ jitter: 0.2, random: () => 0 });
    const high = new RetryPolicy({ jitter: 0.2, random: () => 0.999_999 });
    expect(low.delayFor(3)).toBeCloseTo(320);
    expect(high.delayFor(3)).toBeGreaterThan(399.99);
    expect(high.delayFor(3)).toBeLessThanOrEqual(400);

    const capped = new RetryPolicy({ jitter: 0.5, maxDelayMs: 1_000 });
    for (let i = 0; i < 1_000; i++) {
      const delay = capped.delayFor(20);
      expect(delay).toBeGreaterThanOrEqual(500);
      expect(delay).toBeLessThanOrEqual(1_000);
    }
  });

  it('rejects a retry number below 1', () => {
    expect(thrown(() => new RetryPolicy().delayFor(0))).toMatchObject({ code: ErrorCode.CONFIG });
  });
});

describe('RetryPolicy.canRetry', () => {
  it('allows maxAttempts runs in all: maxAttempts - 1 retries', () => {
    const policy = new RetryPolicy({ maxAttempts: 3 });
    expect([0, 1, 2, 3].map((n) => policy.canRetry(n))).toEqual([true, true, false, false]);
    expect(new RetryPolicy({ maxAttempts: 1 }).canRetry(0)).toBe(false);
  });
});

describe('RetryPolicy.execute', () => {
  it('calls fn exactly once when maxAttempts is 1 and rejects with its error', async () => {
    const policy = new RetryPolicy({ maxAttempts: 1, clock: new FakeClock() });
    const error = new ConnectionError('down');
    let calls = 0;
    await expect(
      policy.execute(() => {
        calls++;
        return Promise.reject(error);
      }),
    ).rejects.toBe(error);
    expect(calls).toBe(1);
    expect(policy.maxAttempts).toBe(1);
  });

  it('retries after each delay on the clock until fn succeeds', async () => {
    const clock = new FakeClock();
    const policy = new RetryPolicy({ clock, jitter: 0 });
    const calledAt: number[] = [];
    const retries: Array<[string, number, number]> = [];
    const result = policy.execute(
      (attempt) => {
        calledAt.push(clock.now());
        return attempt < 3
          ? Promise.reject(new Error(`fail ${attempt}`))
          : Promise.resolve(`ok on ${attempt}`);
      },
      {
        onRetry: (error, retry, delayMs) =>
          retries.push([(error as Error).message, retry, delayMs]),
      },
    );

    await clock.advanceAsync(0);
    expect(calledAt).toEqual([0]);
    await clock.advanceAsync(99);
    expect(calledAt).toEqual([0]);
    await clock.advanceAsync(1);
    expect(calledAt).toEqual([0, 100]);
    await clock.advanceAsync(200);
    expect(calledAt).toEqual([0, 100, 300]);
    await expect(result).resolves.toBe('ok on 3');
    expect(retries).toEqual([
      ['fail 1', 1, 100],
      ['fail 2', 2, 200],
    ]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('gives up after maxAttempts runs and rejects with the last error as thrown', async () => {
    const clock = new FakeClock();
    const policy = new RetryPolicy({ clock, maxAttempts: 3, strategy: 'fixed', jitter: 0 });
    const errors: Error[] = [];
    const result = policy.execute((attempt) => {
      const error = new ConnectionError(`fail ${attempt}`);
      errors.push(error);
      return Promise.reject(error);
    });
    const settled = expect(result).rejects.toSatisfy((e) => e === errors[2]);
    await clock.advanceAsync(1_000);
    await settled;
    expect(errors).toHaveLength(3);
  });

  it('stops at once on an error the default isRetryable refuses (retryable: false)', async () => {
    const policy = new RetryPolicy({ clock: new FakeClock() });
    for (const error of [new NonRetryableError('no'), new ValidationError('bad')]) {
      let calls = 0;
      await expect(
        policy.execute(() => {
          calls++;
          return Promise.reject(error);
        }),
      ).rejects.toBe(error);
      expect(calls).toBe(1);
    }
    expect(isRetryableError(new ConnectionError('down'))).toBe(true);
    expect(isRetryableError(new Error('plain'))).toBe(true);
  });

  it('stops at once when a custom isRetryable says no', async () => {
    const policy = new RetryPolicy({ clock: new FakeClock() });
    const seen: unknown[] = [];
    let calls = 0;
    const error = new Error('fatal');
    await expect(
      policy.execute(
        () => {
          calls++;
          return Promise.reject(error);
        },
        {
          isRetryable: (e) => {
            seen.push(e);
            return false;
          },
        },
      ),
    ).rejects.toBe(error);
    expect(calls).toBe(1);
    expect(seen).toEqual([error]);
  });

  it("rejects with the signal's reason when aborted during a wait, and makes no further call", async () => {
    const clock = new FakeClock();
    const policy = new RetryPolicy({ clock, jitter: 0 });
    const controller = new AbortController();
    let calls = 0;
    const result = policy.execute(
      () => {
        calls++;
        return Promise.reject(new Error('fail'));
      },
      { signal: controller.signal },
    );
    const reason = new Error('shutting down');
    const settled = expect(result).rejects.toBe(reason);

    await clock.advanceAsync(50);
    expect(clock.pendingTimers()).toBe(1);
    controller.abort(reason);
    await settled;
    expect(calls).toBe(1);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('resolves with the value of an attempt that succeeds after the signal aborted', async () => {
    const policy = new RetryPolicy({ clock: new FakeClock() });
    const controller = new AbortController();
    await expect(
      policy.execute(
        () => {
          controller.abort(new Error('late'));
          return Promise.resolve('accepted');
        },
        { signal: controller.signal },
      ),
    ).resolves.toBe('accepted');
  });

  it('rejects with the signal reason, not retrying, when an attempt fails after the abort', async () => {
    const clock = new FakeClock();
    const policy = new RetryPolicy({ clock });
    const controller = new AbortController();
    const reason = new Error('stop');
    let calls = 0;
    let retried = false;
    await expect(
      policy.execute(
        () => {
          calls++;
          controller.abort(reason);
          return Promise.reject(new ConnectionError('down'));
        },
        { signal: controller.signal, onRetry: () => (retried = true) },
      ),
    ).rejects.toBe(reason);
    expect(calls).toBe(1);
    expect(retried).toBe(false);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('makes no call when the signal has already aborted', async () => {
    const policy = new RetryPolicy({ clock: new FakeClock() });
    const reason = new Error('too late');
    let calls = 0;
    await expect(
      policy.execute(
        () => {
          calls++;
          return Promise.resolve();
        },
        { signal: AbortSignal.abort(reason) },
      ),
    ).rejects.toBe(reason);
    expect(calls).toBe(0);
  });

  it('retries a thrown non-Error value and rejects with it unchanged', async () => {
    const clock = new FakeClock();
    const policy = new RetryPolicy({ clock, maxAttempts: 2, jitter: 0 });
    const seen: unknown[] = [];
    let calls = 0;
    const result = policy.execute(
      () => {
        calls++;
        // A non-Error rejection on purpose: the policy must retry it and keep it as thrown.
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        return Promise.reject('a string');
      },
      { onRetry: (error) => seen.push(error) },
    );
    const settled = expect(result).rejects.toBe('a string');
    await clock.advanceAsync(100);
    await settled;
    expect(calls).toBe(2);
    expect(seen).toEqual(['a string']);
  });

  it('rejects a non-network TypeError at once, as p-retry treats it as a bug', async () => {
    const policy = new RetryPolicy({ clock: new FakeClock() });
    let calls = 0;
    await expect(
      policy.execute(() => {
        calls++;
        return Promise.reject(new TypeError('x is not a function'));
      }),
    ).rejects.toBeInstanceOf(TypeError);
    expect(calls).toBe(1);
  });

  it('passes the attempt number, 1 for the first try', async () => {
    const clock = new FakeClock();
    const policy = new RetryPolicy({ clock, strategy: 'fixed', jitter: 0, minDelayMs: 10 });
    const attempts: number[] = [];
    const result = policy.execute((attempt) => {
      attempts.push(attempt);
      return attempt === 2 ? Promise.resolve(attempt) : Promise.reject(new Error('again'));
    });
    await clock.advanceAsync(10);
    await expect(result).resolves.toBe(2);
    expect(attempts).toEqual([1, 2]);
  });
});

describe('RetryPolicy options', () => {
  it('exports its defaults', () => {
    expect(DEFAULT_RETRY_OPTIONS).toMatchObject({
      strategy: 'exponential',
      maxAttempts: 4,
      minDelayMs: 100,
      maxDelayMs: 30_000,
      factor: 2,
      jitter: 0.2,
    });
  });

  it.each([
    ['strategy', { strategy: 'linear' as never }],
    ['maxAttempts', { maxAttempts: -1 }],
    ['maxAttempts', { maxAttempts: 1.5 }],
    ['maxAttempts', { maxAttempts: Number.NaN }],
    ['minDelayMs', { minDelayMs: -1 }],
    ['maxDelayMs', { minDelayMs: 500, maxDelayMs: 100 }],
    ['maxDelayMs', { maxDelayMs: Number.POSITIVE_INFINITY }],
    ['factor', { factor: 0.5 }],
    ['jitter', { jitter: 1.5 }],
    ['jitter', { jitter: -0.1 }],
    ['clock', { clock: {} as never }],
    ['random', { random: 0.5 as never }],
  ] as const)('rejects a bad %s with a CONFIG error naming it', (field, options) => {
    const error = thrown(() => new RetryPolicy(options));
    expect(error).toMatchObject({
      code: ErrorCode.CONFIG,
      message: expect.stringContaining(`\`${field}\``),
    });
  });

  it.each([2, 3, 5])(
    'runs a failing operation maxAttempts (%i) times in all',
    async (maxAttempts) => {
      const clock = new FakeClock();
      const policy = new RetryPolicy({ clock, maxAttempts, strategy: 'fixed', jitter: 0 });
      let calls = 0;
      const result = policy.execute(() => {
        calls++;
        return Promise.reject(new ConnectionError('down'));
      });
      const settled = expect(result).rejects.toBeInstanceOf(ConnectionError);
      await clock.advanceAsync(10_000);
      await settled;
      expect(calls).toBe(maxAttempts);
    },
  );

  it('refuses maxAttempts 0 with a CONFIG error that says to use 1 for no retry', () => {
    const error = thrown(() => new RetryPolicy({ maxAttempts: 0 }));
    expect(error).toMatchObject({ code: ErrorCode.CONFIG });
    expect((error as Error).message).toContain('`maxAttempts`');
    expect((error as Error).message).toContain('use 1 for no retry');
  });

  it('accepts maxAttempts: Infinity to retry until success or abort', () => {
    expect(new RetryPolicy({ maxAttempts: Number.POSITIVE_INFINITY }).canRetry(1e9)).toBe(true);
  });
});
