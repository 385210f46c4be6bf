/**
 * The hub against real sockets: routing by pattern between Watchtower clients and raw `ws`
 * clients, the Rust-format bare event frame, garbage, authentication and authorization, the
 * per-connection limits (payload, slow consumer, rate), health and close.
 */
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createEvent,
  isWatchtowerError,
  type Delivery,
  type Event,
  type TransportSubscription,
} from '@watchtower/core';
import { collectEvents, settlement, waitFor } from '@watchtower/core/testing';
import {
  CLOSE_CODES,
  HUB_SUBPROTOCOL,
  WebSocketHub,
  WebSocketSubscriber,
  bearerToken,
  type WebSocketTransport,
} from '../src/index.js';
import { FAST_CLIENT, RawClient, connectClient, rustEventJson, startHub } from './helpers.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
function later<T extends { close(options?: { timeoutMs?: number }): Promise<void> }>(thing: T): T {
  cleanups.push(() => thing.close({ timeoutMs: 1000 }));
  return thing;
}

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function hub(options: ConstructorParameters<typeof WebSocketHub>[0] = {}) {
  return later(await startHub(options));
}

async function client(target: WebSocketHub, overrides = {}): Promise<WebSocketTransport> {
  return later(await connectClient(target, overrides));
}

function subscriber(target: WebSocketHub, overrides = {}): WebSocketSubscriber {
  return later(new WebSocketSubscriber({ url: target.url, ...FAST_CLIENT, ...overrides }));
}

async function raw(target: WebSocketHub | string, options = {}): Promise<RawClient> {
  const url = typeof target === 'string' ? target : target.url;
  const socket = await RawClient.open(url, options);
  cleanups.push(() => socket.close());
  return socket;
}

/**
 * Publishes an event of `skipped`, then one of `wanted`, and checks that the peer gets the second
 * only: the hub sends in order, so had it routed the first the peer would have it by then.
 */
async function expectOnlyTheSecond(
  peer: RawClient,
  publisher: WebSocketTransport,
  skipped: string,
  wanted: string,
): Promise<void> {
  await publisher.publish(createEvent(skipped, {}));
  await publisher.publish(createEvent(wanted, {}));
  await waitFor(() => peer.frames.some((f) => f.includes(`"${wanted}"`)), {
    message: `the peer receiving ${wanted}`,
  });
  expect(peer.frames.some((f) => f.includes(`"${skipped}"`))).toBe(false);
}

describe('routing', () => {
  it('delivers each event only to the clients whose patterns match it', async () => {
    const h = await hub();
    const users = collectEvents();
    const orders = collectEvents();
    const everything = collectEvents();
    const a = subscriber(h);
    const b = subscriber(h);
    const c = subscriber(h);
    await a.subscribe('user.*', users.handler);
    await b.subscribe('order.>', orders.handler);
    await c.subscribe('>', everything.handler);
    const publisher = subscriber(h);
    await publisher.publish('user.created', { id: 1 });
    await publisher.publish('order.line.added', { id: 2 });
    await publisher.publish('user.profile.updated', { id: 3 });
    await everything.waitForCount(3);
    await orders.waitForCount(1);
    await users.waitForCount(1);
    // The last event reached `>`; by then the hub had routed the others too.
    expect(users.events.map((e) => e.type)).toEqual(['user.created']);
    expect(orders.events.map((e) => e.type)).toEqual(['order.line.added']);
    expect(h.stats()).toMatchObject({ eventsIn: 3, eventsOut: 5 });
  });

  it('sends an event once per connection and gives it to every matching subscription of that client', async () => {
    const h = await hub();
    const transport = await client(h);
    const first = await transport.subscribe('a.*');
    const second = await transport.subscribe('a.b');
    const publisher = await client(h);
    const event = createEvent('a.b', { n: 1 });
    await publisher.publish(event);
    const one = await nextEvent(first);
    const two = await nextEvent(second);
    expect(one.id).toBe(event.id);
    expect(two.id).toBe(event.id);
    // Each subscription holds its own copy.
    expect(one).not.toBe(two);
    expect(h.stats().eventsOut).toBe(1);
  });

  it('stops routing to a subscription once it unsubscribes', async () => {
    const h = await hub();
    const transport = await client(h);
    const subscription = await transport.subscribe('x.y');
    expect(h.stats().subscriptions).toBe(1);
    await subscription.unsubscribe();
    await waitFor(() => h.stats().subscriptions === 0, { message: 'the hub forgetting it' });
  });
});

describe('raw ws peers', () => {
  it('takes a bare Rust-format event frame from a raw ws client as a publish and delivers it to a Watchtower subscriber', async () => {
    const h = await hub();
    const received = collectEvents();
    const bus = subscriber(h);
    await bus.subscribe('notification.sent', received.handler);
    const rust = await raw(h);
    rust.send(rustEventJson('notification.sent', { user_id: 456, channel: 'email' }));
    const [event] = await received.waitForCount(1);
    expect(event).toMatchObject({
      type: 'notification.sent',
      source: 'rust-service',
      payload: { user_id: 456, channel: 'email' },
    });
    // No answer to a bare event that was taken: the Rust client expects none.
    expect(rust.controls('ack')).toEqual([]);
  });

  it('sends a raw ws subscriber the Rust-format JSON of what a Watchtower client publishes', async () => {
    const h = await hub();
    const peer = await raw(h);
    await peer.subscribe('s1', 'order.*');
    const publisher = await client(h);
    const event = createEvent('order.created', { id: 7 }, { correlationId: crypto.randomUUID() });
    await publisher.publish(event);
    await waitFor(() => peer.frames.some((f) => f.includes(event.id)));
    const frame = JSON.parse(peer.frames.find((f) => f.includes(event.id)) as string) as {
      metadata: Record<string, unknown>;
      payload: unknown;
    };
    expect(frame.metadata).toMatchObject({
      id: event.id,
      event_type: 'order.created',
      correlation_id: event.correlationId,
    });
    expect(frame.payload).toEqual({ id: 7 });
  });

  it('subscribes a raw ws client that never subscribes to everything, so a Rust client gets Rust-format JSON and its publishes reach Watchtower subscribers', async () => {
    const h = await hub();
    expect(h.config.defaultSubscriptions).toEqual(['>']);
    const rust = await raw(h);
    const received = collectEvents();
    const bus = subscriber(h);
    await bus.subscribe('notification.*', received.handler);
    const publisher = await client(h);
    // A Watchtower client speaks the hub protocol: it gets no default subscription.
    const publisherErrors: string[] = [];
    publisher.on('error', (error) => publisherErrors.push(error.message));
    const event = createEvent('order.created', { id: 7 });
    await publisher.publish(event);
    await waitFor(() => rust.frames.some((f) => f.includes(event.id)), {
      message: 'the Rust client receiving the event',
    });
    const frame = JSON.parse(rust.frames.find((f) => f.includes(event.id)) as string) as {
      metadata: Record<string, unknown>;
      payload: unknown;
    };
    expect(frame.metadata).toMatchObject({ id: event.id, event_type: 'order.created' });
    expect(frame.payload).toEqual({ id: 7 });
    rust.send(rustEventJson('notification.sent', { user_id: 456 }));
    const [back] = await received.waitForCount(1);
    expect(back).toMatchObject({ type: 'notification.sent', payload: { user_id: 456 } });
    // One default subscription for the Rust client, one of the bus; none for the publisher.
    expect(h.stats().subscriptions).toBe(2);
    expect(publisherErrors).toEqual([]);
  });

  it('gives a raw client only what it subscribes to from its first subscribe on', async () => {
    const h = await hub();
    const peer = await raw(h);
    await peer.subscribe('s1', 'wanted.*');
    expect(h.stats().subscriptions).toBe(1);
    await expectOnlyTheSecond(peer, await client(h), 'unwanted.event', 'wanted.event');
  });

  it('sends nothing to a client that never subscribes when defaultSubscriptions is empty', async () => {
    const h = await hub({ defaultSubscriptions: [] });
    await raw(h);
    const publisher = await client(h);
    await publisher.publish(createEvent('anyone.there', {}));
    // The hub routes before it acks: the publish resolved, and nothing went out.
    expect(h.stats()).toMatchObject({ subscriptions: 0, eventsIn: 1, eventsOut: 0 });
  });

  it('gives no default subscription to a raw client that asks for the hub protocol', async () => {
    const h = await hub();
    const peer = await RawClient.open(h.url, {}, [HUB_SUBPROTOCOL]);
    cleanups.push(() => peer.close());
    expect(peer.socket.protocol).toBe(HUB_SUBPROTOCOL);
    const publisher = await client(h);
    await publisher.publish(createEvent('anyone.there', {}));
    expect(h.stats()).toMatchObject({ connections: 2, subscriptions: 0, eventsOut: 0 });
  });

  it('checks each default subscription with authorize, and tells a refused client why', async () => {
    const h = await hub({
      defaultSubscriptions: ['public.>', 'private.>'],
      authorize: (_p, action, subject) => action !== 'subscribe' || subject === 'public.>',
    });
    const peer = await raw(h);
    await waitFor(() => peer.controls('error').length === 1, { message: 'the refusal' });
    expect(peer.controls('error')[0]).toMatchObject({ code: 'FORBIDDEN', retryable: false });
    expect(String(peer.controls('error')[0]?.message)).toContain('private.>');
    expect(h.stats().subscriptions).toBe(1);
    await expectOnlyTheSecond(peer, await client(h), 'private.note', 'public.note');
  });

  it('answers garbage with error frames and goes on serving that client and others', async () => {
    const h = await hub();
    const peer = await raw(h);
    peer.send('not json at all');
    peer.send('[1,2,3]');
    peer.send({ metadata: { id: 1 }, payload: {} });
    peer.send({ op: 'dance' });
    peer.send({ op: 'publish', event: {} });
    peer.socket.send(Buffer.from([0xff, 0xfe, 0x00]));
    await waitFor(() => peer.controls('error').length === 6, { message: 'six error frames' });
    expect(peer.controls('error').every((frame) => frame.code === 'SERIALIZATION')).toBe(true);
    expect(h.stats().malformed).toBe(6);
    // The same connection still works, and so does everyone else's.
    await peer.subscribe('s1', 'still.alive');
    const publisher = await client(h);
    await publisher.publish(createEvent('still.alive', {}));
    await waitFor(() => peer.frames.some((f) => f.includes('"still.alive"')));
  });

  it('acks a publish frame cumulatively and answers a refused one with its ref', async () => {
    const h = await hub({
      authorize: (_p, action, subject) => action !== 'publish' || subject !== 'no.way',
    });
    const peer = await raw(h);
    const ok = (type: string) => JSON.parse(rustEventJson(type, {})) as unknown;
    peer.send({ op: 'publish', ref: 1, event: ok('fine.one') });
    peer.send({ op: 'publish', ref: 2, event: ok('no.way') });
    peer.send({ op: 'publish', ref: 3, event: ok('fine.two') });
    await waitFor(() => peer.controls('ack').some((frame) => frame.ref === 3));
    expect(peer.controls('error')).toEqual([
      expect.objectContaining({ ref: 2, code: 'FORBIDDEN', retryable: false }),
    ]);
  });
});

describe('authentication and authorization', () => {
  it('refuses an unauthenticated client with HTTP 401 before the upgrade, and lets a client with the token in', async () => {
    const h = await hub({
      authenticate: (req) =>
        req.headers.authorization === 'Bearer s3cret' ? { user: 'alice' } : undefined,
    });
    const refused = new (await import('../src/index.js')).WebSocketTransport({
      url: h.url,
      ...FAST_CLIENT,
    });
    later(refused);
    const error = await settlement(refused.connect());
    expect(isWatchtowerError(error, 'CONNECTION')).toBe(true);
    expect((error as { retryable: boolean }).retryable).toBe(false);
    expect(h.stats()).toMatchObject({ connections: 0, refusedConnections: 1 });
    const allowed = await client(h, { authToken: 's3cret' });
    expect((await allowed.healthCheck()).healthy).toBe(true);
  });

  it('reads the token of either client with bearerToken: the header, else access_token', async () => {
    const tokens: (string | undefined)[] = [];
    const h = await hub({ authenticate: (req) => (tokens.push(bearerToken(req)), 'anyone') });
    await client(h, { authToken: 'from-node' });
    await raw(`${h.url}?access_token=from-browser`);
    await raw(h);
    expect(tokens).toEqual(['from-node', 'from-browser', undefined]);
  });

  it('refuses subscriptions and publishes that authorize does not allow, with FORBIDDEN', async () => {
    const h = await hub({
      authenticate: (req) => ({ role: req.headers['x-role'] }),
      authorize: async (principal, action, subject) =>
        (principal as { role: string }).role === 'admin' ||
        (action === 'subscribe' && subject.startsWith('public.')),
    });
    const guest = await client(h, { headers: { 'x-role': 'guest' } });
    await guest.subscribe('public.news');
    const refusedSubscribe = await settlement(guest.subscribe('secret.>'));
    expect(refusedSubscribe).toMatchObject({ code: 'TRANSPORT', retryable: false });
    expect((refusedSubscribe as Error).message).toContain('FORBIDDEN');
    const refusedPublish = await settlement(guest.publish(createEvent('public.news', {})));
    expect((refusedPublish as Error).message).toContain('FORBIDDEN');
    const admin = await client(h, { headers: { 'x-role': 'admin' } });
    await admin.publish(createEvent('secret.plan', {}));
  });
});

describe('limits', () => {
  it('closes a client that sends a frame over maxPayload with 1009 and keeps serving others', async () => {
    const h = await hub({ maxPayload: 1024 });
    const big = await raw(h);
    const other = await raw(h);
    big.send(rustEventJson('big.one', { blob: 'x'.repeat(4096) }));
    await waitFor(() => big.closeCode !== undefined, { message: 'the big client closed' });
    expect(big.closeCode).toBe(CLOSE_CODES.messageTooBig);
    await other.subscribe('s1', 'small.one');
  });

  it('cuts off a slow consumer with 1008 while the other clients go on receiving', async () => {
    const h = await hub({ maxBufferedBytes: 64 * 1024 });
    const slow = await raw(h);
    await slow.subscribe('s1', 'flood.>');
    const fast = subscriber(h);
    const received = collectEvents();
    await fast.subscribe('flood.>', received.handler);
    // The slow client stops reading: its socket buffers fill, then the hub's send buffer.
    (slow.socket as unknown as { _socket: { pause(): void } })._socket.pause();
    const publisher = await client(h);
    const total = await flood(publisher, () => h.stats().slowConsumersDisconnected === 1);
    expect(h.stats().slowConsumersDisconnected).toBe(1);
    await received.waitForCount(total, { timeoutMs: 20_000 });
    (slow.socket as unknown as { _socket: { resume(): void } })._socket.resume();
    await waitFor(() => slow.closeCode !== undefined, { message: 'the slow client closed' });
    expect(slow.closeCode).toBe(CLOSE_CODES.policyViolation);
    expect(h.stats().connections).toBe(2);
  });

  it('drops events for a slow consumer under the drop policy and counts them, keeping it connected', async () => {
    const h = await hub({ maxBufferedBytes: 64 * 1024, slowConsumer: 'drop' });
    const slow = await raw(h);
    await slow.subscribe('s1', 'flood.>');
    (slow.socket as unknown as { _socket: { pause(): void } })._socket.pause();
    const publisher = await client(h);
    await flood(publisher, () => h.stats().dropped > 0);
    expect(h.stats().dropped).toBeGreaterThan(0);
    expect(h.stats()).toMatchObject({ connections: 2, slowConsumersDisconnected: 0 });
    (slow.socket as unknown as { _socket: { resume(): void } })._socket.resume();
  });

  it('disconnects a client whose answers pile up unread, under the drop policy too', async () => {
    const h = await hub({ maxBufferedBytes: 64 * 1024, slowConsumer: 'drop' });
    const peer = await raw(h);
    (peer.socket as unknown as { _socket: { pause(): void } })._socket.pause();
    // Each garbage frame is answered with an error frame that the client never reads.
    for (let batch = 0; batch < 200 && h.stats().slowConsumersDisconnected === 0; batch++) {
      for (let i = 0; i < 1000; i++) peer.send('garbage that is not json');
      await new Promise<void>((resolve) => peer.socket.send('x', () => resolve()));
      await waitFor(() => h.stats().malformed >= (batch + 1) * 1001);
    }
    expect(h.stats().slowConsumersDisconnected).toBe(1);
  });

  it('refuses publishes over the per-connection rate with RATE_LIMITED, retryable', async () => {
    const h = await hub({ publishRate: { perSecond: 1, burst: 3 } });
    const publisher = await client(h);
    const outcomes = await Promise.allSettled(
      Array.from({ length: 5 }, () => publisher.publish(createEvent('rated.event', {}))),
    );
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(3);
    const rejected = outcomes.filter((o) => o.status === 'rejected');
    expect(rejected).toHaveLength(2);
    expect((rejected[0] as PromiseRejectedResult).reason).toMatchObject({
      code: 'TRANSPORT',
      retryable: true,
    });
  });

  it('refuses a connection over maxConnections with HTTP 503', async () => {
    const h = await hub({ maxConnections: 1 });
    await client(h);
    const second = later(
      new (await import('../src/index.js')).WebSocketTransport({ url: h.url, ...FAST_CLIENT }),
    );
    const error = await settlement(second.connect());
    expect(isWatchtowerError(error, 'CONNECTION')).toBe(true);
    expect((error as Error).message).toContain('503');
  });
});

describe('keepalive and the server side', () => {
  it('drops a client that stops answering its pings', async () => {
    const h = await hub({ pingIntervalMs: 30 });
    const silent = await raw(h, { autoPong: false });
    await waitFor(() => silent.closeCode !== undefined, { message: 'the silent client dropped' });
    expect(h.stats()).toMatchObject({ keepaliveTimeouts: 1, connections: 0 });
  });

  it('refuses a server-side publish before start with CLOSED', async () => {
    const idle = new WebSocketHub({ port: 0 });
    expect(await settlement(idle.publish(createEvent('too.early', {})))).toMatchObject({
      code: 'CLOSED',
    });
  });

  it('routes events that the server itself publishes, and refuses a bad type with VALIDATION', async () => {
    const h = await hub();
    const peer = await raw(h);
    await peer.subscribe('s1', 'server.*');
    await h.publish(createEvent('server.notice', { text: 'hello' }));
    await waitFor(() => peer.frames.some((f) => f.includes('"server.notice"')));
    const bad = { ...createEvent('server.notice', {}), type: 'bad type' };
    expect(await settlement(h.publish(bad))).toMatchObject({
      code: 'VALIDATION',
    });
  });

  it('refuses a subscription over maxSubscriptionsPerConnection and an invalid pattern', async () => {
    const h = await hub({ maxSubscriptionsPerConnection: 1 });
    const transport = await client(h);
    await transport.subscribe('one.*');
    expect(await settlement(transport.subscribe('two.*'))).toMatchObject({ code: 'VALIDATION' });
    const peer = await raw(h);
    peer.send({ op: 'subscribe', id: 'bad', pattern: 'a..b' });
    await waitFor(() => peer.controls('error').some((frame) => frame.id === 'bad'));
  });
});

describe('health and close', () => {
  it('serves its stats on its own health endpoint', async () => {
    const h = await hub();
    await client(h);
    const health = await get(h.url.replace('ws://', 'http://').replace('/events', '/health'));
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ healthy: true, state: 'open', connections: 1 });
  });

  it('embedded in a server, answers health through handleHealth: 200 while open, 503 once closed', async () => {
    const h = new WebSocketHub({ server: createServer((req, res) => h.handleHealth(req, res)) });
    const server = h.config.server as Server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    await h.start();
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/anything`;
    expect((await get(url)).status).toBe(200);
    await h.close({ timeoutMs: 1000 });
    const after = await get(url);
    expect(after.status).toBe(503);
    expect(JSON.parse(after.body)).toMatchObject({ healthy: false, state: 'closed' });
  });

  it('takes permessage-deflate from a client that offers it', async () => {
    const h = await hub({ perMessageDeflate: true });
    const transport = await client(h, { perMessageDeflate: true });
    const peer = await raw(h, { perMessageDeflate: true });
    expect(peer.socket.extensions).toContain('permessage-deflate');
    const seen = await transport.subscribe('zip.*');
    await transport.publish(createEvent('zip.big', { text: 'z'.repeat(50_000) }));
    expect((await nextEvent(seen)).payload).toEqual({ text: 'z'.repeat(50_000) });
  });

  it('closes every client with 1001 within its deadline, and the clients reconnect to a new hub on the port', async () => {
    const h = await startHub();
    const peer = await raw(h);
    const transport = await client(h);
    const received: Event[] = [];
    const subscription = await transport.subscribe('after.restart');
    void (async () => {
      for await (const delivery of subscription) {
        if (delivery.kind === 'event') received.push(delivery.event);
        await delivery.ack();
      }
    })();
    const port = h.port;
    await h.close({ timeoutMs: 2000 });
    await waitFor(() => peer.closeCode !== undefined);
    expect(peer.closeCode).toBe(CLOSE_CODES.goingAway);
    const again = await hub({ port });
    await waitFor(() => again.stats().subscriptions === 1, { message: 'the client re-subscribed' });
    const publisher = await client(again);
    await publisher.publish(createEvent('after.restart', {}));
    await waitFor(() => received.length === 1);
    expect(transport.stats().reconnects).toBe(1);
  });

  it('returns from close within its deadline even when a client never answers the close', async () => {
    const h = await startHub();
    const peer = await raw(h);
    // A peer that stops reading never sends its close frame back.
    (peer.socket as unknown as { _socket: { pause(): void } })._socket.pause();
    const started = Date.now();
    await h.close({ timeoutMs: 300 });
    expect(Date.now() - started).toBeLessThan(300 + 250 + 200);
    expect(h.stats()).toMatchObject({ state: 'closed' });
  });
});

/**
 * Publishes 8 KiB events in batches until `done()` (a paused reader's kernel buffers take
 * megabytes first), at most 400 MiB; returns how many were published.
 */
async function flood(publisher: WebSocketTransport, done: () => boolean): Promise<number> {
  const payload = { blob: 'f'.repeat(8 * 1024) };
  let sent = 0;
  while (!done() && sent < 50_000) {
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        publisher.publish(createEvent('flood.item', { i: sent + i, ...payload })),
      ),
    );
    sent += 200;
  }
  return sent;
}

async function nextEvent(subscription: TransportSubscription): Promise<Event> {
  const result = await subscription[Symbol.asyncIterator]().next();
  const delivery = result.value as Delivery;
  await delivery.ack();
  if (delivery.kind !== 'event') throw new Error('expected an event delivery');
  return delivery.event;
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    request(url, (response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
    })
      .on('error', reject)
      .end();
  });
}
