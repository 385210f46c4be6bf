/**
 * Time for transports, always on the injected {@link Clock} so that fake-clock tests can step
 * it: time limits (`within`, `withTimeout`, {@link Deadline}), abort signals, a pause that can
 * be woken early, repeating work, and reconnect backoff with full jitter.
 *
 * Nothing here reads `Date` or calls the global timers; a transport that does is out of a
 * fake clock's reach. A timer whose handle can be unref'd (Node's) is unref'd only where it
 * says so: waiting work that holds an accepted event keeps the process alive on purpose.
 */
import type { Clock, TimerHandle } from '../clock.js';
import { ErrorCode, TimeoutError, WatchtowerError } from '../errors.js';

/** What {@link within} resolves with when the time ran out first. */
export const TIMED_OUT: unique symbol = Symbol('timed out');

/**
 * Resolves with what `work` resolves with, or with {@link TIMED_OUT} once `ms` have passed.
 * Rejects when `work` rejects first. The work goes on after a time-out: give it a way to end
 * (a closed connection) when that matters. Clears its timer either way.
 */
export function within<R>(
  clock: Clock,
  ms: number,
  work: Promise<R>,
): Promise<R | typeof TIMED_OUT> {
  return new Promise<R | typeof TIMED_OUT>((resolve, reject) => {
    const timer = clock.setTimeout(() => resolve(TIMED_OUT), Math.max(0, ms));
    work.then(
      (value) => {
        clock.clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clock.clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/**
 * `promise`, or a rejection with a `TIMEOUT` error saying that `what` took longer than `ms`.
 */
export function withTimeout<T>(
  clock: Clock,
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  return within(clock, ms, promise).then((value) => {
    if (value === TIMED_OUT) throw new TimeoutError(`${what} took longer than ${ms} ms`, ms);
    return value;
  });
}

/** The `ABORTED` error for `signal`: not retryable, the signal's reason as cause. */
export function abortError(signal: AbortSignal, what = 'the operation'): WatchtowerError {
  return new WatchtowerError(ErrorCode.ABORTED, `${what} was aborted`, {
    cause: signal.reason,
    retryable: false,
  });
}

/** Throws {@link abortError} when `signal` is aborted already. */
export function throwIfAborted(signal: AbortSignal | undefined, what?: string): void {
  if (signal?.aborted === true) throw abortError(signal, what);
}

/**
 * `promise`, or {@link abortError} as soon as `signal` aborts. The work itself goes on (what a
 * broker already has cannot be taken back); only the caller stops waiting.
 */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal, what?: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortError(signal, what));
    if (signal.aborted) {
      onAbort();
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/**
 * A point in time that several steps share, such as the end of `close({ timeoutMs })`: each
 * step gets what is left, so the steps together stay within the limit.
 */
export class Deadline {
  readonly #clock: Clock;
  readonly #at: number;

  constructor(clock: Clock, ms: number) {
    this.#clock = clock;
    this.#at = clock.now() + Math.max(0, ms);
  }

  /** Milliseconds left, never below 0. */
  remaining(): number {
    return Math.max(0, this.#at - this.#clock.now());
  }

  get expired(): boolean {
    return this.remaining() === 0;
  }

  /** {@link within} the time left. */
  within<R>(work: Promise<R>): Promise<R | typeof TIMED_OUT> {
    return within(this.#clock, this.remaining(), work);
  }
}

/**
 * Signals that all abort together, each its own: for many waits at once that must end when
 * one thing does (a close). Giving them all one shared signal would add a listener to it per
 * wait, and Node warns about a leak past ten. `open()` hands out a controller, `release()`
 * forgets it when its wait is over, `abort()` aborts those still open and every later one.
 */
export class AbortScope {
  readonly #open = new Set<AbortController>();
  #reason: unknown;
  #aborted = false;

  get aborted(): boolean {
    return this.#aborted;
  }

  /** A new controller, aborted already when the scope is. */
  open(): AbortController {
    const controller = new AbortController();
    if (this.#aborted) controller.abort(this.#reason);
    else this.#open.add(controller);
    return controller;
  }

  release(controller: AbortController): void {
    this.#open.delete(controller);
  }

  /** Runs `work` with a signal of the scope, released when it settles. */
  async run<T>(work: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = this.open();
    try {
      return await work(controller.signal);
    } finally {
      this.release(controller);
    }
  }

  /** Aborts every open signal with `reason`, and every one opened later. Idempotent. */
  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    for (const controller of this.#open) controller.abort(reason);
    this.#open.clear();
  }
}

/**
 * A wait that can be cut short: a read loop pauses after a failure, or waits for room, and
 * `wake()` (new work, or stop) ends the pause at once. One pause at a time.
 */
export class Pause {
  readonly #clock: Clock;
  #wake: (() => void) | undefined;

  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** True while a pause is waiting. */
  get waiting(): boolean {
    return this.#wake !== undefined;
  }

  /** Resolves after `ms` (never, when `ms` is infinite) or at the next `wake()`. */
  sleep(ms = Number.POSITIVE_INFINITY): Promise<void> {
    this.wake();
    return new Promise<void>((resolve) => {
      let timer: TimerHandle | undefined;
      const done = (): void => {
        if (this.#wake === done) this.#wake = undefined;
        if (timer !== undefined) this.#clock.clearTimeout(timer);
        resolve();
      };
      this.#wake = done;
      if (Number.isFinite(ms)) timer = this.#clock.setTimeout(done, Math.max(0, ms));
    });
  }

  /** Ends the pause that is waiting now, if any. */
  wake(): void {
    this.#wake?.();
  }
}

/**
 * Runs `task` every `ms` on `clock` until the returned function is called. The next run is
 * timed from the end of the previous one, and a run that returns a promise is awaited first,
 * so runs never overlap. A failure is given to `onError` (the task is not stopped by it).
 * The timer does not keep the process alive: this is for sweeps and keep-alives.
 */
export function repeat(
  clock: Clock,
  ms: number,
  task: () => void | Promise<void>,
  onError: (error: unknown) => void,
): () => void {
  let stopped = false;
  let timer: TimerHandle | undefined;
  const arm = (): void => {
    if (stopped) return;
    timer = clock.setTimeout(run, ms);
    unrefTimer(timer);
  };
  const run = (): void => {
    timer = undefined;
    let result: void | Promise<void>;
    try {
      result = task();
    } catch (error) {
      onError(error);
      arm();
      return;
    }
    if (result instanceof Promise) result.then(arm, (error: unknown) => (onError(error), arm()));
    else arm();
  };
  arm();
  return () => {
    stopped = true;
    if (timer !== undefined) clock.clearTimeout(timer);
    timer = undefined;
  };
}

/** Lets the process exit while only this timer is pending, where the handle allows it. */
export function unrefTimer(handle: TimerHandle): void {
  const unref = (handle as { unref?: unknown }).unref;
  if (typeof unref === 'function') (unref as () => void).call(handle);
}

/** Settings of a {@link Backoff}. */
export interface BackoffOptions {
  /** The cap of the first wait; it doubles per failure. */
  readonly baseMs: number;
  /** The largest cap. */
  readonly maxMs: number;
  /** Random numbers in [0, 1). @defaultValue `Math.random` */
  readonly random?: () => number;
}

/**
 * Exponential backoff with full jitter: after the n-th failure in a row, a wait drawn evenly
 * from [0, min(maxMs, baseMs * 2^(n-1))]. Many clients that lost the same broker so spread
 * their retries instead of returning in step; `reset()` after a success.
 */
export class Backoff {
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #random: () => number;
  #failures = 0;

  constructor(options: BackoffOptions) {
    this.#baseMs = options.baseMs;
    this.#maxMs = options.maxMs;
    this.#random = options.random ?? Math.random;
  }

  /** Failures since the last reset. */
  get failures(): number {
    return this.#failures;
  }

  /** Counts a failure and returns how long to wait before the next try. */
  next(): number {
    this.#failures++;
    const cap = Math.min(this.#maxMs, this.#baseMs * 2 ** Math.min(this.#failures - 1, 30));
    return Math.floor(this.#random() * cap);
  }

  reset(): void {
    this.#failures = 0;
  }
}
