import { TimeoutError, type WatchtowerErrorOptions } from '@watchtower/core';

/**
 * A write made with `waitReplicas` that fewer replicas acknowledged than asked for within
 * `waitTimeoutMs` (`WAIT` answered with a smaller count). Code `TIMEOUT`, retryable.
 *
 * The master has the entry: it reaches the replicas later if they come back, and it is lost
 * only if the master fails before they have it. A retry writes it again; with
 * `dedupeWindowMs` the retry is stored once and only waits for the replicas again.
 */
export class ReplicationTimeoutError extends TimeoutError {
  /** Replicas that had the write when `WAIT` returned. */
  readonly acknowledged: number;
  /** Replicas asked for (`waitReplicas`). */
  readonly required: number;

  constructor(
    what: string,
    acknowledged: number,
    required: number,
    timeoutMs: number,
    options?: WatchtowerErrorOptions,
  ) {
    super(
      `${what}: ${acknowledged} of ${required} replicas acknowledged the write within ${timeoutMs} ms (WAIT); the master has it`,
      timeoutMs,
      options,
    );
    this.name = 'ReplicationTimeoutError';
    this.acknowledged = acknowledged;
    this.required = required;
  }
}
