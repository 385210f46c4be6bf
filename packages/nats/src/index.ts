export { NatsTransport } from './nats-transport.js';
export type { NatsConnectionState, NatsTransportEvents } from './nats-transport.js';
export {
  DEFAULT_NATS_CONFIG,
  DEFAULT_NATS_CONSUMER_OPTIONS,
  DEFAULT_NATS_DLQ_OPTIONS,
  DEFAULT_NATS_STREAM_OPTIONS,
  resolveNatsConfig,
} from './config.js';
export type {
  NatsAuthOptions,
  NatsConfig,
  NatsConsumerOptions,
  NatsDlqOptions,
  NatsMode,
  NatsStreamOptions,
  NatsTlsOptions,
  ResolvedNatsConfig,
} from './config.js';
export { mapNatsError } from './map-error.js';
export { NatsSubscriber } from './nats-subscriber.js';
export type { NatsSubscriberOptions } from './nats-subscriber.js';
