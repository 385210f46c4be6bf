import { connect } from '@nats-io/transport-node';
import { describeTransportConformance } from '@watchtower/conformance';
import { afterAll, beforeAll } from 'vitest';
import { NatsTransport, type NatsMode } from '../src/index.js';
import { deleteStreams } from './helpers.js';
import { PrivateNatsServer } from './nats-server.js';

/*
 * The contract suite, in both modes, against a private nats-server (JetStream on, file
 * storage in a temp dir) so that the reconnect case can kill and restart it.
 */

let server: PrivateNatsServer | undefined;

beforeAll(async () => {
  server = await PrivateNatsServer.start();
});

afterAll(async () => {
  await server?.stop();
});

function url(): string {
  if (server === undefined) throw new Error('the private nats-server is not running');
  return server.url;
}

function names(namespace: string) {
  return {
    subjectPrefix: `${namespace}.events`,
    dlqPrefix: `${namespace}.dlq`,
    stream: `${namespace}_EVENTS`,
    dlqStream: `${namespace}_DLQ`,
  };
}

for (const mode of ['core', 'jetstream'] as NatsMode[]) {
  describeTransportConformance({
    name: `nats-${mode}`,
    createTransport: (namespace) => {
      const n = names(namespace);
      return new NatsTransport({
        servers: url(),
        mode,
        subjectPrefix: n.subjectPrefix,
        dlqPrefix: n.dlqPrefix,
        stream: { name: n.stream },
        dlq: { streamName: n.dlqStream },
        // Short timers so the cases about unacked deliveries finish quickly.
        consumer: { ackWaitMs: 1000 },
        reconnectTimeWaitMs: 100,
        reconnectJitterMs: 20,
        requestTimeoutMs: 2000,
      });
    },
    publishRaw: async (namespace, type, bytes) => {
      const nc = await connect({ servers: url() });
      try {
        nc.publish(`${names(namespace).subjectPrefix}.${type}`, bytes);
        await nc.flush();
      } finally {
        await nc.close();
      }
    },
    restartBroker: async () => {
      await server?.restart();
    },
    cleanup: async (namespace) => {
      const n = names(namespace);
      await deleteStreams([n.stream, n.dlqStream], url());
    },
    timeoutMs: 8000,
    redeliveryTimeoutMs: 5000,
  });
}
