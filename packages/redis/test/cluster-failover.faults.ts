/**
 * Failover on a Redis Cluster of 3 masters and 3 replicas (`make test-faults`): 20 000 events
 * through a group of two consumer processes while the master holding the stream's slot is
 * killed (SIGKILL) and its replica promoted by the cluster (after `cluster-node-timeout`), the
 * old master started again 5 s later (it rejoins as a replica). It fails on any confirmed
 * event that no consumer handled; the counts and the pause go into docs/SCALING.md.
 */
import { fileURLToPath } from 'node:url';
import { Cluster } from 'ioredis';
import {
  FAULT_RUN_EVENTS,
  expectNothingLost,
  faultConsumerCommand,
  pauseAround,
  runFaultRun,
  type FaultRunResult,
  type FaultStep,
} from '@watchtower/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisSubscriber, streamKey, type RedisSubscriberOptions } from '../src/index.js';
import { uniquePrefix } from './helpers.js';
import { PrivateRedisCluster, keySlot, pollUntil, type RedisClusterNode } from './redis-cluster.js';

const SUBSCRIBER_MODULE = fileURLToPath(new URL('../src/index.ts', import.meta.url));

/** The stream's master killed at 30 % of the events, started again 5 s later. */
const MASTER_KILLED: readonly FaultStep[] = [{ at: 0.3, kind: 'restart-broker', downMs: 5000 }];

let cluster: PrivateRedisCluster;
beforeAll(async () => {
  cluster = await PrivateRedisCluster.start({ nodeTimeoutMs: 2000 });
}, 60_000);
afterAll(async () => {
  await cluster.stop();
});

/** Publish settings that ride through a failover: retries spanning about 5 s. */
const RIDE_THROUGH = {
  retry: { maxAttempts: 8, minDelayMs: 100, maxDelayMs: 1000 },
} as const;

/**
 * One run: the master of the stream's slot killed at 30 %, its replica promoted while it is
 * down, the old master started again. `bus` are the publisher's bus options.
 */
async function failover(
  name: string,
  bus: Partial<RedisSubscriberOptions>,
): Promise<FaultRunResult> {
  const prefix = `{${uniquePrefix('failover')}}`;
  const slot = keySlot(prefix);
  // Library defaults, except a shorter claim idle time, so that what a consumer held when
  // its reads failed comes back to the group within the run (the default is 30 s).
  const config = { cluster: { nodes: cluster.startupNodes }, prefix, claimMinIdleMs: 5000 };
  let killed: RedisClusterNode | undefined;
  const masters: number[] = [];
  const confirmedAt: number[] = [];
  let killedAt = 0;
  const result = await runFaultRun({
    name,
    events: FAULT_RUN_EVENTS,
    consumers: 2,
    broker: {
      kill: async () => {
        const master = await cluster.masterOf(slot);
        if (master === undefined) throw new Error(`slot ${slot} has no master`);
        masters.push(master.port);
        killed = cluster.node(master.port);
        await killed.kill();
        killedAt = performance.now();
      },
      start: async () => {
        // The replica is promoted while the old master is down.
        try {
          await pollUntil(
            async () => {
              const master = await cluster.masterOf(slot);
              if (master === undefined || master.port === killed?.port) return false;
              masters.push(master.port);
              return true;
            },
            20_000,
            'the replica promoted',
          );
        } finally {
          // Back in any case, so that a failed run leaves the cluster whole for the next one.
          await killed?.start();
          await cluster.waitFormed();
        }
      },
    },
    consumer: () => faultConsumerCommand(SUBSCRIBER_MODULE, 'RedisSubscriber', config),
    publisher: async () => {
      const publisher = new RedisSubscriber({
        ...config,
        ...bus,
        logger: { warn: () => {}, error: () => {} },
      });
      await publisher.connect();
      return {
        publish: async (n) => {
          await publisher.publish('fault.event', { n });
          confirmedAt.push(performance.now());
        },
        close: () => publisher.close({ timeoutMs: 5000 }),
      };
    },
    faults: MASTER_KILLED,
    drainTimeoutMs: 60_000,
    countStored: async () => {
      const client = new Cluster(cluster.startupNodes);
      try {
        return await client.xlen(streamKey(prefix, 'fault.event'));
      } finally {
        await client.quit().catch(() => client.disconnect());
      }
    },
  });
  expectNothingLost(result);
  // A write cut off on the failed node is retryable (CONNECTION), never CLOSED: the bus
  // retries it on the promoted replica.
  expect(result.rejected['CLOSED']).toBeUndefined();
  expect(masters).toHaveLength(2);
  expect(masters[1]).not.toBe(masters[0]);
  console.log(
    `${name}: master ${String(masters[0])} killed, replica ${String(masters[1])} promoted; ` +
      pauseAround(confirmedAt, killedAt),
  );
  return result;
}

describe('Redis Cluster of 3 masters and 3 replicas, group of two consumer processes', () => {
  it('loses no confirmed event with the master of the stream killed and its replica promoted (bus defaults)', async () => {
    await failover('redis cluster, master killed, bus defaults', {});
  });

  it('loses no confirmed event with the master of the stream killed, publishes retried through the failover', async () => {
    const result = await failover(
      'redis cluster, master killed, publish retries over 5 s',
      RIDE_THROUGH,
    );
    // With retries longer than the failover, every publish is confirmed.
    expect(result.confirmed).toBe(result.events);
  });
});
