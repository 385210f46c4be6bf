import { TurnBatcher } from '@watchtower/core/transport-kit';
import type { RedisValue } from 'ioredis';
import type { RedisClient } from './connections.js';

interface QueuedXadd {
  readonly key: string;
  readonly body: string;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/**
 * Sends the `XADD`s of one turn of promise work ({@link TurnBatcher}) together, as one
 * `pipeline()`: one socket write and one round trip, as a caller pipelining by hand gets. A
 * publish alone in its turn is sent as a plain command, so one-at-a-time publishing pays no
 * pipeline cost.
 *
 * Redis answers each command of a pipeline on its own: each publish settles with its own reply
 * (a `WRONGTYPE` on one stream fails only the publishes to that stream). Entries keep the order
 * of the `xadd` calls: one connection, commands written in that order.
 *
 * On a Redis Cluster a pipeline must stay within one slot. Every event stream of a transport
 * carries its prefix's hash tag (the configuration requires one on a cluster), hence one slot.
 *
 * Rejections carry the driver's error as `mapError` maps it, with the key it was for.
 */
export class PublishBatcher {
  readonly #turn = new TurnBatcher<QueuedXadd>((batch) => this.#send(batch), 'tick');

  /**
   * @param client - the connection, asked at flush time; a publish connects before it queues.
   * @param head - the arguments between the key and the body: `[MAXLEN, ~, n,] *, event`.
   * @param mapError - what a publish rejects with, from the driver's error for its key.
   */
  constructor(
    private readonly client: () => RedisClient,
    private readonly head: readonly RedisValue[],
    private readonly mapError: (error: unknown, key: string) => unknown,
  ) {}

  /**
   * Queues `XADD key ...head body` for this turn's flush. Resolves when Redis has the entry;
   * rejects with `mapError` of the driver's error for this command.
   */
  xadd(key: string, body: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#turn.add({ key, body, resolve, reject });
    });
  }

  #fail(item: QueuedXadd, error: unknown): void {
    item.reject(this.mapError(error, item.key));
  }

  /**
   * Sends what is queued now, without waiting for the scheduled flush (which then finds
   * nothing to send): `close()` calls it so that publishes made before it go out before `QUIT`.
   * Never throws; failures reject the publishes concerned.
   */
  flush(): void {
    this.#turn.flush();
  }

  #send(batch: readonly QueuedXadd[]): void {
    try {
      const client = this.client();
      if (batch.length === 1) {
        const item = batch[0] as QueuedXadd;
        client.xadd(item.key, ...this.head, item.body).then(
          () => item.resolve(),
          (error: unknown) => this.#fail(item, error),
        );
        return;
      }
      const pipeline = client.pipeline();
      for (const item of batch) pipeline.xadd(item.key, ...this.head, item.body);
      pipeline.exec().then(
        (replies) => {
          for (let i = 0; i < batch.length; i++) {
            const item = batch[i] as QueuedXadd;
            // [error, result] per command; exec() yields null only for an aborted MULTI.
            const reply = replies?.[i];
            if (reply === undefined)
              this.#fail(item, new Error('the XADD pipeline returned no reply'));
            else if (reply[0] !== null) this.#fail(item, reply[0]);
            else item.resolve();
          }
        },
        (error: unknown) => {
          // The pipeline as a whole failed (e.g. no cluster slots): none of it was sent.
          for (const item of batch) this.#fail(item, error);
        },
      );
    } catch (error) {
      for (const item of batch) this.#fail(item, error);
    }
  }
}
