/**
 * The fault suite on Redis Streams (`make test-faults`): 20 000 events through a group of two
 * consumer processes, on a private server with an append-only file synced on every write,
 * (a) with the server killed and started again twice mid-stream, (b) with one consumer
 * SIGKILLed mid-stream. It fails on any confirmed event that no consumer handled; the counts
 * go into docs/FAULT_TOLERANCE.md.
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
import { RedisSubscriber, streamKey } from '../src/index.js';
import { PrivateRedisServer, rawClient, uniquePrefix } from './helpers.js';

const SUBSCRIBER_MODULE = fileURLToPath(new URL('../src/index.ts', import.meta.url));

let server: PrivateRedisServer;
beforeAll(async () => {
  server = await PrivateRedisServer.start(['--appendonly', 'yes', '--appendfsync', 'always']);
});
afterAll(async () => {
  await server.stop();
});

async function run(name: string, faults: readonly FaultStep[]): Promise<void> {
  // Library defaults, except a shorter claim idle time, so that what a killed consumer held
  // comes back to the group within the run (the default is 30 s).
  const config = { url: server.url, prefix: uniquePrefix('faults'), claimMinIdleMs: 5000 };
  const result = await runFaultRun({
    name,
    events: FAULT_RUN_EVENTS,
    consumers: 2,
    broker: { kill: () => server.kill(), start: () => server.startProcess() },
    consumer: () => faultConsumerCommand(SUBSCRIBER_MODULE, 'RedisSubscriber', config),
    publisher: async () => {
      const bus = new RedisSubscriber({ ...config, logger: { warn: () => {}, error: () => {} } });
      await bus.connect();
      return {
        publish: (n) => bus.publish('fault.event', { n }),
        close: () => bus.close({ timeoutMs: 5000 }),
      };
    },
    faults,
    drainTimeoutMs: 60_000,
    countStored: async () => {
      const raw = rawClient(server.url);
      try {
        return await raw.xlen(streamKey(config.prefix, 'fault.event'));
      } finally {
        raw.disconnect();
      }
    },
  });
  expectNothingLost(result);
}

describe('Redis Streams group of two consumer processes under faults', () => {
  it('loses no confirmed event with the server killed and started again twice', async () => {
    await run('redis streams, server killed twice', BROKER_KILLED_TWICE);
  });

  it('loses no confirmed event with one consumer SIGKILLed mid-stream', async () => {
    await run('redis streams, consumer SIGKILLed', CONSUMER_KILLED);
  });
});
