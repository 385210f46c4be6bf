import { EventBus, type EventBusOptions, type EventCatalog } from '@watchtower/core';
import { splitSubscriberOptions } from '@watchtower/core/transport-kit';
import { REDIS_CONFIG_KEYS, type RedisConfig } from './config.js';
import { RedisTransport } from './redis-transport.js';

/**
 * Options of {@link RedisSubscriber}: the transport's {@link RedisConfig} and the bus's
 * `EventBusOptions` (circuit breaker, backpressure, publish retry, schemas, subscription
 * defaults) side by side. `closeTimeoutMs` and `clock` apply to both.
 */
export interface RedisSubscriberOptions<C extends EventCatalog = EventCatalog>
  extends RedisConfig, Omit<EventBusOptions<C>, 'transport'> {}

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
    const { transport, bus } = splitSubscriberOptions<RedisConfig, C>(
      options,
      REDIS_CONFIG_KEYS,
      'RedisSubscriber',
    );
    const redis = new RedisTransport(transport);
    // The bus listens to the transport's background errors (reads, acks, claims, discovery,
    // dead-letter handlers) and reports them on its `error` listeners or logger.
    super({ ...bus, transport: redis });
  }
}
