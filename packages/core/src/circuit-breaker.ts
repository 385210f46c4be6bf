/**
 * `CircuitBreaker`: closed, open after consecutive failures, half-open trial calls after the
 * reset time, on the injected `Clock`. Which errors count as failures is `isFailure`'s call
 * ({@link isCircuitFailure} by default: not the caller's own mistakes, nor refusals by the
 * breaker, the queue or a closed component).
 */
import { systemClock, type Clock } from './clock.js';
import { Emitter } from './emitter.js';
import {
  CircuitOpenError,
  describeError,
  ErrorCode,
  configError,
  isWatchtowerError,
  type ErrorCode as ErrorCodeType,
} from './errors.js';
import { checkClock, checkFunction, checkInteger, checkNumber, withDefaults } from './options.js';

/**
 * `closed`: calls pass and consecutive failures are counted. `open`: calls are rejected at
 * once. `half-open`: a few trial calls decide whether to close or reopen.
 */
export type CircuitState = 'closed' | 'open' | 'half-open';

/** Options of {@link CircuitBreaker}. */
export interface CircuitBreakerOptions {
  /**
   * Consecutive failures while closed that open the circuit. Integer >= 1.
   * @defaultValue 5
   */
  failureThreshold?: number;
  /**
   * How long the circuit stays open before the next call is let through as a trial.
   * Finite, >= 0.
   * @defaultValue 60000
   */
  resetTimeoutMs?: number;
  /**
   * Trial calls allowed at the same time while half-open; further calls are rejected with
   * `CIRCUIT_OPEN`. Integer >= 1.
   * @defaultValue 1
   */
  halfOpenMaxConcurrent?: number;
  /**
   * Successful trial calls in a row, while half-open, that close the circuit. Integer >= 1.
   * @defaultValue 2
   */
  successThreshold?: number;
  /**
   * Source of time; pass a `FakeClock` in tests.
   * @defaultValue `systemClock`
   */
  clock?: Clock;
  /**
   * Decides whether an error says something about the health of what the breaker guards.
   * Errors for which it returns false count neither as failure nor as success.
   * @defaultValue {@link isCircuitFailure}
   */
  isFailure?: (error: unknown) => boolean;
  /**
   * Shown in error messages, e.g. the webhook URL a breaker guards.
   * @defaultValue `'circuit'`
   */
  name?: string;
}

/** A plain snapshot of a breaker, from {@link CircuitBreaker.stats}. */
export interface CircuitBreakerStats {
  state: CircuitState;
  /** Consecutive failures in the current state (reset by a success or a state change). */
  failureCount: number;
  /** Consecutive successes in the current state (reset by a failure or a state change). */
  successCount: number;
  /** Every call that asked to pass, including rejected ones. Never reset. */
  totalRequests: number;
  /** Calls rejected with `CIRCUIT_OPEN`. Never reset. */
  rejectedRequests: number;
  /** Clock time of the last counted failure, if any. */
  lastFailureAt: number | undefined;
  /** Clock time of the last state change, or of construction. */
  lastStateChangeAt: number;
}

/** Listener signatures of {@link CircuitBreaker.on}. */
export type CircuitBreakerEvents = {
  stateChange: [to: CircuitState, from: CircuitState];
};

/**
 * Codes of errors that are the caller's doing or another guard's refusal, not a sign that the
 * guarded resource is unwell: one caller's bad payload must not open the circuit for everyone.
 */
const NOT_A_FAILURE: ReadonlySet<ErrorCodeType> = new Set<ErrorCodeType>([
  ErrorCode.CONFIG,
  ErrorCode.VALIDATION,
  ErrorCode.SERIALIZATION,
  ErrorCode.NON_RETRYABLE,
  ErrorCode.CIRCUIT_OPEN,
  ErrorCode.BACKPRESSURE_FULL,
  ErrorCode.BACKPRESSURE_DROPPED,
  ErrorCode.CLOSED,
]);

/**
 * The default {@link CircuitBreakerOptions.isFailure}: every error counts, except Watchtower
 * errors that are the caller's own fault (`CONFIG`, `VALIDATION`, `SERIALIZATION`,
 * `NON_RETRYABLE`) or another guard's refusal (`CIRCUIT_OPEN`, `BACKPRESSURE_FULL`,
 * `BACKPRESSURE_DROPPED`, `CLOSED`).
 */
export function isCircuitFailure(error: unknown): boolean {
  return !(isWatchtowerError(error) && NOT_A_FAILURE.has(error.code));
}

/** The defaults of every {@link CircuitBreakerOptions} field. */
export const DEFAULT_CIRCUIT_BREAKER_OPTIONS: Readonly<Required<CircuitBreakerOptions>> =
  Object.freeze({
    failureThreshold: 5,
    resetTimeoutMs: 60_000,
    halfOpenMaxConcurrent: 1,
    successThreshold: 2,
    clock: systemClock,
    isFailure: isCircuitFailure,
    name: 'circuit',
  });

/**
 * Stops calling something that keeps failing, then probes it with a few trial calls.
 *
 * Closed -> open after `failureThreshold` consecutive failures; open rejects at once with
 * {@link CircuitOpenError}; once `resetTimeoutMs` has passed, the next call finds the circuit
 * half-open (no timer runs: the check happens when a call arrives or `state`/`stats()` is
 * read); `successThreshold` trial successes close it, any trial failure reopens it.
 */
export class CircuitBreaker {
  readonly #options: Readonly<Required<CircuitBreakerOptions>>;
  readonly #clock: Clock;
  readonly #emitter = new Emitter<CircuitBreakerEvents>();
  #state: CircuitState = 'closed';
  /**
   * Bumped on every state change so that `execute` can ignore the outcome of a call that
   * started in an earlier state: a slow success from before the circuit opened must not
   * count as a trial success.
   */
  #generation = 0;
  #openedAt = 0;
  #halfOpenInFlight = 0;
  #failureCount = 0;
  #successCount = 0;
  #totalRequests = 0;
  #rejectedRequests = 0;
  #lastFailureAt: number | undefined;
  /** The last failure that counted: the `cause` of every `CIRCUIT_OPEN` error. */
  #lastFailure: unknown;
  #lastStateChangeAt: number;

  /** @throws a `CONFIG` error naming the field when an option is invalid. */
  constructor(options: CircuitBreakerOptions = {}) {
    const merged = withDefaults(DEFAULT_CIRCUIT_BREAKER_OPTIONS, options, 'circuitBreaker');
    validate(merged);
    this.#options = Object.freeze(merged);
    this.#clock = merged.clock;
    this.#lastStateChangeAt = this.#clock.now();
  }

  /** The name given in the options. */
  get name(): string {
    return this.#options.name;
  }

  /** The current state; reading it moves an expired open circuit to half-open. */
  get state(): CircuitState {
    this.#refresh();
    return this.#state;
  }

  /**
   * Runs `fn` if the circuit lets it through and records its outcome.
   *
   * Rejects with {@link CircuitOpenError} without calling `fn` while open, or while half-open
   * with all trial slots taken; otherwise settles as `fn` does.
   */
  async execute<T>(fn: () => Promise<T>): Promise<T> {
    const generation = this.#acquire();
    let result: T;
    try {
      result = await fn();
    } catch (error) {
      if (generation === this.#generation) this.recordFailure(error);
      throw error;
    }
    if (generation === this.#generation) this.recordSuccess();
    return result;
  }

  /**
   * The synchronous gate behind {@link CircuitBreaker.execute}, for hot paths: returns when a
   * call may proceed, and throws {@link CircuitOpenError} when not. Every successful
   * `acquire()` must be followed by exactly one `recordSuccess()` or `recordFailure()`;
   * outcomes are attributed to the state the breaker is in when they are recorded.
   */
  acquire(): void {
    this.#acquire();
  }

  /** Records a successful call (see {@link CircuitBreaker.acquire}). Ignored while open. */
  recordSuccess(): void {
    switch (this.#state) {
      case 'closed':
        this.#failureCount = 0;
        this.#successCount++;
        return;
      case 'half-open':
        this.#releaseTrial();
        this.#failureCount = 0;
        this.#successCount++;
        if (this.#successCount >= this.#options.successThreshold) this.#transition('closed');
        return;
      case 'open':
        // A call that began before the circuit opened says nothing about recovery.
        return;
    }
  }

  /**
   * Records a failed call (see {@link CircuitBreaker.acquire}). An error that `isFailure`
   * rejects only frees its half-open trial slot. Ignored while open.
   */
  recordFailure(error: unknown): void {
    if (this.#state === 'open') return;
    const counts = this.#options.isFailure(error);
    if (this.#state === 'half-open') {
      this.#releaseTrial();
      if (counts) {
        this.#lastFailureAt = this.#clock.now();
        this.#lastFailure = error;
        this.#transition('open');
      }
      return;
    }
    if (!counts) return;
    this.#lastFailureAt = this.#clock.now();
    this.#lastFailure = error;
    this.#successCount = 0;
    this.#failureCount++;
    if (this.#failureCount >= this.#options.failureThreshold) this.#transition('open');
  }

  /** A plain snapshot; reading it moves an expired open circuit to half-open. */
  stats(): CircuitBreakerStats {
    this.#refresh();
    return {
      state: this.#state,
      failureCount: this.#failureCount,
      successCount: this.#successCount,
      totalRequests: this.#totalRequests,
      rejectedRequests: this.#rejectedRequests,
      lastFailureAt: this.#lastFailureAt,
      lastStateChangeAt: this.#lastStateChangeAt,
    };
  }

  /**
   * Adds a listener; returns a function that removes it. `stateChange` fires after the change,
   * with the new state first. A throwing listener never affects the breaker.
   */
  on<K extends keyof CircuitBreakerEvents>(
    name: K,
    listener: (...args: CircuitBreakerEvents[K]) => void,
  ): () => void {
    return this.#emitter.on(name, listener);
  }

  /**
   * True when a call would be let through now (closed, or half-open with a trial slot free),
   * without counting it as a request: for a caller that holds work back while trial calls
   * decide.
   */
  admits(): boolean {
    this.#refresh();
    if (this.#state === 'closed') return true;
    return (
      this.#state === 'half-open' && this.#halfOpenInFlight < this.#options.halfOpenMaxConcurrent
    );
  }

  /**
   * Ends the wait of an open circuit now: the circuit goes half-open, and trial calls decide
   * (`successThreshold` successes close it, a failure opens it again for `resetTimeoutMs`).
   * For when the cause of the failures is known to be gone (a transport reports that its
   * connection is back). Does nothing unless the circuit is open.
   */
  halfOpen(): void {
    if (this.#state === 'open') this.#transition('half-open');
  }

  /**
   * Forces the circuit closed with zeroed consecutive counts; outcomes of calls already under
   * way are ignored. `totalRequests` and `rejectedRequests` are kept.
   */
  reset(): void {
    if (this.#state === 'closed') {
      this.#generation++;
      this.#failureCount = 0;
      this.#successCount = 0;
      return;
    }
    this.#transition('closed');
  }

  #acquire(): number {
    this.#totalRequests++;
    this.#refresh();
    if (this.#state === 'closed') return this.#generation;
    if (
      this.#state === 'half-open' &&
      this.#halfOpenInFlight < this.#options.halfOpenMaxConcurrent
    ) {
      this.#halfOpenInFlight++;
      return this.#generation;
    }
    this.#rejectedRequests++;
    const retryAfterMs =
      this.#state === 'open'
        ? Math.max(0, this.#openedAt + this.#options.resetTimeoutMs - this.#clock.now())
        : // Half-open with every trial slot taken: when one frees up is unknown, so "now".
          0;
    throw new CircuitOpenError(
      this.#state === 'open'
        ? `${this.#options.name} is open; retry after ${retryAfterMs} ms` +
            (this.#lastFailure === undefined
              ? ''
              : ` (last failure: ${describeError(this.#lastFailure)})`)
        : `${this.#options.name} is half-open and its trial calls are all in use`,
      retryAfterMs,
      this.#lastFailure === undefined ? undefined : { cause: this.#lastFailure },
    );
  }

  #refresh(): void {
    if (
      this.#state === 'open' &&
      this.#clock.now() >= this.#openedAt + this.#options.resetTimeoutMs
    ) {
      this.#transition('half-open');
    }
  }

  #releaseTrial(): void {
    if (this.#halfOpenInFlight > 0) this.#halfOpenInFlight--;
  }

  #transition(to: CircuitState): void {
    const from = this.#state;
    this.#state = to;
    this.#generation++;
    this.#failureCount = 0;
    this.#successCount = 0;
    this.#halfOpenInFlight = 0;
    this.#lastStateChangeAt = this.#clock.now();
    // Set before listeners run: one that reads `state` must not see a stale opening time.
    if (to === 'open') this.#openedAt = this.#lastStateChangeAt;
    this.#emitter.emit('stateChange', to, from);
  }
}

function validate(options: Required<CircuitBreakerOptions>): void {
  checkInteger('failureThreshold', options.failureThreshold, 1);
  checkInteger('halfOpenMaxConcurrent', options.halfOpenMaxConcurrent, 1);
  checkInteger('successThreshold', options.successThreshold, 1);
  checkNumber('resetTimeoutMs', options.resetTimeoutMs, { min: 0 });
  checkClock('clock', options.clock);
  checkFunction('isFailure', options.isFailure);
  if (typeof options.name !== 'string') throw configError('name', 'must be a string');
}
