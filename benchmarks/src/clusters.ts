import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Cluster, Redis } from 'ioredis';
import { NatsSubscriber, type NatsSubscriberOptions } from '@watchtower/nats';
import { RedisSubscriber } from '@watchtower/redis';
import { PrivateNatsCluster } from '../../packages/nats/test/nats-cluster.js';
import { PrivateRedisCluster } from '../../packages/redis/test/redis-cluster.js';
import { countdown, runWindowed, startTimer, type Measurement, type Scenario } from './harness.js';

/*
 * Clusters (`pnpm bench clusters`): one process publishing through a bus and handling in a
 * group, against a single node (the shared local NATS and Redis) and against a private 3-node
 * cluster started on this machine for each run (NATS: three nats-server with JetStream, the
 * stream of three replicas; Redis: 3 masters + 3 replicas). Everything runs on one host, so the
 * figure is what clustering costs the client and the brokers, not a speed-up. Then the same
 * against the cluster with 2 and 4 consumer processes in the group (`cluster-consumer.ts`):
 * the events are published by this process and handled by the others, timed from the first
 * publish to the last event handled.
 *
 * Each broker's cluster is started once, at its first run, and serves every run of the group
 * (each with its own stream or key prefix, deleted after it); `stopClusters()` stops them.
 */

const NATS_URL = process.env['WATCHTOWER_NATS_URL'] ?? 'nats://127.0.0.1:4222';
const REDIS_URL = process.env['WATCHTOWER_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const TYPE = 'user.created';
const WINDOW = 256;
const quiet = { warn: () => undefined, error: () => undefined };
const CONSUMER = fileURLToPath(new URL('./cluster-consumer.ts', import.meta.url));

type Broker = 'nats' | 'redis';

/** A broker to run against, and how to remove what a run left on it. */
interface Target {
  readonly config: Record<string, unknown>;
  stop(): Promise<void>;
}

function id(): string {
  return randomBytes(4).toString('hex');
}

let natsCluster: Promise<PrivateNatsCluster> | undefined;
let redisCluster: Promise<PrivateRedisCluster> | undefined;

/** Stops the clusters the group started (none if it did not run). */
export async function stopClusters(): Promise<void> {
  const started = [natsCluster, redisCluster];
  natsCluster = undefined;
  redisCluster = undefined;
  await Promise.all(
    started.map(async (cluster) => {
      if (cluster !== undefined) await (await cluster).stop();
    }),
  );
}

async function natsTarget(clustered: boolean): Promise<Target> {
  const n = id();
  const cluster = clustered ? await (natsCluster ??= PrivateNatsCluster.start()) : undefined;
  const servers = cluster?.urls ?? [NATS_URL];
  const config = {
    servers,
    mode: 'jetstream',
    subjectPrefix: `bench_${n}.events`,
    dlqPrefix: `bench_${n}.dlq`,
    stream: { name: `BENCH_CLUSTER_${n}`, replicas: clustered ? 3 : 1 },
    dlq: { streamName: `BENCH_CLUSTER_DLQ_${n}`, replicas: clustered ? 3 : 1 },
    requestTimeoutMs: 10_000,
  };
  // Created once before consumers connect together (see createStreams in nats-cluster.ts).
  const setup = new NatsSubscriber({ ...config, logger: quiet } as NatsSubscriberOptions);
  await setup.connect();
  await setup.close();
  return {
    config,
    stop: async () => {
      const nc = await connect({ servers });
      const jsm = await jetstreamManager(nc);
      for (const name of [config.stream.name, config.dlq.streamName]) {
        await jsm.streams.delete(name).catch(() => false);
      }
      await nc.close();
    },
  };
}

async function redisTarget(clustered: boolean): Promise<Target> {
  const cluster = clustered ? await (redisCluster ??= PrivateRedisCluster.start()) : undefined;
  const prefix = clustered ? `{bench-cluster-${id()}}` : `bench-cluster-${id()}`;
  const config =
    cluster === undefined
      ? { url: REDIS_URL, prefix }
      : { cluster: { nodes: cluster.startupNodes }, prefix };
  return {
    config,
    stop: async () => {
      if (cluster === undefined) {
        const redis = new Redis(REDIS_URL);
        const keys = await redis.keys(`${prefix}:*`);
        if (keys.length > 0) await redis.del(...keys);
        await redis.quit();
        return;
      }
      // The prefix is a hash tag: every key of the run is on one master.
      const redis = new Cluster(cluster.startupNodes);
      await new Promise<void>((resolve, reject) => {
        redis.once('ready', () => resolve());
        redis.once('error', reject);
      });
      for (const master of redis.nodes('master')) {
        const keys = await master.keys(`${prefix}:*`);
        if (keys.length > 0) await master.del(...keys);
      }
      await redis.quit();
    },
  };
}

function subscriber(
  broker: Broker,
  config: Record<string, unknown>,
): NatsSubscriber | RedisSubscriber {
  const options = {
    ...config,
    logger: quiet,
    backpressure: { maxQueueSize: 20_000 },
    publishConcurrency: 10_000,
  };
  return broker === 'nats' ? new NatsSubscriber(options) : new RedisSubscriber(options);
}

/** Consumer process `index` of a run, resolved once subscribed; `handled()` is its count. */
async function startConsumer(
  broker: Broker,
  config: Record<string, unknown>,
): Promise<{ child: ChildProcess; handled: () => number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CONSUMER], {
    env: { ...process.env, BENCH_BROKER: broker, BENCH_CONFIG: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let count = 0;
  let buffer = '';
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`a consumer exited (${String(code)})`)));
    child.stdout?.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const line of lines) {
        if (line === 'ready') resolve();
        else if (line !== '') count = Number(line);
      }
    });
  });
  return { child, handled: () => count };
}

async function stopConsumer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.pid === undefined) return;
  // Its start's listener would take the exit for a failure to start.
  child.removeAllListeners('exit');
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid, 'SIGTERM');
  await exited;
}

/**
 * Publishes `count` events with `WINDOW` outstanding and handles them in the group `bench`:
 * in this process (`processes` 0) or in that many consumer processes.
 */
async function groupThroughput(
  broker: Broker,
  clustered: boolean,
  count: number,
  processes: number,
): Promise<Measurement> {
  const target = broker === 'nats' ? await natsTarget(clustered) : await redisTarget(clustered);
  const consumers: { child: ChildProcess; handled: () => number }[] = [];
  const publisher = subscriber(broker, target.config);
  try {
    const arrivals = processes === 0 ? countdown(count, 180_000, `${broker} events`) : undefined;
    if (arrivals !== undefined) {
      await publisher.subscribe(TYPE, () => arrivals.tick(), { group: 'bench' });
    } else {
      const started = await Promise.allSettled(
        Array.from({ length: processes }, () => startConsumer(broker, target.config)),
      );
      for (const result of started) if (result.status === 'fulfilled') consumers.push(result.value);
      const failed = started.find((result) => result.status === 'rejected');
      if (failed !== undefined) throw failed.reason;
    }
    await publisher.connect();
    const stop = startTimer();
    await runWindowed(count, WINDOW, (i) => publisher.publish(TYPE, { n: i }), 'none');
    if (arrivals !== undefined) {
      await arrivals.done;
    } else {
      // The consumers report their counts on stdout every 50 ms; waiting costs no CPU here.
      await new Promise<void>((resolve, reject) => {
        const deadline = Date.now() + 180_000;
        const check = (): void => {
          const total = consumers.reduce((sum, c) => sum + c.handled(), 0);
          if (total >= count) resolve();
          else if (Date.now() > deadline) reject(new Error(`${total} of ${count} handled`));
          else setTimeout(check, 20);
        };
        check();
      });
    }
    const { elapsedMs, cpuUs } = stop();
    return { n: count, elapsedMs, cpuUs };
  } finally {
    await publisher.close().catch(() => undefined);
    await Promise.all(consumers.map((c) => stopConsumer(c.child)));
    await target.stop();
  }
}

export function clusterScenarios(scale: number): Scenario[] {
  const at = (count: number): number => Math.max(1, Math.round(count * scale));
  const scenarios: Scenario[] = [];
  for (const broker of ['nats', 'redis'] as const) {
    const events = at(broker === 'nats' ? 6000 : 12_000);
    scenarios.push(
      {
        name: 'group publish -> handler, single node',
        transport: broker,
        watchtower: () => groupThroughput(broker, false, events, 0),
      },
      {
        name: 'group publish -> handler, 3-node cluster',
        transport: broker,
        watchtower: () => groupThroughput(broker, true, events, 0),
      },
      {
        name: 'cluster, 2 consumer processes in the group',
        transport: broker,
        watchtower: () => groupThroughput(broker, true, events, 2),
      },
      {
        name: 'cluster, 4 consumer processes in the group',
        transport: broker,
        watchtower: () => groupThroughput(broker, true, events, 4),
      },
    );
  }
  return scenarios;
}
