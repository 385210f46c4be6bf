/**
 * Keys of the Standard Webhooks schemes: `whsec_` secrets (HMAC-SHA256, scheme `v1`) and
 * `whsk_` / `whpk_` ed25519 key pairs (scheme `v1a`), parsed once into what `node:crypto`
 * signs and verifies with. A key that does not parse is a `CONFIG` error naming the field; its
 * value is never shown in a message.
 */
import { Buffer } from 'node:buffer';
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { configError } from '@watchtower/core';

const SECRET_PREFIX = 'whsec_';
const SIGNING_KEY_PREFIX = 'whsk_';
const PUBLIC_KEY_PREFIX = 'whpk_';

/** DER prefixes of a raw ed25519 key (RFC 8410): PKCS#8 for the seed, SPKI for the public key. */
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The bytes of a key written as `prefix` + base64, when `accepts` their count.
 *
 * @throws `CONFIG` naming `field`, saying it must be `what`, for anything else.
 */
function keyBytes(
  field: string,
  value: unknown,
  prefix: string,
  what: string,
  accepts: (size: number) => boolean,
): Buffer {
  if (typeof value !== 'string' || !value.startsWith(prefix)) {
    throw configError(field, `must be ${what}`);
  }
  const text = value.slice(prefix.length);
  const bytes = BASE64.test(text) ? Buffer.from(text, 'base64') : undefined;
  if (bytes === undefined || !accepts(bytes.length)) {
    throw configError(field, `must be ${what} (base64 after the prefix)`);
  }
  return bytes;
}

/**
 * The HMAC key of a `whsec_` secret: the bytes of the base64 text after the prefix, 24 to 64
 * of them as Standard Webhooks asks.
 *
 * @throws `CONFIG` naming `field` for anything else.
 */
export function parseWebhookSecret(field: string, value: unknown): Buffer {
  return keyBytes(
    field,
    value,
    SECRET_PREFIX,
    'a `whsec_` secret of 24 to 64 bytes',
    (size) => size >= 24 && size <= 64,
  );
}

/**
 * The ed25519 private key of a `whsk_` key: base64 of the 32-byte seed, or of the 64 bytes of
 * seed and public key (libsodium's form, which {@link generateWebhookKeyPair} writes; the
 * public half must then belong to the seed).
 *
 * @throws `CONFIG` naming `field` for anything else.
 */
export function parseSigningKey(field: string, value: unknown): KeyObject {
  const bytes = keyBytes(
    field,
    value,
    SIGNING_KEY_PREFIX,
    'a `whsk_` ed25519 key (32-byte seed or 64-byte seed and public key)',
    (size) => size === 32 || size === 64,
  );
  const key = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519, bytes.subarray(0, 32)]),
    format: 'der',
    type: 'pkcs8',
  });
  if (bytes.length === 64 && !rawPublicKey(key).equals(bytes.subarray(32))) {
    throw configError(field, 'has a public half that does not belong to its seed');
  }
  return key;
}

/**
 * The ed25519 public key of a `whpk_` key (base64 of the 32 raw bytes).
 *
 * @throws `CONFIG` naming `field` for anything else.
 */
export function parsePublicKey(field: string, value: unknown): KeyObject {
  const bytes = keyBytes(
    field,
    value,
    PUBLIC_KEY_PREFIX,
    'a `whpk_` ed25519 public key (32 bytes)',
    (size) => size === 32,
  );
  return createPublicKey({
    key: Buffer.concat([SPKI_ED25519, bytes]),
    format: 'der',
    type: 'spki',
  });
}

function rawPublicKey(key: KeyObject): Buffer {
  const pub = key.type === 'public' ? key : createPublicKey(key);
  const der = pub.export({ format: 'der', type: 'spki' });
  return der.subarray(SPKI_ED25519.length);
}

/**
 * A new random `whsec_` secret of `bytes` bytes (24 to 64).
 * @defaultValue 32 bytes
 */
export function generateWebhookSecret(bytes = 32): string {
  if (!Number.isInteger(bytes) || bytes < 24 || bytes > 64) {
    throw configError('bytes', `must be an integer from 24 to 64, got ${String(bytes)}`);
  }
  return SECRET_PREFIX + randomBytes(bytes).toString('base64');
}

/** A new ed25519 key pair: `signingKey` (`whsk_`) for the sender, `publicKey` (`whpk_`) for receivers. */
export function generateWebhookKeyPair(): { signingKey: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_ED25519.length);
  const raw = rawPublicKey(publicKey);
  return {
    signingKey: SIGNING_KEY_PREFIX + Buffer.concat([seed, raw]).toString('base64'),
    publicKey: PUBLIC_KEY_PREFIX + raw.toString('base64'),
  };
}
