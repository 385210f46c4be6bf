import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import {
  ErrorCode,
  createEvent,
  isWatchtowerError,
  type Delivery,
  type SubscriptionHandle,
  type TransportSubscription,
} from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { CLOSE_MARGIN_MS } from '@watchtower/core/transport-kit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NatsTransport, type NatsMode } from '../src/index.js';
import { drain, testConfig, testNames } from './helpers.js';
import { PrivateNatsServer } from './nats-server.js';

/*
 * A server that stops answering (a paused process: connections stay open, nothing is read or
 * answered) or goes away must not hold up close({ timeoutMs }) or unsubscribe(): they keep
 * their limits, with subscriptions, a dead-letter consumer and events in flight. Each test
 * has a private nats-server of its own, since it pauses or kills it.
 */

/** The transports' requestTimeoutMs, which also bounds unsubscribe(). */
const REQUEST_TIMEOUT_MS = 1000;
const CLOSE_TIMEOUT_MS = 300;
/** Slack for a loaded CI machine (two shared cores). */
const SLACK_MS = 1500;

let server: PrivateNatsServer;
let transport: NatsTransport | undefined;

beforeEach(async () => {
  server = await PrivateNatsServer.start();
});
afterEach(async () => {
  server.resume();
  await transport?.close({ timeoutMs: CLOSE_TIMEOUT_MS }).catch(() => undefined);
  transport = undefined;
  await server.stop();
});

/** A transport with work under way: two subscriptions holding unsettled deliveries, a DLQ consumer, a publisher. */
async function busyTransport(mode: NatsMode) {
  const created = new NatsTransport(
    testConfig(mode, testNames(), {
      servers: server.url,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      // The connection must not be given up while the server is away.
      maxReconnectAttempts: -1,
    }),
  );
  transport = created;
  await created.connect();
  const plain = await created.subscribe('work.*');
  const group = await created.subscribe('work.*', { group: 'workers' });
  const held: Delivery[] = [];
  // Every other delivery is acked; the rest stay in flight.
  const loops = [plain, group].map((sub) =>
    drain(sub, async (delivery) => {
      held.push(delivery);
      if (held.length % 2 === 0) await delivery.ack();
    }).catch(() => undefined),
  );
  const letters: unknown[] = [];
  const dlq = await created.consumeDlq((letter) => {
    letters.push(letter);
  });
  await created.publishToDlq(createEvent('work.failed', {}), {
    message: 'boom',
    code: ErrorCode.HANDLER_FAILED,
    attempts: 1,
    failedAt: new Date().toISOString(),
    originalType: 'work.failed',
  });
  for (let i = 0; i < 40; i++) await created.publish(createEvent('work.item', { i }));
  await waitFor(() => held.length >= 40 && letters.length === 1, {
    message: 'deliveries and the dead letter arrived',
  });
  // Goes on publishing while the server stops answering, until close.
  let publishing = true;
  let started = 0;
  let settled = 0;
  const publisher = (async () => {
    for (let i = 0; publishing; i++) {
      started++;
      await created.publish(createEvent('work.item', { i })).catch(() => undefined);
      settled++;
      await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  /**
   * Resolves once a publish is outstanding at the paused server: one written since `since`
   * publishes had started (core), or one whose answer never came (JetStream).
   */
  const publishedInto = (since: number): Promise<unknown> =>
    waitFor(() => started > since || started > settled, {
      message: 'a publish went to the paused server',
    });
  const stopPublishing = async (): Promise<void> => {
    publishing = false;
    await publisher;
  };
  return {
    transport: created,
    plain,
    group,
    dlq,
    loops,
    stopPublishing,
    publishedInto,
    started: () => started,
  };
}

/**
 * True when some TCP connection to `port` on this host is established (Linux `/proc/net/tcp`;
 * elsewhere, true at once): the client's connect reached the kernel of a paused server.
 */
function connectedTo(port: number): boolean {
  let table: string;
  try {
    table = readFileSync('/proc/net/tcp', 'utf8');
  } catch {
    return true;
  }
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  return table
    .split('\n')
    .slice(1)
    .some((row) => {
      const [, local, , state] = row.trim().split(/\s+/);
      return local?.endsWith(`:${hex}`) === true && state === '01';
    });
}

async function elapsedMs(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

async function expectClosedWithin(target: NatsTransport, boundMs: number): Promise<void> {
  const elapsed = await elapsedMs(() => target.close({ timeoutMs: CLOSE_TIMEOUT_MS }));
  expect(elapsed).toBeLessThan(boundMs);
  expect(target.state).toBe('closed');
  expect(await target.healthCheck()).toMatchObject({ healthy: false, state: 'closed' });
  await expect(target.publish(createEvent('work.item', {}))).rejects.toSatisfy((error) =>
    isWatchtowerError(error, ErrorCode.CLOSED),
  );
}

async function expectUnsubscribedWithin(
  handles: readonly (TransportSubscription | SubscriptionHandle)[],
  boundMs: number,
): Promise<void> {
  const elapsed = await elapsedMs(() => Promise.all(handles.map((h) => h.unsubscribe())));
  expect(elapsed).toBeLessThan(boundMs);
}

const CLOSE_BOUND_MS = CLOSE_TIMEOUT_MS + CLOSE_MARGIN_MS + SLACK_MS;
const UNSUBSCRIBE_BOUND_MS = REQUEST_TIMEOUT_MS + SLACK_MS;

describe.each<NatsMode>(['core', 'jetstream'])('shutdown deadline (%s)', (mode) => {
  it('close({ timeoutMs }) resolves in time when the server stops answering', async () => {
    const busy = await busyTransport(mode);
    const atPause = busy.started();
    server.pause();
    // The paused server holds something written to it.
    await busy.publishedInto(atPause);
    await expectClosedWithin(busy.transport, CLOSE_BOUND_MS);
    await busy.stopPublishing();
    await Promise.all(busy.loops);
  });

  it('unsubscribe() resolves within requestTimeoutMs when the server stops answering', async () => {
    const busy = await busyTransport(mode);
    server.pause();
    await expectUnsubscribedWithin([busy.plain, busy.group, busy.dlq], UNSUBSCRIBE_BOUND_MS);
    await Promise.all(busy.loops);
    await expectClosedWithin(busy.transport, CLOSE_BOUND_MS);
    await busy.stopPublishing();
  });

  it('close({ timeoutMs }) resolves in time when the server is killed mid-stream', async () => {
    const busy = await busyTransport(mode);
    await server.kill();
    await expectClosedWithin(busy.transport, CLOSE_BOUND_MS);
    await busy.stopPublishing();
    await Promise.all(busy.loops);
  });

  it('unsubscribe() resolves within requestTimeoutMs when the server is killed mid-stream', async () => {
    const busy = await busyTransport(mode);
    await server.kill();
    await expectUnsubscribedWithin([busy.plain, busy.group, busy.dlq], UNSUBSCRIBE_BOUND_MS);
    await Promise.all(busy.loops);
    await expectClosedWithin(busy.transport, CLOSE_BOUND_MS);
    await busy.stopPublishing();
  });
});

describe('shutdown deadline (connecting)', () => {
  it('close({ timeoutMs }) resolves in time while connect() waits for a server that stopped answering', async () => {
    server.pause();
    const created = new NatsTransport(
      testConfig('jetstream', testNames(), { servers: server.url, connectTimeoutMs: 5000 }),
    );
    transport = created;
    const connecting = created.connect().then(
      () => 'connected',
      (error: unknown) => error,
    );
    // The TCP connection is accepted by the kernel; the server never says hello.
    await waitFor(() => connectedTo(server.port), { message: 'the client connected to the port' });
    const elapsed = await elapsedMs(() => created.close({ timeoutMs: CLOSE_TIMEOUT_MS }));
    expect(elapsed).toBeLessThan(CLOSE_BOUND_MS);
    server.resume();
    await expect(connecting).resolves.toSatisfy((error) =>
      isWatchtowerError(error, ErrorCode.CLOSED),
    );
    expect(created.state).toBe('closed');
  });
});
