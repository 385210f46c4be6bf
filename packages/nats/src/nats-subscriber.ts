import { EventBus, type EventBusOptions, type EventCatalog } from '@watchtower/core';
import type { NatsConfig } from './config.js';
import { NatsTransport } from './nats-transport.js';

/**
 * Options of {@link NatsSubscriber}: the NATS connection ({@link NatsConfig}) and the EventBus
 * (circuit breaker, backpressure, retry, schemas, subscription defaults) in one object.
 */
export type NatsSubscriberOptions<C extends EventCatalog = EventCatalog> = Partial<NatsConfig> &
  Omit<EventBusOptions<C>, 'transport'>;

// The EventBus options; everything else in NatsSubscriberOptions configures the transport.
const BUS_KEYS = [
  'events',
  'validation',
  'source',
  'circuitBreaker',
  'backpressure',
  'retry',
  'publishConcurrency',
  'subscriptionDefaults',
  'closeTimeoutMs',
  'logger',
  'clock',
] as const satisfies readonly (keyof Omit<EventBusOptions, 'transport'>)[];

/**
 * The Watchtower Subscriber on NATS: an `EventBus` over a {@link NatsTransport}. Publish with
 * `publish()`, consume with `subscribe()`; retries, dead letters on `dlq.{type}`, circuit
 * breaking and backpressure come with it.
 *
 * @example
 * ```ts
 * const bus = new NatsSubscriber({ mode: 'jetstream', servers: 'nats://127.0.0.1:4222' });
 * await bus.subscribe('user.*', async (event) => console.log(event.type, event.payload));
 * await bus.publish('user.created', { id: 42 });
 * await bus.close();
 * ```
 *
 * @throws `CONFIG` naming the first bad option.
 */
export class NatsSubscriber<C extends EventCatalog = EventCatalog> extends EventBus<C> {
  declare readonly transport: NatsTransport;

  constructor(options: NatsSubscriberOptions<C> = {}) {
    const natsConfig: Record<string, unknown> = { ...options };
    const busOptions: Record<string, unknown> = {};
    for (const key of BUS_KEYS) {
      if (key in natsConfig) {
        if (natsConfig[key] !== undefined) busOptions[key] = natsConfig[key];
        delete natsConfig[key];
      }
    }
    const transport = new NatsTransport(natsConfig);
    super({ ...(busOptions as Omit<EventBusOptions<C>, 'transport'>), transport });
  }
}
