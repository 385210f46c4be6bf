import { describeTransportConformance } from '@watchtower/conformance';
import { afterAll, beforeAll } from 'vitest';
import { RabbitMQTransport } from '../src/index.js';
import { withRawChannel } from './helpers.js';
import { RabbitMQCluster } from './rabbitmq-cluster.js';

/*
 * The contract suite against a private three-node RabbitMQ cluster in quorum mode (`make
 * test-faults`: the cluster takes about 30 s to form, too long for the integration project):
 * each transport is given all three URLs, and its group queues and DLQ are quorum queues of
 * three members. Every transport connects to the first URL, so the restart cases kill that
 * node, which leads the quorum queues the test declared: the transports fail over to the next
 * URL and the other two nodes elect new leaders. The node is started again before the case
 * goes on. Nothing is cleaned up per test: the cluster and its data are removed at the end.
 */

/** Short reconnect waits, so that a lost connection fails over within a second. */
const TEST_TIMERS = { reconnectBaseMs: 50, reconnectMaxMs: 500 } as const;

let cluster: RabbitMQCluster | undefined;

beforeAll(async () => {
  cluster = await RabbitMQCluster.start();
}, 90_000);

afterAll(async () => {
  await cluster?.stop();
});

function running(): RabbitMQCluster {
  if (cluster === undefined) throw new Error('the private RabbitMQ cluster is not running');
  return cluster;
}

describeTransportConformance({
  name: 'rabbitmq (quorum, 3-node cluster)',
  createTransport: (namespace) =>
    new RabbitMQTransport({
      url: running().urls,
      exchange: namespace,
      queueType: 'quorum',
      ...TEST_TIMERS,
    }),
  publishRaw: (namespace, type, bytes) =>
    withRawChannel(async (channel) => {
      await channel.assertExchange(namespace, 'topic', { durable: true });
      channel.publish(namespace, type, Buffer.from(bytes), { persistent: true });
      await channel.waitForConfirms();
    }, running().urls[0]),
  restartBroker: async () => {
    const c = running();
    const first = c.nodes[0];
    if (first === undefined) throw new Error('the cluster has no nodes');
    await first.kill();
    await first.startProcess();
    await c.waitFormed();
  },
  // A restart of the first node takes about 10 s; the election of new leaders a second or two.
  timeoutMs: 25_000,
  redeliveryTimeoutMs: 5000,
});
