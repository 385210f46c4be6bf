/**
 * Rate limits of the event system: a token bucket and a sliding window, both on the injected
 * `Clock`, and the queue of callers waiting for a permit. It is apart from the system because
 * it is a policy usable on its own (publish and consume share it). It never grants more
 * permits than its limit allows within any `intervalMs`, and never leaves a waiter unsettled
 * after `close()`.
 */
import type { Clock, TimerHandle } from '../clock.js';
import { BackpressureError, ErrorCode, configError, type WatchtowerError } from '../errors.js';
import { integerOption, numberOption, objectOption, oneOfOption } from '../options.js';
import { Fifo } from '../transport-kit/fifo.js';

/** How permits are counted. */
export type RateLimitStrategy = 'token-bucket' | 'sliding-window';

/** Options of a rate limit (`publisher.rateLimit`, a route's `rateLimit`, subscribe's `rateLimit`). */
export interface RateLimitOptions {
  /**
   * `token-bucket`: `limit` tokens per `intervalMs`, refilled continuously, up to `burst`
   * saved; `sliding-window`: at most `limit` permits in any `intervalMs`.
   */
  strategy: RateLimitStrategy;
  /** Permits per `intervalMs`: an integer >= 1. */
  limit: number;
  /** The interval, in ms: > 0. */
  intervalMs: number;
  /**
   * Tokens a bucket may save up (permits granted at once after a quiet spell); token bucket only.
   * @defaultValue `limit`
   */
  burst?: number;
  /**
   * What a caller over the limit gets: `'wait'` for a permit (in arrival order), or
   * `'reject'` at once with a `BACKPRESSURE_FULL` error (retryable).
   * @defaultValue `'wait'`
   */
  onLimit?: 'wait' | 'reject';
  /**
   * Callers that may wait at once; one more is rejected with `BACKPRESSURE_FULL`.
   * @defaultValue 10000
   */
  maxWaiting?: number;
  /**
   * Publish limits only: one limit for all events (`'all'`) or one per event type (`'type'`).
   * @defaultValue `'all'`
   */
  per?: 'all' | 'type';
}

/** Defaults of {@link RateLimitOptions}. */
export const DEFAULT_RATE_LIMIT_OPTIONS = {
  onLimit: 'wait',
  maxWaiting: 10_000,
  per: 'all',
} as const;

const RATE_LIMIT_KEYS = [
  'strategy',
  'limit',
  'intervalMs',
  'burst',
  'onLimit',
  'maxWaiting',
  'per',
] as const satisfies readonly (keyof RateLimitOptions)[];

/** {@link RateLimitOptions} checked, with defaults applied. */
export interface ResolvedRateLimit {
  readonly strategy: RateLimitStrategy;
  readonly limit: number;
  readonly intervalMs: number;
  readonly burst: number;
  readonly onLimit: 'wait' | 'reject';
  readonly maxWaiting: number;
  readonly per: 'all' | 'type';
}

/**
 * Checks rate-limit options named `field` (a dotted path); `allowPer` is false where `per` has
 * no meaning (a subscription). Throws a `CONFIG` error naming the bad field.
 */
export function resolveRateLimit(
  field: string,
  value: RateLimitOptions,
  allowPer: boolean,
): ResolvedRateLimit {
  if (value === undefined || value === null || typeof value !== 'object') {
    throw configError(field, 'must be an options object with strategy, limit and intervalMs');
  }
  const options = objectOption(field, value, RATE_LIMIT_KEYS);
  const strategy = oneOfOption(`${field}.strategy`, options.strategy, [
    'token-bucket',
    'sliding-window',
  ]);
  const limit = integerOption(`${field}.limit`, options.limit, 1);
  const intervalMs = numberOption(`${field}.intervalMs`, options.intervalMs, { above: 0 });
  if (strategy === 'sliding-window' && options.burst !== undefined) {
    throw configError(`${field}.burst`, 'applies to the token-bucket strategy only');
  }
  const burst = integerOption(`${field}.burst`, options.burst ?? limit, 1);
  if (!allowPer && options.per !== undefined) {
    throw configError(`${field}.per`, 'applies to publish limits only');
  }
  return {
    strategy,
    limit,
    intervalMs,
    burst,
    onLimit: oneOfOption(
      `${field}.onLimit`,
      options.onLimit ?? DEFAULT_RATE_LIMIT_OPTIONS.onLimit,
      ['wait', 'reject'],
    ),
    maxWaiting: integerOption(
      `${field}.maxWaiting`,
      options.maxWaiting ?? DEFAULT_RATE_LIMIT_OPTIONS.maxWaiting,
      1,
    ),
    per: oneOfOption(`${field}.per`, options.per ?? DEFAULT_RATE_LIMIT_OPTIONS.per, [
      'all',
      'type',
    ]),
  };
}

/** Counts permits: `take()` grants one (returns 0) or says how long until one is free. */
interface PermitCounter {
  take(now: number): number;
}

class TokenBucket implements PermitCounter {
  #tokens: number;
  #at: number;
  readonly #perMs: number;

  constructor(
    private readonly capacity: number,
    limit: number,
    intervalMs: number,
    now: number,
  ) {
    this.#tokens = capacity;
    this.#at = now;
    this.#perMs = limit / intervalMs;
  }

  take(now: number): number {
    if (now > this.#at) {
      this.#tokens = Math.min(this.capacity, this.#tokens + (now - this.#at) * this.#perMs);
      this.#at = now;
    }
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - this.#tokens) / this.#perMs));
  }
}

class SlidingWindow implements PermitCounter {
  /** When each permit of the last `intervalMs` was granted, oldest first. */
  readonly #granted = new Fifo<number>();

  constructor(
    private readonly limit: number,
    private readonly intervalMs: number,
  ) {}

  take(now: number): number {
    for (let oldest = this.#granted.peek(); oldest !== undefined; oldest = this.#granted.peek()) {
      if (oldest + this.intervalMs > now) break;
      this.#granted.shift();
    }
    if (this.#granted.size < this.limit) {
      this.#granted.push(now);
      return 0;
    }
    return (this.#granted.peek() as number) + this.intervalMs - now;
  }
}

interface Waiter {
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** The number of permits granted and refused by a limiter, for `stats()`. */
export interface RateLimiterCounters {
  /** Callers that had to wait for a permit. */
  waited: number;
  /** Callers refused (`onLimit: 'reject'`, or too many waiting). */
  rejected: number;
}

/**
 * One rate limit: {@link RateLimiter.acquire} grants a permit at once, waits for one, or
 * rejects, per the options. Waiters are served in arrival order by one timer on the clock.
 */
export class RateLimiter {
  readonly #counter: PermitCounter;
  readonly #waiters = new Fifo<Waiter>();
  #timer: TimerHandle | undefined;
  #closed: WatchtowerError | undefined;

  constructor(
    readonly options: ResolvedRateLimit,
    private readonly clock: Clock,
    /** Shared counters: several limiters of one scope add to one record. */
    private readonly counters: RateLimiterCounters,
    /** What is limited, for the error message ("publishes of order.created"). */
    private readonly what: string,
  ) {
    this.#counter =
      options.strategy === 'token-bucket'
        ? new TokenBucket(options.burst, options.limit, options.intervalMs, clock.now())
        : new SlidingWindow(options.limit, options.intervalMs);
  }

  /**
   * Undefined when a permit is granted at once; otherwise a promise that resolves when one is
   * granted, or rejects with `BACKPRESSURE_FULL` (over the limit with `onLimit: 'reject'`, or
   * `maxWaiting` callers waiting already) or `CLOSED` (the limiter closed while it waited).
   */
  acquire(): Promise<void> | undefined {
    if (this.#closed !== undefined) return Promise.reject(this.#closed);
    if (this.#waiters.size === 0) {
      const wait = this.#counter.take(this.clock.now());
      if (wait === 0) return undefined;
      if (this.options.onLimit === 'reject') return Promise.reject(this.#refusal('is exceeded'));
      return this.#wait(wait);
    }
    if (this.options.onLimit === 'reject') return Promise.reject(this.#refusal('is exceeded'));
    return this.#wait(undefined);
  }

  /** Rejects every waiter with `error` and stops the timer. Idempotent. */
  close(error: WatchtowerError): void {
    this.#closed ??= error;
    if (this.#timer !== undefined) this.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    for (let waiter = this.#waiters.shift(); waiter !== undefined; waiter = this.#waiters.shift()) {
      waiter.reject(error);
    }
  }

  #wait(firstWaitMs: number | undefined): Promise<void> {
    if (this.#waiters.size >= this.options.maxWaiting) {
      return Promise.reject(
        this.#refusal(`is exceeded and ${this.options.maxWaiting} callers wait already`),
      );
    }
    this.counters.waited++;
    return new Promise<void>((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      if (firstWaitMs !== undefined && this.#timer === undefined) this.#arm(firstWaitMs);
    });
  }

  #arm(ms: number): void {
    this.#timer = this.clock.setTimeout(() => this.#serve(), ms);
  }

  #serve(): void {
    this.#timer = undefined;
    for (let waiter = this.#waiters.peek(); waiter !== undefined; waiter = this.#waiters.peek()) {
      const wait = this.#counter.take(this.clock.now());
      if (wait > 0) {
        this.#arm(wait);
        return;
      }
      this.#waiters.shift();
      waiter.resolve();
    }
  }

  #refusal(problem: string): BackpressureError {
    this.counters.rejected++;
    const { limit, intervalMs, strategy } = this.options;
    return new BackpressureError(
      ErrorCode.BACKPRESSURE_FULL,
      `the rate limit of ${this.what} (${limit} per ${intervalMs} ms, ${strategy}) ${problem}`,
      { retryable: true },
    );
  }
}
