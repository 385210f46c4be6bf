export { createWebhookReceiver, DEFAULT_WEBHOOK_RECEIVER_OPTIONS } from './receiver.js';
export type {
  WebhookReceiver,
  WebhookReceiverOptions,
  WebhookReceiverStats,
  WebhookHandler,
  WebhookContext,
  VerifiedWebhook,
} from './receiver.js';
export { createWebhookSigner } from './signer.js';
export type { WebhookSigner, WebhookSigningOptions } from './signer.js';
export { generateWebhookSecret, generateWebhookKeyPair } from './keys.js';
export { WebhookVerificationError, WebhookDeliveryError, WEBHOOK_REJECTIONS } from './errors.js';
export type { WebhookRejection, DeliveryFailureKind } from './errors.js';
export {
  WebhookClient,
  DEFAULT_WEBHOOK_CLIENT_OPTIONS,
  WEBHOOK_CLIENT_OPTION_KEYS,
} from './webhook-client.js';
export type {
  WebhookClientOptions,
  WebhookRateLimit,
  DeliveryReceipt,
  DeliveryReport,
  WebhookEndpointStats,
  ReplayReport,
} from './webhook-client.js';
export type { WebhookEndpoint } from './endpoint.js';
export { MemoryWebhookDeadLetterStore } from './dead-letters.js';
export type {
  WebhookDeadLetter,
  NewWebhookDeadLetter,
  WebhookDeadLetterStore,
  MemoryWebhookDeadLetterStoreOptions,
} from './dead-letters.js';
export { isPrivateAddress } from './address-guard.js';
export { RedisWebhookDeadLetterStore } from './redis-dead-letters.js';
export type { RedisWebhookDeadLetterStoreOptions } from './redis-dead-letters.js';
export {
  WebhookTransport,
  WEBHOOK_CAPABILITIES,
  WEBHOOK_TRANSPORT_CONFIG_KEYS,
} from './webhook-transport.js';
export type { WebhookTransportConfig, WebhookTransportReceiver } from './webhook-transport.js';
export { WebhookSubscriber } from './webhook-subscriber.js';
export type { WebhookSubscriberOptions } from './webhook-subscriber.js';
export type { DeliverOptions } from './webhook-client.js';
