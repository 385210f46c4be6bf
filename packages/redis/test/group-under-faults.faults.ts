/**
 * The fault suite on Redis Streams (`make test-faults`): 20 000 events through a group of two
 * consumer processes, on a private server with an append-only file synced on every write,
 * (a) with the server killed and started again twice mid-stream, (b) with one consumer
 * SIGKILLed mid-stream. It fails on any confirmed event that no consumer handled; the counts
 * go into docs/FAULT_TOLERANCE.md.
 */
import { fileURLToPath } from 'node:url';
import {
  describeFaultRun,
  faultConsumerCommand,
  runFaultRun,
  type FaultStep,
} from '@watchtower/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisSubscriber, streamKey } from '../src/index.js';
import { PrivateRedisServer, rawClient, uniquePrefix } from './helpers.js';

const EVENTS = 20_000;
const SUBSCRIBER_MODULE = fileURLToPath(new URL('../src/index.ts', import.meta.url));
const silent = { warn: (): void => undefined, error: (): void => undefined };

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
    events: EVENTS,
    consumers: 2,
    broker: { kill: () => server.kill(), start: () => server.startProcess() },
    consumer: () => faultConsumerCommand(SUBSCRIBER_MODULE, 'RedisSubscriber', config),
    publisher: async () => {
      const bus = new RedisSubscriber({ ...config, logger: silent });
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
  console.log(describeFaultRun(result));
  expect(result.lost).toEqual([]);
  expect(result.confirmed + Object.values(result.rejected).reduce((a, b) => a + b, 0)).toBe(EVENTS);
  expect(result.handled).toBeGreaterThanOrEqual(result.confirmed);
}

describe('Redis Streams group of two consumer processes under faults', () => {
  it('loses no confirmed event with the server killed and started again twice', async () => {
    await run('redis streams, server killed twice', [
      { at: 0.3, kind: 'restart-broker', downMs: 1500 },
      { at: 0.65, kind: 'restart-broker', downMs: 1500 },
    ]);
  });

  it('loses no confirmed event with one consumer SIGKILLed mid-stream', async () => {
    await run('redis streams, consumer SIGKILLed', [
      { at: 0.5, kind: 'kill-consumer', consumer: 0 },
    ]);
  });
});
