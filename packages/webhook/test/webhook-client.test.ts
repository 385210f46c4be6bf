/**
 * The client against local node:http endpoints that answer as each test scripts: retries,
 * Retry-After, 410, breakers, limits, fan-out, the private-address guard and close.
 */
import { describe, expect, it } from 'vitest';
import { createEvent, type Event } from '@watchtower/core';
import { FakeClock, configErrorField, settlement, waitFor } from '@watchtower/core/testing';
import {
  WebhookClient,
  createWebhookReceiver,
  generateWebhookSecret,
  type WebhookClientOptions,
} from '../src/index.js';
import { listen, testResources, type TestServer } from './helpers.js';

const secret = generateWebhookSecret();
const { defer, endpoint, client } = testResources();

const event = (type = 'order.created'): Event => createEvent(type, { n: 1 });

describe('WebhookClient retries', () => {
  it('delivers once with attempt 2 after a 500, the same webhook-id both times', async () => {
    const ep = await endpoint((_, i) => (i === 0 ? 500 : 200));
    const c = client({ endpoints: [{ url: ep.url, secret }] });
    const e = event();
    const report = await c.deliver(e);
    expect(report.delivered).toEqual([
      { endpointId: ep.url, url: ep.url, status: 200, attempts: 2 },
    ]);
    expect(report.deadLettered).toEqual([]);
    expect(ep.requests.map((r) => r.headers['webhook-id'])).toEqual([e.id, e.id]);
    expect(c.stats()[ep.url]).toMatchObject({
      delivered: 1,
      failed: 0,
      requests: 2,
      retries: 1,
      lastStatus: 200,
    });
  });

  it('does not retry a 400 and dead-letters it with the status and one attempt', async () => {
    const ep = await endpoint(() => 400);
    const c = client({ endpoints: [{ url: ep.url, secret }] });
    const e = event();
    const report = await c.deliver(e);
    expect(ep.requests).toHaveLength(1);
    expect(report.deadLettered).toHaveLength(1);
    const [letter] = await c.deadLetters.list();
    expect(letter).toMatchObject({
      event: e,
      url: ep.url,
      status: 400,
      reason: { code: 'NON_RETRYABLE', attempts: 1, originalType: e.type, subscription: ep.url },
    });
  });

  it('retries 408, 429, 5xx and refused connections up to maxAttempts, then dead-letters', async () => {
    const ep = await endpoint((_, i) => [408, 429, 503][i % 3] as number);
    const c = client({
      endpoints: [{ url: ep.url, secret }],
      deliveryRetry: { maxAttempts: 4, minDelayMs: 1, jitter: 0 },
    });
    const report = await c.deliver(event());
    expect(ep.requests).toHaveLength(4);
    expect(report.deadLettered[0]?.error).toMatchObject({
      code: 'TRANSPORT',
      status: 408,
      attempts: 4,
    });

    const closed = await listen(() => undefined);
    const deadUrl = `${closed.url}/gone-away`;
    await closed.close();
    const c2 = client({
      endpoints: [{ url: deadUrl, secret }],
      deliveryRetry: { maxAttempts: 3, minDelayMs: 1 },
    });
    const report2 = await c2.deliver(event());
    expect(report2.deadLettered[0]?.error).toMatchObject({
      code: 'CONNECTION',
      kind: 'network',
      attempts: 3,
    });
  });

  it('waits what Retry-After asks after a 429, on the injected clock', async () => {
    const clock = new FakeClock(Date.now());
    const ep = await endpoint((_, i) =>
      i === 0 ? { status: 429, headers: { 'retry-after': '3' } } : 200,
    );
    const c = client({
      clock,
      endpoints: [{ url: ep.url, secret }],
      deliveryRetry: { minDelayMs: 10, jitter: 0 },
    });
    const delivery = c.deliver(event());
    // The backoff alone would retry after 10 ms; the endpoint asked for 3 s.
    await waitFor(() => ep.requests.length === 1 && clock.pendingTimers() === 1);
    await clock.advanceAsync(2999);
    expect(ep.requests).toHaveLength(1);
    await clock.advanceAsync(1);
    const report = await delivery;
    expect(report.delivered[0]?.attempts).toBe(2);
  });

  it('dead-letters at once when Retry-After asks for more than maxRetryAfterMs', async () => {
    const ep = await endpoint(() => ({ status: 503, headers: { 'retry-after': '3600' } }));
    const c = client({ endpoints: [{ url: ep.url, secret }], maxRetryAfterMs: 60_000 });
    const report = await c.deliver(event());
    expect(ep.requests).toHaveLength(1);
    expect(report.deadLettered[0]?.error).toMatchObject({ status: 503, retryAfterMs: 3_600_000 });
  });

  it('disables an endpoint that answers 410, delivering it nothing more until enabled again', async () => {
    let gone = true;
    const ep = await endpoint(() => (gone ? 410 : 200));
    const c = client({ endpoints: [{ url: ep.url, secret, id: 'crm' }] });
    const first = await c.deliver(event());
    expect(first.deadLettered[0]?.error).toMatchObject({
      code: 'NON_RETRYABLE',
      kind: 'gone',
      status: 410,
    });
    expect(c.stats()['crm']).toMatchObject({ enabled: false, disabledBy: 'gone' });
    expect(await c.deliver(event())).toEqual({ delivered: [], deadLettered: [] });
    expect(ep.requests).toHaveLength(1);
    gone = false;
    expect(c.enableEndpoint('crm')).toBe(true);
    expect((await c.deliver(event())).delivered).toHaveLength(1);
  });

  it('times out a request that gets no answer within timeoutMs', async () => {
    const clock = new FakeClock(Date.now());
    const ep = await endpoint(() => 'hang');
    const c = client({
      clock,
      timeoutMs: 5000,
      endpoints: [{ url: ep.url, secret }],
      deliveryRetry: { maxAttempts: 1 },
    });
    const delivery = c.deliver(event());
    await waitFor(() => ep.requests.length === 1);
    await clock.advanceAsync(5000);
    const report = await delivery;
    expect(report.deadLettered[0]?.error).toMatchObject({ code: 'TIMEOUT', kind: 'timeout' });
  });
});

describe('WebhookClient.send', () => {
  it('sends to one endpoint by id and stops, ABORTED, when its signal aborts', async () => {
    const ep = await endpoint(() => 'hang');
    const c = client({ endpoints: [{ url: ep.url, secret, id: 'crm' }] });
    const controller = new AbortController();
    const sending = settlement(c.send('crm', event(), { signal: controller.signal }));
    await waitFor(() => ep.requests.length === 1);
    controller.abort();
    expect(await sending).toMatchObject({ code: 'ABORTED' });
    expect(await c.deadLetters.size()).toBe(0);
    await expect(c.send('nope', event())).rejects.toMatchObject({ code: 'CONFIG' });
    await expect(c.send('crm', event(), { sginal: 1 } as never)).rejects.toMatchObject({
      code: 'CONFIG',
    });
  });
});

describe('WebhookClient circuit breaker per URL', () => {
  it('opens after the threshold, rejects fast with CIRCUIT_OPEN, and recovers through half-open', async () => {
    const clock = new FakeClock(Date.now());
    let healthy = false;
    const bad = await endpoint(() => (healthy ? 200 : 500));
    const good = await endpoint(() => 200);
    const c = client({
      clock,
      deliveryRetry: { maxAttempts: 1 },
      endpointCircuitBreaker: { failureThreshold: 3, resetTimeoutMs: 30_000, successThreshold: 2 },
      endpoints: [
        { url: bad.url, secret },
        { url: good.url, secret },
      ],
    });
    for (let i = 0; i < 3; i++) await c.deliver(event());
    expect(c.stats()[bad.url]?.circuit?.state).toBe('open');
    const rejected = await c.deliver(event());
    expect(bad.requests).toHaveLength(3);
    expect(rejected.deadLettered[0]?.error).toMatchObject({ code: 'CIRCUIT_OPEN' });
    expect(rejected.delivered.map((d) => d.url)).toEqual([good.url]);
    expect(c.stats()[good.url]?.circuit?.state).toBe('closed');

    healthy = true;
    clock.advance(30_000);
    expect(c.stats()[bad.url]?.circuit?.state).toBe('half-open');
    await c.deliver(event());
    await c.deliver(event());
    expect(c.stats()[bad.url]?.circuit).toMatchObject({ state: 'closed', rejectedRequests: 1 });
  });

  it('does not count 4xx answers as circuit failures', async () => {
    const ep = await endpoint(() => 422);
    const c = client({
      deliveryRetry: { maxAttempts: 1 },
      endpointCircuitBreaker: { failureThreshold: 2 },
      endpoints: [{ url: ep.url, secret }],
    });
    for (let i = 0; i < 4; i++) await c.deliver(event());
    expect(ep.requests).toHaveLength(4);
    expect(c.stats()[ep.url]?.circuit?.state).toBe('closed');
  });
});

describe('WebhookClient limits and fan-out', () => {
  it('keeps at most maxConcurrentPerEndpoint requests in flight to one endpoint', async () => {
    const ep = await endpoint(() => 'hang');
    const c = client({ maxConcurrentPerEndpoint: 2, endpoints: [{ url: ep.url, secret }] });
    const deliveries = Array.from({ length: 5 }, () => c.deliver(event()));
    await waitFor(() => ep.requests.length === 2 && c.stats()[ep.url]?.waiting === 3);
    expect(c.stats()[ep.url]?.inFlight).toBe(2);
    ep.script = () => 200;
    ep.release();
    const reports = await Promise.all(deliveries);
    expect(reports.every((r) => r.delivered.length === 1)).toBe(true);
    expect(ep.maxInFlight).toBe(2);
  });

  it('spaces requests by the rate limit on the injected clock', async () => {
    const clock = new FakeClock(Date.now());
    const ep = await endpoint(() => 200);
    const c = client({
      clock,
      rateLimit: { perSecond: 10, burst: 2 },
      endpoints: [{ url: ep.url, secret }],
    });
    const deliveries = Array.from({ length: 4 }, () => c.deliver(event()));
    await waitFor(() => ep.requests.length === 2 && c.stats()[ep.url]?.waiting === 2);
    await clock.advanceAsync(100);
    await waitFor(() => ep.requests.length === 3);
    await clock.advanceAsync(100);
    await Promise.all(deliveries);
    expect(ep.requests).toHaveLength(4);
  });

  it('delivers to each endpoint on its own: one that hangs holds up no other', async () => {
    const slow = await endpoint(() => 'hang');
    const fast = await endpoint(() => 200);
    const c = client({
      endpoints: [
        { url: slow.url, secret },
        { url: fast.url, secret },
      ],
    });
    const delivery = c.deliver(event());
    // The fast endpoint's delivery completes while the slow one still holds its request.
    await waitFor(() => c.stats()[fast.url]?.delivered === 1 && slow.requests.length === 1);
    expect(slow.hung).toHaveLength(1);
    slow.script = () => 200;
    slow.release();
    expect((await delivery).delivered).toHaveLength(2);
  });

  it('delivers only to endpoints whose patterns match, with their extra headers', async () => {
    const orders = await endpoint();
    const users = await endpoint();
    const c = client({
      endpoints: [
        { url: orders.url, secret, events: ['order.*'], headers: { 'x-tenant': 'acme' } },
        { url: users.url, secret, events: 'user.>' },
      ],
    });
    await c.deliver(event('order.created'));
    await c.deliver(event('user.profile.updated'));
    await c.deliver(event('invoice.sent'));
    expect(orders.requests).toHaveLength(1);
    expect(orders.requests[0]?.headers['x-tenant']).toBe('acme');
    expect(users.requests).toHaveLength(1);
  });

  it('posts to the path and query of the URL, and counts a 2xx with a long answer as delivered', async () => {
    const seen: { url: string | undefined; agent: string | undefined }[] = [];
    const server: TestServer = await listen((req, res) => {
      seen.push({ url: req.url, agent: req.headers['user-agent'] });
      req.resume();
      req.on('end', () => res.writeHead(200).end(Buffer.alloc(1024 * 1024, 'x')));
    });
    defer(() => server.close());
    const url = `${server.url}/hooks/in?tenant=acme`;
    const c = client({
      endpoints: [{ url, secret, headers: { 'user-agent': 'theirs' } }],
      userAgent: 'ours',
    });
    expect((await c.deliver(event())).delivered).toMatchObject([{ status: 200, attempts: 1 }]);
    expect((await c.deliver(event())).delivered).toMatchObject([{ status: 200, attempts: 1 }]);
    expect(seen).toEqual([
      { url: '/hooks/in?tenant=acme', agent: 'ours' },
      { url: '/hooks/in?tenant=acme', agent: 'ours' },
    ]);
  });

  it('sends what a verifying receiver accepts: signed JSON of the event', async () => {
    const receiver = createWebhookReceiver({ secrets: secret });
    const seen: Event[] = [];
    receiver.on('>', (e) => void seen.push(e));
    const server: TestServer = await listen(receiver);
    defer(() => server.close());
    const c = client({ endpoints: [{ url: server.url, secret }] });
    const e = event();
    expect((await c.deliver(e)).delivered[0]?.status).toBe(204);
    expect(seen).toEqual([e]);
  });
});

describe('WebhookClient and a Watchtower receiver', () => {
  it('counts the 409 of a receiver that handled the id already as delivered, and any other 409 as a failure', async () => {
    const receiver = createWebhookReceiver({ secrets: secret });
    let runs = 0;
    receiver.on('>', () => void runs++);
    const server: TestServer = await listen(receiver);
    defer(() => server.close());
    const plain = await endpoint(() => 409);
    const c = client({
      endpoints: [
        { url: server.url, secret, id: 'receiver' },
        { url: plain.url, secret, id: 'plain' },
      ],
    });
    const e = event();
    await c.deliver(e);
    const again = await c.deliver(e);
    expect(again.delivered).toEqual([
      { endpointId: 'receiver', url: `${server.url}/`, status: 409, attempts: 1 },
    ]);
    expect(again.deadLettered.map((d) => [d.endpointId, d.error.code])).toEqual([
      ['plain', 'NON_RETRYABLE'],
    ]);
    expect(runs).toBe(1);
  });
});

describe('WebhookClient private-address guard', () => {
  it('refuses a private address literal when the endpoint is added, unless allowed', () => {
    for (const url of [
      'http://127.0.0.1/x',
      'http://10.1.2.3/x',
      'http://[::1]/x',
      'http://169.254.169.254/latest',
      'http://192.168.1.1/',
    ]) {
      expect(configErrorField(() => new WebhookClient({ endpoints: [{ url, secret }] }))).toBe(
        'endpoints[0].url',
      );
    }
    expect(
      () => new WebhookClient({ endpoints: [{ url: 'https://93.184.216.34/x', secret }] }),
    ).not.toThrow();
  });

  it('refuses a host name that resolves to a private address when connecting, without retrying', async () => {
    const ep = await endpoint();
    const url = ep.url.replace('127.0.0.1', 'localhost');
    const c = new WebhookClient({ endpoints: [{ url, secret }], deliveryRetry: { minDelayMs: 1 } });
    defer(() => c.close());
    const report = await c.deliver(event());
    expect(report.deadLettered[0]?.error).toMatchObject({
      code: 'NON_RETRYABLE',
      kind: 'private-address',
      attempts: 1,
    });
    expect(ep.requests).toHaveLength(0);
  });
});

describe('WebhookClient close', () => {
  it('returns by its deadline with a delivery in flight to an endpoint that never answers, which is dead-lettered', async () => {
    const clock = new FakeClock(Date.now());
    const ep = await endpoint(() => 'hang');
    const c = new WebhookClient({
      clock,
      allowPrivateAddresses: true,
      endpoints: [{ url: ep.url, secret }],
    });
    const e = event();
    const delivery = c.deliver(e);
    await waitFor(() => ep.requests.length === 1);
    const closing = settlement(c.close({ timeoutMs: 2000 }));
    await clock.advanceAsync(2000);
    expect(await closing).toBe('resolved');
    const report = await delivery;
    expect(report.deadLettered[0]?.error).toMatchObject({ code: 'CLOSED' });
    const [letter] = await c.deadLetters.list();
    expect(letter).toMatchObject({ event: e, reason: { code: 'CLOSED' } });
    await expect(c.deliver(event())).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('lets deliveries in flight finish when they do so before the deadline', async () => {
    const ep = await endpoint(() => 'hang');
    const c = new WebhookClient({
      allowPrivateAddresses: true,
      endpoints: [{ url: ep.url, secret }],
    });
    const delivery = c.deliver(event());
    await waitFor(() => ep.requests.length === 1);
    const closing = c.close({ timeoutMs: 10_000 });
    ep.release();
    await closing;
    expect((await delivery).delivered).toHaveLength(1);
  });
});

describe('WebhookClient options', () => {
  it('refuses bad options with CONFIG naming the field', () => {
    const url = 'https://example.com/hook';
    const cases: [WebhookClientOptions, string][] = [
      [{ timeoutMs: 0 }, 'timeoutMs'],
      [{ deliveryRetry: { maxAttempts: 0 } }, 'maxAttempts'],
      [{ deliveryRetry: { clock: new FakeClock() } as never }, 'deliveryRetry.clock'],
      [{ endpointCircuitBreaker: { failureThreshold: 0 } }, 'failureThreshold'],
      [{ rateLimit: { perSecond: 0 } }, 'rateLimit.perSecond'],
      [{ rateLimit: { perSecond: 5, burst: 0 } }, 'rateLimit.burst'],
      [{ maxConcurrentPerEndpoint: 0 }, 'maxConcurrentPerEndpoint'],
      [{ deadLetters: {} as never }, 'deadLetters'],
      [{ endpoints: [{ url: 'ftp://x', secret }] }, 'endpoints[0].url'],
      [{ endpoints: [{ url }] }, 'endpoints[0].secret'],
      [{ endpoints: [{ url, secret, events: ['a.**'] }] }, 'endpoints[0].events[0]'],
      [
        { endpoints: [{ url, secret, headers: { 'webhook-id': 'x' } }] },
        'endpoints[0].headers.webhook-id',
      ],
      [
        {
          endpoints: [
            { url, secret },
            { url, secret },
          ],
        },
        'endpoints[1].id',
      ],
      [{ endpoints: [{ url, secret, enabeld: false } as never] }, 'enabeld'],
      [{ retries: 3 } as never, 'retries'],
    ];
    for (const [options, field] of cases)
      expect(configErrorField(() => new WebhookClient(options))).toBe(field);
  });
});
