import { Redis } from 'ioredis';
import { createEvent, decodeEvent, encodeEvent, type Event } from '@watchtower/core';
import { RedisSubscriber, type RedisSubscriberOptions } from '@watchtower/redis';
import {
  isLeftover,
  now,
  RUN_ID,
  runId,
  record,
  runWindowed,
  countdown,
  startTimer,
  type Measurement,
  type Scenario,
} from './harness.js';

/*
 * Redis Streams scenarios: each does the same work twice, once with raw ioredis and once through
 * watchtower (RedisSubscriber = EventBus + RedisTransport). Both sides build the event with
 * createEvent, write it with the core codec into the field `event` of `XADD ... MAXLEN ~`, and
 * consume with XREADGROUP + XACK, so the difference is what the transport and the bus add.
 * Every run uses its own prefix and deletes its keys.
 */

const URL = process.env['WATCHTOWER_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const TYPE = 'user.created';
const MAX_LEN = 1_000_000;
const quiet = { warn: () => undefined, error: () => undefined };

export interface Names {
  prefix: string;
  key: string;
}

export function names(): Names {
  const prefix = `bench-${runId()}`;
  return { prefix, key: `${prefix}:${TYPE}` };
}

const payload = (n: number): { id: string; name: string; n: number } => ({
  id: `user-${n}`,
  name: 'Ada Lovelace',
  n,
});

function bus(n: Names, options: Partial<RedisSubscriberOptions> = {}): RedisSubscriber {
  return new RedisSubscriber({
    url: URL,
    prefix: n.prefix,
    maxLen: MAX_LEN,
    logger: quiet,
    backpressure: { maxQueueSize: 20_000 },
    publishConcurrency: 10_000,
    ...options,
  });
}

export async function dropKeys(n: Names): Promise<void> {
  const redis = new Redis(URL);
  try {
    const keys = await redis.keys(`${n.prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
  } finally {
    await redis.quit();
  }
}

const LEFTOVER = new RegExp(`^bench-${RUN_ID}:`);

/**
 * Deletes the keys an interrupted earlier run left behind (`bench-<run id>:*`, this file's
 * only, of processes no longer running).
 */
export async function removeRedisLeftovers(): Promise<void> {
  const redis = new Redis(URL);
  try {
    for await (const keys of redis.scanStream({ match: 'bench-*', count: 1000 }) as AsyncIterable<
      string[]
    >) {
      const ours = keys.filter((key) => isLeftover(key, LEFTOVER));
      if (ours.length > 0) await redis.del(...ours);
    }
  } finally {
    await redis.quit();
  }
}

function rawXadd(redis: Redis, key: string, event: Event): Promise<string | null> {
  return redis.xadd(key, 'MAXLEN', '~', MAX_LEN, '*', 'event', encodeEvent(event));
}

// ---- publish --------------------------------------------------------------------------------

/** XADD `count` events keeping `window` in flight; latency per XADD. */
async function rawPublish(count: number, window: number): Promise<Measurement> {
  const n = names();
  const redis = new Redis(URL);
  const latenciesUs: number[] = [];
  const one = async (i: number): Promise<void> => {
    const sent = now();
    await rawXadd(redis, n.key, createEvent(TYPE, payload(i)));
    latenciesUs.push((now() - sent) * 1000);
  };
  const stop = startTimer();
  if (window === 1) {
    for (let i = 0; i < count; i++) await one(i);
  } else {
    // Raw pipelining: one `pipeline()` of `window` XADDs, one write and one round trip.
    for (let i = 0; i < count; i += window) {
      const pipeline = redis.pipeline();
      const sent = now();
      const size = Math.min(window, count - i);
      for (let j = 0; j < size; j++) {
        pipeline.xadd(
          n.key,
          'MAXLEN',
          '~',
          MAX_LEN,
          '*',
          'event',
          encodeEvent(createEvent(TYPE, payload(i + j))),
        );
      }
      await pipeline.exec();
      record(latenciesUs, size, sent);
    }
  }
  const { elapsedMs, cpuUs } = stop();
  await redis.quit();
  await dropKeys(n);
  return { n: count, elapsedMs, cpuUs, latenciesUs };
}

async function watchtowerPublish(
  count: number,
  window: number,
  options: Partial<RedisSubscriberOptions> = {},
): Promise<Measurement> {
  const n = names();
  const b = bus(n, options);
  await b.connect();
  // Timed like the raw side: each call on its own, or per pipeline-sized window.
  const measured = await runWindowed(
    count,
    window,
    (i) => b.publish(TYPE, payload(i)),
    window === 1 ? 'each' : 'window',
  );
  await b.close();
  await dropKeys(n);
  return measured;
}

// ---- group consume + ack ------------------------------------------------------------------

/** Stores `count` events with raw pipelined XADDs (not measured). */
async function prefill(n: Names, count: number): Promise<void> {
  const redis = new Redis(URL);
  for (let i = 0; i < count; i += 500) {
    const pipeline = redis.pipeline();
    for (let j = i; j < Math.min(count, i + 500); j++) {
      pipeline.xadd(
        n.key,
        'MAXLEN',
        '~',
        MAX_LEN,
        '*',
        'event',
        encodeEvent(createEvent(TYPE, payload(j))),
      );
    }
    await pipeline.exec();
  }
  await redis.quit();
}

async function rawConsume(count: number): Promise<Measurement> {
  const n = names();
  await prefill(n, count);
  const redis = new Redis(URL);
  await redis.xgroup('CREATE', n.key, 'bench', '0');
  let handled = 0;
  const stop = startTimer();
  while (handled < count) {
    const reply = (await redis.xreadgroup(
      'GROUP',
      'bench',
      'c1',
      'COUNT',
      100,
      'BLOCK',
      1000,
      'STREAMS',
      n.key,
      '>',
    )) as Array<[string, Array<[string, string[]]>]> | null;
    const entries = reply?.[0]?.[1] ?? [];
    const ids: string[] = [];
    for (const [id, fields] of entries) {
      decodeEvent(fields[1] as string);
      ids.push(id);
      handled++;
    }
    if (ids.length > 0) await redis.xack(n.key, 'bench', ...ids);
  }
  const { elapsedMs, cpuUs } = stop();
  await redis.quit();
  await dropKeys(n);
  return { n: count, elapsedMs, cpuUs };
}

async function watchtowerConsume(count: number): Promise<Measurement> {
  const n = names();
  await prefill(n, count);
  const b = bus(n);
  const arrivals = countdown(count, 120_000, 'watchtower Redis events');
  const stop = startTimer();
  await b.subscribe(
    TYPE,
    () => {
      arrivals.tick();
    },
    { group: 'bench', startFrom: 'earliest' },
  );
  await arrivals.done;
  const { elapsedMs, cpuUs } = stop();
  await b.close();
  await dropKeys(n);
  return { n: count, elapsedMs, cpuUs };
}

// ---- end to end: publish -> handler, one at a time ----------------------------------------

async function rawLatency(count: number): Promise<Measurement> {
  const n = names();
  const pub = new Redis(URL);
  const sub = new Redis(URL);
  await pub.xgroup('CREATE', n.key, 'bench', '$', 'MKSTREAM');
  const latenciesUs: number[] = [];
  let stopped = false;
  let arrived: (() => void) | undefined;
  const reader = (async () => {
    while (!stopped) {
      const reply = (await sub.xreadgroup(
        'GROUP',
        'bench',
        'c1',
        'COUNT',
        100,
        'BLOCK',
        200,
        'STREAMS',
        n.key,
        '>',
      )) as Array<[string, Array<[string, string[]]>]> | null;
      for (const [id, fields] of reply?.[0]?.[1] ?? []) {
        const event = decodeEvent(fields[1] as string);
        await pub.xack(n.key, 'bench', id);
        latenciesUs.push((now() - (event.payload as { sentAt: number }).sentAt) * 1000);
        arrived?.();
      }
    }
  })();
  const stop = startTimer();
  for (let i = 0; i < count; i++) {
    const handled = new Promise<void>((resolve) => (arrived = resolve));
    await rawXadd(pub, n.key, createEvent(TYPE, { sentAt: now() }));
    await handled;
  }
  const { elapsedMs, cpuUs } = stop();
  stopped = true;
  await reader;
  await Promise.all([pub.quit(), sub.quit()]);
  await dropKeys(n);
  return { n: count, elapsedMs, cpuUs, latenciesUs };
}

async function watchtowerLatency(count: number): Promise<Measurement> {
  const n = names();
  const pub = bus(n);
  const sub = bus(n);
  const latenciesUs: number[] = [];
  let arrived: (() => void) | undefined;
  await sub.subscribe(
    TYPE,
    (event: Event) => {
      latenciesUs.push((now() - (event.payload as { sentAt: number }).sentAt) * 1000);
      arrived?.();
    },
    { group: 'bench' },
  );
  await pub.connect();
  const stop = startTimer();
  for (let i = 0; i < count; i++) {
    const handled = new Promise<void>((resolve) => (arrived = resolve));
    await pub.publish(TYPE, { sentAt: now() });
    await handled;
  }
  const { elapsedMs, cpuUs } = stop();
  await Promise.all([pub.close(), sub.close()]);
  await dropKeys(n);
  return { n: count, elapsedMs, cpuUs, latenciesUs };
}

export function redisScenarios(scale: number): Scenario[] {
  const at = (count: number): number => Math.max(1, Math.round(count * scale));
  return [
    {
      name: 'redis publish, await each XADD',
      transport: 'redis',
      raw: () => rawPublish(at(3000), 1),
      watchtower: () => watchtowerPublish(at(3000), 1),
    },
    {
      // Raw sends each batch as one pipeline(); watchtower with its defaults, whose transport
      // sends the publishes of one event-loop turn as one pipeline of its own.
      name: 'redis publish, pipelined by 100',
      transport: 'redis',
      raw: () => rawPublish(at(30_000), 100),
      watchtower: () => watchtowerPublish(at(30_000), 100),
    },
    {
      name: 'redis group consume + XACK',
      transport: 'redis',
      raw: () => rawConsume(at(20_000)),
      watchtower: () => watchtowerConsume(at(20_000)),
    },
    {
      name: 'redis latency publish -> handler (1 at a time)',
      transport: 'redis',
      raw: () => rawLatency(at(2000)),
      watchtower: () => watchtowerLatency(at(2000)),
    },
  ];
}
