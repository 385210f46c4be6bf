/**
 * The life of a transport, written once: connect once (concurrent callers share one attempt),
 * close once within its deadline, background work that close waits for, and the `error`
 * listeners that hear about failures no caller can be told of, silent after close.
 *
 * Why the deadline is enforced here and not by each step: a broker that stops answering (a
 * paused process, a dropped link) leaves a driver's commands pending, often until it answers
 * again. `close({ timeoutMs })` resolves within `timeoutMs` plus {@link CLOSE_MARGIN_MS}
 * whatever the broker does: when the transport's own steps are not done by the deadline, its
 * `force` step drops the connections (what was not settled is redelivered by the broker, which
 * is no loss) and close resolves. Nothing here talks to a broker.
 */
import type { Clock } from '../clock.js';
import { Emitter } from '../emitter.js';
import { ClosedError, type WatchtowerError } from '../errors.js';
import { checkNumber, rejectUnknownOptions } from '../options.js';
import { TRANSPORT_OPTION_KEYS, type CloseOptions, type ConnectionChange } from '../transport.js';
import { RESOLVED } from './resolved.js';
import { Deadline, TIMED_OUT, within } from './timing.js';

/** Where a transport is in its life. */
export type LifecyclePhase = 'idle' | 'connecting' | 'open' | 'closing' | 'closed';

/**
 * How long `close()` may take beyond its `timeoutMs`: the `force` step and what it ends (a
 * socket destroyed, a pending command rejected) run in this time.
 */
export const CLOSE_MARGIN_MS = 250;

/** Settings of a {@link TransportLifecycle}. */
export interface TransportLifecycleOptions {
  /** How messages name the transport, e.g. `'the NATS transport'`. */
  readonly name: string;
  readonly clock: Clock;
  /** What `close()` without `timeoutMs` waits at most. */
  readonly closeTimeoutMs: number;
  /** Maps a failure of background work to the error the `error` listeners get. */
  readonly mapError: (error: unknown, operation: string) => WatchtowerError;
}

/** Listener map of a transport's `on()`. */
export type TransportErrorEvents = {
  /**
   * Background work failed where no caller can be told (a read loop, a reclaim, an ack that did
   * not go out). The transport goes on and retries where it can; this is for logs and metrics.
   * Nothing is reported after `close()`.
   */
  error: [error: WatchtowerError];
  /**
   * The connection was lost, a reconnect attempt failed, or it is back after a reconnect
   * ({@link TransportLifecycle.connectionLost}, {@link TransportLifecycle.reconnectFailed},
   * {@link TransportLifecycle.connectionRestored}).
   * Nothing is reported after `close()` begins.
   */
  connection: [change: ConnectionChange];
};

/** The steps of a transport's close, given the deadline they share. */
export type CloseSteps = (deadline: Deadline) => Promise<void>;

/**
 * One per transport. The transport calls `connect(open)` and `close(options, steps, force)`
 * from its own `connect()` and `close()`, `assertOpen()` where work starts, `track()` for work
 * nobody awaits and `report()` for failures nobody else hears of.
 */
export class TransportLifecycle {
  readonly #options: TransportLifecycleOptions;
  readonly #emitter = new Emitter<TransportErrorEvents>();
  readonly #background = new Set<Promise<void>>();
  readonly #closeController = new AbortController();
  #phase: LifecyclePhase = 'idle';
  #connecting: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #silenced = false;
  /** Between `connectionLost()` and `connectionRestored()`. */
  #linkLost = false;

  constructor(options: TransportLifecycleOptions) {
    this.#options = options;
  }

  get phase(): LifecyclePhase {
    return this.#phase;
  }

  /** True from the start of `close()`: no new work is accepted. */
  get closed(): boolean {
    return this.#phase === 'closing' || this.#phase === 'closed';
  }

  /** Aborts when `close()` starts: ends retries and waits of background work. */
  get signal(): AbortSignal {
    return this.#closeController.signal;
  }

  get clock(): Clock {
    return this.#options.clock;
  }

  /**
   * Runs `open` once; concurrent callers share the attempt, and after a failure the next call
   * tries again. Resolves at once when open. Rejects with `CLOSED` after `close()`. `open`
   * should check {@link TransportLifecycle.assertOpen} after each of its awaits and let go of
   * what it opened when the transport closed meanwhile.
   */
  connect(open: () => Promise<void>): Promise<void> {
    if (this.closed) return Promise.reject(this.closedError('connect'));
    if (this.#phase === 'open') return RESOLVED;
    this.#connecting ??= this.#connect(open);
    return this.#connecting;
  }

  async #connect(open: () => Promise<void>): Promise<void> {
    this.#phase = 'connecting';
    try {
      await open();
    } catch (error) {
      if (this.#phase === 'connecting') this.#phase = 'idle';
      this.#connecting = undefined;
      throw error;
    }
    this.#connecting = undefined;
    if (this.#phase !== 'connecting') throw this.closedError('connect');
    this.#phase = 'open';
  }

  /** The connection was given up without `close()` (reconnects ran out): the next `connect()` starts afresh. */
  lost(): void {
    const wasOpen = this.#phase === 'open';
    if (this.#phase === 'open' || this.#phase === 'connecting') this.#phase = 'idle';
    this.#linkLost = false;
    this.#connecting = undefined;
    if (wasOpen) this.#emitter.emit('connection', { state: 'given-up' });
  }

  /** A connect under way, for `close()` to wait for (within its deadline). */
  get connecting(): Promise<void> | undefined {
    return this.#connecting;
  }

  /** Throws `CLOSED` once `close()` has started. */
  assertOpen(what: string): void {
    if (this.closed) throw this.closedError(what);
  }

  /** The `CLOSED` error for `what` (an operation) refused because the transport closed. */
  closedError(what?: string): ClosedError {
    const name = this.#options.name;
    return new ClosedError(
      what === undefined ? `${name} is closed` : `cannot ${what}: ${name} is closed`,
    );
  }

  /**
   * Closes once: later calls return the first call's promise. Checks the options (`CONFIG`
   * for an unknown key or a `timeoutMs` that is not a number >= 0), then runs `steps` with a
   * deadline of `timeoutMs` (default `closeTimeoutMs`). When the steps are not done by then,
   * `force` drops the connections and close resolves at most {@link CLOSE_MARGIN_MS} later.
   * Rejects only with `CONFIG`, or with what the steps rejected with when they ended by
   * themselves (they should catch what they expect). The `error` listeners are silenced when
   * it ends.
   */
  close(options: CloseOptions | undefined, steps: CloseSteps, force: () => void): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    let timeoutMs: number;
    try {
      if (options !== undefined)
        rejectUnknownOptions(options, TRANSPORT_OPTION_KEYS.close, 'close options');
      timeoutMs = options?.timeoutMs ?? this.#options.closeTimeoutMs;
      checkNumber('timeoutMs', timeoutMs, { min: 0 });
    } catch (error) {
      return Promise.reject(error);
    }
    this.#phase = 'closing';
    this.#closeController.abort(this.closedError());
    this.#closing = this.#close(timeoutMs, steps, force);
    return this.#closing;
  }

  async #close(timeoutMs: number, steps: CloseSteps, force: () => void): Promise<void> {
    const clock = this.#options.clock;
    const deadline = new Deadline(clock, timeoutMs);
    let failure: { error: unknown } | undefined;
    const run = steps(deadline).catch((error: unknown) => {
      failure = { error };
    });
    try {
      if ((await within(clock, timeoutMs, run)) === TIMED_OUT) {
        // What failed from here on failed because the connections were dropped.
        this.#silenced = true;
        failure = undefined;
        try {
          force();
        } catch {
          // Already gone.
        }
        await within(clock, CLOSE_MARGIN_MS, run);
        failure = undefined;
      }
    } finally {
      this.#silenced = true;
      this.#phase = 'closed';
    }
    if (failure !== undefined) throw failure.error;
  }

  /**
   * Adds a listener for failures of background work; returns a function that removes it. A
   * listener that throws is reported as a process warning and never breaks the transport.
   */
  on<K extends keyof TransportErrorEvents>(
    name: K,
    listener: (...args: TransportErrorEvents[K]) => void,
  ): () => void {
    return this.#emitter.on(name, listener);
  }

  /**
   * The client lost its connection to the broker: tells the `connection` listeners once, until
   * {@link TransportLifecycle.connectionRestored}. Ignored before the first connect
   * succeeded and from `close()` on.
   */
  connectionLost(error?: WatchtowerError): void {
    if (this.#phase !== 'open' || this.#linkLost) return;
    this.#linkLost = true;
    this.#emitter.emit(
      'connection',
      error === undefined ? { state: 'lost' } : { state: 'lost', error },
    );
  }

  /**
   * One attempt to reconnect after {@link TransportLifecycle.connectionLost} failed: tells the
   * listeners (`reconnect-failed`), so that the bus's circuit breaker counts it. Call it once per
   * failed attempt. Ignored unless the connection is reported lost, and from `close()` on.
   */
  reconnectFailed(error: WatchtowerError): void {
    if (this.#phase !== 'open' || !this.#linkLost) return;
    this.#emitter.emit('connection', { state: 'reconnect-failed', error });
  }

  /** Connected again after {@link TransportLifecycle.connectionLost}: tells the listeners. */
  connectionRestored(): void {
    if (this.#phase !== 'open' || !this.#linkLost) return;
    this.#linkLost = false;
    this.#emitter.emit('connection', { state: 'restored' });
  }

  /** True between `connectionLost()` and `connectionRestored()`. */
  get isConnectionLost(): boolean {
    return this.#linkLost;
  }

  /** Tells the `error` listeners, unless `close()` has silenced them. */
  report(error: WatchtowerError): void {
    if (!this.#silenced) this.#emitter.emit('error', error);
  }

  /**
   * From now on failures are not reported: they happen because of `close()` (acks of handlers
   * that finish after the connection went, a drain cut short), and the broker redelivers.
   */
  silence(): void {
    this.#silenced = true;
  }

  /**
   * Keeps `promise` for `close()` to wait on ({@link TransportLifecycle.settleBackground}); a
   * rejection is reported as `operation` failing, mapped by `mapError`.
   */
  track(promise: Promise<unknown>, operation: string): void {
    const tracked: Promise<void> = promise.then(
      () => {
        this.#background.delete(tracked);
      },
      (error: unknown) => {
        this.#background.delete(tracked);
        this.report(this.#options.mapError(error, operation));
      },
    );
    this.#background.add(tracked);
  }

  /** Background work now under way. */
  get backgroundSize(): number {
    return this.#background.size;
  }

  /**
   * Resolves when the tracked work (and work it started meanwhile) has settled, or when the
   * deadline passes first.
   */
  async settleBackground(deadline: Deadline): Promise<void> {
    while (this.#background.size > 0 && !deadline.expired) {
      await deadline.within(Promise.allSettled([...this.#background]));
    }
  }
}
