/**
 * Batch handlers: deliveries gathered into batches of `maxBatchSize` (or what `maxWaitMs`
 * collected) and handed to one handler call. Each delivery stays the bus's: it is acked,
 * retried or dead-lettered on its own, by the outcome the handler gives it.
 */
import type { Clock, TimerHandle } from '../clock.js';
import { ErrorCode, WatchtowerError } from '../errors.js';
import type { Event } from '../event.js';

/**
 * What a batch handler may return: nothing (every event succeeded), or one entry per event in
 * order, an `Error` for an event that failed (it is retried, then dead-lettered, on its own)
 * and anything else for one that succeeded. A throw fails every event of the batch.
 */
export type BatchResult = undefined | readonly unknown[];

/** Handles a batch of events. */
export type BatchHandler<E extends Event = Event> = (
  events: E[],
) => BatchResult | void | Promise<BatchResult | void>;

interface Waiting {
  readonly event: Event;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/** Gathers one subscription's deliveries into batches on the clock. */
export class DeliveryBatcher {
  #pending: Waiting[] = [];
  #timer: TimerHandle | undefined;

  constructor(
    private readonly maxBatchSize: number,
    private readonly maxWaitMs: number,
    private readonly clock: Clock,
    private readonly handler: BatchHandler,
    /** Runs each handler call inside a batch span (when the bus has telemetry). */
    private readonly trace?: (
      events: readonly Event[],
      handle: () => Promise<BatchResult | void>,
    ) => Promise<BatchResult | void>,
  ) {}

  /** Adds a delivery's event; settles with that event's outcome in its batch. */
  add(event: Event): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ event, resolve, reject });
      if (this.#pending.length >= this.maxBatchSize) this.#flush();
      else this.#timer ??= this.clock.setTimeout(() => this.#flush(), this.maxWaitMs);
    });
  }

  #flush(): void {
    if (this.#timer !== undefined) this.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#pending;
    this.#pending = [];
    if (batch.length > 0) void this.#run(batch);
  }

  /** Never rejects: each delivery's promise carries its outcome. */
  async #run(batch: readonly Waiting[]): Promise<void> {
    let result: BatchResult | void;
    try {
      const events = batch.map((waiting) => waiting.event);
      const handle = async (): Promise<BatchResult | void> => this.handler(events);
      result = await (this.trace === undefined ? handle() : this.trace(events, handle));
    } catch (error) {
      for (const waiting of batch) waiting.reject(error);
      return;
    }
    if (result === undefined) {
      for (const waiting of batch) waiting.resolve();
      return;
    }
    if (!Array.isArray(result) || result.length !== batch.length) {
      const wrong = new WatchtowerError(
        ErrorCode.HANDLER_FAILED,
        `the batch handler returned ${Array.isArray(result) ? `${result.length} results` : 'something other than an array'} for ${batch.length} events`,
      );
      for (const waiting of batch) waiting.reject(wrong);
      return;
    }
    batch.forEach((waiting, index) => {
      const outcome: unknown = result[index];
      if (outcome instanceof Error) waiting.reject(outcome);
      else waiting.resolve();
    });
  }
}
