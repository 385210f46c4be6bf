import { afterEach, expect, it } from 'vitest';
import { createEvent } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { CLOSE_MARGIN_MS } from '@watchtower/core/transport-kit';
import { RabbitMQTransport } from '../src/index.js';
import { AMQP_URL, TcpProxy, deleteTopology, uniqueName } from './helpers.js';

/*
 * close({ timeoutMs }) and unsubscribe() keep their time limits when the broker stops
 * answering: a TCP proxy holds every byte both ways (the sockets stay open, as with a paused
 * broker process), with deliveries in flight and publishes unconfirmed.
 */

const CLOSE_TIMEOUT_MS = 300;
const UNSUBSCRIBE_TIMEOUT_MS = 400;
/** CI shares two cores: room for a slow scheduler, far below what a wait on the broker takes. */
const SLACK_MS = 1500;

let proxy: TcpProxy | undefined;
let exchange = '';
const closers: (() => Promise<void>)[] = [];

afterEach(async () => {
  proxy?.resume();
  await Promise.allSettled(closers.splice(0).map((close) => close()));
  await proxy?.stop();
  await deleteTopology([exchange]);
});

async function setUp(): Promise<RabbitMQTransport> {
  proxy = await TcpProxy.start(AMQP_URL);
  exchange = uniqueName('sd');
  const t = new RabbitMQTransport({
    url: proxy.url(),
    exchange,
    connectionName: `${exchange}-t`,
    // No heartbeat: the held connection is never given up on by itself during the test.
    heartbeatSeconds: 0,
    unsubscribeTimeoutMs: UNSUBSCRIBE_TIMEOUT_MS,
  });
  closers.push(() => t.close({ timeoutMs: 0 }));
  await t.connect();
  return t;
}

async function timeOf(promise: Promise<unknown>): Promise<number> {
  const started = performance.now();
  await promise.catch(() => undefined);
  return performance.now() - started;
}

it('closes within timeoutMs while the broker holds every byte, and an unconfirmed publish rejects with CLOSED', async () => {
  const t = await setUp();
  const own = await t.subscribe('paused.item');
  const group = await t.subscribe('paused.item', { group: 'g' });
  await t.publish(createEvent('paused.item', { n: 1 }));
  const taken = await own[Symbol.asyncIterator]().next();
  expect(taken.done).toBe(false);
  void group;
  (proxy as TcpProxy).pause();
  const unconfirmed = t.publish(createEvent('paused.item', { n: 2 })).catch((e: unknown) => e);
  const elapsed = await timeOf(t.close({ timeoutMs: CLOSE_TIMEOUT_MS }));
  expect(elapsed).toBeLessThan(CLOSE_TIMEOUT_MS + CLOSE_MARGIN_MS + SLACK_MS);
  expect(await unconfirmed).toMatchObject({ code: 'CLOSED' });
  expect((await t.healthCheck()).state).toBe('closed');
});

it('unsubscribes within unsubscribeTimeoutMs while the broker holds every byte', async () => {
  const t = await setUp();
  const sub = await t.subscribe('paused.sub', { group: 'g' });
  (proxy as TcpProxy).pause();
  const elapsed = await timeOf(sub.unsubscribe());
  expect(elapsed).toBeLessThan(UNSUBSCRIBE_TIMEOUT_MS + SLACK_MS);
  // The stop goes on in the background; close still keeps its own limit.
  const closing = await timeOf(t.close({ timeoutMs: CLOSE_TIMEOUT_MS }));
  expect(closing).toBeLessThan(CLOSE_TIMEOUT_MS + CLOSE_MARGIN_MS + SLACK_MS);
});

it('answers healthCheck within healthCheckTimeoutMs while the broker holds every byte', async () => {
  const t = await setUp();
  (proxy as TcpProxy).pause();
  let health: Awaited<ReturnType<RabbitMQTransport['healthCheck']>> | undefined;
  const elapsed = await timeOf(
    t.healthCheck().then((h) => {
      health = h;
    }),
  );
  expect(health).toMatchObject({ healthy: false });
  expect(elapsed).toBeLessThan(2000 + SLACK_MS);
  await waitFor(() => health !== undefined);
});
