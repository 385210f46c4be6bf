/**
 * The receiver on a real node:http server, called by raw undici: what it dispatches, what it
 * refuses and with which status, raw bodies kept by frameworks, and `verify()` on its own.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { Webhook } from 'standardwebhooks';
import { NonRetryableError, createEvent, encodeEvent, type Event } from '@watchtower/core';
import { FakeClock, configErrorField, waitFor } from '@watchtower/core/testing';
import {
  WebhookVerificationError,
  createWebhookReceiver,
  createWebhookSigner,
  generateWebhookKeyPair,
  generateWebhookSecret,
  type WebhookReceiver,
} from '../src/index.js';
import { listen, nowSeconds, type TestServer } from './helpers.js';

const servers: TestServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function serve(receiver: WebhookReceiver): Promise<string> {
  const server = await listen(receiver);
  servers.push(server);
  return server.url;
}

/** POSTs `body` with `headers` by raw undici; resolves with the status and the text answered. */
async function post(url: string, body: string, headers: Record<string, string>) {
  const res = await request(url, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json', ...headers },
  });
  return { status: res.statusCode, text: await res.body.text() };
}

function signed(secret: string, event: Event, timestamp = nowSeconds()) {
  const body = encodeEvent(event);
  return { body, headers: createWebhookSigner({ secret }).sign(event.id, timestamp, body) };
}

describe('createWebhookReceiver on node:http, called by raw undici', () => {
  it('dispatches a signed event to the handlers whose pattern matches, then answers 204', async () => {
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({ secrets: secret });
    const orders: Event[] = [];
    const users: Event[] = [];
    receiver.on('order.*', (event) => void orders.push(event));
    receiver.on('user.>', (event) => void users.push(event));
    const url = await serve(receiver);
    const event = createEvent('order.created', { id: 7, note: 'ünïcode' });
    const { body, headers } = signed(secret, event);
    expect(await post(url, body, headers)).toEqual({ status: 204, text: '' });
    expect(orders).toEqual([event]);
    expect(users).toEqual([]);
    expect(receiver.stats()).toMatchObject({ accepted: 1, rememberedIds: 1 });
  });

  it('accepts an event signed by the standardwebhooks package', async () => {
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({ secrets: secret });
    const seen: Event[] = [];
    receiver.on('>', (event) => void seen.push(event));
    const url = await serve(receiver);
    const event = createEvent('a.b', { n: 1 });
    const body = encodeEvent(event);
    const stamp = new Date(nowSeconds() * 1000);
    const signature = new Webhook(secret).sign(event.id, stamp, body);
    const headers = {
      'webhook-id': event.id,
      'webhook-timestamp': String(stamp.getTime() / 1000),
      'webhook-signature': signature,
    };
    expect((await post(url, body, headers)).status).toBe(204);
    expect(seen.map((e) => e.id)).toEqual([event.id]);
  });

  it('refuses a tampered body, a wrong secret and missing headers, running no handler', async () => {
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({ secrets: secret });
    let runs = 0;
    receiver.on('>', () => void runs++);
    const url = await serve(receiver);
    const event = createEvent('a.b', { amount: 10 });
    const { body, headers } = signed(secret, event);
    expect((await post(url, body.replace('10', '99'), headers)).status).toBe(401);
    const wrong = signed(generateWebhookSecret(), event);
    expect((await post(url, wrong.body, wrong.headers)).status).toBe(401);
    expect((await post(url, body, {})).status).toBe(400);
    const { ['webhook-signature']: _dropped, ...unsigned } = headers;
    expect((await post(url, body, unsigned)).status).toBe(400);
    expect(runs).toBe(0);
    expect(receiver.stats().rejected).toEqual({ 'bad-signature': 2, 'missing-headers': 2 });
  });

  it('refuses timestamps older or further ahead than the tolerance', async () => {
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({ secrets: secret, toleranceSeconds: 60 });
    receiver.on('>', () => undefined);
    const url = await serve(receiver);
    const old = signed(secret, createEvent('a.b', {}), nowSeconds() - 120);
    const ahead = signed(secret, createEvent('a.b', {}), nowSeconds() + 120);
    const inside = signed(secret, createEvent('a.b', {}), nowSeconds() - 30);
    expect(await post(url, old.body, old.headers)).toMatchObject({ status: 401 });
    expect(await post(url, ahead.body, ahead.headers)).toMatchObject({ status: 401 });
    expect((await post(url, inside.body, inside.headers)).status).toBe(204);
    expect(receiver.stats().rejected).toEqual({ 'timestamp-too-old': 1, 'timestamp-in-future': 1 });
  });

  it('refuses a replayed id with 409 once handled, and lets a retry in after a handler failed', async () => {
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({ secrets: secret });
    let failNext = true;
    let runs = 0;
    receiver.on('>', () => {
      runs++;
      if (failNext) {
        failNext = false;
        throw new Error('database down');
      }
    });
    const url = await serve(receiver);
    const { body, headers } = signed(secret, createEvent('a.b', {}));
    expect((await post(url, body, headers)).status).toBe(500);
    expect((await post(url, body, headers)).status).toBe(204);
    expect((await post(url, body, headers)).status).toBe(409);
    expect(runs).toBe(2);
    expect(receiver.stats()).toMatchObject({ handlerFailures: 1, rejected: { replayed: 1 } });
  });

  it('answers 422 for a verified event that no handler is subscribed to, so it is not dropped unseen', async () => {
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({ secrets: secret });
    receiver.on('order.*', () => undefined);
    const url = await serve(receiver);
    const { body, headers } = signed(secret, createEvent('user.created', {}));
    expect(await post(url, body, headers)).toEqual({
      status: 422,
      text: 'no handler for user.created',
    });
    expect(receiver.stats()).toMatchObject({ unrouted: 1, handlerFailures: 0, rememberedIds: 0 });
  });

  it('answers 503 with Retry-After to a request whose id is being handled by another one', async () => {
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({ secrets: secret });
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let started = 0;
    receiver.on('>', async () => {
      started++;
      await gate;
    });
    const url = await serve(receiver);
    const { body, headers } = signed(secret, createEvent('a.b', {}));
    const first = post(url, body, headers);
    await waitFor(() => started === 1);
    const res = await request(url, { method: 'POST', body, headers });
    expect({ status: res.statusCode, retryAfter: res.headers['retry-after'] }).toEqual({
      status: 503,
      retryAfter: '1',
    });
    await res.body.dump();
    open();
    expect((await first).status).toBe(204);
    expect(started).toBe(1);
  });

  it('answers 422 when a handler throws NonRetryableError', async () => {
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({ secrets: secret });
    receiver.on('>', () => {
      throw new NonRetryableError('unknown customer');
    });
    const url = await serve(receiver);
    const { body, headers } = signed(secret, createEvent('a.b', {}));
    expect((await post(url, body, headers)).status).toBe(422);
  });

  it('answers 413 for a body over maxBodyBytes and 400 for a signed body that is no event', async () => {
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({ secrets: secret, maxBodyBytes: 1000 });
    const url = await serve(receiver);
    const big = signed(secret, createEvent('a.b', { text: 'x'.repeat(2000) }));
    expect((await post(url, big.body, big.headers)).status).toBe(413);
    const headers = createWebhookSigner({ secret }).sign('id-1', nowSeconds(), '{"not":"event"}');
    expect((await post(url, '{"not":"event"}', headers)).status).toBe(400);
  });

  it('verifies v1a signatures with the public key alone, and either secret of a rotation', async () => {
    const pair = generateWebhookKeyPair();
    const [oldSecret, newSecret] = [generateWebhookSecret(), generateWebhookSecret()];
    const receiver = createWebhookReceiver({
      secrets: [newSecret, oldSecret],
      publicKeys: pair.publicKey,
    });
    receiver.on('>', () => undefined);
    const url = await serve(receiver);
    for (const keys of [
      { signingKey: pair.signingKey },
      { secret: oldSecret },
      { secret: newSecret },
    ]) {
      const event = createEvent('a.b', {});
      const body = encodeEvent(event);
      const headers = createWebhookSigner(keys).sign(event.id, nowSeconds(), body);
      expect((await post(url, body, headers)).status).toBe(204);
    }
    const stranger = generateWebhookKeyPair();
    const event = createEvent('a.b', {});
    const body = encodeEvent(event);
    const headers = createWebhookSigner({ signingKey: stranger.signingKey }).sign(
      event.id,
      nowSeconds(),
      body,
    );
    expect((await post(url, body, headers)).status).toBe(401);
  });

  it('takes a raw body a framework kept in req.body, and answers 500 for a parsed one', async () => {
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({ secrets: secret });
    receiver.on('>', () => undefined);
    let parsed = false;
    const server = await listen(async (req, res) => {
      // What express.raw() or express.json() leave on the request before the route runs.
      const chunks: Buffer[] = [];
      for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
      const raw = Buffer.concat(chunks);
      Object.assign(req, { body: parsed ? JSON.parse(raw.toString()) : raw });
      await receiver(req, res);
    });
    servers.push(server);
    const { body, headers } = signed(secret, createEvent('a.b', {}));
    expect((await post(server.url, body, headers)).status).toBe(204);
    parsed = true;
    const again = signed(secret, createEvent('a.b', {}));
    const answer = await post(server.url, again.body, again.headers);
    expect(answer.status).toBe(500);
    expect(answer.text).toContain('raw body');
  });
});

describe('WebhookReceiver.verify', () => {
  it('returns the id, time and body, and throws typed errors with the status to answer', () => {
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({ secrets: secret });
    const stamp = nowSeconds();
    const headers = createWebhookSigner({ secret }).sign('evt', stamp, 'payload');
    expect(receiver.verify(headers, 'payload')).toMatchObject({ id: 'evt', timestamp: stamp });
    const replay = (() => {
      try {
        receiver.verify(new Headers(headers), 'payload');
      } catch (error) {
        return error;
      }
      return undefined;
    })();
    expect(replay).toBeInstanceOf(WebhookVerificationError);
    expect(replay).toMatchObject({ code: 'VALIDATION', reason: 'replayed', status: 409 });
    receiver.forget('evt');
    expect(receiver.verify(headers, 'payload').id).toBe('evt');
    expect(() => receiver.verify(headers, 'tampered')).toThrow(
      expect.objectContaining({ reason: 'bad-signature', status: 401 }),
    );
    expect(() => receiver.verify({ ...headers, 'webhook-timestamp': 'soon' }, 'payload')).toThrow(
      expect.objectContaining({ reason: 'malformed-headers', status: 400 }),
    );
  });

  it('forgets an id once its timestamp has left the tolerance, on the injected clock', () => {
    const clock = new FakeClock(1_700_000_000_000);
    const secret = generateWebhookSecret();
    const receiver = createWebhookReceiver({
      secrets: secret,
      toleranceSeconds: 10,
      clock,
      maxRememberedIds: 1,
    });
    const first = createWebhookSigner({ secret }).sign('a', 1_700_000_000, 'x');
    receiver.verify(first, 'x');
    clock.advance(11_000);
    const second = createWebhookSigner({ secret }).sign('b', 1_700_000_011, 'x');
    receiver.verify(second, 'x');
    expect(receiver.stats()).toMatchObject({ rememberedIds: 1, evictedIds: 0 });
    // Full with an id still inside its window: the oldest is forgotten, and counted.
    receiver.verify(createWebhookSigner({ secret }).sign('c', 1_700_000_011, 'x'), 'x');
    expect(receiver.stats()).toMatchObject({ rememberedIds: 1, evictedIds: 1 });
  });

  it('refuses bad options with CONFIG naming the field', () => {
    const secret = generateWebhookSecret();
    expect(configErrorField(() => createWebhookReceiver({}))).toBe('secrets');
    expect(configErrorField(() => createWebhookReceiver({ secrets: 'abc' }))).toBe('secrets[0]');
    expect(
      configErrorField(() => createWebhookReceiver({ secrets: secret, toleranceSeconds: 0 })),
    ).toBe('toleranceSeconds');
    expect(
      configErrorField(() => createWebhookReceiver({ secrets: secret, maxBodyBytes: -1 })),
    ).toBe('maxBodyBytes');
    expect(
      configErrorField(() => createWebhookReceiver({ secrets: secret, tolerance: 5 } as never)),
    ).toBe('tolerance');
    expect(
      configErrorField(() => createWebhookReceiver({ secrets: secret, publicKeys: 'whpk_x' })),
    ).toBe('publicKeys[0]');
  });
});
