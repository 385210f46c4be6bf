import type { Cluster, Redis } from 'ioredis';
import type { WatchtowerError } from '@watchtower/core';
import { mapRedisError } from './map-error.js';

interface Batch {
  readonly key: string;
  readonly group: string;
  readonly ids: string[];
}

/**
 * Collects the acks of one event-loop turn into one `XACK key group id...` per stream and
 * group: a handler pool that finishes many deliveries at once costs Redis one command, not one
 * per delivery.
 *
 * `ack` does not wait for Redis: a consumer that awaited every XACK round trip would handle one
 * event per round trip. An ack that fails (the connection dropped) is reported to `onError`;
 * its entry stays pending and is delivered again (at least once), never lost. `flush()` waits
 * for everything sent so far, which `close()` does before quitting.
 */
export class AckBatcher {
  #batches = new Map<string, Batch>();
  #scheduled: NodeJS.Immediate | undefined;
  #inFlight = new Set<Promise<void>>();

  constructor(
    private readonly client: () => Redis | Cluster,
    private readonly onError: (error: WatchtowerError) => void,
  ) {}

  /** Queues the ack; it is sent at the end of this event-loop turn. */
  ack(key: string, group: string, id: string): void {
    const slot = `${group}\u0000${key}`;
    let batch = this.#batches.get(slot);
    if (batch === undefined) {
      batch = { key, group, ids: [] };
      this.#batches.set(slot, batch);
    }
    batch.ids.push(id);
    this.#scheduled ??= setImmediate(() => {
      this.#scheduled = undefined;
      this.#flushNow();
    });
  }

  /** Sends what is collected now and resolves when every ack sent so far is answered. */
  async flush(): Promise<void> {
    if (this.#scheduled !== undefined) {
      clearImmediate(this.#scheduled);
      this.#scheduled = undefined;
    }
    this.#flushNow();
    await Promise.allSettled([...this.#inFlight]);
  }

  #flushNow(): void {
    const batches = this.#batches;
    if (batches.size === 0) return;
    this.#batches = new Map();
    let client: Redis | Cluster;
    try {
      client = this.client();
    } catch (error) {
      this.onError(mapRedisError(error, 'XACK'));
      return;
    }
    for (const batch of batches.values()) {
      const sent: Promise<void> = client.xack(batch.key, batch.group, ...batch.ids).then(
        () => {},
        (error: unknown) => {
          this.onError(
            mapRedisError(error, `XACK ${batch.key} ${batch.group} (${batch.ids.length} entries)`),
          );
        },
      );
      this.#inFlight.add(sent);
      void sent.finally(() => this.#inFlight.delete(sent));
    }
  }
}
