import { EventBus, type EventBusOptions, type EventCatalog } from '@watchtower/core';
import { splitSubscriberOptions } from '@watchtower/core/transport-kit';
import {
  WEBHOOK_TRANSPORT_CONFIG_KEYS,
  WebhookTransport,
  type WebhookTransportConfig,
} from './webhook-transport.js';

/**
 * Options of {@link WebhookSubscriber}: the transport's {@link WebhookTransportConfig} and the
 * bus's `EventBusOptions` side by side. `closeTimeoutMs` and `clock` apply to both.
 */
export interface WebhookSubscriberOptions<C extends EventCatalog = EventCatalog>
  extends WebhookTransportConfig, Omit<EventBusOptions<C>, 'transport'> {}

/**
 * The Watchtower Subscriber over webhooks: an `EventBus` on a {@link WebhookTransport}.
 * `publish` delivers to the endpoints subscribed to the event's type; `subscribe` handles
 * what senders POST to the receiver.
 *
 * ```ts
 * const bus = new WebhookSubscriber({
 *   endpoints: [{ url: 'https://crm.example.com/hooks', secret: process.env.CRM_SECRET, events: ['order.*'] }],
 * });
 * await bus.publish('order.created', { id: 1 });
 * ```
 *
 * @throws a `CONFIG` error naming the field when an option is invalid.
 */
export class WebhookSubscriber<C extends EventCatalog = EventCatalog> extends EventBus<C> {
  /** The webhook transport underneath (its `client` has the endpoints, stats and dead letters). */
  declare readonly transport: WebhookTransport;

  constructor(options: WebhookSubscriberOptions<C> = {}) {
    const { transport, bus } = splitSubscriberOptions<WebhookTransportConfig, C>(
      options,
      WEBHOOK_TRANSPORT_CONFIG_KEYS,
      'WebhookSubscriber',
    );
    super({ ...bus, transport: new WebhookTransport(transport) });
  }
}
