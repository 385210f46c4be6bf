/**
 * What the replicas of a Redis Cluster give the transport, on a private cluster of 3 masters
 * and 3 replicas: `waitReplicas` (a write confirmed only once `WAIT` says the replicas of its
 * master have it, refused with `ReplicationTimeoutError` when fewer do), and the connection
 * reports around a master failure (lost while the master of the transport's slot is down,
 * restored once its replica is promoted; nothing for a master of another slot).
 */
import { describe, expect, it } from 'vitest';
import {
  ErrorCode,
  createEvent,
  type ConnectionChange,
  type DeadLetterReason,
  type WatchtowerError,
} from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import {
  RedisSubscriber,
  ReplicationTimeoutError,
  defaultDlqKey,
  streamKey,
} from '../src/index.js';
import { FAST, uniquePrefix } from './helpers.js';
import { clusterTests } from './cluster-tests.js';
import { keySlot, type RedisClusterNode } from './redis-cluster.js';

const { cluster, transport, closeAfterTest } = clusterTests({ nodeTimeoutMs: 2000 });

/** The entries of `key` as the replica on `port` has them (`READONLY` lets it answer). */
async function lengthOnReplica(port: number, key: string): Promise<number> {
  const client = cluster().node(port).client();
  try {
    await client.connect();
    await client.call('READONLY');
    return await client.xlen(key);
  } finally {
    client.disconnect();
  }
}

/** The master and the replica serving the slot of `prefix` now. */
async function ownersOf(prefix: string): Promise<{ master: number; replica: number }> {
  const { master, replica } = await cluster().ownerOf(keySlot(prefix));
  return { master: master.port, replica: replica.port };
}

/** Kills `node`, runs `during`, and starts it again whatever happened, the cluster formed. */
async function whileDown(node: RedisClusterNode, during: () => Promise<void>): Promise<void> {
  await node.kill();
  try {
    await during();
  } finally {
    await node.start();
    await cluster().waitFormed();
  }
}

async function rejection(work: Promise<unknown>): Promise<WatchtowerError> {
  try {
    await work;
  } catch (error) {
    return error as WatchtowerError;
  }
  throw new Error('expected a rejection');
}

describe('waitReplicas on a Redis Cluster of 3 masters with a replica each', () => {
  it('confirms publishes, alone and batched, only once the replica of their master has them', async () => {
    const prefix = `{${uniquePrefix('wait')}}`;
    const t = transport(prefix, { waitReplicas: 1 });
    const key = streamKey(prefix, 'order.placed');
    await t.publish(createEvent('order.placed', { n: 0 }));
    const { replica } = await ownersOf(prefix);
    // Read right after the confirmation: WAIT answered, so the replica has applied it.
    expect(await lengthOnReplica(replica, key)).toBe(1);
    await Promise.all(
      Array.from({ length: 50 }, (_, i) => t.publish(createEvent('order.placed', { n: i + 1 }))),
    );
    expect(await lengthOnReplica(replica, key)).toBe(51);
  });

  it('rejects a publish with a retryable TIMEOUT naming the count when fewer replicas than waitReplicas acknowledge it', async () => {
    const prefix = `{${uniquePrefix('wait')}}`;
    // Each master has one replica: two can never acknowledge. The wait is long enough for
    // the one there is to answer even on a loaded machine.
    const t = transport(prefix, { waitReplicas: 2, waitTimeoutMs: 2000 });
    const error = await rejection(t.publish(createEvent('order.placed', { n: 1 })));
    expect(error).toBeInstanceOf(ReplicationTimeoutError);
    expect(error).toMatchObject({
      code: 'TIMEOUT',
      retryable: true,
      acknowledged: 1,
      required: 2,
      timeoutMs: 2000,
    });
    // The master has the entry (and the replica too, here): only the confirmation failed.
    const { replica } = await ownersOf(prefix);
    expect(await lengthOnReplica(replica, streamKey(prefix, 'order.placed'))).toBe(1);
  });

  it('rejects publishes and dead letters while the replica of their master is down, and confirms them again once it is back', async () => {
    const prefix = `{${uniquePrefix('wait')}}`;
    const t = transport(prefix, { waitReplicas: 1, waitTimeoutMs: 1000 });
    await t.publish(createEvent('order.placed', { n: 0 }));
    const { replica } = await ownersOf(prefix);
    const reason: DeadLetterReason = {
      message: 'handler failed',
      code: ErrorCode.HANDLER_FAILED,
      attempts: 1,
      failedAt: new Date().toISOString(),
      originalType: 'order.placed',
    };
    await whileDown(cluster().node(replica), async () => {
      const published = await rejection(t.publish(createEvent('order.placed', { n: 1 })));
      expect(published).toMatchObject({ code: 'TIMEOUT', acknowledged: 0, required: 1 });
      const letter = createEvent('order.placed', { n: 2 });
      const dead = await rejection(t.publishToDlq(letter, reason));
      expect(dead).toMatchObject({ code: 'TIMEOUT', acknowledged: 0, required: 1 });
    });
    // Back: once it has caught up with what the master took meanwhile (a resync can take a
    // while on a loaded machine), writes are confirmed again.
    await waitFor(
      async () =>
        (await lengthOnReplica(replica, streamKey(prefix, 'order.placed'))) === 2 &&
        (await lengthOnReplica(replica, defaultDlqKey(prefix))) === 1,
      { timeoutMs: 20_000, intervalMs: 100, message: 'the replica caught up' },
    );
    await t.publish(createEvent('order.placed', { n: 3 }));
    await t.publishToDlq(createEvent('order.placed', { n: 4 }), reason);
    expect(await lengthOnReplica(replica, streamKey(prefix, 'order.placed'))).toBe(3);
    expect(await lengthOnReplica(replica, defaultDlqKey(prefix))).toBe(2);
  });
});

describe('connection reports on a Redis Cluster when a master fails', () => {
  it('reports lost (and unhealthy) while the master of its slot is down and restored once the replica is promoted, and the bus confirms what was published meanwhile', async () => {
    const prefix = `{${uniquePrefix('failover')}}`;
    const bus = new RedisSubscriber({
      cluster: { nodes: cluster().startupNodes },
      prefix,
      ...FAST,
      logger: { warn: () => {}, error: () => {} },
    });
    closeAfterTest(() => bus.close({ timeoutMs: 2000 }));
    const changes: ConnectionChange['state'][] = [];
    bus.transport.on('connection', (change) => changes.push(change.state));
    await bus.publish('order.placed', { n: 0 });
    const { master, replica } = await ownersOf(prefix);
    let during: Promise<unknown>[] = [];
    await whileDown(cluster().node(master), async () => {
      await waitFor(() => changes.includes('lost'), { timeoutMs: 10_000, message: 'lost' });
      expect(await bus.transport.healthCheck()).toMatchObject({
        healthy: false,
        state: 'reconnecting',
      });
      during = Array.from({ length: 10 }, (_, i) => bus.publish('order.placed', { n: i + 1 }));
      await waitFor(() => changes.includes('restored'), {
        timeoutMs: 20_000,
        message: 'restored after the promotion',
      });
      // Asked of the promoted node itself: the other nodes learn of the promotion by gossip,
      // and on a loaded machine that can come a moment after the transport's probe is answered.
      const promoted = cluster().node(replica);
      expect((await cluster().masterOf(keySlot(prefix), promoted))?.port).toBe(replica);
      await Promise.all(during);
    });
    expect(changes).toEqual(['lost', 'restored']);
    expect(bus.stats().publishFailed).toBe(0);
    expect((await bus.transport.healthCheck()).healthy).toBe(true);
    expect(await lengthOnReplica(master, streamKey(prefix, 'order.placed'))).toBe(11);
  });

  it('reports nothing when a master of another slot fails and its replica takes over', async () => {
    const prefix = `{${uniquePrefix('other')}}`;
    const t = transport(prefix);
    const changes: ConnectionChange['state'][] = [];
    t.on('connection', (change) => changes.push(change.state));
    await t.publish(createEvent('order.placed', { n: 0 }));
    const own = await ownersOf(prefix);
    const other = (await cluster().masters()).find((m) => m.port !== own.master);
    if (other === undefined) throw new Error('no other master');
    const slot = other.slots[0]?.[0] as number;
    await whileDown(cluster().node(other.port), async () => {
      await waitFor(
        async () => {
          const now = await cluster().masterOf(slot);
          return now !== undefined && now.port !== other.port;
        },
        { timeoutMs: 20_000, message: 'the other replica promoted' },
      );
      await t.publish(createEvent('order.placed', { n: 1 }));
    });
    await t.publish(createEvent('order.placed', { n: 2 }));
    expect(changes).toEqual([]);
  });
});
