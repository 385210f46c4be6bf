import { afterEach, expect, it } from 'vitest';
import { createEvent, type Delivery } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { RabbitMQTransport } from '../src/index.js';
import {
  AMQP_URL,
  TcpProxy,
  connectionBlockedFrame,
  deleteTopology,
  selfSignedCertificate,
  uniqueName,
} from './helpers.js';

/*
 * What the connection passes through and reports: TLS (`amqps://`, through a proxy that
 * terminates TLS in front of the plain local broker) with the socket options given, and the
 * broker's `connection.blocked` / `connection.unblocked` (sent by the proxy as the broker sends
 * them on a memory or disk alarm) in `healthCheck`.
 */

let proxy: TcpProxy | undefined;
let exchange = '';
const closers: (() => Promise<void>)[] = [];

afterEach(async () => {
  await Promise.allSettled(closers.splice(0).map((close) => close()));
  await proxy?.stop();
  proxy = undefined;
  await deleteTopology([exchange]);
});

it('connects over amqps:// with the TLS socket options given, and refuses a certificate it cannot trust', async () => {
  const tls = await selfSignedCertificate();
  proxy = await TcpProxy.start(AMQP_URL, { tls });
  exchange = uniqueName('tls');
  const url = proxy.url(AMQP_URL).replace(/^amqp:/, 'amqps:');
  const trusting = new RabbitMQTransport({
    url,
    exchange,
    socketOptions: { ca: [tls.cert], servername: 'localhost' },
  });
  closers.push(() => trusting.close({ timeoutMs: 1000 }));
  const sub = await trusting.subscribe('over.tls');
  await trusting.publish(createEvent('over.tls', { secret: true }));
  const delivery = (await sub[Symbol.asyncIterator]().next()).value as Delivery;
  expect(delivery.kind === 'event' && delivery.event.payload).toEqual({ secret: true });
  await delivery.ack();
  // Without the CA the handshake fails: a CONNECTION error naming the cause.
  const doubting = new RabbitMQTransport({ url, exchange, reconnectAttempts: 0 });
  closers.push(() => doubting.close({ timeoutMs: 1000 }));
  await expect(doubting.connect()).rejects.toMatchObject({ code: 'CONNECTION' });
});

it('reports a broker that blocks publishing as unhealthy (state blocked) until it unblocks', async () => {
  proxy = await TcpProxy.start(AMQP_URL);
  exchange = uniqueName('blk');
  const t = new RabbitMQTransport({ url: proxy.url(AMQP_URL), exchange });
  closers.push(() => t.close({ timeoutMs: 1000 }));
  await t.connect();
  expect((await t.healthCheck()).healthy).toBe(true);
  proxy.injectToClients(connectionBlockedFrame('low on memory'));
  await waitFor(async () => (await t.healthCheck()).state === 'blocked', {
    message: 'blocked',
  });
  expect(await t.healthCheck()).toMatchObject({
    healthy: false,
    message: expect.stringContaining('low on memory') as unknown,
  });
  proxy.injectToClients(connectionBlockedFrame(undefined));
  await waitFor(async () => (await t.healthCheck()).healthy, { message: 'unblocked' });
});
