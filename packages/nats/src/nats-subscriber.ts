import {
  DEFAULT_RETRY_OPTIONS,
  EventBus,
  configError,
  type EventBusOptions,
  type EventCatalog,
  type EventFor,
  type EventHandler,
  type SubscribeOptions,
  type SubscriptionHandle,
} from '@watchtower/core';
import { splitSubscriberOptions } from '@watchtower/core/transport-kit';
import { NATS_CONFIG_KEYS, type NatsConfig } from './config.js';
import { NatsTransport } from './nats-transport.js';

/**
 * Options of {@link NatsSubscriber}: the NATS connection ({@link NatsConfig}) and the EventBus
 * (circuit breaker, backpressure, retry, schemas, subscription defaults) in one object.
 */
export type NatsSubscriberOptions<C extends EventCatalog = EventCatalog> = Partial<NatsConfig> &
  Omit<EventBusOptions<C>, 'transport'>;

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
 * @throws `CONFIG` naming the first bad option, an option neither NATS nor the EventBus
 * knows, or a `consumer.maxDeliver` (mode `jetstream`) below the retry `maxAttempts` of
 * `subscriptionDefaults`.
 */
export class NatsSubscriber<C extends EventCatalog = EventCatalog> extends EventBus<C> {
  declare readonly transport: NatsTransport;
  readonly #defaultMaxAttempts: unknown;

  constructor(options: NatsSubscriberOptions<C> = {}) {
    const split = splitSubscriberOptions<Partial<NatsConfig>, C>(
      options,
      NATS_CONFIG_KEYS,
      'NatsSubscriber',
    );
    const transport = new NatsTransport(split.transport);
    super({ ...split.bus, transport });
    this.#defaultMaxAttempts = options.subscriptionDefaults?.retry?.maxAttempts;
    checkMaxDeliver(transport, this.#defaultMaxAttempts, 'subscriptionDefaults.retry.maxAttempts');
  }

  /**
   * `EventBus.subscribe`; also rejects with `CONFIG` when the subscription's retry needs more
   * deliveries than `consumer.maxDeliver` lets the server make.
   */
  override subscribe<P extends string>(
    eventTypes: P | readonly P[],
    handler: EventHandler<EventFor<C, P>>,
    options: SubscribeOptions = {},
  ): Promise<SubscriptionHandle> {
    try {
      const own = (options as SubscribeOptions | undefined)?.retry?.maxAttempts;
      if (own !== undefined) checkMaxDeliver(this.transport, own, 'retry.maxAttempts');
    } catch (error) {
      return Promise.reject(error);
    }
    return super.subscribe(eventTypes, handler, options);
  }
}

/**
 * The EventBus runs the handler on up to `maxAttempts` deliveries and dead-letters the event
 * after the last; a server that stops delivering before that would cut the retries short.
 */
function checkMaxDeliver(transport: NatsTransport, maxAttempts: unknown, field: string): void {
  const { mode, consumer } = transport.config;
  if (mode !== 'jetstream' || consumer.maxDeliver === -1) return;
  const attempts = maxAttempts ?? DEFAULT_RETRY_OPTIONS.maxAttempts;
  // Bad values are the EventBus's to report.
  if (typeof attempts !== 'number' || Number.isNaN(attempts)) return;
  if (consumer.maxDeliver < attempts) {
    throw configError(
      'consumer.maxDeliver',
      `must be at least ${field} (${String(attempts)}): the server must deliver an event ` +
        `maxAttempts times for the EventBus to run its handler that often and then ` +
        `dead-letter it, got ${consumer.maxDeliver}`,
    );
  }
}
