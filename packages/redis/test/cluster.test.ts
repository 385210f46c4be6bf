import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createEvent, type DeadLetter, type Event } from '@watchtower/core';
import { RedisTransport, type RedisConfig } from '../src/index.js';
import {
  FAST,
  PrivateRedisServer,
  ackAll,
  deleteKeysAndQuit,
  eventually,
  record,
  uniquePrefix,
} from './helpers.js';

/*
 * What can be tested of Redis Cluster on one machine: a one-node cluster (a private
 * redis-server with cluster mode on, owning all 16384 slots), reached through ioredis
 * `Cluster`. Multi-key commands (XREADGROUP over several streams) work only because every key
 * of the transport shares the prefix's hash tag.
 */

let server: PrivateRedisServer;
let prefix: string;
const transports: RedisTransport[] = [];

beforeAll(async () => {
  server = await PrivateRedisServer.start([
    '--cluster-enabled',
    'yes',
    '--cluster-config-file',
    'nodes.conf',
    '--cluster-announce-ip',
    '127.0.0.1',
  ]);
  const admin = new Redis(server.url);
  try {
    await admin.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
    await eventually(async () =>
      expect(await admin.call('CLUSTER', 'INFO')).toMatch(/cluster_state:ok/),
    );
  } finally {
    await admin.quit();
  }
});

afterAll(async () => {
  await server.stop();
});

afterEach(async () => {
  await Promise.allSettled(transports.splice(0).map((t) => t.close({ timeoutMs: 1000 })));
  await deleteKeysAndQuit(new Redis(server.url), prefix);
});

function clusterTransport(config: RedisConfig = {}): RedisTransport {
  const t = new RedisTransport({
    url: server.url,
    cluster: { nodes: [{ host: '127.0.0.1', port: server.port }] },
    prefix,
    ...FAST,
    ...config,
  });
  transports.push(t);
  return t;
}

describe('RedisTransport on a Redis Cluster', () => {
  it('reads several streams of a wildcard in one XREADGROUP because the prefix hash tag puts them in one slot', async () => {
    prefix = `{${uniquePrefix('cluster')}}`;
    const t = clusterTransport();
    await t.publish(createEvent('shop.order.created', { n: 1 }));
    const received = ackAll(await t.subscribe('shop.>', { group: 'shop' }));
    await t.publish(createEvent('shop.order.created', { n: 2 }));
    await t.publish(createEvent('shop.cart.emptied', { n: 3 }));
    await eventually(() =>
      expect(
        received.deliveries
          .map((d) => (d.kind === 'event' ? (d.event as Event<{ n: number }>).payload.n : 0))
          .sort(),
      ).toEqual([2, 3]),
    );
    const admin = new Redis(server.url);
    try {
      const slots = await Promise.all(
        [`${prefix}:shop.order.created`, `${prefix}:shop.cart.emptied`, `${prefix}:dlq`].map(
          (key) => admin.call('CLUSTER', 'KEYSLOT', key),
        ),
      );
      expect(new Set(slots).size).toBe(1);
    } finally {
      await admin.quit();
    }
  });

  it('writes a burst of publishes to several streams of one prefix in publish order per stream', async () => {
    prefix = `{${uniquePrefix('cluster')}}`;
    const t = clusterTransport();
    const types = ['cart.added', 'cart.removed', 'cart.checked.out'];
    const send = (from: number): Promise<void[]> =>
      Promise.all(
        Array.from({ length: 150 }, (_, i) =>
          t.publish(createEvent(types[(from + i) % 3] as string, { n: from + i })),
        ),
      );
    // The first burst connects on first use; the second goes out on the ready connection.
    await send(0);
    await send(150);
    const admin = new Redis(server.url);
    try {
      for (const [index, type] of types.entries()) {
        const entries = await admin.xrange(`${prefix}:${type}`, '-', '+');
        const ns = entries.map(
          ([, fields]) => (JSON.parse(fields[1] as string) as { payload: { n: number } }).payload.n,
        );
        expect(ns).toEqual(Array.from({ length: 300 }, (_, n) => n).filter((n) => n % 3 === index));
      }
    } finally {
      await admin.quit();
    }
  });

  it('announces a new stream in the pipeline of its first XADD: a wildcard subscription reads it within blockMs, not at discovery', async () => {
    prefix = `{${uniquePrefix('cluster')}}`;
    const subscriber = clusterTransport({ discoveryIntervalMs: 60_000 });
    const publisher = clusterTransport();
    const received = ackAll(await subscriber.subscribe('news.*'));
    await publisher.publish(createEvent('news.posted', { n: 1 }));
    await eventually(() => expect(received.deliveries).toHaveLength(1), FAST.blockMs + 2000);
    const admin = new Redis(server.url);
    try {
      expect(await admin.smembers(`${prefix}:registry:streams`)).toEqual([`${prefix}:news.posted`]);
    } finally {
      await admin.quit();
    }
  });

  it('redelivers a nacked entry and keeps the dead-letter stream on the cluster', async () => {
    prefix = `{${uniquePrefix('cluster')}}`;
    const t = clusterTransport();
    const { deliveries } = record(await t.subscribe('pay.made', { group: 'g' }));
    const event = createEvent('pay.made', { amount: 3 });
    await t.publish(event);
    await eventually(() => expect(deliveries).toHaveLength(1));
    await deliveries[0]?.nack();
    await eventually(() => expect(deliveries).toHaveLength(2));
    expect(deliveries[1]?.attempt).toBe(2);
    await t.publishToDlq(event, {
      message: 'gave up',
      code: 'HANDLER_FAILED',
      attempts: 2,
      failedAt: new Date().toISOString(),
      originalType: 'pay.made',
    });
    await deliveries[1]?.ack();
    const letters: DeadLetter[] = [];
    const handle = await t.consumeDlq((letter) => {
      letters.push(letter);
    });
    await eventually(() => expect(letters.map((l) => l.event?.id)).toEqual([event.id]));
    await handle.unsubscribe();
  });
});
