/**
 * `RetryPolicy`: the retry strategies (exponential, fixed, fibonacci) with jitter and limits,
 * on the injected `Clock`, and the rule of which errors are worth retrying. It is used both to
 * retry publishes and to time redeliveries of failed handlers; `maxAttempts` counts every run,
 * the first included.
 */
import pRetry from 'p-retry';
import { sleep, systemClock, type Clock } from './clock.js';
import { configError, isWatchtowerError } from './errors.js';
import {
  checkClock,
  checkFunction,
  checkInteger,
  checkNumber,
  checkOneOf,
  withDefaults,
} from './options.js';

/**
 * How the delay grows from one retry to the next (before the `maxDelayMs` cap and jitter):
 * `exponential` is `minDelayMs * factor^(retry-1)`, `fixed` is `minDelayMs`, `fibonacci` is
 * `minDelayMs * fib(retry)` with fib = 1, 1, 2, 3, 5, ...
 */
export type RetryStrategy = 'exponential' | 'fixed' | 'fibonacci';

/** Options of {@link RetryPolicy}. */
export interface RetryPolicyOptions {
  /**
   * How delays grow.
   * @defaultValue `'exponential'`
   */
  strategy?: RetryStrategy;
  /**
   * How many times the operation runs in all, the first run included (as a delivery's
   * `attempt` counts them): 1 means it is never retried. An integer >= 1, or `Infinity`; 0 is
   * refused (use 1 for no retry).
   * @defaultValue 4
   */
  maxAttempts?: number;
  /**
   * Delay before the first retry, and the unit the strategies multiply. Finite, >= 0.
   * @defaultValue 100
   */
  minDelayMs?: number;
  /**
   * Cap on any delay, applied before jitter. Finite, >= `minDelayMs`.
   * @defaultValue 30000
   */
  maxDelayMs?: number;
  /**
   * Growth factor of `exponential`; ignored by the other strategies. Finite, >= 1.
   * @defaultValue 2
   */
  factor?: number;
  /**
   * Share of the delay that is random: the delay is drawn uniformly from
   * `[d * (1 - jitter), d]`, so it never exceeds the computed delay `d`. 0 makes delays
   * deterministic. In [0, 1].
   * @defaultValue 0.2
   */
  jitter?: number;
  /**
   * Source of time for the waits; pass a `FakeClock` in tests.
   * @defaultValue `systemClock`
   */
  clock?: Clock;
  /**
   * Source of jitter, returning a number in [0, 1); pass a fixed function in tests.
   * @defaultValue `Math.random`
   */
  random?: () => number;
}

/** Options of one {@link RetryPolicy.execute} call. */
export interface RetryExecuteOptions {
  /**
   * Aborting ends a pending wait at once and `execute` rejects with the signal's reason; no
   * further attempt starts. An attempt already running is not interrupted (give `fn` the signal
   * for that): if it succeeds, `execute` resolves with its value.
   */
  signal?: AbortSignal;
  /**
   * Whether a failure is worth another try; false rejects with that error at once.
   * @defaultValue {@link isRetryableError}
   */
  isRetryable?: (error: unknown) => boolean;
  /** Called when a retry has been decided, before the wait. `retry` is 1 for the first retry. */
  onRetry?: (error: unknown, retry: number, delayMs: number) => void;
}

/** The default `isRetryable`: a Watchtower error's own `retryable` flag; anything else is retried. */
export function isRetryableError(error: unknown): boolean {
  return isWatchtowerError(error) ? error.retryable : true;
}

/** The defaults of every {@link RetryPolicyOptions} field. */
export const DEFAULT_RETRY_OPTIONS: Readonly<Required<RetryPolicyOptions>> = Object.freeze({
  strategy: 'exponential',
  maxAttempts: 4,
  minDelayMs: 100,
  maxDelayMs: 30_000,
  factor: 2,
  jitter: 0.2,
  clock: systemClock,
  random: Math.random,
});

/**
 * p-retry turns a thrown non-Error into a TypeError and gives up on it at once; boxing it
 * keeps the value as thrown and lets `isRetryable` decide like for any other error.
 */
class ThrownValue extends Error {
  constructor(readonly value: unknown) {
    super('a non-Error value was thrown');
  }
}

function unbox(error: unknown): unknown {
  return error instanceof ThrownValue ? error.value : error;
}

/**
 * Retries a failing async operation with growing delays. Built on p-retry, which decides when
 * to stop; the waits run on the policy's clock so tests can step through them.
 *
 * One p-retry rule remains: a `TypeError` that is not a network error (e.g. not
 * `fetch failed`) is treated as a bug and rejected at once, without consulting `isRetryable`.
 */
export class RetryPolicy {
  readonly #options: Readonly<Required<RetryPolicyOptions>>;

  /** @throws a `CONFIG` error naming the field when an option is invalid. */
  constructor(options: RetryPolicyOptions = {}) {
    const merged = withDefaults(DEFAULT_RETRY_OPTIONS, options, 'retry');
    validate(merged);
    this.#options = Object.freeze(merged);
  }

  /** Runs in all, the first included (1 = no retry). */
  get maxAttempts(): number {
    return this.#options.maxAttempts;
  }

  /**
   * The wait before retry number `retry` (1 = the first retry): the strategy's delay, capped at
   * `maxDelayMs`, then jittered down by up to `jitter` of it.
   *
   * @throws a `CONFIG` error naming `retry` unless it is an integer >= 1.
   */
  delayFor(retry: number): number {
    if (!Number.isInteger(retry) || retry < 1) {
      throw configError('retry', `must be an integer >= 1, got ${String(retry)}`);
    }
    const { jitter, random } = this.#options;
    const delay = this.#baseDelay(retry);
    if (jitter === 0 || delay === 0) return delay;
    return delay * (1 - jitter) + delay * jitter * random();
  }

  /**
   * True while `retriesDone` retries (so `retriesDone + 1` runs) leave room for another run
   * under `maxAttempts`.
   */
  canRetry(retriesDone: number): boolean {
    return retriesDone + 1 < this.#options.maxAttempts;
  }

  /**
   * Calls `fn` (with the attempt number, 1 for the first try) until it resolves, a failure is
   * not retryable, `maxAttempts` runs have failed, or `signal` aborts. Waits `delayFor(n)`
   * before retry n (run n + 1).
   *
   * Resolves with `fn`'s value; otherwise rejects with the last error exactly as `fn` threw it,
   * or with the signal's reason. A throw from `isRetryable` or `onRetry` rejects with that
   * error and ends the retries.
   */
  async execute<T>(
    fn: (attempt: number) => Promise<T>,
    options: RetryExecuteOptions = {},
  ): Promise<T> {
    const { signal, onRetry } = options;
    const isRetryable = options.isRetryable ?? isRetryableError;
    const { clock, maxAttempts } = this.#options;
    signal?.throwIfAborted();
    try {
      return await pRetry(
        async (attempt) => {
          try {
            return await fn(attempt);
          } catch (error) {
            throw error instanceof Error ? error : new ThrownValue(error);
          }
        },
        {
          retries: maxAttempts - 1,
          // p-retry must never sleep on the real clock: the wait happens in shouldRetry below.
          minTimeout: 0,
          maxTimeout: 0,
          factor: 1,
          randomize: false,
          // The signal is not handed to p-retry: it would reject after a successful attempt,
          // reporting as failed a publish the broker has in fact accepted.
          shouldRetry: async ({ error, retriesConsumed }) => {
            const original = unbox(error);
            if (!isRetryable(original)) return false;
            signal?.throwIfAborted();
            const retry = retriesConsumed + 1;
            const delayMs = this.delayFor(retry);
            onRetry?.(original, retry, delayMs);
            await sleep(clock, delayMs, signal);
            return true;
          },
        },
      );
    } catch (error) {
      throw unbox(error);
    }
  }

  #baseDelay(retry: number): number {
    const { strategy, minDelayMs, maxDelayMs, factor } = this.#options;
    // Also keeps 0 * Infinity (NaN) out of the growth formulas below.
    if (minDelayMs === 0) return 0;
    switch (strategy) {
      case 'fixed':
        return Math.min(minDelayMs, maxDelayMs);
      case 'exponential':
        return Math.min(minDelayMs * factor ** (retry - 1), maxDelayMs);
      case 'fibonacci': {
        let previous = 0;
        let current = 1;
        // Stop once the cap is reached: the loop stays short even for huge retry numbers.
        for (let i = 1; i < retry && minDelayMs * current < maxDelayMs; i++) {
          [previous, current] = [current, previous + current];
        }
        return Math.min(minDelayMs * current, maxDelayMs);
      }
    }
  }
}

function validate(options: Required<RetryPolicyOptions>): void {
  checkOneOf('strategy', options.strategy, ['exponential', 'fixed', 'fibonacci']);
  if (options.maxAttempts === 0) {
    throw configError(
      'maxAttempts',
      'must be >= 1: it counts every run, the first included, so use 1 for no retry, got 0',
    );
  }
  checkInteger('maxAttempts', options.maxAttempts, 1, { allowInfinity: true });
  checkNumber('minDelayMs', options.minDelayMs, { min: 0 });
  checkNumber('maxDelayMs', options.maxDelayMs, {
    min: options.minDelayMs,
    hint: 'not below minDelayMs',
  });
  checkNumber('factor', options.factor, { min: 1 });
  checkNumber('jitter', options.jitter, { min: 0, max: 1 });
  checkClock('clock', options.clock);
  checkFunction('random', options.random);
}
