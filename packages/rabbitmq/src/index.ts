export { RabbitMQTransport } from './rabbitmq-transport.js';
export type { RabbitMQTransportEvents, RabbitMQConnectionState } from './rabbitmq-transport.js';
export { DEFAULT_RABBITMQ_CONFIG, RABBITMQ_CONFIG_KEYS, resolveRabbitMQConfig } from './config.js';
export type {
  RabbitMQConfig,
  RabbitMQExchangeType,
  RabbitMQQueueType,
  RabbitMQOverflow,
  ResolvedRabbitMQConfig,
} from './config.js';
export { mapAmqpError } from './map-error.js';
export {
  dlxName,
  dlqName,
  dlqRoutingKey,
  delayStepMs,
  ATTEMPT_HEADER,
  ERROR_HEADER,
  ORIGINAL_ROUTING_KEY_HEADER,
  REASON_HEADER,
} from './topology.js';
export { RabbitMQSubscriber } from './rabbitmq-subscriber.js';
export type { RabbitMQSubscriberOptions } from './rabbitmq-subscriber.js';
