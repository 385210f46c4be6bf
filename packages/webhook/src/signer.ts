import { Buffer } from 'node:buffer';
import { createSecretKey } from 'node:crypto';
import { configError } from '@watchtower/core';
import { rejectUnknownOptions } from '@watchtower/core/transport-kit';
import { parseSigningKey, parseWebhookSecret } from './keys.js';
import { listOption } from './list-option.js';
import { signatureHeaders, type SigningKeys } from './signature.js';

/** The keys of one endpoint (or of {@link createWebhookSigner}). At least one is required. */
export interface WebhookSigningOptions {
  /**
   * `whsec_` secrets: one `v1` signature each. During a rotation give the new and the old one;
   * a receiver that knows either verifies.
   */
  secret?: string | readonly string[];
  /** `whsk_` ed25519 keys: one `v1a` signature each, checked by receivers with the `whpk_` key. */
  signingKey?: string | readonly string[];
  /**
   * Also send `X-Watchtower-Signature: sha256=<hex HMAC of the body>` with this raw secret, for
   * receivers written for the Rust library. It signs neither id nor time, so it does not
   * protect against replays: keep it only until those receivers move to `webhook-signature`.
   * @defaultValue not sent
   */
  legacySecret?: string;
}

export const SIGNING_OPTION_KEYS = ['secret', 'signingKey', 'legacySecret'] as const;

/** Signs requests: see {@link createWebhookSigner}. */
export interface WebhookSigner {
  /** The headers of a request with this id, time (seconds since the epoch) and body. */
  sign(id: string, timestampSeconds: number, body: Uint8Array | string): Record<string, string>;
}

/**
 * The keys of `options`, parsed. `prefix` is put before field names in errors (`endpoints[0].`).
 *
 * @throws `CONFIG` naming the field.
 */
export function resolveSigningKeys(options: WebhookSigningOptions, prefix = ''): SigningKeys {
  const secrets = listOption(`${prefix}secret`, options.secret).map((value, i, all) =>
    createSecretKey(
      parseWebhookSecret(all.length === 1 ? `${prefix}secret` : `${prefix}secret[${i}]`, value),
    ),
  );
  const signingKeys = listOption(`${prefix}signingKey`, options.signingKey).map((value, i, all) =>
    parseSigningKey(all.length === 1 ? `${prefix}signingKey` : `${prefix}signingKey[${i}]`, value),
  );
  const legacy = options.legacySecret;
  if (legacy !== undefined && (typeof legacy !== 'string' || legacy === '')) {
    throw configError(`${prefix}legacySecret`, 'must be a non-empty string');
  }
  if (secrets.length === 0 && signingKeys.length === 0) {
    throw configError(
      `${prefix}secret`,
      'or `signingKey` is required: every webhook is signed (Standard Webhooks v1 or v1a)',
    );
  }
  return {
    secrets,
    signingKeys,
    legacySecret: legacy === undefined ? undefined : createSecretKey(Buffer.from(legacy)),
  };
}

/**
 * A signer for requests sent by other means than `WebhookClient` (tests, another HTTP client).
 *
 * @throws `CONFIG` naming the field when a key does not parse or none is given.
 */
export function createWebhookSigner(options: WebhookSigningOptions): WebhookSigner {
  rejectUnknownOptions(options, SIGNING_OPTION_KEYS, 'createWebhookSigner');
  const keys = resolveSigningKeys(options);
  return {
    sign: (id, timestampSeconds, body) =>
      signatureHeaders(
        id,
        timestampSeconds,
        typeof body === 'string' ? Buffer.from(body) : body,
        keys,
      ),
  };
}
