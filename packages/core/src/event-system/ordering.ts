/**
 * Ordering keys of a subscription: events with the same key run one at a time in arrival
 * order, events of different keys side by side (up to the subscription's `concurrency`). A
 * failed run is retried in place, holding its key, so that a later event of the key never
 * overtakes it; the bus retries nothing itself for such a subscription.
 */
import { ErrorCode, WatchtowerError, describeError, isWatchtowerError } from '../errors.js';
import type { Event } from '../event.js';
import { RetryPolicy } from '../retry-policy.js';
import { RESOLVED } from '../transport-kit/resolved.js';

/** Computes an event's ordering key; undefined runs it without ordering. */
export type OrderingKey = (event: Event) => string | undefined;

/** The key chains of one subscription. */
export class KeyedQueue {
  /** Each key's last run, while one is running or waiting. */
  readonly #tails = new Map<string, Promise<void>>();

  /** Keys with a run going on or waiting now. */
  get size(): number {
    return this.#tails.size;
  }

  /** Runs `task` after every earlier task of `key` has settled; settles as `task` does. */
  run(key: string, task: () => Promise<void>): Promise<void> {
    const before = this.#tails.get(key) ?? RESOLVED;
    const mine = before.then(task);
    const tail = mine.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return mine;
  }
}

/**
 * Runs `attempt` with the retries of `policy` in place; after the last failure rejects with a
 * non-retryable error (so the bus dead-letters it at once) that keeps the failure's code and
 * says how many runs were made.
 */
export async function runWithRetries(
  policy: RetryPolicy,
  signal: AbortSignal | undefined,
  key: string,
  attempt: () => Promise<void>,
): Promise<void> {
  let runs = 0;
  try {
    await policy.execute(
      () => {
        runs++;
        return attempt();
      },
      signal === undefined ? {} : { signal },
    );
  } catch (error) {
    const code = isWatchtowerError(error) ? error.code : ErrorCode.HANDLER_FAILED;
    throw new WatchtowerError(
      code,
      `failed ${runs} time(s) in place under ordering key "${key}": ${describeError(error)}`,
      { cause: error, retryable: false },
    );
  }
}
