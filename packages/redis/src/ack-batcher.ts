import type { WatchtowerError } from '@watchtower/core';
import { TurnBatcher } from '@watchtower/core/transport-kit';
import type { RedisClient } from './connections.js';
import { mapRedisError } from './map-error.js';

/** An entry to ack: the consumer's own record of it, so that queuing an ack allocates nothing. */
export interface AckItem {
  readonly key: string;
  readonly group: string;
  readonly id: string;
}

/**
 * The acks of one turn of the event loop ({@link TurnBatcher}) as one `XACK key group id...` per
 * stream and group: a handler pool that finishes many deliveries at once costs Redis one
 * command, not one per delivery.
 *
 * `ack` does not wait for Redis: a consumer that awaited every XACK round trip would handle one
 * event per round trip. An ack that fails (the connection dropped) is reported to `onError`;
 * its entry stays pending and is delivered again (at least once), never lost. `flush()` waits
 * for everything sent so far, which `close()` does before quitting.
 */
export class AckBatcher {
  // After this turn's I/O: nothing waits on an XACK (the entry is only pending meanwhile), so
  // the writes that are waited on go first, and the acks of several reads share one command.
  readonly #turn = new TurnBatcher<AckItem>((items) => this.#send(items), 'immediate');
  readonly #inFlight = new Set<Promise<void>>();

  constructor(
    private readonly client: () => RedisClient,
    private readonly onError: (error: WatchtowerError) => void,
  ) {}

  /** Queues the ack for this turn's XACK. */
  ack(item: AckItem): void {
    this.#turn.add(item);
  }

  /** Sends what is queued now and resolves when every ack sent so far is answered. */
  async flush(): Promise<void> {
    this.#turn.flush();
    await Promise.allSettled([...this.#inFlight]);
  }

  #send(items: readonly AckItem[]): void {
    let client: RedisClient;
    try {
      client = this.client();
    } catch (error) {
      this.onError(mapRedisError(error, 'XACK'));
      return;
    }
    // group -> stream -> ids, without a string built per ack.
    const byGroup = new Map<string, Map<string, string[]>>();
    for (const { key, group, id } of items) {
      let byKey = byGroup.get(group);
      if (byKey === undefined) byGroup.set(group, (byKey = new Map<string, string[]>()));
      const ids = byKey.get(key);
      if (ids === undefined) byKey.set(key, [id]);
      else ids.push(id);
    }
    for (const [group, byKey] of byGroup) {
      for (const [key, ids] of byKey) {
        const sent: Promise<void> = client.xack(key, group, ...ids).then(
          () => {
            this.#inFlight.delete(sent);
          },
          (error: unknown) => {
            this.#inFlight.delete(sent);
            this.onError(mapRedisError(error, `XACK ${key} ${group} (${ids.length} entries)`));
          },
        );
        this.#inFlight.add(sent);
      }
    }
  }
}
