import { afterAll, beforeAll } from 'vitest';
import { Cluster } from 'ioredis';
import { describeTransportConformance, type ConformanceHarness } from '@watchtower/conformance';
import { RedisTransport } from '../src/index.js';
import { PrivateRedisCluster } from './redis-cluster.js';

/*
 * The contract suite against a private Redis Cluster of 3 masters and 3 replicas
 * (about 25 s on two cores, the six nodes included). The transport runs
 * in cluster mode with all six nodes as startup nodes; each test's prefix is its own hash tag,
 * so tests spread over the masters. The restart cases kill all six nodes and start them again
 * (without persistence they come back empty, as the private server of conformance.test.ts).
 *
 * The case "reports its connection lost and restored around a broker restart" runs here too:
 * ioredis `Cluster` stays `ready` with every node down, so the transport probes its slot at
 * each sign of trouble (a node connection ended, a write failed on one) and reports from the
 * answer (cluster-reachability.ts).
 *
 * The cases that write most run a second time with `waitReplicas: 1`: every publish and dead
 * letter then waits for the replica of its master (`WAIT`).
 */

const TEST_TIMERS = {
  blockMs: 200,
  discoveryIntervalMs: 100,
  claimIntervalMs: 100,
  claimMinIdleMs: 1000,
} as const;

let cluster: PrivateRedisCluster | undefined;

beforeAll(async () => {
  cluster = await PrivateRedisCluster.start();
}, 60_000);

afterAll(async () => {
  await cluster?.stop();
});

function nodes(): { host: string; port: number }[] {
  if (cluster === undefined) throw new Error('the private Redis Cluster is not running');
  return cluster.startupNodes;
}

/** A plain ioredis Cluster client, as another service would use. */
async function withClient<T>(use: (client: Cluster) => Promise<T>): Promise<T> {
  const client = new Cluster(nodes());
  try {
    return await use(client);
  } finally {
    await client.quit().catch(() => client.disconnect());
  }
}

const harness = {
  name: 'redis (3 masters + 3 replicas cluster)',
  createTransport: (namespace: string) =>
    new RedisTransport({ cluster: { nodes: nodes() }, prefix: `{${namespace}}`, ...TEST_TIMERS }),
  publishRaw: (namespace: string, type: string, bytes: Uint8Array) =>
    withClient(async (client) => {
      await client.xadd(`{${namespace}}:${type}`, '*', 'event', Buffer.from(bytes));
    }),
  restartBroker: async () => {
    const c = cluster as PrivateRedisCluster;
    await Promise.all(c.nodes.map((node) => node.kill()));
    await Promise.all(c.nodes.map((node) => node.start()));
    await c.waitFormed();
  },
  cleanup: (namespace: string) =>
    withClient(async (client) => {
      // Every key of the namespace shares its hash tag, so one master holds them all.
      for (const master of client.nodes('master')) {
        const keys = await master.keys(`{${namespace}}*`);
        if (keys.length > 0) await master.del(...keys);
      }
    }),
  timeoutMs: 10_000,
  redeliveryTimeoutMs: 5000,
} satisfies ConformanceHarness;

describeTransportConformance(harness);

/** The cases that publish and dead-letter most, again with every write waiting for WAIT 1. */
const WRITING_CASES = [
  'publishes events and delivers each one to a subscriber, payload and ids intact',
  'delivers the events of one type in publish order to one subscriber',
  'sends every accepted event before close resolves',
  'gives each event to one member of a group and every event to each group',
  'dead-letters an event after its retries with the reason, and consumeDlq returns it',
  'round-trips large and unicode payloads',
];

describeTransportConformance(
  {
    ...harness,
    name: 'redis (3 masters + 3 replicas cluster, waitReplicas: 1)',
    createTransport: (namespace) =>
      new RedisTransport({
        cluster: { nodes: nodes() },
        prefix: `{${namespace}}`,
        ...TEST_TIMERS,
        waitReplicas: 1,
      }),
  },
  { only: WRITING_CASES },
);
