/**
 * The signatures against the Standard Webhooks test vector and the `standardwebhooks` package,
 * both ways: rotation, v1a, the legacy header, and keys that do not parse.
 */
import { Buffer } from 'node:buffer';
import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { configErrorField } from '@watchtower/core/testing';
import { generateWebhookKeyPair, generateWebhookSecret, parsePublicKey } from './keys.js';
import { createWebhookSigner } from './signer.js';
import { hasValidSignature, signedContent } from './signature.js';
import { parseWebhookSecret } from './keys.js';

/** The test vector of the Standard Webhooks specification. */
const VECTOR = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
};

const keysOf = (secrets: string[], publicKeys: string[] = []) => ({
  secrets: secrets.map((s) => parseWebhookSecret('s', s)),
  publicKeys: publicKeys.map((k) => parsePublicKey('k', k)),
});

describe('Standard Webhooks signatures', () => {
  it('signs the specification test vector to its published signature', () => {
    const headers = createWebhookSigner({ secret: VECTOR.secret }).sign(
      VECTOR.id,
      VECTOR.timestamp,
      VECTOR.body,
    );
    expect(headers).toEqual({
      'webhook-id': VECTOR.id,
      'webhook-timestamp': String(VECTOR.timestamp),
      'webhook-signature': VECTOR.signature,
    });
  });

  it('verifies the test vector and refuses it with a changed body, id or time', () => {
    const keys = keysOf([VECTOR.secret]);
    const body = Buffer.from(VECTOR.body);
    const { id, timestamp, signature } = VECTOR;
    expect(hasValidSignature(id, timestamp, body, signature, keys)).toBe(true);
    expect(
      hasValidSignature(id, timestamp, Buffer.from('{"test": 2432232315}'), signature, keys),
    ).toBe(false);
    expect(hasValidSignature(`${id}x`, timestamp, body, signature, keys)).toBe(false);
    expect(hasValidSignature(id, timestamp + 1, body, signature, keys)).toBe(false);
  });

  it('writes signatures that the standardwebhooks package verifies', () => {
    const secret = generateWebhookSecret();
    const body = JSON.stringify({ hello: 'wörld' });
    const now = Math.floor(Date.now() / 1000);
    const headers = createWebhookSigner({ secret }).sign('evt_1', now, body);
    expect(new Webhook(secret).verify(body, headers)).toEqual({ hello: 'wörld' });
  });

  it('verifies signatures that the standardwebhooks package writes', () => {
    const secret = generateWebhookSecret();
    const body = '{"a":1}';
    const signature = new Webhook(secret).sign('evt_2', new Date(1_700_000_000_000), body);
    expect(
      hasValidSignature('evt_2', 1_700_000_000, Buffer.from(body), signature, keysOf([secret])),
    ).toBe(true);
    expect(
      hasValidSignature(
        'evt_2',
        1_700_000_000,
        Buffer.from(body),
        signature,
        keysOf([generateWebhookSecret()]),
      ),
    ).toBe(false);
  });

  it('signs with every secret during a rotation, so a receiver with either one verifies', () => {
    const [oldSecret, newSecret] = [generateWebhookSecret(), generateWebhookSecret()];
    const body = Buffer.from('{}');
    const headers = createWebhookSigner({ secret: [newSecret, oldSecret] }).sign('e', 10, body);
    const signature = headers['webhook-signature'] as string;
    expect(signature.split(' ')).toHaveLength(2);
    expect(hasValidSignature('e', 10, body, signature, keysOf([oldSecret]))).toBe(true);
    expect(hasValidSignature('e', 10, body, signature, keysOf([newSecret]))).toBe(true);
    expect(hasValidSignature('e', 10, body, signature, keysOf([generateWebhookSecret()]))).toBe(
      false,
    );
  });

  it('signs v1a with an ed25519 key that receivers check with the public key alone', () => {
    const pair = generateWebhookKeyPair();
    const other = generateWebhookKeyPair();
    const body = Buffer.from('{"x":true}');
    const signature = createWebhookSigner({ signingKey: pair.signingKey }).sign('e', 5, body)[
      'webhook-signature'
    ] as string;
    expect(signature).toMatch(/^v1a,[A-Za-z0-9+/]{86}==$/);
    expect(hasValidSignature('e', 5, body, signature, keysOf([], [pair.publicKey]))).toBe(true);
    expect(hasValidSignature('e', 5, body, signature, keysOf([], [other.publicKey]))).toBe(false);
    expect(
      hasValidSignature(
        'e',
        5,
        Buffer.from('{"x":false}'),
        signature,
        keysOf([], [pair.publicKey]),
      ),
    ).toBe(false);
  });

  it('accepts a whsk_ key given as the 32-byte seed alone', () => {
    const pair = generateWebhookKeyPair();
    const seed = Buffer.from(pair.signingKey.slice(5), 'base64').subarray(0, 32);
    const body = Buffer.from('{}');
    const signature = createWebhookSigner({ signingKey: `whsk_${seed.toString('base64')}` }).sign(
      'e',
      1,
      body,
    )['webhook-signature'] as string;
    expect(hasValidSignature('e', 1, body, signature, keysOf([], [pair.publicKey]))).toBe(true);
  });

  it('adds the legacy X-Watchtower-Signature, the hex HMAC of the body, only when asked', () => {
    const secret = generateWebhookSecret();
    const plain = createWebhookSigner({ secret }).sign('e', 1, 'body');
    expect(plain['x-watchtower-signature']).toBeUndefined();
    const legacy = createWebhookSigner({ secret, legacySecret: 'rust-secret' }).sign(
      'e',
      1,
      'body',
    );
    const expected = createHmac('sha256', 'rust-secret').update('body').digest('hex');
    expect(legacy['x-watchtower-signature']).toBe(`sha256=${expected}`);
  });

  it('signs what is documented: "{id}.{timestamp}.{body}"', () => {
    expect(signedContent('a', 2, Buffer.from('b')).toString()).toBe('a.2.b');
  });

  it('refuses keys that do not parse, naming the field, and a signer without keys', () => {
    expect(configErrorField(() => createWebhookSigner({ secret: 'nope' }))).toBe('secret');
    expect(configErrorField(() => createWebhookSigner({ secret: 'whsec_c2hvcnQ=' }))).toBe(
      'secret',
    );
    expect(configErrorField(() => createWebhookSigner({ signingKey: 'whsec_xx' }))).toBe(
      'signingKey',
    );
    expect(configErrorField(() => createWebhookSigner({}))).toBe('secret');
    expect(
      configErrorField(() =>
        createWebhookSigner({ secret: generateWebhookSecret(), extra: 1 } as never),
      ),
    ).toBe('extra');
  });
});
