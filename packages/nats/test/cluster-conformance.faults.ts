import { connect } from '@nats-io/transport-node';
import { describeTransportConformance } from '@watchtower/conformance';
import { afterAll, beforeAll } from 'vitest';
import { NatsTransport, type NatsConfig, type NatsMode } from '../src/index.js';
import { deleteStreams } from './helpers.js';
import { PrivateNatsCluster, createStreams } from './nats-cluster.js';

/*
 * The contract suite against a private three-node NATS cluster (`make test-faults`: 2-3
 * minutes on two loaded cores, too long for the integration project): the transport is given
 * all three URLs, and in JetStream mode its event and dead-letter streams have three replicas.
 * The restart cases kill all three nodes and start them again on their stores.
 *
 * The case "reports its connection lost and restored around a broker restart" is the longest
 * (about 16 s in each mode): the nodes are back in 0.1 s and JetStream serves again 5-6 s after
 * the kill, every publish made meanwhile is confirmed about 4 s later (the bus holds them while
 * the connection is lost, and a publish rides out "no responders" for `requestTimeoutMs`), and
 * the group's pull consumer reads again within its pull `expires` (5 s) of that: on reconnect
 * nats.js `consume()` checks its consumer (`consumer.info()`), which fails while JetStream is
 * still electing leaders, and tries again after `expires`.
 */

let cluster: PrivateNatsCluster | undefined;

beforeAll(async () => {
  cluster = await PrivateNatsCluster.start();
}, 90_000);

afterAll(async () => {
  await cluster?.stop();
});

function urls(): string[] {
  if (cluster === undefined) throw new Error('the private NATS cluster is not running');
  return cluster.urls;
}

function names(namespace: string) {
  return {
    subjectPrefix: `${namespace}.events`,
    dlqPrefix: `${namespace}.dlq`,
    stream: `${namespace}_EVENTS`,
    dlqStream: `${namespace}_DLQ`,
  };
}

/**
 * STREAMS_CREATED_ONCE: nats-server 2.9.10 leaves one of several concurrent requests that
 * create the same stream of three replicas unanswered now and then (the client times out
 * after `requestTimeoutMs`), so cases that connect several transports at once would fail on
 * it. Each namespace's streams are created by one transport first; the others find them.
 */
const streamsCreated = new Map<string, Promise<void>>();

function transportConfig(mode: NatsMode, namespace: string): Partial<NatsConfig> {
  const n = names(namespace);
  return {
    servers: urls(),
    mode,
    subjectPrefix: n.subjectPrefix,
    dlqPrefix: n.dlqPrefix,
    stream: { name: n.stream, replicas: 3 },
    dlq: { streamName: n.dlqStream, replicas: 3 },
    // Short timers so the cases about unacked deliveries finish quickly.
    consumer: { ackWaitMs: 1000 },
    reconnectTimeWaitMs: 100,
    reconnectJitterMs: 20,
    // Creating a stream of three replicas forms a raft group: seconds on a loaded machine.
    requestTimeoutMs: 10_000,
    // Core NATS delivers to the subscriptions a server knows of when the message arrives, and
    // a subscription reaches the other nodes of a cluster a moment after its own server has
    // it: a publisher connected to another node can publish into that moment (at most once,
    // nothing to redeliver), which failed the routing case once in a loaded CI run. In core
    // mode every transport of a case tries the URLs in the given order, so they share a node.
    ...(mode === 'core' ? { connectionOptions: { noRandomize: true } } : {}),
  };
}

for (const mode of ['core', 'jetstream'] as NatsMode[]) {
  describeTransportConformance({
    name: `nats-${mode} (3-node cluster)`,
    createTransport: async (namespace) => {
      const config = transportConfig(mode, namespace);
      // The streams of a namespace are created once, before any transport of the test
      // connects: see STREAMS_CREATED_ONCE.
      let created = streamsCreated.get(`${mode}:${namespace}`);
      if (created === undefined) {
        created = createStreams(config);
        streamsCreated.set(`${mode}:${namespace}`, created);
      }
      await created;
      return new NatsTransport(config);
    },
    publishRaw: async (namespace, type, bytes) => {
      const nc = await connect({ servers: urls() });
      try {
        nc.publish(`${names(namespace).subjectPrefix}.${type}`, bytes);
        await nc.flush();
      } finally {
        await nc.close();
      }
    },
    restartBroker: async () => {
      const c = cluster as PrivateNatsCluster;
      await Promise.all(c.nodes.map((node) => node.kill()));
      await Promise.all(c.nodes.map((node) => node.start()));
      await c.waitFormed();
      // The next cases create streams of three replicas: wait until JetStream takes them.
      await c.waitJetStreamReady();
    },
    cleanup: async (namespace) => {
      const n = names(namespace);
      await deleteStreams([n.stream, n.dlqStream], urls());
    },
    // The restart case waits up to three times this for what was published during the
    // outage, which the group's consumer delivers about 10-15 s after the kill.
    timeoutMs: 25_000,
    redeliveryTimeoutMs: 5000,
  });
}
