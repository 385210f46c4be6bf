import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createEvent, type Event } from '@watchtower/core';
import { RedisTransport, type RedisConfig } from '../src/index.js';
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

function transport(config: RedisConfig = {}): RedisTransport {
  prefix ??= uniquePrefix('reconnect');
  const t = new RedisTransport({ url: server.url, prefix, ...FAST, ...config });
  transports.push(t);
  return t;
}

function payloads(deliveries: ReturnType<typeof ackAll>['deliveries']): unknown[] {
  return deliveries.map((d) =>
    d.kind === 'event' ? (d.event as Event<{ n: number }>).payload.n : 'malformed',
  );
}

/** Resolves with `'settled'` when `promise` settles within `ms`, else with `'pending'`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise.then(
        () => 'settled',
        () => 'settled',
      ),
      new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve('pending'), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
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

  it('closes while the broker is down instead of waiting for it to come back', async () => {
    prefix = uniquePrefix('down');
    const t = transport();
    const own = ackAll(await t.subscribe('job.own'));
    const wild = ackAll(await t.subscribe('job.>'));
    ackAll(await t.subscribe('job.shared', { group: 'g' }));
    await t.publish(createEvent('job.own', { n: 1 }));
    await eventually(() => {
      expect(payloads(own.deliveries)).toEqual([1]);
      expect(payloads(wild.deliveries)).toEqual([1]);
    });
    await server.kill();
    try {
      await eventually(async () => expect((await t.healthCheck()).healthy).toBe(false));
      // The reading connections are now waiting to reconnect: close must not wait for them.
      expect(await settlesWithin(t.close({ timeoutMs: 300 }), 5000)).toBe('settled');
    } finally {
      await server.startProcess();
    }
  });

  it('unsubscribes while the broker is down instead of waiting for a read that cannot finish', async () => {
    prefix = uniquePrefix('unsub-down');
    // Commands of the shared connection fail fast while the broker is down.
    const t = transport({ redis: { maxRetriesPerRequest: 1 } });
    const received = ackAll(await t.subscribe('job.queued', { group: 'g' }));
    await t.publish(createEvent('job.queued', { n: 1 }));
    await eventually(() => expect(payloads(received.deliveries)).toEqual([1]));
    const sub = await t.subscribe('job.queued', { group: 'g' });
    await server.kill();
    try {
      await eventually(async () => expect((await t.healthCheck()).healthy).toBe(false));
      expect(await settlesWithin(sub.unsubscribe(), 5000)).toBe('settled');
    } finally {
      await server.startProcess();
    }
  });

  it('destroys its own group on a stream that discovery was adding while it unsubscribed', async () => {
    prefix = uniquePrefix('discovery-race');
    const t = transport();
    const admin = rawClient(server.url);
    try {
      const sub = await t.subscribe('late.>');
      const key = `${prefix}:late.arrival`;
      await admin.xadd(key, '*', 'event', '{}');
      // Writes wait while paused: discovery finds the stream (SCAN is a read) and its
      // XGROUP CREATE is held back until the unsubscribe has begun.
      await admin.call('CLIENT', 'PAUSE', '5000', 'WRITE');
      try {
        await eventually(async () =>
          expect(await admin.client('LIST')).toMatch(/flags=b [^\n]*cmd=xgroup\|create/),
        );
        const leaving = sub.unsubscribe();
        await admin.call('CLIENT', 'UNPAUSE');
        await leaving;
      } finally {
        await admin.call('CLIENT', 'UNPAUSE');
      }
      expect(await admin.xinfo('GROUPS', key)).toEqual([]);
    } finally {
      await admin.quit();
    }
  });
});
