/**
 * Failover on a three-node RabbitMQ cluster (`make test-faults`): 20 000 events through a
 * group of two consumer processes reading a quorum queue, while the node that leads the queue
 * is killed (SIGKILL) and started again 5 s later. The other two elect a new leader, and every
 * client (all connected to the leader's node: the first URL) fails over to the next URL. It
 * fails on any confirmed event that no consumer handled; the counts and the pause go into
 * docs/SCALING.md.
 */
import { fileURLToPath } from 'node:url';
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
import { waitFor } from '@watchtower/core/testing';
import { RabbitMQSubscriber, type RabbitMQSubscriberOptions } from '../src/index.js';
import { groupQueueName } from '../src/topology.js';
import { uniqueName } from './helpers.js';
import type { PrivateRabbitMQ } from './private-rabbitmq.js';
import { RabbitMQCluster } from './rabbitmq-cluster.js';

const SUBSCRIBER_MODULE = fileURLToPath(new URL('../src/index.ts', import.meta.url));

/** The queue's leader killed at 30 % of the events, started again 5 s later. */
const LEADER_KILLED: readonly FaultStep[] = [{ at: 0.3, kind: 'restart-broker', downMs: 5000 }];

let cluster: RabbitMQCluster;
beforeAll(async () => {
  cluster = await RabbitMQCluster.start();
}, 90_000);
afterAll(async () => {
  await cluster.stop();
});

/**
 * Publish settings that ride through the failover: retries spanning about 22 s, inside the
 * bus's `publishTimeoutMs` of 30 s. The election takes well under a second, but RabbitMQ
 * 3.10 can go on nacking the publishes of a channel opened on a surviving node during the
 * election until the old leader's node is back (see docs/SCALING.md); channels opened later
 * are acked, and the transport replaces a channel that keeps nacking and rides its nacks out
 * (holding them for the next channel), so the bus defaults ride through as well.
 */
const RIDE_THROUGH = {
  retry: { maxAttempts: 25, minDelayMs: 100, maxDelayMs: 1000 },
} as const;

/**
 * One run: the quorum queue's leader killed at 30 %, another node elected while it is down,
 * the old leader started again. `bus` are the publisher's bus options. Fails on any loss.
 */
async function failover(
  name: string,
  bus: Partial<RabbitMQSubscriberOptions>,
): Promise<FaultRunResult> {
  const exchange = uniqueName('cluster');
  // The group and pattern of the fault suite's consumers (fault-consumer.ts).
  const queue = groupQueueName(exchange, 'fault-workers', 'fault.event');
  const config = { url: cluster.urls, exchange, queueType: 'quorum' } as const;
  let killed: PrivateRabbitMQ | undefined;
  const leaders: string[] = [];
  const confirmedAt: number[] = [];
  let killedAt = 0;
  const result = await runFaultRun({
    name,
    events: FAULT_RUN_EVENTS,
    consumers: 2,
    broker: {
      kill: async () => {
        if (killed === undefined) throw new Error('no leader was found before the run');
        await killed.kill();
        killedAt = performance.now();
      },
      start: async () => {
        try {
          // The other two elect a new leader while the old one is down.
          await waitFor(
            async () => {
              const leader = (await cluster.queues()).find((q) => q.name === queue)?.leader;
              if (leader === undefined || leader === '' || leader === killed?.name) return false;
              leaders.push(leader);
              return true;
            },
            { timeoutMs: 20_000, intervalMs: 100, message: `a new leader of ${queue}` },
          );
        } finally {
          // Back in any case, so that a failed run leaves the cluster whole.
          await killed?.startProcess();
          await cluster.waitFormed();
        }
      },
    },
    consumer: () => faultConsumerCommand(SUBSCRIBER_MODULE, 'RabbitMQSubscriber', config),
    publisher: async () => {
      // The consumers declared the queue: its leader is the node to kill (asked now, as
      // `rabbitmqctl` takes seconds on a loaded machine).
      killed = await cluster.leaderOf(queue);
      leaders.push(killed.name);
      const publisher = new RabbitMQSubscriber({
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
    faults: LEADER_KILLED,
    drainTimeoutMs: 60_000,
  });
  expectNothingLost(result);
  expect(leaders).toHaveLength(2);
  expect(leaders[1]).not.toBe(leaders[0]);
  console.log(
    `${name}: leader ${String(leaders[0])} killed, ${String(leaders[1])} took over; ` +
      pauseAround(confirmedAt, killedAt),
  );
  return result;
}

describe('RabbitMQ cluster of three, quorum queue read by a group of two consumer processes', () => {
  it('loses no confirmed event with the node leading the quorum queue killed and started again (bus defaults)', async () => {
    // The transport replaces the publish channel stuck nacking after the election, and holds
    // what it nacks for the next channel instead of spending the bus's default retries (4
    // within ~0.7 s) on channels that nack everything: every publish is confirmed.
    const result = await failover('rabbitmq cluster, quorum leader killed, bus defaults', {});
    expect(result.confirmed).toBe(result.events);
  });

  it('loses no confirmed event with the node leading the quorum queue killed, publishes retried until it is back', async () => {
    const result = await failover(
      'rabbitmq cluster, quorum leader killed, publish retries over 22 s',
      RIDE_THROUGH,
    );
    // With retries longer than the node's restart, every publish is confirmed.
    expect(result.confirmed).toBe(result.events);
  });
});
