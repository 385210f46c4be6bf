import {
  AckPolicy,
  DeliverPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
} from '@nats-io/jetstream';
import { connect, headers as natsHeaders, type NatsConnection } from '@nats-io/transport-node';
import { createEvent, decodeEvent, encodeEventBytes, type Event } from '@watchtower/core';
import {
  NatsSubscriber,
  NatsTransport,
  type NatsMode,
  type NatsSubscriberOptions,
} from '@watchtower/nats';
import {
  isLeftover,
  now,
  RUN_ID,
  runId,
  runWindowed,
  countdown,
  startTimer,
  type Measurement,
  type Scenario,
} from './harness.js';

/*
 * NATS scenarios: each does the same work twice, once with the raw @nats-io client and once
 * through watchtower (NatsSubscriber = EventBus + NatsTransport). Both sides build the event
 * with createEvent and encode/decode it with the core codec, so the difference is what the
 * transport and the bus add. Every run uses its own subjects and stream and deletes them.
 */

const SERVERS = process.env['WATCHTOWER_NATS_URL'] ?? 'nats://127.0.0.1:4222';
// The raw side gets the client options watchtower uses (no per-request stack capture), so
// the ratios show what watchtower adds, not a difference in client settings.
const rawConnect = (): Promise<NatsConnection> =>
  connect({ servers: SERVERS, noAsyncTraces: true });
const TYPE = 'user.created';
const quiet = { warn: () => undefined, error: () => undefined };

export interface Names {
  prefix: string;
  subject: string;
  stream: string;
  dlqStream: string;
}

export function names(): Names {
  const id = runId();
  return {
    prefix: `bench_${id}.events`,
    subject: `bench_${id}.events.${TYPE}`,
    stream: `BENCH_${id}`,
    dlqStream: `BENCH_${id}_DLQ`,
  };
}

const payload = (n: number): { id: string; name: string; n: number } => ({
  id: `user-${n}`,
  name: 'Ada Lovelace',
  n,
});

function bus(
  mode: NatsMode,
  n: Names,
  options: Partial<NatsSubscriberOptions> = {},
): NatsSubscriber {
  return new NatsSubscriber({
    servers: SERVERS,
    mode,
    subjectPrefix: n.prefix,
    dlqPrefix: `${n.prefix}_dlq`,
    stream: { name: n.stream, storage: 'memory' },
    dlq: { streamName: n.dlqStream, storage: 'memory' },
    logger: quiet,
    backpressure: { maxQueueSize: 20_000 },
    publishConcurrency: 10_000,
    ...options,
  });
}

export async function dropStreams(n: Names): Promise<void> {
  const nc = await connect({ servers: SERVERS });
  try {
    const jsm = await jetstreamManager(nc);
    for (const stream of [n.stream, n.dlqStream])
      await jsm.streams.delete(stream).catch(() => false);
  } finally {
    await nc.close();
  }
}

const LEFTOVER = new RegExp(`^BENCH_${RUN_ID}(?:_DLQ)?$`);

/**
 * Deletes the streams an interrupted earlier run left behind (`BENCH_<run id>`, this file's
 * names only, of processes no longer running): a server holding them runs every scenario
 * slower and with longer tails.
 */
export async function removeNatsLeftovers(): Promise<void> {
  const nc = await connect({ servers: SERVERS });
  try {
    const jsm = await jetstreamManager(nc);
    const leftovers: string[] = [];
    for await (const info of jsm.streams.list()) {
      if (isLeftover(info.config.name, LEFTOVER)) leftovers.push(info.config.name);
    }
    for (const name of leftovers) await jsm.streams.delete(name);
  } finally {
    await nc.close();
  }
}

async function rawStream(nc: NatsConnection, n: Names): Promise<void> {
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({
    name: n.stream,
    subjects: [`${n.prefix}.>`],
    storage: StorageType.Memory,
  });
}

/** Publishes `count` events through the bus keeping at most `window` unconfirmed. */
async function publishWindowed(b: NatsSubscriber, count: number, window: number): Promise<void> {
  await runWindowed(count, window, (i) => b.publish(TYPE, payload(i)));
}

// ---- core: publish -> handler ---------------------------------------------------------------

async function rawCoreThroughput(count: number): Promise<Measurement> {
  const n = names();
  const [pub, sub] = await Promise.all([rawConnect(), rawConnect()]);
  const arrivals = countdown(count, 60_000, 'raw core events');
  sub.subscribe(n.subject, {
    callback: (_err, msg) => {
      decodeEvent(msg.data);
      arrivals.tick();
    },
  });
  await sub.flush();
  const stop = startTimer();
  for (let i = 0; i < count; i++) {
    pub.publish(n.subject, encodeEventBytes(createEvent(TYPE, payload(i))));
    // Yield now and then, as the bus does, so the subscriber side runs too.
    if (i % 1000 === 999) await new Promise((resolve) => setImmediate(resolve));
  }
  await arrivals.done;
  const { elapsedMs, cpuUs } = stop();
  await Promise.all([pub.close(), sub.close()]);
  return { n: count, elapsedMs, cpuUs };
}

async function watchtowerCoreThroughput(count: number): Promise<Measurement> {
  const n = names();
  const pub = bus('core', n, { dlq: { durable: false } });
  const sub = bus('core', n, { dlq: { durable: false } });
  const arrivals = countdown(count, 60_000, 'watchtower core events');
  await sub.subscribe(TYPE, () => {
    arrivals.tick();
  });
  await pub.connect();
  const stop = startTimer();
  await publishWindowed(pub, count, 1000);
  await arrivals.done;
  const { elapsedMs, cpuUs } = stop();
  await Promise.all([pub.close(), sub.close()]);
  return { n: count, elapsedMs, cpuUs };
}

// ---- core: latency, one at a time ---------------------------------------------------------

async function rawCoreLatency(count: number): Promise<Measurement> {
  const n = names();
  const [pub, sub] = await Promise.all([rawConnect(), rawConnect()]);
  const latenciesUs: number[] = [];
  let arrived: (() => void) | undefined;
  sub.subscribe(n.subject, {
    callback: (_err, msg) => {
      const event = decodeEvent(msg.data);
      latenciesUs.push((now() - (event.payload as { sentAt: number }).sentAt) * 1000);
      arrived?.();
    },
  });
  await sub.flush();
  const stop = startTimer();
  for (let i = 0; i < count; i++) {
    const handled = new Promise<void>((resolve) => (arrived = resolve));
    pub.publish(n.subject, encodeEventBytes(createEvent(TYPE, { sentAt: now() })));
    await handled;
  }
  const { elapsedMs, cpuUs } = stop();
  await Promise.all([pub.close(), sub.close()]);
  return { n: count, elapsedMs, cpuUs, latenciesUs };
}

async function watchtowerCoreLatency(count: number): Promise<Measurement> {
  const n = names();
  const pub = bus('core', n, { dlq: { durable: false } });
  const sub = bus('core', n, { dlq: { durable: false } });
  const latenciesUs: number[] = [];
  let arrived: (() => void) | undefined;
  await sub.subscribe(TYPE, (event: Event) => {
    latenciesUs.push((now() - (event.payload as { sentAt: number }).sentAt) * 1000);
    arrived?.();
  });
  await pub.connect();
  const stop = startTimer();
  for (let i = 0; i < count; i++) {
    const handled = new Promise<void>((resolve) => (arrived = resolve));
    await pub.publish(TYPE, { sentAt: now() });
    await handled;
  }
  const { elapsedMs, cpuUs } = stop();
  await Promise.all([pub.close(), sub.close()]);
  return { n: count, elapsedMs, cpuUs, latenciesUs };
}

// ---- JetStream: publish with acks -----------------------------------------------------------

async function rawJsPublish(count: number, window: number): Promise<Measurement> {
  const n = names();
  const nc = await rawConnect();
  await rawStream(nc, n);
  const js = jetstream(nc);
  const measured = await runWindowed(
    count,
    window,
    (i) => {
      const event = createEvent(TYPE, payload(i));
      return js.publish(n.subject, encodeEventBytes(event), { msgID: event.id });
    },
    'each',
  );
  await nc.close();
  await dropStreams(n);
  return measured;
}

async function watchtowerJsPublish(count: number, window: number): Promise<Measurement> {
  const n = names();
  const b = bus('jetstream', n);
  await b.connect();
  const measured = await runWindowed(count, window, (i) => b.publish(TYPE, payload(i)), 'each');
  await b.close();
  await dropStreams(n);
  return measured;
}

// ---- JetStream: consume with acks -----------------------------------------------------------

/**
 * Stores `count` events in a fresh stream with the raw client (not measured). Plain publishes
 * with a flush per thousand are several times faster than awaiting PubAcks; the stream's
 * message count then says everything is stored.
 */
async function prefill(nc: NatsConnection, n: Names, count: number): Promise<void> {
  await rawStream(nc, n);
  for (let i = 0; i < count; i++) {
    const event = createEvent(TYPE, payload(i));
    const h = natsHeaders();
    h.set('Nats-Msg-Id', event.id);
    nc.publish(n.subject, encodeEventBytes(event), { headers: h });
    if (i % 1000 === 999) await nc.flush();
  }
  await nc.flush();
  const jsm = await jetstreamManager(nc);
  const deadline = now() + 30_000;
  while ((await jsm.streams.info(n.stream)).state.messages < count) {
    if (now() > deadline) throw new Error(`benchmark timed out storing ${count} events`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function rawJsConsume(count: number): Promise<Measurement> {
  const n = names();
  const nc = await rawConnect();
  await prefill(nc, n, count);
  const jsm = await jetstreamManager(nc);
  // Every side's clock includes creating its consumer and none includes connecting.
  const stop = startTimer();
  await jsm.consumers.add(n.stream, {
    durable_name: 'bench',
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    max_ack_pending: 1000,
  });
  const consumer = await jetstream(nc).consumers.get(n.stream, 'bench');
  const arrivals = countdown(count, 120_000, 'raw JetStream events');
  // The callback form, as watchtower uses it: the client's fastest way to consume.
  const messages = await consumer.consume({
    max_messages: 256,
    callback: (msg) => {
      decodeEvent(msg.data);
      msg.ack();
      arrivals.tick();
    },
  });
  await arrivals.done;
  const { elapsedMs, cpuUs } = stop();
  await messages.close();
  await nc.close();
  await dropStreams(n);
  return { n: count, elapsedMs, cpuUs };
}

async function watchtowerJsConsume(count: number): Promise<Measurement> {
  const n = names();
  const nc = await rawConnect();
  await prefill(nc, n, count);
  await nc.close();
  const b = bus('jetstream', n);
  await b.connect();
  const arrivals = countdown(count, 120_000, 'watchtower JetStream events');
  const stop = startTimer();
  await b.subscribe(
    TYPE,
    () => {
      arrivals.tick();
    },
    { startFrom: 'earliest', group: 'bench' },
  );
  await arrivals.done;
  const { elapsedMs, cpuUs } = stop();
  await b.close();
  await dropStreams(n);
  return { n: count, elapsedMs, cpuUs };
}

// ---- the transport alone (no EventBus), to tell the two overheads apart ----------------------

function transport(mode: NatsMode, n: Names): NatsTransport {
  return new NatsTransport({
    servers: SERVERS,
    mode,
    subjectPrefix: n.prefix,
    dlqPrefix: `${n.prefix}_dlq`,
    stream: { name: n.stream, storage: 'memory' },
    dlq: { durable: false },
  });
}

async function transportCoreThroughput(count: number): Promise<Measurement> {
  const n = names();
  const pub = transport('core', n);
  const sub = transport('core', n);
  await pub.connect();
  const subscription = await sub.subscribe(TYPE);
  let handled = 0;
  const loop = (async () => {
    for await (const delivery of subscription) {
      await delivery.ack();
      if (++handled >= count) break;
    }
  })();
  const stop = startTimer();
  for (let i = 0; i < count; i++) {
    void pub.publish(createEvent(TYPE, payload(i)));
    if (i % 1000 === 999) await new Promise((resolve) => setImmediate(resolve));
  }
  await loop;
  const { elapsedMs, cpuUs } = stop();
  await Promise.all([pub.close(), sub.close()]);
  return { n: count, elapsedMs, cpuUs };
}

async function transportJsConsume(count: number): Promise<Measurement> {
  const n = names();
  const nc = await rawConnect();
  await prefill(nc, n, count);
  await nc.close();
  const t = transport('jetstream', n);
  await t.connect();
  let handled = 0;
  const stop = startTimer();
  const subscription = await t.subscribe(TYPE, { startFrom: 'earliest', group: 'bench' });
  for await (const delivery of subscription) {
    await delivery.ack();
    if (++handled >= count) break;
  }
  const { elapsedMs, cpuUs } = stop();
  await t.close();
  await dropStreams(n);
  return { n: count, elapsedMs, cpuUs };
}

export function natsScenarios(scale: number): Scenario[] {
  const at = (count: number): number => Math.max(1, Math.round(count * scale));
  return [
    {
      name: 'core publish -> handler',
      transport: 'nats',
      raw: () => rawCoreThroughput(at(40_000)),
      watchtower: () => watchtowerCoreThroughput(at(40_000)),
    },
    {
      name: 'core latency publish -> handler (1 at a time)',
      transport: 'nats',
      raw: () => rawCoreLatency(at(2500)),
      watchtower: () => watchtowerCoreLatency(at(2500)),
    },
    {
      name: 'jetstream publish, await each ack',
      transport: 'nats',
      raw: () => rawJsPublish(at(1500), 1),
      watchtower: () => watchtowerJsPublish(at(1500), 1),
    },
    {
      name: 'jetstream publish, 64 acks outstanding',
      transport: 'nats',
      raw: () => rawJsPublish(at(12_000), 64),
      watchtower: () => watchtowerJsPublish(at(12_000), 64),
    },
    {
      name: 'jetstream consume + ack',
      transport: 'nats',
      raw: () => rawJsConsume(at(20_000)),
      watchtower: () => watchtowerJsConsume(at(20_000)),
    },
    {
      name: 'core publish -> subscriber, transport only',
      transport: 'nats',
      raw: () => rawCoreThroughput(at(40_000)),
      watchtower: () => transportCoreThroughput(at(40_000)),
    },
    {
      name: 'jetstream consume + ack, transport only',
      transport: 'nats',
      raw: () => rawJsConsume(at(20_000)),
      watchtower: () => transportJsConsume(at(20_000)),
    },
  ];
}
