/**
 * The per-endpoint limits of deliveries: a token bucket for the request rate and a semaphore
 * for requests in flight. Both queue their waiters first come, first served, wait on the
 * injected clock and give up when a waiter's signal aborts, so that `close()` ends every wait.
 */
import type { Clock, TimerHandle } from '@watchtower/core';
import { Fifo, abortError } from '@watchtower/core/transport-kit';

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
}

/** Waits for `signal`, unhooking when done. */
function waiter(
  queue: Fifo<Waiter>,
  signal: AbortSignal | undefined,
  what: string,
  onQueued: () => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(abortError(signal, what));
      return;
    }
    const entry: Waiter = {
      resolve: () => {
        signal?.removeEventListener('abort', entry.onAbort);
        resolve();
      },
      reject,
      signal,
      onAbort: () => {
        queue.removeFirst((w) => w === entry);
        reject(abortError(signal as AbortSignal, what));
      },
    };
    signal?.addEventListener('abort', entry.onAbort, { once: true });
    queue.push(entry);
    onQueued();
  });
}

/** At most `limit` holders at once; `acquire` waits for a free slot. */
export class Semaphore {
  readonly #limit: number;
  readonly #waiters = new Fifo<Waiter>();
  #held = 0;

  constructor(limit: number) {
    this.#limit = limit;
  }

  get held(): number {
    return this.#held;
  }

  get waiting(): number {
    return this.#waiters.size;
  }

  /** Resolves with a slot (call `release()` once when done), or rejects `ABORTED`. */
  acquire(signal?: AbortSignal): Promise<void> {
    if (this.#held < this.#limit && this.#waiters.size === 0) {
      this.#held++;
      return Promise.resolve();
    }
    return waiter(this.#waiters, signal, 'waiting for a delivery slot', () => undefined);
  }

  release(): void {
    const next = this.#waiters.shift();
    if (next === undefined) this.#held--;
    else next.resolve();
  }
}

/**
 * `perSecond` requests a second on average, `burst` at once after a quiet spell. Tokens are
 * refilled from the clock when asked for, and one timer wakes the first waiter.
 */
export class TokenBucket {
  readonly #clock: Clock;
  readonly #perMs: number;
  readonly #burst: number;
  readonly #waiters = new Fifo<Waiter>();
  #tokens: number;
  #at: number;
  #timer: TimerHandle | undefined;

  constructor(clock: Clock, perSecond: number, burst: number) {
    this.#clock = clock;
    this.#perMs = perSecond / 1000;
    this.#burst = burst;
    this.#tokens = burst;
    this.#at = clock.now();
  }

  get waiting(): number {
    return this.#waiters.size;
  }

  /** Resolves when a request may go, or rejects `ABORTED`. */
  take(signal?: AbortSignal): Promise<void> {
    this.#refill();
    if (this.#waiters.size === 0 && this.#tokens >= 1) {
      this.#tokens--;
      return Promise.resolve();
    }
    return waiter(this.#waiters, signal, 'waiting for the rate limit', () => this.#arm());
  }

  #refill(): void {
    const now = this.#clock.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#at) * this.#perMs);
    this.#at = now;
  }

  #arm(): void {
    if (this.#timer !== undefined) return;
    const wait = Math.max(1, Math.ceil((1 - this.#tokens) / this.#perMs));
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#refill();
      while (this.#tokens >= 1) {
        const next = this.#waiters.shift();
        if (next === undefined) break;
        this.#tokens--;
        next.resolve();
      }
      if (this.#waiters.size > 0) this.#arm();
    }, wait);
  }

  /** Clears the timer; waiters are ended by their signals. */
  stop(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
