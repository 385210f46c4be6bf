import { afterAll, beforeAll, describe } from 'vitest';
import { describeTransportConformance, type ConformanceHarness } from '@watchtower/conformance';
import { RabbitMQTransport, type RabbitMQConfig } from '../src/index.js';
import {
  AMQP_URL,
  TcpProxy,
  closeConnectionsNamed,
  deleteTopology,
  waitForConnectionNamed,
  withRawChannel,
} from './helpers.js';

/*
 * The contract suite against the shared RabbitMQ: through a TCP proxy whose cut stands for the
 * broker restarting (every connection drops at once), in classic and in quorum mode; and the
 * reconnect case once more with the broker itself closing the connections (`rabbitmqctl
 * close_connection`, only those of the test's own transports, by connection name).
 */

/** Short reconnect waits, so that a cut connection is back within a second. */
const TEST_TIMERS = { reconnectBaseMs: 50, reconnectMaxMs: 500 } as const;

const namespaces = new Set<string>();

function harness(
  name: string,
  url: () => string,
  config: RabbitMQConfig,
  restart: ((connectionNames: readonly string[]) => Promise<void>) | undefined,
): ConformanceHarness {
  let connectionNames: string[] = [];
  let seq = 0;
  return {
    name,
    createTransport: (namespace) => {
      namespaces.add(namespace);
      const connectionName = `${namespace}-c${++seq}`;
      connectionNames.push(connectionName);
      return new RabbitMQTransport({
        url: url(),
        exchange: namespace,
        connectionName,
        ...TEST_TIMERS,
        ...config,
      });
    },
    publishRaw: (namespace, type, bytes) =>
      withRawChannel(async (channel) => {
        await channel.assertExchange(namespace, 'topic', { durable: true });
        channel.publish(namespace, type, Buffer.from(bytes), { persistent: true });
        await channel.waitForConfirms();
      }),
    cleanup: async () => {
      connectionNames = [];
    },
    ...(restart === undefined ? {} : { restartBroker: () => restart(connectionNames) }),
    timeoutMs: 10_000,
    redeliveryTimeoutMs: 5000,
  };
}

let proxy: TcpProxy | undefined;
beforeAll(async () => {
  proxy = await TcpProxy.start(AMQP_URL);
});
afterAll(async () => {
  await proxy?.stop();
  await deleteTopology([...namespaces]);
});

const throughProxy = (): string => (proxy as TcpProxy).url(AMQP_URL);
const cutEverything = async (): Promise<void> => {
  (proxy as TcpProxy).cut();
};

describe('classic queues', () => {
  describeTransportConformance(harness('rabbitmq (classic)', throughProxy, {}, cutEverything));
});

describe('quorum queues', () => {
  describeTransportConformance(
    harness('rabbitmq (quorum)', throughProxy, { queueType: 'quorum' }, cutEverything),
  );
});

describe('connections closed by the broker', () => {
  describeTransportConformance(
    harness(
      'rabbitmq (closed by rabbitmqctl)',
      () => AMQP_URL,
      {},
      async (names) => {
        const closed: string[] = [];
        for (const name of names) if ((await closeConnectionsNamed(name)) > 0) closed.push(name);
        // Back once the broker lists them again (the transports reconnect on their own).
        for (const name of closed) await waitForConnectionNamed(name);
      },
    ),
    {
      only: [
        'resumes delivery after the broker restarts',
        'reports its connection lost and restored around a broker restart, and the bus confirms every publish made meanwhile',
      ],
    },
  );
});
