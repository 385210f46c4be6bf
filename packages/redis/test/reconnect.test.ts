import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createEvent, type Event } from '@watchtower/core';
import { RedisTransport } from '../src/index.js';
import {
  FAST,
  PrivateRedisServer,
  ackAll,
  deleteKeysAndQuit,
  eventually,
  rawClient,
  uniquePrefix,
} from './helpers.js';

/*
 * Faults against a private redis-server on a random port: killed and started again (it comes
 * back empty: no persistence), or its client connections cut with CLIENT KILL.
 */

let server: PrivateRedisServer;
let prefix: string;
const transports: RedisTransport[] = [];

beforeAll(async () => {
  server = await PrivateRedisServer.start();
});

afterAll(async () => {
  await server.stop();
});

afterEach(async () => {
  await Promise.allSettled(transports.splice(0).map((t) => t.close({ timeoutMs: 1000 })));
  await deleteKeysAndQuit(rawClient(server.url), prefix);
});

function transport(): RedisTransport {
  prefix ??= uniquePrefix('reconnect');
  const t = new RedisTransport({ url: server.url, prefix, ...FAST });
  transports.push(t);
  return t;
}

function payloads(deliveries: ReturnType<typeof ackAll>['deliveries']): unknown[] {
  return deliveries.map((d) =>
    d.kind === 'event' ? (d.event as Event<{ n: number }>).payload.n : 'malformed',
  );
}

/** Publishes `{ n }` until the transport accepts it (it fails while the broker is down). */
async function publishEventually(t: RedisTransport, type: string, n: number): Promise<void> {
  await eventually(() => t.publish(createEvent(type, { n })), 15_000);
}

describe('RedisTransport reconnect', () => {
  it('resumes an exact, a wildcard and a group subscription after the broker restarts empty', async () => {
    prefix = uniquePrefix('restart');
    const pub = transport();
    const sub = transport();
    const exact = ackAll(await sub.subscribe('acct.opened'));
    const wild = ackAll(await sub.subscribe('acct.>'));
    const grouped = ackAll(await sub.subscribe('acct.opened', { group: 'ledger' }));
    await pub.publish(createEvent('acct.opened', { n: 1 }));
    await eventually(() => {
      expect(payloads(exact.deliveries)).toEqual([1]);
      expect(payloads(wild.deliveries)).toEqual([1]);
      expect(payloads(grouped.deliveries)).toEqual([1]);
    });

    await server.restart();
    await publishEventually(pub, 'acct.opened', 2);
    await publishEventually(pub, 'acct.closed', 3);
    await eventually(() => {
      expect(payloads(exact.deliveries)).toEqual([1, 2]);
      expect(payloads(wild.deliveries).sort()).toEqual([1, 2, 3]);
      expect(payloads(grouped.deliveries)).toEqual([1, 2]);
    }, 15_000);
    expect((await sub.healthCheck()).healthy).toBe(true);
  });

  it('resumes after its connections are cut, losing nothing published meanwhile', async () => {
    prefix = uniquePrefix('cut');
    const pub = transport();
    const sub = transport();
    const received = ackAll(await sub.subscribe('ping.sent', { group: 'g' }));
    await pub.publish(createEvent('ping.sent', { n: 1 }));
    await eventually(() => expect(payloads(received.deliveries)).toEqual([1]));

    const admin = rawClient(server.url);
    try {
      // Every client but the admin connection itself: the publisher's, the reader's and the acker's.
      await admin.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    } finally {
      await admin.quit();
    }
    for (let n = 2; n <= 5; n++) await publishEventually(pub, 'ping.sent', n);
    await eventually(() => expect(payloads(received.deliveries)).toEqual([1, 2, 3, 4, 5]), 15_000);
  });

  it('reports unhealthy while the broker is down and healthy once it is back', async () => {
    prefix = uniquePrefix('health');
    const t = transport();
    await t.connect();
    expect((await t.healthCheck()).healthy).toBe(true);
    await server.kill();
    try {
      await eventually(async () => expect((await t.healthCheck()).healthy).toBe(false));
    } finally {
      await server.startProcess();
    }
    await eventually(async () => expect((await t.healthCheck()).healthy).toBe(true), 15_000);
  });
});
