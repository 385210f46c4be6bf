import { EventBus, type EventBusOptions, type EventCatalog } from '@watchtower/core';
import { REDIS_CONFIG_KEYS, type RedisConfig } from './config.js';
import { RedisTransport } from './redis-transport.js';

/**
 * Options of {@link RedisSubscriber}: the transport's {@link RedisConfig} and the bus's
 * `EventBusOptions` (circuit breaker, backpressure, publish retry, schemas, subscription
 * defaults) side by side. `closeTimeoutMs` applies to both.
 */
export interface RedisSubscriberOptions<C extends EventCatalog = EventCatalog>
  extends RedisConfig, Omit<EventBusOptions<C>, 'transport'> {}

function split<C extends EventCatalog>(
  options: RedisSubscriberOptions<C>,
): { transport: RedisConfig; bus: Omit<EventBusOptions<C>, 'transport'> } {
  const transport: Record<string, unknown> = {};
  const bus: Record<string, unknown> = { ...options };
  for (const key of REDIS_CONFIG_KEYS) {
    if (options[key] !== undefined) transport[key] = options[key];
    if (key !== 'closeTimeoutMs') delete bus[key];
  }
  return { transport: transport, bus: bus };
}

/**
 * The Watchtower Subscriber on Redis Streams: an `EventBus` over a {@link RedisTransport}.
 *
 * ```ts
 * const bus = new RedisSubscriber({ url: 'redis://127.0.0.1:6379', prefix: 'orders' });
 * await bus.subscribe('order.*', async (event) => { ... }, { group: 'billing' });
 * await bus.publish('order.created', { id: 1 });
 * ```
 *
 * @throws a `CONFIG` error naming the field when an option is invalid.
 */
export class RedisSubscriber<C extends EventCatalog = EventCatalog> extends EventBus<C> {
  /** The Redis transport underneath (dead-letter stream, health, `on('error')`). */
  declare readonly transport: RedisTransport;

  constructor(options: RedisSubscriberOptions<C> = {}) {
    const { transport, bus } = split(options);
    const redis = new RedisTransport(transport);
    // The bus listens to the transport's background errors (reads, acks, claims, discovery,
    // dead-letter handlers) and reports them on its `error` listeners or logger.
    super({ ...bus, transport: redis });
  }
}
