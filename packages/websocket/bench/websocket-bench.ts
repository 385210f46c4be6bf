/**
 * WebSocket measurements, beside raw `ws` doing the same work (a raw relay server and raw
 * clients, same event JSON):
 *
 * - throughput client -> hub -> client, transport level and through the EventBus;
 * - round trip p50/p99, one event at a time;
 * - CPU µs per event (the whole process: publisher, hub and subscriber share it);
 * - hub fan-out cost per event with 10 vs 1 000 connected clients of 100 non-matching
 *   subscriptions each.
 *
 *   pnpm --filter @watchtower/websocket exec tsx bench/websocket-bench.ts
 *
 * Bounded in count and time. Prints a table and JSON lines (`{"scenario","impl",...}`).
 */
import { performance } from 'node:perf_hooks';
import { WebSocket, WebSocketServer } from 'ws';
import { createEvent, encodeEvent, type Delivery } from '@watchtower/core';
import { WebSocketHub, WebSocketSubscriber, WebSocketTransport } from '../src/index.js';

const N = Number(process.env['BENCH_N'] ?? 50_000);
const WINDOW = 1000;
const RTT_N = 2000;
const payload = { orderId: 12_345, customer: 'c-678', amount: 99.5, currency: 'EUR', items: 3 };

interface Result {
  scenario: string;
  impl: 'raw' | 'watchtower';
  n: number;
  msgsPerSec?: number;
  cpuUsPerEvent?: number;
  p50Us?: number;
  p99Us?: number;
}

const results: Result[] = [];

function cpuUs(start: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(start);
  return used.user + used.system;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number;
}

async function open(url: string): Promise<WebSocket> {
  const socket = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  return socket;
}

/** A raw relay: every frame from one client goes to every other client. */
async function rawRelay(): Promise<{ url: string; close(): Promise<void> }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  wss.on('connection', (socket) => {
    socket.on('message', (data, isBinary) => {
      for (const other of wss.clients) if (other !== socket) other.send(data, { binary: isBinary });
    });
  });
  const { port } = wss.address() as { port: number };
  return {
    url: `ws://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        wss.close(() => resolve());
      }),
  };
}

/**
 * Publishes `count` events with at most WINDOW waiting for their acks, then waits for
 * `delivered`; the result of a watchtower throughput scenario.
 */
async function timed(
  scenario: string,
  count: number,
  publish: () => Promise<void>,
  delivered: Promise<void>,
): Promise<Result> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  let inFlight: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    inFlight.push(publish());
    if (inFlight.length === WINDOW) {
      await Promise.all(inFlight);
      inFlight = [];
    }
  }
  await Promise.all(inFlight);
  await delivered;
  const seconds = (performance.now() - started) / 1000;
  return {
    scenario,
    impl: 'watchtower',
    n: count,
    msgsPerSec: Math.round(count / seconds),
    cpuUsPerEvent: cpuUs(cpu) / count,
  };
}

async function rawThroughput(): Promise<void> {
  const relay = await rawRelay();
  const publisher = await open(relay.url);
  const subscriber = await open(relay.url);
  let received = 0;
  let done: () => void = () => undefined;
  const all = new Promise<void>((resolve) => (done = resolve));
  subscriber.on('message', (data) => {
    // The same work as the client: parse the frame and check it is an event of the type.
    const frame = JSON.parse((data as Buffer).toString('utf8')) as {
      metadata: { event_type: string };
    };
    if (frame.metadata.event_type === 'bench.order') received++;
    if (received === N) done();
  });
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < N; i++) {
    publisher.send(encodeEvent(createEvent('bench.order', payload)));
    if (i % WINDOW === WINDOW - 1) {
      while (i - received > WINDOW * 4) await new Promise((resolve) => setImmediate(resolve));
    }
  }
  await all;
  const seconds = (performance.now() - started) / 1000;
  results.push({
    scenario: 'client-hub-client throughput',
    impl: 'raw',
    n: N,
    msgsPerSec: Math.round(N / seconds),
    cpuUsPerEvent: cpuUs(cpu) / N,
  });
  publisher.terminate();
  subscriber.terminate();
  await relay.close();
}

async function consume(subscription: AsyncIterable<Delivery>, count: number): Promise<void> {
  let received = 0;
  for await (const delivery of subscription) {
    await delivery.ack();
    if (++received === count) return;
  }
}

async function watchtowerThroughput(): Promise<void> {
  const hub = new WebSocketHub({ port: 0 });
  await hub.start();
  const publisher = new WebSocketTransport({ url: hub.url });
  const subscriber = new WebSocketTransport({ url: hub.url });
  const subscription = await subscriber.subscribe('bench.*');
  const consumed = consume(subscription, N);
  results.push(
    await timed(
      'client-hub-client throughput',
      N,
      () => publisher.publish(createEvent('bench.order', payload)),
      consumed,
    ),
  );
  await publisher.close();
  await subscriber.close();
  await hub.close();
}

async function busThroughput(): Promise<void> {
  const hub = new WebSocketHub({ port: 0 });
  await hub.start();
  const publisher = new WebSocketSubscriber({
    url: hub.url,
    backpressure: { maxQueueSize: 10_000, strategy: 'block' },
  });
  const subscriber = new WebSocketSubscriber({ url: hub.url });
  let received = 0;
  let done: () => void = () => undefined;
  const all = new Promise<void>((resolve) => (done = resolve));
  await subscriber.subscribe('bench.*', () => {
    if (++received === N) done();
  });
  results.push(
    await timed(
      'user-level (EventBus) throughput',
      N,
      () => publisher.publish('bench.order', payload),
      all,
    ),
  );
  await publisher.close();
  await subscriber.close();
  await hub.close();
}

async function rawRoundTrip(): Promise<void> {
  const relay = await rawRelay();
  const publisher = await open(relay.url);
  const subscriber = await open(relay.url);
  const samples: number[] = [];
  for (let i = 0; i < RTT_N; i++) {
    const arrived = new Promise<void>((resolve) => subscriber.once('message', () => resolve()));
    const started = performance.now();
    publisher.send(encodeEvent(createEvent('bench.rtt', payload)));
    await arrived;
    samples.push((performance.now() - started) * 1000);
  }
  samples.sort((a, b) => a - b);
  results.push({
    scenario: 'round trip',
    impl: 'raw',
    n: RTT_N,
    p50Us: Math.round(percentile(samples, 0.5)),
    p99Us: Math.round(percentile(samples, 0.99)),
  });
  publisher.terminate();
  subscriber.terminate();
  await relay.close();
}

async function watchtowerRoundTrip(): Promise<void> {
  const hub = new WebSocketHub({ port: 0 });
  await hub.start();
  const publisher = new WebSocketTransport({ url: hub.url });
  const subscriber = new WebSocketTransport({ url: hub.url });
  const subscription = await subscriber.subscribe('bench.rtt');
  const iterator = subscription[Symbol.asyncIterator]();
  await publisher.connect();
  const samples: number[] = [];
  for (let i = 0; i < RTT_N; i++) {
    const started = performance.now();
    void publisher.publish(createEvent('bench.rtt', payload));
    const next = await iterator.next();
    await (next.value as Delivery).ack();
    samples.push((performance.now() - started) * 1000);
  }
  samples.sort((a, b) => a - b);
  results.push({
    scenario: 'round trip',
    impl: 'watchtower',
    n: RTT_N,
    p50Us: Math.round(percentile(samples, 0.5)),
    p99Us: Math.round(percentile(samples, 0.99)),
  });
  await publisher.close();
  await subscriber.close();
  await hub.close();
}

/** Hub CPU per routed event with `clients` idle clients of 100 non-matching subscriptions each. */
async function fanOut(clients: number): Promise<void> {
  const hub = new WebSocketHub({ port: 0, maxConnections: clients + 10 });
  await hub.start();
  const idle: WebSocket[] = [];
  for (let c = 0; c < clients; c++) {
    const socket = await open(hub.url);
    for (let s = 0; s < 100; s++) {
      socket.send(JSON.stringify({ op: 'subscribe', id: `s${s}`, pattern: `noise.c${c}.s${s}.*` }));
    }
    idle.push(socket);
  }
  while (hub.stats().subscriptions < clients * 100) await new Promise((r) => setTimeout(r, 20));
  const publisher = new WebSocketTransport({ url: hub.url });
  const subscriber = new WebSocketTransport({ url: hub.url });
  const subscription = await subscriber.subscribe('bench.*');
  const count = Math.min(N, 20_000);
  const consumed = consume(subscription, count);
  results.push(
    await timed(
      `fan-out, ${clients} idle clients x 100 subscriptions`,
      count,
      () => publisher.publish(createEvent('bench.order', payload)),
      consumed,
    ),
  );
  for (const socket of idle) socket.terminate();
  await publisher.close();
  await subscriber.close();
  await hub.close({ timeoutMs: 2000 });
}

for (let round = 0; round < 2; round++) {
  await rawThroughput();
  await watchtowerThroughput();
}
await busThroughput();
await rawRoundTrip();
await watchtowerRoundTrip();
await fanOut(10);
await fanOut(1000);

for (const result of results) console.log(JSON.stringify({ transport: 'websocket', ...result }));
console.table(
  results.map((r) => ({
    scenario: r.scenario,
    impl: r.impl,
    n: r.n,
    'msgs/s': r.msgsPerSec ?? '',
    'CPU µs/event': r.cpuUsPerEvent === undefined ? '' : r.cpuUsPerEvent.toFixed(1),
    'p50 µs': r.p50Us ?? '',
    'p99 µs': r.p99Us ?? '',
  })),
);
