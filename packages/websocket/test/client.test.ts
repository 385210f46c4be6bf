/**
 * The client transport against real servers: a plain `ws` echo server (`protocol: 'plain'`),
 * a server that never answers pings, a hub that goes away and comes back (or not), TLS with a
 * private CA, compression, the size limit in both directions, and the dead-letter queue.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:https';
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  InMemoryDeadLetterQueue,
  createEvent,
  encodeEvent,
  isWatchtowerError,
  type ConnectionChange,
  type DeadLetter,
  type Delivery,
  type Event,
  type TransportSubscription,
} from '@watchtower/core';
import { settlement, waitFor } from '@watchtower/core/testing';
import {
  WebSocketHub,
  WebSocketSubscriber,
  WebSocketTransport,
  type WebSocketConfig,
} from '../src/index.js';
import { FAST_CLIENT, rustEventJson, startHub } from './helpers.js';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function transport(config: WebSocketConfig): WebSocketTransport {
  const t = new WebSocketTransport({ ...FAST_CLIENT, ...config });
  cleanups.push(() => t.close({ timeoutMs: 1000 }));
  return t;
}

async function hub(options: ConstructorParameters<typeof WebSocketHub>[0] = {}) {
  const h = await startHub(options);
  cleanups.push(() => h.close({ timeoutMs: 1000 }));
  return h;
}

interface TestServer {
  readonly wss: WebSocketServer;
  readonly url: string;
  readonly sockets: WebSocket[];
  readonly closeCodes: number[];
}

/** A plain `ws` server on a free port; `onMessage` answers frames (an echo by default). */
async function server(
  options: ConstructorParameters<typeof WebSocketServer>[0] = {},
  onMessage: (socket: WebSocket, data: Buffer, isBinary: boolean) => void = (s, d, b) =>
    s.send(d, { binary: b }),
): Promise<TestServer> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', ...options });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  const sockets: WebSocket[] = [];
  const closeCodes: number[] = [];
  wss.on('connection', (socket) => {
    sockets.push(socket);
    socket.on('message', (data, isBinary) => onMessage(socket, data as Buffer, isBinary));
    socket.on('close', (code) => closeCodes.push(code));
  });
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of wss.clients) socket.terminate();
        wss.close(() => resolve());
      }),
  );
  const { port } = wss.address() as { port: number };
  return { wss, url: `ws://127.0.0.1:${port}/`, sockets, closeCodes };
}

/** Collects what a subscription yields, acking each delivery. */
function drain(subscription: TransportSubscription): Delivery[] {
  const seen: Delivery[] = [];
  void (async () => {
    for await (const delivery of subscription) {
      seen.push(delivery);
      await delivery.ack();
    }
  })().catch(() => undefined);
  return seen;
}

function events(deliveries: Delivery[]): Event[] {
  return deliveries.flatMap((d) => (d.kind === 'event' ? [d.event] : []));
}

describe("protocol 'plain' against a raw ws echo server", () => {
  it('sends bare event JSON and delivers what comes back to the matching subscriptions only', async () => {
    const echo = await server();
    const client = transport({ url: echo.url, protocol: 'plain' });
    await client.connect();
    const users = drain(await client.subscribe('user.*'));
    const orders = drain(await client.subscribe('order.*'));
    await client.publish(createEvent('user.created', { id: 1 }));
    await client.publish(createEvent('user.deleted', { id: 2 }));
    await waitFor(() => events(users).length === 2);
    expect(events(users).map((e) => e.payload)).toEqual([{ id: 1 }, { id: 2 }]);
    expect(orders).toEqual([]);
  });

  it('accepts binary frames of event JSON', async () => {
    const binary = await server({}, (socket, data) => socket.send(data, { binary: true }));
    const client = transport({ url: binary.url, protocol: 'plain' });
    await client.connect();
    const seen = drain(await client.subscribe('bin.>'));
    binary.sockets[0]?.send(Buffer.from(rustEventJson('bin.event', { ok: true })), {
      binary: true,
    });
    await waitFor(() => events(seen).length === 1);
    expect(events(seen)[0]?.payload).toEqual({ ok: true });
  });

  it('offers permessage-deflate when asked and the server takes it', async () => {
    const echo = await server({ perMessageDeflate: true });
    const client = transport({ url: echo.url, protocol: 'plain', perMessageDeflate: true });
    await client.connect();
    const seen = drain(await client.subscribe('zip.>'));
    await client.publish(createEvent('zip.it', { text: 'a'.repeat(10_000) }));
    await waitFor(() => events(seen).length === 1);
    expect(echo.sockets[0]?.extensions).toContain('permessage-deflate');
  });
});

describe('subscriptions', () => {
  it('drops events beyond maxInFlight for a consumer that does not keep up, and reports BACKPRESSURE_DROPPED', async () => {
    const h = await hub();
    const client = transport({ url: h.url });
    const errors: string[] = [];
    client.on('error', (error) => errors.push(error.code));
    await client.connect();
    await client.subscribe('burst.*', { maxInFlight: 2 });
    const publisher = transport({ url: h.url });
    for (let i = 0; i < 5; i++) await publisher.publish(createEvent('burst.event', { i }));
    await waitFor(() => client.stats().dropped === 3, { message: 'three dropped' });
    expect(errors).toEqual([
      'BACKPRESSURE_DROPPED',
      'BACKPRESSURE_DROPPED',
      'BACKPRESSURE_DROPPED',
    ]);
  });

  it('closes its socket with 1000 on close()', async () => {
    const echo = await server();
    const client = transport({ url: echo.url, protocol: 'plain' });
    await client.connect();
    await client.close({ timeoutMs: 1000 });
    await waitFor(() => echo.closeCodes.length === 1);
    expect(echo.closeCodes).toEqual([1000]);
    expect((await client.healthCheck()).state).toBe('closed');
  });
});

describe('events that match no subscription', () => {
  it('drops an event late for a subscription just ended, and hands a misrouted one to the oldest subscription', async () => {
    // A stand-in hub that answers subscribes and leaves the rest to the test.
    let peer: WebSocket | undefined;
    const frames: Record<string, unknown>[] = [];
    const fake = await server({}, (socket, data) => {
      peer = socket;
      const frame = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
      frames.push(frame);
      if (frame.op === 'subscribe') socket.send(JSON.stringify({ op: 'subscribed', id: frame.id }));
    });
    const client = transport({ url: fake.url });
    await client.connect();
    const kept = drain(await client.subscribe('kept.*'));
    const ended = await client.subscribe('ended.*');
    await ended.unsubscribe();
    await waitFor(() => frames.some((f) => f.op === 'unsubscribe'));
    const late = createEvent('ended.late', {});
    peer?.send(encodeEvent(late));
    peer?.send(JSON.stringify({ op: 'unsubscribed', id: frames.at(-1)?.id }));
    const stray = createEvent('ended.stray', {});
    peer?.send(encodeEvent(stray));
    await waitFor(() => kept.length === 1, { message: 'the stray event' });
    expect(events(kept).map((e) => e.id)).toEqual([stray.id]);
  });
});

describe('close', () => {
  it('ends a connection attempt under way at once: connect rejects with CLOSED', async () => {
    // A server that accepts TCP and never answers the upgrade.
    const silent = createTcpServer((socket) => socket.on('error', () => undefined));
    const held: Socket[] = [];
    silent.on('connection', (socket) => held.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const socket of held) socket.destroy();
          silent.close(() => resolve());
        }),
    );
    const { port } = silent.address() as AddressInfo;
    const client = transport({ url: `ws://127.0.0.1:${port}/`, connectTimeoutMs: 60_000 });
    const connecting = settlement(client.connect());
    await waitFor(() => held.length === 1, { message: 'the TCP connection' });
    await client.close({ timeoutMs: 5000 });
    expect(await connecting).toMatchObject({ code: 'CLOSED' });
  });

  it('keeps its deadline when the hub stops reading: the unconfirmed publish rejects with CLOSED', async () => {
    // The hub on a server of the test's, which sees the TCP socket of each upgrade too.
    const http = createHttpServer();
    const hubSockets: Duplex[] = [];
    http.on('upgrade', (_request, socket: Duplex) => hubSockets.push(socket));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => http.close(() => resolve())));
    const h = new WebSocketHub({ server: http });
    await h.start();
    cleanups.push(() => h.close({ timeoutMs: 1000 }));
    const client = transport({ url: h.url, pingIntervalMs: 0 });
    await client.connect();
    // The hub reads nothing more from this client, so it acks nothing.
    for (const socket of hubSockets) socket.pause();
    const publish = settlement(client.publish(createEvent('never.acked', {})));
    const started = Date.now();
    await client.close({ timeoutMs: 300 });
    expect(Date.now() - started).toBeLessThan(300 + 250 + 200);
    expect(await publish).toMatchObject({ code: 'CLOSED' });
    for (const socket of hubSockets) socket.resume();
  });
});

describe('maxMessageSize', () => {
  it('refuses a publish over the limit before sending it, not retryable', async () => {
    const echo = await server();
    const client = transport({ url: echo.url, protocol: 'plain', maxMessageSize: 1024 });
    await client.connect();
    const error = await settlement(
      client.publish(createEvent('big.one', { blob: 'x'.repeat(2000) })),
    );
    expect(error).toMatchObject({ code: 'TRANSPORT', retryable: false });
    expect(client.stats().published).toBe(0);
  });

  it('closes the connection with 1009 when a frame over the limit arrives, then reconnects', async () => {
    const echo = await server();
    const client = transport({ url: echo.url, protocol: 'plain', maxMessageSize: 1024 });
    await client.connect();
    echo.sockets[0]?.send(rustEventJson('big.one', { blob: 'y'.repeat(4096) }));
    await waitFor(() => echo.closeCodes.length === 1, { message: 'the server seeing the close' });
    expect(echo.closeCodes[0]).toBe(1009);
    await waitFor(() => echo.sockets.length === 2, { message: 'the client reconnecting' });
  });
});

describe('keepalive', () => {
  it('detects a peer that stops answering pings and reconnects within pingIntervalMs + pongTimeoutMs', async () => {
    const silent = await server({ autoPong: false });
    const client = transport({
      url: silent.url,
      protocol: 'plain',
      pingIntervalMs: 50,
      pongTimeoutMs: 100,
    });
    const changes: ConnectionChange[] = [];
    client.on('connection', (change) => changes.push(change));
    await client.connect();
    await waitFor(() => changes.some((c) => c.state === 'lost'), {
      message: 'the lost connection',
    });
    expect(changes[0]).toMatchObject({ state: 'lost', error: { code: 'CONNECTION' } });
    expect(changes[0]?.state === 'lost' && changes[0].error?.message).toContain('pongTimeoutMs');
    await waitFor(() => silent.sockets.length >= 2, { message: 'a new connection' });
  });

  it('keeps a connection whose peer answers every ping', async () => {
    const answering = await server();
    let pings = 0;
    answering.wss.on('connection', (socket) => socket.on('ping', () => pings++));
    const client = transport({
      url: answering.url,
      protocol: 'plain',
      pingIntervalMs: 10,
      pongTimeoutMs: 500,
    });
    const changes: ConnectionChange[] = [];
    client.on('connection', (change) => changes.push(change));
    await client.connect();
    await waitFor(() => pings >= 10, { message: 'ten pings answered' });
    expect(changes).toEqual([]);
    expect(answering.sockets).toHaveLength(1);
  });
});

describe('reconnect', () => {
  it('holds publishes while the hub is down, sends them after the reconnect and re-subscribes', async () => {
    const first = await startHub();
    const port = first.port;
    const client = transport({ url: first.url });
    const changes: string[] = [];
    client.on('connection', (change) => changes.push(change.state));
    await client.connect();
    const seen = drain(await client.subscribe('held.>'));
    await first.close({ timeoutMs: 1000 });
    await waitFor(() => changes.includes('lost'));
    const held = [1, 2, 3].map((n) => client.publish(createEvent('held.event', { n })));
    expect(client.stats().waitingPublishes).toBe(3);
    await hub({ port });
    await Promise.all(held);
    await waitFor(() => events(seen).length === 3, { message: 'the held events, delivered' });
    expect(events(seen).map((e) => e.payload)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    // Lost, a failed attempt for each try while the hub was down, restored.
    expect(changes[0]).toBe('lost');
    expect(changes.at(-1)).toBe('restored');
    expect(changes.slice(1, -1).every((state) => state === 'reconnect-failed')).toBe(true);
  });

  it("opens the bus's circuit after failureThreshold failed reconnects to a hub that is down, and closes it when the hub is back", async () => {
    const first = await startHub();
    const port = first.port;
    const bus = new WebSocketSubscriber({
      url: first.url,
      ...FAST_CLIENT,
      circuitBreaker: { failureThreshold: 3, resetTimeoutMs: 60_000 },
    });
    cleanups.push(() => bus.close({ timeoutMs: 1000 }));
    const failures: ConnectionChange[] = [];
    bus.transport.on('connection', (change) => {
      if (change.state === 'reconnect-failed') failures.push(change);
    });
    const circuit: string[] = [];
    bus.on('circuitStateChange', (to) => circuit.push(to));
    const seen: unknown[] = [];
    await bus.subscribe('breaker.>', (event) => void seen.push(event.payload));
    await first.close({ timeoutMs: 1000 });
    await waitFor(() => bus.circuitBreakerStats().state === 'open', {
      timeoutMs: 5000,
      message: 'the circuit opened by failed reconnects',
    });
    expect(failures.length).toBeGreaterThanOrEqual(3);
    expect(
      failures.every((f) => f.state === 'reconnect-failed' && f.error.code === 'CONNECTION'),
    ).toBe(true);
    expect(bus.circuitBreakerStats().totalRequests).toBe(0);
    await hub({ port });
    await waitFor(() => bus.circuitBreakerStats().state === 'half-open', {
      timeoutMs: 5000,
      message: 'the circuit half-open once the hub is back',
    });
    await bus.publish('breaker.trial', { n: 1 });
    await bus.publish('breaker.trial', { n: 2 });
    expect(bus.circuitBreakerStats().state).toBe('closed');
    expect(circuit).toEqual(['open', 'half-open', 'closed']);
    await waitFor(() => seen.length === 2, { message: 'the trial publishes delivered' });
  });

  it('gives up after maxReconnectAttempts: waiting publishes and subscriptions fail with CONNECTION', async () => {
    const h = await startHub();
    const client = transport({ url: h.url, maxReconnectAttempts: 2 });
    const errors: string[] = [];
    client.on('error', (error) => errors.push(error.code));
    await client.connect();
    const subscription = await client.subscribe('gone.>');
    const iteration = settlement(subscription[Symbol.asyncIterator]().next());
    await h.close({ timeoutMs: 1000 });
    const waiting = settlement(client.publish(createEvent('gone.event', {})));
    const error = await waiting;
    expect(isWatchtowerError(error, 'CONNECTION')).toBe(true);
    expect((error as Error).message).toContain('gave up reconnecting');
    expect(await iteration).toMatchObject({ code: 'CONNECTION' });
    expect(errors).toContain('CONNECTION');
    // The publish that waited is kept as a dead letter, not lost unseen.
    expect(client.deadLetterQueue.list()).toEqual([
      expect.objectContaining({
        event: expect.objectContaining({ type: 'gone.event' }) as unknown,
        reason: expect.objectContaining({
          code: 'CONNECTION',
          originalType: 'gone.event',
        }) as unknown,
      }),
    ]);
    expect((await client.healthCheck()).healthy).toBe(false);
  });

  it('rejects a waiting publish when its signal aborts, and with CLOSED when close() comes first', async () => {
    const h = await startHub();
    const client = transport({ url: h.url, reconnectDelayMs: 5000, maxReconnectDelayMs: 5000 });
    await client.connect();
    await h.close({ timeoutMs: 1000 });
    await waitFor(async () => !(await client.healthCheck()).healthy);
    const controller = new AbortController();
    const aborted = settlement(
      client.publish(createEvent('a.b', {}), { signal: controller.signal }),
    );
    const closed = settlement(client.publish(createEvent('a.c', {})));
    controller.abort(new Error('timed out'));
    expect(await aborted).toMatchObject({ code: 'ABORTED' });
    await client.close({ timeoutMs: 500 });
    expect(await closed).toMatchObject({ code: 'CLOSED' });
  });
});

describe('TLS', () => {
  it('connects to wss:// with a private CA given as tls.ca, and refuses the unknown certificate without it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wt-tls-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    const cert = readFileSync(join(dir, 'cert.pem'));
    const https = createServer({ cert, key: readFileSync(join(dir, 'key.pem')) });
    await new Promise<void>((resolve) => https.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => https.close(() => resolve())));
    const h = new WebSocketHub({ server: https });
    await h.start();
    cleanups.push(() => h.close({ timeoutMs: 1000 }));
    expect(h.url).toMatch(/^wss:\/\//);
    const trusted = transport({ url: h.url, tls: { ca: cert } });
    await trusted.connect();
    const seen = drain(await trusted.subscribe('secure.>'));
    await trusted.publish(createEvent('secure.event', { ok: true }));
    await waitFor(() => events(seen).length === 1);
    const untrusted = transport({ url: h.url });
    expect(await settlement(untrusted.connect())).toMatchObject({ code: 'CONNECTION' });
  });
});

describe('dead-letter queue', () => {
  it('keeps dead letters in memory, bounded by dlqCapacity, and hands them to consumeDlq', async () => {
    const h = await hub();
    const client = transport({ url: h.url, dlqCapacity: 2 });
    await client.connect();
    const reason = {
      message: 'failed',
      code: 'HANDLER_FAILED',
      attempts: 3,
      failedAt: new Date().toISOString(),
      originalType: 'x.y',
    };
    for (const n of [1, 2, 3]) await client.publishToDlq(createEvent('x.y', { n }), reason);
    expect(client.deadLetterQueue.stats()).toMatchObject({ size: 2, dropped: 1, capacity: 2 });
    const letters: DeadLetter[] = [];
    const handle = await client.consumeDlq((letter) => {
      letters.push(letter);
    });
    await waitFor(() => letters.length === 2);
    expect(letters.map((l) => l.event?.payload)).toEqual([{ n: 2 }, { n: 3 }]);
    await handle.unsubscribe();
    await waitFor(() => client.deadLetterQueue.size === 0);
  });

  it('shares a dead-letter queue given as deadLetterQueue', async () => {
    const h = await hub();
    const queue = new InMemoryDeadLetterQueue({ capacity: 5 });
    const client = transport({ url: h.url, deadLetterQueue: queue });
    await client.publishToDlq(
      { raw: new Uint8Array([1, 2]), origin: 'x' },
      {
        message: 'bad bytes',
        code: 'SERIALIZATION',
        attempts: 1,
        failedAt: new Date().toISOString(),
        originalType: 'x',
      },
    );
    expect(queue.list()[0]?.raw).toEqual(new Uint8Array([1, 2]));
  });
});
