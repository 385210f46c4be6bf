/**
 * Failover on a three-node NATS cluster (`make test-faults`): 20 000 events through a group of
 * two consumer processes, on a stream of three replicas, while the node that leads the stream
 * is killed (SIGKILL) and started again 12 s later. A new leader is elected among the other
 * two meanwhile. It fails on any confirmed event that no consumer handled; the counts and the
 * pause go into docs/SCALING.md.
 */
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
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
import { NatsSubscriber, type NatsSubscriberOptions } from '../src/index.js';
import { connect } from '@nats-io/transport-node';
import { deleteStreams, testConfig, testNames } from './helpers.js';
import {
  PrivateNatsCluster,
  createStreams,
  pollUntil,
  type NatsClusterNode,
} from './nats-cluster.js';

const SUBSCRIBER_MODULE = fileURLToPath(new URL('../src/index.ts', import.meta.url));
const silent = { warn: (): void => undefined, error: (): void => undefined };

/** The stream leader killed at 30 % of the events, started again 12 s later (past the election). */
const LEADER_KILLED: readonly FaultStep[] = [{ at: 0.3, kind: 'restart-broker', downMs: 12_000 }];

let cluster: PrivateNatsCluster;
beforeAll(async () => {
  cluster = await PrivateNatsCluster.start();
}, 90_000);
afterAll(async () => {
  await cluster.stop();
});

/** The stream's info, asked of any node of the cluster. */
async function streamInfo(stream: string) {
  const nc = await connect({ servers: cluster.urls });
  try {
    return await (await jetstreamManager(nc)).streams.info(stream);
  } finally {
    await nc.close();
  }
}

/** The name of the node leading `stream` now. */
async function leaderOf(stream: string): Promise<string> {
  const leader = (await streamInfo(stream)).cluster?.leader;
  if (leader === undefined || leader === '') throw new Error(`${stream} has no leader`);
  return leader;
}

/**
 * Publish settings that ride through a leader election (7 to 10 s here): retries spanning
 * about 22 s, inside the bus's `publishTimeoutMs` of 30 s.
 */
const RIDE_THROUGH = {
  retry: { maxAttempts: 25, minDelayMs: 100, maxDelayMs: 1000 },
} as const;

/**
 * One run: the stream leader killed at 30 %, another node elected while it is down, the old
 * leader started again. `bus` are the publisher's bus options. Fails on any loss.
 */
async function failover(
  name: string,
  bus: Partial<NatsSubscriberOptions>,
): Promise<FaultRunResult> {
  const names = testNames();
  const {
    reconnectTimeWaitMs: _w,
    reconnectJitterMs: _j,
    ...config
  } = testConfig('jetstream', names, {
    servers: cluster.urls,
    stream: { name: names.stream, replicas: 3 },
    dlq: { streamName: names.dlqStream, replicas: 3 },
    // A shorter ack wait, so that what a killed node held comes back within the run.
    consumer: { ackWaitMs: 5000 },
    // Creating a stream of three replicas forms a raft group: seconds on a loaded machine.
    requestTimeoutMs: 10_000,
  });
  // The two consumers start together: the streams exist before, see createStreams.
  await createStreams(config);
  let killed: NatsClusterNode | undefined;
  const leaders: string[] = [];
  const confirmedAt: number[] = [];
  let killedAt = 0;
  try {
    const result = await runFaultRun({
      name,
      events: FAULT_RUN_EVENTS,
      consumers: 2,
      broker: {
        kill: async () => {
          const leader = await leaderOf(names.stream);
          leaders.push(leader);
          killed = cluster.node(leader);
          await killed.kill();
          killedAt = performance.now();
        },
        start: async () => {
          // The other two elect a new leader while the old one is down.
          await pollUntil(
            async () => {
              const leader = await leaderOf(names.stream);
              if (leader === killed?.name) return false;
              leaders.push(leader);
              return true;
            },
            20_000,
            'a new stream leader',
          );
          await killed?.start();
          await cluster.waitFormed();
        },
      },
      consumer: () => faultConsumerCommand(SUBSCRIBER_MODULE, 'NatsSubscriber', config),
      publisher: async () => {
        const publisher = new NatsSubscriber({ ...config, ...bus, logger: silent });
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
      countStored: async () => (await streamInfo(names.stream)).state.messages,
    });
    expectNothingLost(result);
    // The leader was killed, and another node took over while it was down.
    expect(leaders).toHaveLength(2);
    expect(leaders[1]).not.toBe(leaders[0]);
    console.log(
      `${name}: leader ${String(leaders[0])} killed, ${String(leaders[1])} took over; ` +
        pauseAround(confirmedAt, killedAt),
    );
    return result;
  } finally {
    await deleteStreams([names.stream, names.dlqStream], cluster.urls[0]).catch(() => undefined);
  }
}

describe('NATS JetStream cluster of three, group of two consumer processes', () => {
  it('loses no confirmed event with the node leading the stream killed and started again (bus defaults)', async () => {
    await failover('nats cluster, stream leader killed, bus defaults', {});
  });

  it('loses no confirmed event with the node leading the stream killed, publishes retried through the election', async () => {
    const result = await failover(
      'nats cluster, stream leader killed, publish retries over 22 s',
      RIDE_THROUGH,
    );
    // With retries longer than the election, every publish is confirmed.
    expect(result.confirmed).toBe(result.events);
  });
});
