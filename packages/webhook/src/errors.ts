/**
 * The errors of this package that callers branch on beyond `code`: why a receiver refused a
 * request (with the HTTP status it answers), and how a delivery failed (with the endpoint's
 * answer). Both are `WatchtowerError`s, so `isWatchtowerError` and `code` work as everywhere.
 */
import { ErrorCode, WatchtowerError, type WatchtowerErrorOptions } from '@watchtower/core';

/** Why a receiver refused a request, each with the status it answers. */
export const WEBHOOK_REJECTIONS = {
  /** `webhook-id`, `webhook-timestamp` or `webhook-signature` is missing. */
  'missing-headers': 400,
  /** A header is there but not well formed (a timestamp that is no integer). */
  'malformed-headers': 400,
  /** No signature in `webhook-signature` matches any secret or public key. */
  'bad-signature': 401,
  /** `webhook-timestamp` is older than the tolerance: a replay, or a clock far off. */
  'timestamp-too-old': 401,
  /** `webhook-timestamp` is further in the future than the tolerance. */
  'timestamp-in-future': 401,
  /** This `webhook-id` was handled already within the replay window. */
  replayed: 409,
  /** This `webhook-id` is being handled right now by another request; try again later. */
  'in-progress': 503,
  /** The body is larger than `maxBodyBytes`. */
  'body-too-large': 413,
  /** The body is signed correctly but is not a Watchtower event. */
  'not-an-event': 400,
} as const;

/** A reason of {@link WebhookVerificationError}. */
export type WebhookRejection = keyof typeof WEBHOOK_REJECTIONS;

/**
 * A receiver refused a request. `status` is what it answers (400, 401, 409, 413 or 503);
 * `reason` says why. Code `VALIDATION`, not retryable, except `in-progress` (retryable).
 */
export class WebhookVerificationError extends WatchtowerError {
  readonly reason: WebhookRejection;
  readonly status: number;

  constructor(reason: WebhookRejection, message: string, options?: WatchtowerErrorOptions) {
    super(ErrorCode.VALIDATION, message, { retryable: reason === 'in-progress', ...options });
    this.name = 'WebhookVerificationError';
    this.reason = reason;
    this.status = WEBHOOK_REJECTIONS[reason];
  }
}

/** What a failed delivery attempt was. */
export type DeliveryFailureKind =
  /** The endpoint answered with a status that is no success. */
  | 'status'
  /** No answer within `timeoutMs`. */
  | 'timeout'
  /** The connection failed (refused, reset, DNS). */
  | 'network'
  /** The endpoint answered 410 Gone and is disabled. */
  | 'gone'
  /** The endpoint is disabled (by 410, or by its `enabled` flag). */
  | 'disabled'
  /** The URL resolves to a private, loopback or link-local address and those are not allowed. */
  | 'private-address';

/**
 * A delivery to one endpoint failed. `status` is the endpoint's answer where there was one;
 * `retryAfterMs` what its `Retry-After` asked for; `attempts` how many requests were made.
 * Code: `TIMEOUT`, `CONNECTION` or `TRANSPORT` (retryable: 408, 429, 5xx), `NON_RETRYABLE`
 * (other 4xx, 410, a disabled endpoint, a private address).
 */
export class WebhookDeliveryError extends WatchtowerError {
  readonly url: string;
  readonly kind: DeliveryFailureKind;
  readonly status: number | undefined;
  readonly retryAfterMs: number | undefined;
  attempts: number;

  constructor(
    code: ErrorCode,
    message: string,
    details: {
      url: string;
      kind: DeliveryFailureKind;
      status?: number;
      retryAfterMs?: number;
      attempts?: number;
    },
    options?: WatchtowerErrorOptions,
  ) {
    super(code, message, options);
    this.name = 'WebhookDeliveryError';
    this.url = details.url;
    this.kind = details.kind;
    this.status = details.status;
    this.retryAfterMs = details.retryAfterMs;
    this.attempts = details.attempts ?? 1;
  }
}
