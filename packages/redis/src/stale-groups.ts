/**
 * A subscription without a group reads through a consumer group of its own, `own:{consumer}`,
 * which `unsubscribe()` and `close()` destroy. A process that crashes leaves its own groups
 * behind, and every restart adds more. Each transport therefore keeps a mark of life,
 * `{prefix}:alive:{consumerBase}`, refreshed while it runs, and now and then destroys the own
 * groups under its prefix whose process has no mark left and whose consumers have all been
 * idle as long: a live process either refreshes its mark or, if its event loop was stuck, still
 * shows recent reads.
 *
 * Separate from the transport because it is a job of its own, on its own timers; it never
 * touches a named group, nor the own groups of this transport.
 */
import type { Clock } from '@watchtower/core';
import { repeat } from '@watchtower/core/transport-kit';
import type { RedisClient } from './connections.js';
import { parseInfoReply } from './stream-reply.js';

const OWN = 'own:';

/** The name of the own group of consumer `consumer`. */
export function ownGroupName(consumer: string): string {
  return `${OWN}${consumer}`;
}

/** The key whose presence says the transport with `consumerBase` is alive. */
export function aliveKey(prefix: string, consumerBase: string): string {
  return `${prefix}:alive:${consumerBase}`;
}

/**
 * The consumer base (the part shared by one transport's consumers) of an own group's name
 * `own:{base}-{n}`, or `undefined` for any other group.
 */
export function ownGroupBase(group: string): string | undefined {
  if (!group.startsWith(OWN)) return undefined;
  const consumer = group.slice(OWN.length);
  const dash = consumer.lastIndexOf('-');
  if (dash <= 0 || !/^\d+$/.test(consumer.slice(dash + 1))) return undefined;
  return consumer.slice(0, dash);
}

/** What a {@link StaleGroupSweeper} works with. */
export interface StaleGroupSweeperOptions {
  readonly client: () => RedisClient;
  readonly clock: Clock;
  readonly prefix: string;
  /** This transport's consumer base: its own groups are never touched. */
  readonly consumerBase: string;
  /** How long a process may show no sign of life before its own groups go. */
  readonly staleMs: number;
  /** The event streams under the prefix. */
  readonly streams: (client: RedisClient) => Promise<string[]>;
  /** A step failed; `operation` says which. The sweeper goes on at its next turn. */
  readonly report: (error: unknown, operation: string) => void;
}

/** Keeps this transport's mark of life, and destroys the own groups of stopped processes. */
export class StaleGroupSweeper {
  readonly #key: string;
  /** Stop the beat and the sweep; empty until started, and again once stopped. */
  #timers: Array<() => void> = [];
  #stopped = false;

  constructor(private readonly options: StaleGroupSweeperOptions) {
    this.#key = aliveKey(options.prefix, options.consumerBase);
  }

  /**
   * Sets the mark (before any own group of this transport exists), then keeps it fresh and
   * sweeps; a slow sweep is not overlapped by the next.
   */
  async start(): Promise<void> {
    await this.#beat();
    if (this.#stopped) return;
    const { clock, staleMs, report } = this.options;
    const failed = (error: unknown): void => report(error, 'sweep stale groups');
    this.#timers = [
      repeat(clock, Math.max(1, staleMs / 3), () => this.#beat(), failed),
      repeat(clock, Math.max(1, staleMs / 2), () => this.sweep(), failed),
    ];
  }

  /**
   * Stops the timers and removes the mark; a SET still on its way went out before the DEL on
   * the same connection. Never rejects.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const stop of this.#timers.splice(0)) stop();
    try {
      await this.options.client().del(this.#key);
    } catch {
      // It expires by itself.
    }
  }

  async #beat(): Promise<void> {
    try {
      // Three refreshes fit in one lifetime: one lost refresh does not make a live process stale.
      await this.options.client().set(this.#key, '1', 'PX', this.options.staleMs);
    } catch (error) {
      this.options.report(error, `SET ${this.#key}`);
    }
  }

  /** Destroys the own groups of processes that have stopped. Never rejects. */
  async sweep(): Promise<void> {
    const { client: clientOf, streams, report } = this.options;
    let client: RedisClient;
    let keys: string[];
    try {
      client = clientOf();
      keys = await streams(client);
    } catch (error) {
      report(error, 'find the streams to sweep');
      return;
    }
    const alive = new Map<string, boolean>();
    for (const key of keys) {
      if (this.#stopped) return;
      try {
        await this.#sweepStream(client, key, alive);
      } catch (error) {
        report(error, `sweep the consumer groups of ${key}`);
      }
    }
  }

  async #sweepStream(client: RedisClient, key: string, alive: Map<string, boolean>): Promise<void> {
    const { prefix, consumerBase, staleMs } = this.options;
    for (const group of parseInfoReply(await client.xinfo('GROUPS', key))) {
      const name = group.get('name');
      if (typeof name !== 'string') continue;
      const base = ownGroupBase(name);
      if (base === undefined || base === consumerBase) continue;
      let isAlive = alive.get(base);
      if (isAlive === undefined) {
        isAlive = (await client.exists(aliveKey(prefix, base))) === 1;
        alive.set(base, isAlive);
      }
      if (isAlive) continue;
      const consumers = parseInfoReply(await client.xinfo('CONSUMERS', key, name));
      const recent = consumers.some((consumer) => {
        const idle = consumer.get('idle');
        return typeof idle !== 'number' || idle < staleMs;
      });
      if (!recent) await client.xgroup('DESTROY', key, name);
    }
  }
}
