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
