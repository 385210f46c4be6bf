/**
 * What the test files on a private Redis Cluster share: the cluster, started before the
 * file's tests and stopped after them, and transports on it in cluster mode, closed after
 * each test.
 */
import { afterAll, afterEach, beforeAll } from 'vitest';
import { RedisTransport, type RedisConfig } from '../src/index.js';
import { FAST } from './helpers.js';
import { PrivateRedisCluster } from './redis-cluster.js';

/** The file's cluster and its transports (call at the top level of a test file). */
export interface ClusterTests {
  /** The running cluster (from `beforeAll` on). */
  readonly cluster: () => PrivateRedisCluster;
  /** A transport on the cluster with `prefix` and short timers, closed after the test. */
  readonly transport: (prefix: string, config?: RedisConfig) => RedisTransport;
  /** Registers something else to close after the test. */
  readonly closeAfterTest: (close: () => Promise<unknown>) => void;
}

/** Registers the hooks that start and stop the cluster and close what each test opened. */
export function clusterTests(options: { nodeTimeoutMs?: number } = {}): ClusterTests {
  let cluster: PrivateRedisCluster | undefined;
  const closers: (() => Promise<unknown>)[] = [];
  beforeAll(async () => {
    cluster = await PrivateRedisCluster.start(options);
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });
  afterEach(async () => {
    await Promise.allSettled(closers.splice(0).map((close) => close()));
  });
  const running = (): PrivateRedisCluster => {
    if (cluster === undefined) throw new Error('the private Redis Cluster is not running');
    return cluster;
  };
  return {
    cluster: running,
    transport: (prefix, config = {}) => {
      const t = new RedisTransport({
        cluster: { nodes: running().startupNodes },
        prefix,
        ...FAST,
        ...config,
      });
      closers.push(() => t.close({ timeoutMs: 2000 }));
      return t;
    },
    closeAfterTest: (close) => {
      closers.push(close);
    },
  };
}
