import { EventBus, type EventBusOptions, type EventCatalog } from '@watchtower/core';
import { splitSubscriberOptions } from '@watchtower/core/transport-kit';
import { RABBITMQ_CONFIG_KEYS, type RabbitMQConfig } from './config.js';
import { RabbitMQTransport } from './rabbitmq-transport.js';

/**
 * Options of {@link RabbitMQSubscriber}: the transport's {@link RabbitMQConfig} and the bus's
 * `EventBusOptions` (circuit breaker, backpressure, publish retry, schemas, subscription
 * defaults) side by side. `closeTimeoutMs` and `clock` apply to both.
 */
export interface RabbitMQSubscriberOptions<C extends EventCatalog = EventCatalog>
  extends RabbitMQConfig, Omit<EventBusOptions<C>, 'transport'> {}

/**
 * The Watchtower Subscriber on RabbitMQ: an `EventBus` over a {@link RabbitMQTransport}.
 *
 * ```ts
 * const bus = new RabbitMQSubscriber({ url: 'amqp://guest:guest@127.0.0.1:5672' });
 * await bus.subscribe('order.*', async (event) => { ... }, { group: 'billing' });
 * await bus.publish('order.created', { id: 1 });
 * ```
 *
 * @throws a `CONFIG` error naming the field when an option is invalid.
 */
export class RabbitMQSubscriber<C extends EventCatalog = EventCatalog> extends EventBus<C> {
  /** The RabbitMQ transport underneath (dead-letter queue, health, `on('error')`). */
  declare readonly transport: RabbitMQTransport;

  constructor(options: RabbitMQSubscriberOptions<C> = {}) {
    const { transport, bus } = splitSubscriberOptions<RabbitMQConfig, C>(
      options,
      RABBITMQ_CONFIG_KEYS,
      'RabbitMQSubscriber',
    );
    // The bus listens to the transport's background errors and reports them.
    super({ ...bus, transport: new RabbitMQTransport(transport) });
  }
}
