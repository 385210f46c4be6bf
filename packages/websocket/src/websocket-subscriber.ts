import { EventBus, type EventBusOptions, type EventCatalog } from '@watchtower/core';
import { splitSubscriberOptions } from '@watchtower/core/transport-kit';
import {
  WEBSOCKET_CONFIG_KEYS,
  WebSocketTransport,
  type WebSocketConfig,
} from './websocket-transport.js';

/**
 * Options of {@link WebSocketSubscriber}: the transport's {@link WebSocketConfig} and the bus's
 * `EventBusOptions` side by side. `closeTimeoutMs` and `clock` apply to both.
 */
export interface WebSocketSubscriberOptions<C extends EventCatalog = EventCatalog>
  extends WebSocketConfig, Omit<EventBusOptions<C>, 'transport'> {}

/**
 * The Watchtower Subscriber over WebSocket: an `EventBus` on a {@link WebSocketTransport}.
 *
 * ```ts
 * const bus = new WebSocketSubscriber({ url: 'ws://127.0.0.1:8080/events' });
 * await bus.subscribe('notification.*', async (event) => { ... });
 * await bus.publish('notification.sent', { userId: 456 });
 * ```
 *
 * @throws a `CONFIG` error naming the field when an option is invalid.
 */
export class WebSocketSubscriber<C extends EventCatalog = EventCatalog> extends EventBus<C> {
  /** The WebSocket transport underneath (dead-letter queue, stats, `on('connection')`). */
  declare readonly transport: WebSocketTransport;

  constructor(options: WebSocketSubscriberOptions<C> = {}) {
    const { transport, bus } = splitSubscriberOptions<WebSocketConfig, C>(
      options,
      WEBSOCKET_CONFIG_KEYS,
      'WebSocketSubscriber',
    );
    super({ ...bus, transport: new WebSocketTransport(transport) });
  }
}
