/**
 * The one way a transport's `*Subscriber` entry point splits its single options object into
 * the transport's config and the EventBus options.
 */
import { configError } from '../errors.js';
import { EVENT_BUS_OPTION_KEYS, type EventBusOptions } from '../event-bus.js';
import type { EventCatalog } from '../schema.js';

/** The two halves of a `*Subscriber`'s options. */
export interface SplitSubscriberOptions<T, C extends EventCatalog> {
  readonly transport: T;
  readonly bus: Omit<EventBusOptions<C>, 'transport'>;
}

/**
 * Splits `options`: keys of the EventBus go to `bus`, keys in `transportKeys` to `transport`,
 * a key in both (e.g. `closeTimeoutMs`) to both. Keys set to `undefined` are left out, so
 * defaults apply.
 *
 * @throws `CONFIG` naming a key that neither side knows (a misspelt option must not be lost).
 */
export function splitSubscriberOptions<T extends object, C extends EventCatalog>(
  options: object | undefined,
  transportKeys: readonly string[],
  what: string,
): SplitSubscriberOptions<T, C> {
  const transport: Record<string, unknown> = {};
  const bus: Record<string, unknown> = {};
  if (options === undefined) return { transport: transport as T, bus };
  if (typeof options !== 'object' || options === null) {
    throw configError(what, 'must be an options object');
  }
  for (const key of Object.keys(options)) {
    const value = (options as Record<string, unknown>)[key];
    if (value === undefined) continue;
    const forBus = (EVENT_BUS_OPTION_KEYS as readonly string[]).includes(key);
    const forTransport = transportKeys.includes(key);
    if (!forBus && !forTransport) {
      throw configError(
        key,
        `is not an option of ${what} (known: ${[...new Set([...transportKeys, ...EVENT_BUS_OPTION_KEYS])].join(', ')})`,
      );
    }
    if (forBus) bus[key] = value;
    if (forTransport) transport[key] = value;
  }
  return { transport: transport as T, bus };
}
