/**
 * Standard Webhooks signatures: what is signed (`{id}.{timestamp}.{body}`), the
 * `webhook-signature` header of `v1` (HMAC-SHA256) and `v1a` (ed25519) signatures, the check
 * of one against secrets and public keys in constant time, and the legacy
 * `X-Watchtower-Signature` header of the Rust library (HMAC of the body alone, sent only).
 */
import { Buffer } from 'node:buffer';
import { createHmac, sign, timingSafeEqual, verify, type KeyObject } from 'node:crypto';

/** Header names of the Standard Webhooks scheme (lower case, as Node gives them). */
export const HEADER_ID = 'webhook-id';
export const HEADER_TIMESTAMP = 'webhook-timestamp';
export const HEADER_SIGNATURE = 'webhook-signature';
/**
 * Sent by our receiver with a 409 for an id it handled already: the sender counts the delivery
 * as made (a retry or a redelivery from a durable queue after its answer was lost).
 */
export const HEADER_DUPLICATE = 'x-watchtower-duplicate';
/** The Rust library's header: `sha256=<hex HMAC-SHA256 of the body>`. */
export const HEADER_LEGACY = 'x-watchtower-signature';

/** The keys a sender signs with. */
export interface SigningKeys {
  /**
   * HMAC keys of `whsec_` secrets: one `v1` signature each. Key objects, made once, so that
   * each signature does not import its key again.
   */
  readonly secrets: readonly KeyObject[];
  /** ed25519 private keys of `whsk_` keys: one `v1a` signature each. */
  readonly signingKeys: readonly KeyObject[];
  /** The raw secret of the legacy header, or undefined to send none. */
  readonly legacySecret: KeyObject | undefined;
}

/** The keys a receiver checks against. */
export interface VerifyingKeys {
  readonly secrets: readonly Buffer[];
  readonly publicKeys: readonly KeyObject[];
}

/** The bytes that are signed: `{id}.{timestamp}.{body}`. */
export function signedContent(id: string, timestamp: number, body: Uint8Array): Buffer {
  const head = Buffer.from(`${id}.${timestamp}.`);
  return Buffer.concat([head, body]);
}

/**
 * The `webhook-signature` value of one request: a space-separated list of `v1,<base64>` and
 * `v1a,<base64>` (one per key, so that a receiver still holding the old secret during a
 * rotation verifies too).
 */
export function signatureValue(
  id: string,
  timestamp: number,
  body: Uint8Array,
  keys: SigningKeys,
): string {
  const head = `${id}.${timestamp}.`;
  let value = '';
  for (const secret of keys.secrets) {
    const mac = createHmac('sha256', secret).update(head).update(body).digest('base64');
    value += value === '' ? `v1,${mac}` : ` v1,${mac}`;
  }
  if (keys.signingKeys.length > 0) {
    // ed25519 signs one buffer: the concatenation is made only for it.
    const content = signedContent(id, timestamp, body);
    for (const key of keys.signingKeys) {
      const signature = `v1a,${sign(null, content, key).toString('base64')}`;
      value += value === '' ? signature : ` ${signature}`;
    }
  }
  return value;
}

/** The legacy `X-Watchtower-Signature` value: `sha256=<hex HMAC-SHA256 of the body>`. */
export function legacySignatureValue(body: Uint8Array, secret: KeyObject): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/**
 * The headers of one signed request: `webhook-id`, `webhook-timestamp` (seconds) and
 * `webhook-signature` (see {@link signatureValue}), and the legacy header when a legacy secret
 * is given.
 */
export function signatureHeaders(
  id: string,
  timestamp: number,
  body: Uint8Array,
  keys: SigningKeys,
): Record<string, string> {
  const headers: Record<string, string> = {
    [HEADER_ID]: id,
    [HEADER_TIMESTAMP]: String(timestamp),
    [HEADER_SIGNATURE]: signatureValue(id, timestamp, body, keys),
  };
  if (keys.legacySecret !== undefined) {
    headers[HEADER_LEGACY] = legacySignatureValue(body, keys.legacySecret);
  }
  return headers;
}

/**
 * True when one of the signatures in `header` matches: a `v1` one the HMAC of one of
 * `keys.secrets`, or a `v1a` one made by the private half of one of `keys.publicKeys`.
 * Compares in constant time; entries of other versions and malformed entries are skipped.
 */
export function hasValidSignature(
  id: string,
  timestamp: number,
  body: Uint8Array,
  header: string,
  keys: VerifyingKeys,
): boolean {
  const content = signedContent(id, timestamp, body);
  let expected: Buffer[] | undefined;
  for (const entry of header.split(' ')) {
    const comma = entry.indexOf(',');
    if (comma <= 0) continue;
    const version = entry.slice(0, comma);
    const signature = Buffer.from(entry.slice(comma + 1), 'base64');
    if (version === 'v1') {
      expected ??= keys.secrets.map((secret) =>
        createHmac('sha256', secret).update(content).digest(),
      );
      for (const mac of expected) {
        if (mac.length === signature.length && timingSafeEqual(mac, signature)) return true;
      }
    } else if (version === 'v1a' && signature.length === 64) {
      for (const key of keys.publicKeys) {
        if (verify(null, content, key, signature)) return true;
      }
    }
  }
  return false;
}
