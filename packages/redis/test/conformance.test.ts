import { afterAll, beforeAll, describe } from 'vitest';
import { describeTransportConformance, type ConformanceHarness } from '@watchtower/conformance';
import { RedisTransport } from '../src/index.js';
import { PrivateRedisServer, REDIS_URL, deleteKeysAndQuit, rawClient } from './helpers.js';

/*
 * The contract suite, twice: against the shared Redis, and against a private redis-server on a
 * random port that the reconnect case kills and starts again (it comes back empty: no
 * persistence, so groups and streams are re-created by the transport).
 */

/** Short timers so that redelivery of unacked entries takes about a second, not 30. */
const TEST_TIMERS = {
  blockMs: 200,
  discoveryIntervalMs: 100,
  claimIntervalMs: 100,
  claimMinIdleMs: 1000,
} as const;

function harness(
  name: string,
  url: () => string,
  restartBroker?: () => Promise<void>,
): ConformanceHarness {
  return {
    name,
    createTransport: (namespace) =>
      new RedisTransport({ url: url(), prefix: namespace, ...TEST_TIMERS }),
    publishRaw: async (namespace, type, bytes) => {
      const client = rawClient(url());
      try {
        await client.xadd(`${namespace}:${type}`, '*', 'event', Buffer.from(bytes));
      } finally {
        await client.quit();
      }
    },
    cleanup: (namespace) => deleteKeysAndQuit(rawClient(url()), namespace),
    ...(restartBroker === undefined ? {} : { restartBroker }),
    timeoutMs: 10_000,
    redeliveryTimeoutMs: 5000,
  };
}

describeTransportConformance(harness('redis', () => REDIS_URL));

describe('on a private redis-server that the reconnect case restarts', () => {
  let server: PrivateRedisServer | undefined;
  beforeAll(async () => {
    server = await PrivateRedisServer.start();
  });
  afterAll(async () => {
    await server?.stop();
  });
  describeTransportConformance(
    harness(
      'redis (private server)',
      () => (server as PrivateRedisServer).url,
      () => (server as PrivateRedisServer).restart(),
    ),
  );
});
