/**
 * A {@link TransportSubscription} over whatever a transport reads from (a broker subscription,
 * a consumer group, an in-process queue): iteration is the source's, `unsubscribe()` is
 * idempotent and keeps its time limit whatever the broker does.
 */
import type { Clock } from '../clock.js';
import type { Delivery, DeliveryReceiver, TransportSubscription } from '../transport.js';
import { TIMED_OUT, within } from './timing.js';

/**
 * How long `unsubscribe()` waits for the broker before it resolves anyway.
 */
export const DEFAULT_UNSUBSCRIBE_TIMEOUT_MS = 5000;

/** What a {@link SourceSubscription} reads from. */
export interface DeliverySource extends AsyncIterable<Delivery> {
  /** A delivery already received, taken without waiting, or undefined. */
  tryNext?(): Delivery | undefined;
  /** Offers arriving deliveries to `receiver` (see {@link TransportSubscription.receive}). */
  receive?(receiver: DeliveryReceiver | undefined): void;
  /**
   * Stops delivery and ends iteration; hands back to the broker what was received and never
   * handed out. Deliveries already handed out may still be settled. Idempotent.
   */
  stop(): Promise<void>;
}

/** Settings of a {@link SourceSubscription}. */
export interface SourceSubscriptionOptions {
  readonly clock: Clock;
  /**
   * `unsubscribe()` resolves after this long even when the source has not stopped (a broker
   * that does not answer); the stop goes on as `background` work.
   * @defaultValue {@link DEFAULT_UNSUBSCRIBE_TIMEOUT_MS}
   */
  readonly stopTimeoutMs?: number;
  /** Called once the subscription is stopped, or given up on after `stopTimeoutMs`. */
  readonly onStop?: () => void;
  /** Takes a stop that outlived `stopTimeoutMs`, for `close()` to wait on or cut short. */
  readonly background?: (stop: Promise<void>, operation: string) => void;
}

/** A live subscription: iterate it for deliveries, end it with `unsubscribe()`. */
export class SourceSubscription implements TransportSubscription {
  readonly pattern: string;
  readonly #source: DeliverySource;
  readonly #options: SourceSubscriptionOptions;
  #unsubscribing: Promise<void> | undefined;

  constructor(pattern: string, source: DeliverySource, options: SourceSubscriptionOptions) {
    this.pattern = pattern;
    this.#source = source;
    this.#options = options;
  }

  /** A buffered delivery, taken without waiting, or undefined (also when the source has none). */
  tryNext(): Delivery | undefined {
    return this.#source.tryNext?.();
  }

  /** Offers arriving deliveries to `receiver`, where the source can (else nothing changes). */
  receive(receiver: DeliveryReceiver | undefined): void {
    this.#source.receive?.(receiver);
  }

  [Symbol.asyncIterator](): AsyncIterator<Delivery> {
    return this.#source[Symbol.asyncIterator]();
  }

  /**
   * Stops delivery; deliveries already handed out can still be acked or nacked. Resolves when
   * the source has stopped, or after `stopTimeoutMs` when the broker does not answer.
   * Idempotent.
   */
  unsubscribe(): Promise<void> {
    this.#unsubscribing ??= this.#unsubscribe();
    return this.#unsubscribing;
  }

  async #unsubscribe(): Promise<void> {
    const {
      clock,
      stopTimeoutMs = DEFAULT_UNSUBSCRIBE_TIMEOUT_MS,
      onStop,
      background,
    } = this.#options;
    const stop = this.#source.stop();
    try {
      const result = await within(clock, stopTimeoutMs, stop);
      if (result === TIMED_OUT) background?.(stop, `unsubscribe from ${this.pattern}`);
    } finally {
      onStop?.();
    }
  }
}
