/**
 * WebSocket scenarios: client -> hub -> client through `WebSocketHub` and two
 * `WebSocketTransport`s, beside raw `ws` doing the same (a raw relay server that forwards every
 * frame to the other clients, a raw publisher and a raw subscriber). Both sides build the event
 * with createEvent, send it with the core codec and decode it on arrival, so the difference is
 * what the transport, its protocol (subscriptions, acks) and the hub add.
 *
 * Publisher, hub (or relay) and subscriber share this process: `cpu µs/ev` is the whole path's.
 * Latency is per event, from its send to the subscriber. The hub fan-out rows have no raw side
 * (a relay has no subscriptions): they show the hub's cost per event with 10 and with 1 000 idle
 * clients of 100 non-matching subscriptions each, which should be about the same.
 */
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { createEvent, decodeEvent, encodeEvent, type Delivery } from '@watchtower/core';
import { WebSocketHub, WebSocketTransport } from '@watchtower/websocket';
import { now, startTimer, type Measurement, type Scenario } from './harness.js';

const TYPE = 'user.created';
/** Events sent beyond the last window fully received, at most. */
const WINDOW = 500;
const TIMEOUT_MS = 60_000;
const SUBSCRIPTIONS_PER_IDLE_CLIENT = 100;

const payload = (n: number): { id: string; name: string; n: number } => ({
  id: `user-${n}`,
  name: 'Ada Lovelace',
  n,
});

/** Opens a raw `ws` client; resolves once it is open. */
export async function openSocket(url: string): Promise<WebSocket> {
  const socket = new WebSocket(url);
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  return socket;
}

/** A raw relay server, what a user writes with `ws` alone. */
export interface RawRelay {
  url: string;
  close(): Promise<void>;
}

/** A raw `ws` relay: every frame from one client goes to every other client. */
export async function startRawRelay(): Promise<RawRelay> {
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

/** The bytes of a frame as text, whatever form `ws` handed it in. */
export function frameText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data as ArrayBuffer).toString('utf8');
}

/**
 * Counts arrivals and records each one's latency from `sentAt[n]`; `reach(k)` resolves once `k`
 * arrived (no polling, so the waiting side takes no CPU from the path under test).
 */
class Arrivals {
  readonly sentAt: Float64Array;
  readonly latenciesUs: number[] = [];
  #count = 0;
  #target = Number.POSITIVE_INFINITY;
  #resolve: (() => void) | undefined;

  constructor(count: number) {
    this.sentAt = new Float64Array(count);
  }

  arrived(n: number): void {
    this.latenciesUs.push((now() - (this.sentAt[n] as number)) * 1000);
    if (++this.#count >= this.#target) {
      this.#target = Number.POSITIVE_INFINITY;
      this.#resolve?.();
    }
  }

  reach(k: number, what: string): Promise<void> {
    if (this.#count >= k) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`benchmark timed out waiting for ${what} (${this.#count} of ${k})`)),
        TIMEOUT_MS,
      );
      this.#target = k;
      this.#resolve = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

/**
 * The load driver of both sides: `send(i)` for each event, and after each window of `window`
 * events, a wait until the window before it has fully arrived (so at most two windows are in
 * flight). One at a time (`window` 1), each event waits for its own arrival. A returned promise
 * (a watchtower publish, resolved on the hub's ack) is awaited before the timer stops.
 */
async function pump(
  count: number,
  window: number,
  arrivals: Arrivals,
  send: (i: number) => Promise<void> | void,
): Promise<Measurement> {
  const acks: Promise<void>[] = [];
  const stop = startTimer();
  for (let i = 0; i < count; i++) {
    arrivals.sentAt[i] = now();
    const sent = send(i);
    if (sent !== undefined) {
      if (window === 1) await sent;
      else acks.push(sent);
    }
    if (window === 1) await arrivals.reach(i + 1, 'WebSocket events');
    else if (i % window === window - 1) await arrivals.reach(i + 1 - window, 'WebSocket events');
  }
  await arrivals.reach(count, 'WebSocket events');
  await Promise.all(acks);
  const { elapsedMs, cpuUs } = stop();
  return { n: count, elapsedMs, cpuUs, latenciesUs: arrivals.latenciesUs };
}

async function rawRun(count: number, window: number): Promise<Measurement> {
  const relay = await startRawRelay();
  const [publisher, subscriber] = await Promise.all([openSocket(relay.url), openSocket(relay.url)]);
  const arrivals = new Arrivals(count);
  subscriber.on('message', (data) => {
    // What the transport does with a frame: decode the event, match its type.
    const event = decodeEvent(frameText(data));
    if (event.type === TYPE) arrivals.arrived((event.payload as { n: number }).n);
  });
  const measured = await pump(count, window, arrivals, (i) =>
    publisher.send(encodeEvent(createEvent(TYPE, payload(i)))),
  );
  publisher.terminate();
  subscriber.terminate();
  await relay.close();
  return measured;
}

/** Hands every delivery of `subscription` to `arrivals` and acks it. */
async function consume(subscription: AsyncIterable<Delivery>, arrivals: Arrivals): Promise<void> {
  for await (const delivery of subscription) {
    if (delivery.kind === 'event') arrivals.arrived((delivery.event.payload as { n: number }).n);
    await delivery.ack();
  }
}

async function watchtowerRun(
  count: number,
  window: number,
  hub?: WebSocketHub,
): Promise<Measurement> {
  const own = hub === undefined;
  const server = hub ?? new WebSocketHub({ port: 0 });
  if (own) await server.start();
  const publisher = new WebSocketTransport({ url: server.url });
  const subscriber = new WebSocketTransport({ url: server.url });
  const arrivals = new Arrivals(count);
  const subscription = await subscriber.subscribe('user.*');
  const consuming = consume(subscription, arrivals);
  await publisher.connect();
  const measured = await pump(count, window, arrivals, (i) =>
    publisher.publish(createEvent(TYPE, payload(i))),
  );
  await Promise.all([publisher.close(), subscriber.close()]);
  await consuming;
  if (own) await server.close({ timeoutMs: 2000 });
  return measured;
}

/**
 * Connects `clients` raw clients that each subscribe to 100 patterns no event of the run
 * matches, and resolves once the hub confirmed every subscription.
 */
async function idleClients(hub: WebSocketHub, clients: number): Promise<WebSocket[]> {
  const sockets: WebSocket[] = [];
  for (let first = 0; first < clients; first += 50) {
    const batch = Array.from({ length: Math.min(50, clients - first) }, async (_, k) => {
      const c = first + k;
      const socket = await openSocket(hub.url);
      let confirmed = 0;
      const all = new Promise<void>((resolve) => {
        socket.on('message', (data) => {
          const frame = JSON.parse(frameText(data)) as { op?: string };
          if (frame.op === 'subscribed' && ++confirmed === SUBSCRIPTIONS_PER_IDLE_CLIENT) resolve();
        });
      });
      for (let s = 0; s < SUBSCRIPTIONS_PER_IDLE_CLIENT; s++) {
        socket.send(
          JSON.stringify({ op: 'subscribe', id: `s${s}`, pattern: `idle.c${c}.s${s}.*` }),
        );
      }
      await all;
      return socket;
    });
    sockets.push(...(await Promise.all(batch)));
  }
  return sockets;
}

/** The throughput run on a hub that also holds `clients` idle clients (set up untimed). */
async function fanOutRun(count: number, clients: number): Promise<Measurement> {
  const hub = new WebSocketHub({ port: 0, maxConnections: clients + 10 });
  await hub.start();
  const idle = await idleClients(hub, clients);
  if (hub.stats().subscriptions < clients * SUBSCRIPTIONS_PER_IDLE_CLIENT) {
    throw new Error('the idle clients of the fan-out benchmark are not all subscribed');
  }
  const measured = await watchtowerRun(count, WINDOW, hub);
  for (const socket of idle) socket.terminate();
  await hub.close({ timeoutMs: 2000 });
  return measured;
}

export function websocketScenarios(scale: number): Scenario[] {
  const at = (count: number): number => Math.max(WINDOW, Math.round(count * scale));
  const one = (count: number): number => Math.max(1, Math.round(count * scale));
  return [
    {
      name: `websocket client->hub->client, ${WINDOW} in flight`,
      transport: 'websocket',
      raw: () => rawRun(at(30_000), WINDOW),
      watchtower: () => watchtowerRun(at(30_000), WINDOW),
    },
    {
      name: 'websocket round trip, one at a time',
      transport: 'websocket',
      raw: () => rawRun(one(2000), 1),
      watchtower: () => watchtowerRun(one(2000), 1),
    },
    {
      name: 'websocket hub fan-out, 10 idle x 100 subs',
      transport: 'websocket',
      watchtower: () => fanOutRun(at(20_000), 10),
    },
    {
      name: 'websocket hub fan-out, 1000 idle x 100 subs',
      transport: 'websocket',
      watchtower: () => fanOutRun(at(20_000), 1000),
    },
  ];
}
