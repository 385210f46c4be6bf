/**
 * The `consumeDlq` loop, written once: dead letters from a transport's source go to the
 * handler one at a time; a letter whose handler returned is acked, one whose handler threw is
 * left for later (after a growing delay where the broker times redelivery), and the failure is
 * reported. Nobody awaits this loop, so everything that goes wrong in it goes to `report`.
 */
import type { Clock } from '../clock.js';
import { ErrorCode, WatchtowerError, describeError } from '../errors.js';
import type { DeadLetter, DeadLetterHandler, SubscriptionHandle } from '../transport.js';
import { DEFAULT_UNSUBSCRIBE_TIMEOUT_MS } from './source-subscription.js';
import { TIMED_OUT, within } from './timing.js';

/** One dead letter from a transport's DLQ, with what settles it. */
export interface DeadLetterEntry {
  readonly letter: DeadLetter;
  /** Deliveries of this letter to a dead-letter consumer so far, 1 the first time. */
  readonly attempt: number;
  /** Where it was read (subject, stream), for messages. */
  readonly origin: string;
  /** The handler returned: the DLQ forgets the letter. */
  ack(): void | Promise<void>;
  /**
   * The handler threw: leave the letter for a later delivery, after `delayMs` where the broker
   * times redelivery ({@link deadLetterRetryDelayMs} of the attempt).
   */
  retryLater(delayMs: number): void | Promise<void>;
}

/** Where a {@link DeadLetterConsumer} reads from. */
export interface DeadLetterSource extends AsyncIterable<DeadLetterEntry> {
  /** Stops delivery; what was read and not handed out goes back. Idempotent. */
  stop(): Promise<void>;
}

/** Settings of a {@link DeadLetterConsumer}. */
export interface DeadLetterConsumerOptions {
  readonly id: string;
  readonly source: DeadLetterSource;
  readonly handler: DeadLetterHandler;
  /**
   * What happens to a letter whose handler threw, for the report: `'it comes back later'`, or
   * why it cannot.
   */
  readonly afterFailure: string;
  /** Failures nobody else hears of: the handler threw, a settle failed, the source ended. */
  readonly report: (error: WatchtowerError) => void;
  /** Maps a driver failure of settling or reading to a Watchtower error. */
  readonly mapError: (error: unknown, operation: string) => WatchtowerError;
  /** Called once, when `unsubscribe()` has finished. */
  readonly onStop?: () => void;
  /** The clock of `stopTimeoutMs`. */
  readonly clock: Clock;
  /**
   * `unsubscribe()` waits at most this long for the source to stop (a broker that does not
   * answer), then hands the stop to `background` and goes on.
   * @defaultValue {@link DEFAULT_UNSUBSCRIBE_TIMEOUT_MS}
   */
  readonly stopTimeoutMs?: number;
  /** Takes a stop that outlived `stopTimeoutMs`, for `close()` to wait on or cut short. */
  readonly background?: (stop: Promise<void>, operation: string) => void;
}

/**
 * How long a dead letter whose handler threw waits before it comes again: a second after the
 * first failure, doubling up to a minute, so that a letter the handler can never take is not
 * redelivered every second forever.
 */
export function deadLetterRetryDelayMs(attempt: number): number {
  const failures = Math.max(1, Math.floor(attempt));
  return Math.min(60_000, 1000 * 2 ** Math.min(failures - 1, 6));
}

/** A running `consumeDlq`: start it once, stop it with `unsubscribe()`. */
export class DeadLetterConsumer implements SubscriptionHandle {
  readonly id: string;
  readonly #options: DeadLetterConsumerOptions;
  #running: Promise<void> = Promise.resolve();
  #stopping: Promise<void> | undefined;

  constructor(options: DeadLetterConsumerOptions) {
    this.id = options.id;
    this.#options = options;
  }

  start(): this {
    this.#running = this.#run();
    return this;
  }

  /**
   * Stops reading; resolves once the source has stopped (or `stopTimeoutMs` has passed) and
   * the handler running now has returned. Idempotent.
   */
  unsubscribe(): Promise<void> {
    this.#stopping ??= (async () => {
      try {
        await this.#stopSource();
      } finally {
        await this.#running;
        this.#options.onStop?.();
      }
    })();
    return this.#stopping;
  }

  async #stopSource(): Promise<void> {
    const { source, clock, stopTimeoutMs = DEFAULT_UNSUBSCRIBE_TIMEOUT_MS } = this.#options;
    const stop = source.stop();
    if ((await within(clock, stopTimeoutMs, stop)) === TIMED_OUT) {
      this.#options.background?.(stop, `stop dead-letter consumer ${this.id}`);
    }
  }

  async #run(): Promise<void> {
    const { source, handler, report, mapError } = this.#options;
    try {
      for await (const entry of source) {
        let handled: boolean;
        try {
          await handler(entry.letter);
          handled = true;
        } catch (error) {
          handled = false;
          report(
            new WatchtowerError(
              ErrorCode.HANDLER_FAILED,
              `the dead-letter handler failed on ${entry.origin}; ${this.#options.afterFailure}: ${describeError(error)}`,
              { cause: error },
            ),
          );
        }
        try {
          if (handled) await entry.ack();
          else await entry.retryLater(deadLetterRetryDelayMs(entry.attempt));
        } catch (error) {
          // Not settled: the broker delivers it again (at least once).
          report(
            mapError(error, `${handled ? 'ack' : 'retry'} the dead letter from ${entry.origin}`),
          );
        }
      }
    } catch (error) {
      // The source failed (refused, or the connection was given up): the consumer ends.
      // unsubscribe() ends it without an error.
      if (this.#stopping === undefined) report(mapError(error, `dead-letter consumer ${this.id}`));
    }
  }
}
