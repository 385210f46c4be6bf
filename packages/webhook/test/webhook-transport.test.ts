/**
 * The transport beyond the conformance suite: publish and its bound, close with deliveries in
 * flight, the durable queue on the shared Redis, the receiving side, and WebhookSubscriber.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { request } from 'undici';
import { RedisTransport } from '@watchtower/redis';
import { createEvent, encodeEvent, type Delivery, type Event } from '@watchtower/core';
import { FakeClock, configErrorField, settlement, waitFor } from '@watchtower/core/testing';
import {
  WebhookSubscriber,
  WebhookTransport,
  createWebhookSigner,
  generateWebhookSecret,
  type WebhookTransportConfig,
} from '../src/index.js';
import { REDIS_URL, idOf, listen, nowSeconds, testResources } from './helpers.js';

const secret = generateWebhookSecret();
const { defer, endpoint } = testResources();

async function transport(config: WebhookTransportConfig): Promise<WebhookTransport> {
  const t = new WebhookTransport({ allowPrivateAddresses: true, ...config });
  defer(() => t.close({ timeoutMs: 1000 }));
  await t.connect();
  return t;
}

/** POSTs a signed event to `url`; resolves with the status. */
async function postEvent(url: string, event: Event): Promise<number> {
  const body = encodeEvent(event);
  const headers = createWebhookSigner({ secret }).sign(event.id, nowSeconds(), body);
  const res = await request(url, { method: 'POST', body, headers });
  await res.body.dump();
  return res.statusCode;
}

describe('WebhookTransport publishing', () => {
  it('resolves a publish once queued and delivers it in the background', async () => {
    const ep = await endpoint();
    const t = await transport({ endpoints: [{ url: ep.url, secret }] });
    const e = createEvent('order.created', { n: 1 });
    await t.publish(e);
    await waitFor(() => ep.requests.length === 1);
    expect(idOf(ep.requests[0]?.body as string)).toBe(e.id);
    await waitFor(() => t.client.stats()[ep.url]?.delivered === 1);
  });

  it('makes a publish wait for room beyond maxPendingDeliveries, until its signal aborts', async () => {
    const ep = await endpoint(() => 'hang');
    const t = await transport({ maxPendingDeliveries: 1, endpoints: [{ url: ep.url, secret }] });
    await t.publish(createEvent('a.b', {}));
    const controller = new AbortController();
    const waiting = settlement(t.publish(createEvent('a.b', {}), { signal: controller.signal }));
    const second = t.publish(createEvent('a.b', {}));
    await waitFor(() => ep.requests.length === 1);
    controller.abort();
    expect(await waiting).toMatchObject({ code: 'ABORTED' });
    ep.script = () => 200;
    ep.release();
    await second;
    await waitFor(() => ep.requests.length === 2);
  });

  it('close({ timeoutMs }) keeps its deadline with a delivery to an endpoint that never answers, and dead-letters it', async () => {
    const clock = new FakeClock(Date.now());
    const ep = await endpoint(() => 'hang');
    const t = new WebhookTransport({
      clock,
      allowPrivateAddresses: true,
      endpoints: [{ url: ep.url, secret }],
    });
    await t.connect();
    const e = createEvent('a.b', { keep: true });
    await t.publish(e);
    await waitFor(() => ep.requests.length === 1);
    const closing = settlement(t.close({ timeoutMs: 3000 }));
    await clock.advanceAsync(3000);
    expect(await closing).toBe('resolved');
    const letters = await t.client.deadLetters.list();
    expect(letters.map((l) => [l.event.id, l.reason.code])).toEqual([[e.id, 'CLOSED']]);
    await expect(t.publish(createEvent('a.b', {}))).rejects.toMatchObject({ code: 'CLOSED' });
  });
});

describe('WebhookTransport with a durable queue on Redis Streams', () => {
  const redisQueue = (prefix: string) =>
    new RedisTransport({
      url: REDIS_URL,
      prefix,
      blockMs: 100,
      discoveryIntervalMs: 100,
      claimIntervalMs: 100,
      claimMinIdleMs: 500,
    });

  async function dropPrefix(prefix: string): Promise<void> {
    const redis = new Redis(REDIS_URL);
    try {
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length > 0) await redis.del(...keys);
    } finally {
      await redis.quit();
    }
  }

  it('delivers through the queue, and a delivery cut off by close stays queued for the next transport of the group', async () => {
    const prefix = `test-webhook-${randomBytes(5).toString('hex')}`;
    defer(() => dropPrefix(prefix));
    let up = false;
    const ep = await endpoint(() => (up ? 200 : 'hang'));
    const endpoints = [{ url: ep.url, secret, id: 'crm' }];
    const first = new WebhookTransport({
      allowPrivateAddresses: true,
      endpoints,
      queue: redisQueue(prefix),
    });
    await first.connect();
    const e = createEvent('order.created', { durable: true });
    await first.publish(e);
    await waitFor(() => ep.requests.length === 1, { timeoutMs: 10_000 });
    // The process goes away while the endpoint has not answered.
    await first.close({ timeoutMs: 200 });
    expect(await first.client.deadLetters.size()).toBe(0);

    up = true;
    const second = await transport({ endpoints, queue: redisQueue(prefix) });
    await waitFor(() => second.client.stats()['crm']?.delivered === 1, { timeoutMs: 10_000 });
    expect(ep.requests.map((r) => idOf(r.body))).toEqual([e.id, e.id]);
    expect(await second.client.deadLetters.size()).toBe(0);
    expect(second.info.capabilities.persistence).toBe(true);
    expect(await second.healthCheck()).toMatchObject({
      healthy: true,
      details: { queue: { healthy: true } },
    });
  });
});

describe('WebhookTransport receiving', () => {
  it('answers a sender 204 only after the subscription acked, 503 when it is closed unsettled', async () => {
    const t = await transport({ receiver: { port: 0, secrets: secret } });
    const sub = await t.subscribe('order.*');
    const taken: Delivery[] = [];
    void (async () => {
      for await (const d of sub) taken.push(d);
    })();
    const url = t.receiverUrl as string;
    const e = createEvent('order.created', {});
    const answer = postEvent(url, e);
    await waitFor(() => taken.length === 1);
    let answered = false;
    void answer.then(() => (answered = true));
    expect(answered).toBe(false);
    await taken[0]?.ack();
    expect(await answer).toBe(204);
    expect(await postEvent(url, e)).toBe(409);

    const pending = postEvent(url, createEvent('order.updated', {}));
    await waitFor(() => taken.length === 2);
    await t.close({ timeoutMs: 100 });
    expect(await pending).toBe(503);
  });

  it("answers 503 beyond a subscription's maxInFlight, so the sender comes back later", async () => {
    const t = await transport({ receiver: { port: 0, secrets: secret } });
    const sub = await t.subscribe('>', { maxInFlight: 1 });
    const taken: Delivery[] = [];
    void (async () => {
      for await (const d of sub) taken.push(d);
    })();
    const first = postEvent(t.receiverUrl as string, createEvent('a.b', {}));
    await waitFor(() => taken.length === 1);
    expect(await postEvent(t.receiverUrl as string, createEvent('a.b', {}))).toBe(503);
    await taken[0]?.ack();
    expect(await first).toBe(204);
  });

  it('can be mounted in a server of your own through transport.receiver', async () => {
    const t = await transport({ receiver: { secrets: secret } });
    expect(t.receiverUrl).toBeUndefined();
    const server = await listen(t.receiver as NonNullable<typeof t.receiver>);
    defer(() => server.close());
    const sub = await t.subscribe('>');
    const got = (async () => {
      for await (const d of sub) {
        await d.ack();
        return d;
      }
      return undefined;
    })();
    const e = createEvent('x.y', { z: 1 });
    expect(await postEvent(server.url, e)).toBe(204);
    expect((await got)?.kind === 'event' && (await got)).toMatchObject({ event: e, attempt: 1 });
  });

  it('refuses to subscribe without a receiver, with a group, or from earliest', async () => {
    const plain = await transport({});
    await expect(plain.subscribe('a.b')).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    const t = await transport({ receiver: { secrets: secret } });
    await expect(t.subscribe('a.b', { group: 'g' })).rejects.toMatchObject({ code: 'CONFIG' });
    await expect(t.subscribe('a.b', { startFrom: 'earliest' })).rejects.toMatchObject({
      code: 'CONFIG',
    });
  });

  it('refuses bad options with CONFIG naming the field', () => {
    const cases: [WebhookTransportConfig, string][] = [
      [{ maxPendingDeliveries: 0 }, 'maxPendingDeliveries'],
      [{ queue: {} as never }, 'queue'],
      [{ deadLetterTransport: 5 as never }, 'deadLetterTransport'],
      [{ receiver: { secrets: 'x' } }, 'secrets[0]'],
      [{ receiver: { secrets: secret, port: 70_000 } }, 'receiver.port'],
      [{ receiver: { secrets: secret, host: '0.0.0.0' } }, 'receiver.host'],
      [{ receiver: { secrets: secret, prot: 1 } as never }, 'receiver.prot'],
      [{ queueGroup: '' }, 'queueGroup'],
      [
        { endpoints: [{ url: 'https://example.com', secret, events: '' }] },
        'endpoints[0].events[0]',
      ],
    ];
    for (const [config, field] of cases)
      expect(configErrorField(() => new WebhookTransport(config))).toBe(field);
  });
});

describe('WebhookSubscriber', () => {
  it('publishes through one bus to the receiver of another, whose handler gets the event', async () => {
    const receiving = new WebhookSubscriber({ receiver: { port: 0, secrets: secret } });
    defer(() => receiving.close());
    const seen: Event[] = [];
    await receiving.subscribe('invoice.*', (event) => void seen.push(event));
    const url = receiving.transport.receiverUrl as string;
    const sending = new WebhookSubscriber({
      allowPrivateAddresses: true,
      endpoints: [{ url, secret, events: ['invoice.>'] }],
      retry: { maxAttempts: 2 },
    });
    defer(() => sending.close());
    await sending.publish('invoice.paid', { amount: 12 });
    await waitFor(() => seen.length === 1);
    expect(seen[0]).toMatchObject({ type: 'invoice.paid', payload: { amount: 12 } });
  });

  it('refuses an option that neither the bus nor the transport knows', () => {
    expect(configErrorField(() => new WebhookSubscriber({ endpoint: [] } as never))).toBe(
      'endpoint',
    );
  });
});
