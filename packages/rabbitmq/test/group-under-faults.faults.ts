/**
 * The fault suite on RabbitMQ (`make test-faults`): 20 000 persistent events through a
 * durable queue shared by two consumer processes, on a private node, (a) with the node killed
 * and started again twice mid-stream, (b) with one consumer SIGKILLed mid-stream. It fails on
 * any confirmed event that no consumer handled; the counts go into docs/FAULT_TOLERANCE.md.
 */
import { fileURLToPath } from 'node:url';
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
import { RabbitMQSubscriber } from '../src/index.js';
import { uniqueName } from './helpers.js';
import { PrivateRabbitMQ } from './private-rabbitmq.js';

const SUBSCRIBER_MODULE = fileURLToPath(new URL('../src/index.ts', import.meta.url));

let node: PrivateRabbitMQ;
beforeAll(async () => {
  node = await PrivateRabbitMQ.start();
}, 90_000);
afterAll(async () => {
  await node.stop();
});

async function run(name: string, faults: readonly FaultStep[]): Promise<void> {
  const config = { url: node.url, exchange: uniqueName('faults') };
  const result = await runFaultRun({
    name,
    events: FAULT_RUN_EVENTS,
    consumers: 2,
    broker: { kill: () => node.kill(), start: () => node.startProcess() },
    consumer: () => faultConsumerCommand(SUBSCRIBER_MODULE, 'RabbitMQSubscriber', config),
    publisher: async () => {
      const bus = new RabbitMQSubscriber({
        ...config,
        logger: { warn: () => {}, error: () => {} },
      });
      await bus.connect();
      return {
        publish: (n) => bus.publish('fault.event', { n }),
        close: () => bus.close({ timeoutMs: 5000 }),
      };
    },
    faults,
    drainTimeoutMs: 90_000,
  });
  expectNothingLost(result);
}

describe('RabbitMQ queue shared by two consumer processes under faults', () => {
  it('loses no confirmed event with the node killed and started again twice', async () => {
    await run('rabbitmq, node killed twice', BROKER_KILLED_TWICE);
  });

  it('loses no confirmed event with one consumer SIGKILLed mid-stream', async () => {
    await run('rabbitmq, consumer SIGKILLed', CONSUMER_KILLED);
  });
});
