/**
 * The fault suite on NATS JetStream (`make test-faults`): 20 000 events through a group of two
 * consumer processes, on a private server with a file store, (a) with the server killed and
 * started again twice mid-stream, (b) with one consumer SIGKILLed mid-stream. It fails on any
 * confirmed event that no consumer handled; the counts go into docs/FAULT_TOLERANCE.md.
 */
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import {
  BROKER_KILLED_TWICE,
  CONSUMER_KILLED,
  FAULT_RUN_EVENTS,
  expectNothingLost,
  faultConsumerCommand,
  runFaultRun,
  type FaultStep,
} from '@watchtower/conformance';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { NatsSubscriber } from '../src/index.js';
import { deleteStreams, rawConnection, testConfig, testNames } from './helpers.js';
import { PrivateNatsServer } from './nats-server.js';

const SUBSCRIBER_MODULE = fileURLToPath(new URL('../src/index.ts', import.meta.url));
const silent = { warn: (): void => undefined, error: (): void => undefined };

let server: PrivateNatsServer;
beforeAll(async () => {
  server = await PrivateNatsServer.start();
});
afterAll(async () => {
  await server.stop();
});

async function run(name: string, faults: readonly FaultStep[]): Promise<void> {
  const names = testNames();
  // Library defaults, except a shorter ack wait, so that what a killed consumer held comes
  // back to the group within the run (the default is 30 s).
  const {
    reconnectTimeWaitMs: _w,
    reconnectJitterMs: _j,
    ...config
  } = testConfig('jetstream', names, { servers: server.url, consumer: { ackWaitMs: 5000 } });
  try {
    const result = await runFaultRun({
      name,
      events: FAULT_RUN_EVENTS,
      consumers: 2,
      broker: { kill: () => server.kill(), start: () => server.restart() },
      consumer: () => faultConsumerCommand(SUBSCRIBER_MODULE, 'NatsSubscriber', config),
      publisher: async () => {
        const bus = new NatsSubscriber({ ...config, logger: silent });
        await bus.connect();
        return {
          publish: (n) => bus.publish('fault.event', { n }),
          close: () => bus.close({ timeoutMs: 5000 }),
        };
      },
      faults,
      drainTimeoutMs: 60_000,
      countStored: async () => {
        const nc = await rawConnection(server.url);
        try {
          const jsm = await jetstreamManager(nc);
          return (await jsm.streams.info(names.stream)).state.messages;
        } finally {
          await nc.close();
        }
      },
    });
    expectNothingLost(result);
  } finally {
    await deleteStreams([names.stream, names.dlqStream], server.url).catch(() => undefined);
  }
}

describe('NATS JetStream group of two consumer processes under faults', () => {
  it('loses no confirmed event with the server killed and started again twice', async () => {
    await run('nats jetstream, server killed twice', BROKER_KILLED_TWICE);
  });

  it('loses no confirmed event with one consumer SIGKILLed mid-stream', async () => {
    await run('nats jetstream, consumer SIGKILLed', CONSUMER_KILLED);
  });
});
