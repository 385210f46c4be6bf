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
  readonly what: string;
}

/**
 * Waiters, first come first served, that give up when their signal aborts. Each signal gets one
 * abort listener however many wait on it: every delivery waits on the client's one closing
 * signal, and Node's EventTarget looks through all its listeners on each add and remove, so a
 * listener per waiter made each wait cost time in the number waiting (14 µs per event with the
 * thousand deliveries a `WebhookTransport` keeps pending).
 */
class WaitQueue {
  readonly #fifo = new Fifo<Waiter>();
  readonly #hooks = new Map<AbortSignal, { waiting: number; onAbort: () => void }>();

  get size(): number {
    return this.#fifo.size;
  }

  /** Resolves when woken by {@link wakeFirst}; rejects `ABORTED` when `signal` aborts first. */
  wait(signal: AbortSignal | undefined, what: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted === true) {
        reject(abortError(signal, what));
        return;
      }
      this.#fifo.push({ resolve, reject, signal, what });
      if (signal !== undefined) this.#hook(signal);
    });
  }

  /** Wakes the first waiter; false when none waits. */
  wakeFirst(): boolean {
    const next = this.#fifo.shift();
    if (next === undefined) return false;
    if (next.signal !== undefined) this.#unhook(next.signal);
    next.resolve();
    return true;
  }

  #hook(signal: AbortSignal): void {
    const hook = this.#hooks.get(signal);
    if (hook !== undefined) {
      hook.waiting++;
      return;
    }
    const onAbort = (): void => {
      this.#hooks.delete(signal);
      for (const waiter of this.#fifo.drain()) {
        if (waiter.signal === signal) waiter.reject(abortError(signal, waiter.what));
        else this.#fifo.push(waiter);
      }
    };
    this.#hooks.set(signal, { waiting: 1, onAbort });
    signal.addEventListener('abort', onAbort, { once: true });
  }

  #unhook(signal: AbortSignal): void {
    const hook = this.#hooks.get(signal);
    if (hook === undefined || --hook.waiting > 0) return;
    this.#hooks.delete(signal);
    signal.removeEventListener('abort', hook.onAbort);
  }
}

/** At most `limit` holders at once; `acquire` waits for a free slot. */
export class Semaphore {
  readonly #limit: number;
  readonly #waiters = new WaitQueue();
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

  /** Takes a slot when one is free and nobody waits (call `release()` once when done). */
  tryAcquire(): boolean {
    if (this.#held >= this.#limit || this.#waiters.size > 0) return false;
    this.#held++;
    return true;
  }

  /** Resolves with a slot (call `release()` once when done), or rejects `ABORTED`. */
  acquire(signal?: AbortSignal): Promise<void> {
    if (this.tryAcquire()) return Promise.resolve();
    return this.#waiters.wait(signal, 'waiting for a delivery slot');
  }

  release(): void {
    if (!this.#waiters.wakeFirst()) this.#held--;
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
  readonly #waiters = new WaitQueue();
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
    const waiting = this.#waiters.wait(signal, 'waiting for the rate limit');
    if (this.#waiters.size > 0) this.#arm();
    return waiting;
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
      while (this.#tokens >= 1 && this.#waiters.wakeFirst()) this.#tokens--;
      if (this.#waiters.size > 0) this.#arm();
    }, wait);
  }

  /** Clears the timer; waiters are ended by their signals. */
  stop(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
