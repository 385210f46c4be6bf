import type { Event } from '../event.js';
import { waitFor, type WaitForOptions } from './wait-for.js';

/** Events gathered by a handler from {@link collectEvents}. */
export interface EventCollector<E extends Event = Event> {
  /** Every event handled so far, in arrival order. */
  readonly events: E[];
  /** The handler to subscribe with. */
  readonly handler: (event: E) => void;
  /** Resolves once at least `count` events have arrived; rejects at the deadline. */
  waitForCount(count: number, options?: WaitForOptions): Promise<E[]>;
}

/** A handler that records the events it receives, and a way to wait for them. */
export function collectEvents<E extends Event = Event>(): EventCollector<E> {
  const events: E[] = [];
  return {
    events,
    handler: (event) => {
      events.push(event);
    },
    waitForCount: async (count, options) => {
      await waitFor(() => events.length >= count, {
        message: `${count} events (got ${events.length})`,
        ...options,
      });
      return events;
    },
  };
}
