/**
 * The user-level group: the code a user writes from the READMEs (`NatsSubscriber`,
 * `RedisSubscriber`, `EventBus` on the memory transport, every option at its default, a
 * synchronous handler, a `group` where the broker has one) beside the raw client doing the same
 * work with the same payload: JSON of a ~200-byte object out, `JSON.parse` and the handler in,
 * the same acks. Unlike the transport-level groups, the raw side does not use Watchtower's
 * codec, so the rows show everything Watchtower adds per event: the envelope, the bus, the
 * transport.
 *
 * Every scenario publishes and consumes in one process over two connections (a publishing
 * service and a consuming one), driven the same way on both sides: at most `WINDOW` publishes
 * outstanding, then a turn of I/O. Each event's latency is from its publish call to its
 * handler. The CPU time is the whole process's (publisher and consumer), per event.
 *
 * Names are unique per run (subject prefix, stream, key prefix), the only options that differ
 * from the defaults; everything created is deleted.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { connect, type Msg, type NatsConnection } from '@nats-io/transport-node';
import {
  EventBus,
  MemoryTransport,
  defineEvents,
  type Event,
  type EventCatalog,
} from '@watchtower/core';
import { NatsSubscriber } from '@watchtower/nats';
import { RabbitMQSubscriber } from '@watchtower/rabbitmq';
import { RedisSubscriber } from '@watchtower/redis';
import { WebhookSubscriber } from '@watchtower/webhook';
import { WebSocketHub, WebSocketSubscriber } from '@watchtower/websocket';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { countdown, now, startTimer, type Measurement, type Scenario } from './harness.js';
import { dropStreams, names as natsNames, type Names as NatsNames } from './nats.js';
import {
  AMQP_URL,
  dropTopology,
  exchangeName,
  rawConsumer,
  rawPublisher,
  toError,
} from './rabbitmq.js';
import { dropKeys, names as redisNames } from './redis.js';
import { rawAgent, rawPost, startReceiver, type Receiver } from './webhook.js';
import { frameText, openSocket, startRawRelay } from './websocket.js';

export const NATS_URL = process.env['WATCHTOWER_NATS_URL'] ?? 'nats://127.0.0.1:4222';
const REDIS_URL = process.env['WATCHTOWER_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
export const TYPE = 'user.created';
/** Publishes outstanding at most, as a service that awaits its publishes in batches. */
const WINDOW = 100;
/** The Redis transport's default `maxLen`, which the raw side trims to as well. */
const REDIS_MAX_LEN = 100_000;

/** The payload of every event: ~200 bytes of JSON. */
export interface UserCreated {
  id: string;
  email: string;
  name: string;
  plan: string;
  country: string;
  signedUpAt: string;
  tags: string[];
  n: number;
}

export const userPayload = (n: number): UserCreated => ({
  id: `user-${n}`,
  email: 'ada.lovelace@analytical-engines.example.com',
  name: 'Ada Lovelace',
  plan: 'professional',
  country: 'GB',
  signedUpAt: '2026-11-22T10:00:00.123Z',
  tags: ['early-adopter', 'newsletter', 'beta'],
  n,
});

export const userSchema = z.object({
  id: z.string(),
  email: z.string(),
  name: z.string(),
  plan: z.string(),
  country: z.string(),
  signedUpAt: z.string(),
  tags: z.array(z.string()),
  n: z.number().int(),
});

/** The catalog of the zod scenarios, typed loosely so one bus factory serves both. */
const catalog: EventCatalog = defineEvents({ [TYPE]: userSchema });

export const quietLogger = { warn: () => undefined, error: () => undefined };
const decoder = new TextDecoder();
const encode = (value: unknown): Buffer => Buffer.from(JSON.stringify(value), 'utf8');
const parse = (bytes: Uint8Array): unknown => JSON.parse(decoder.decode(bytes));

/**
 * What both sides of a run share: the publish times by event number, the latencies, and the
 * count of handled events. `handle` is the handler's work (the same on both sides).
 */
export class Probe {
  readonly sentAt: Float64Array;
  readonly latenciesUs: number[] = [];
  readonly arrivals;

  constructor(
    readonly count: number,
    what: string,
  ) {
    this.sentAt = new Float64Array(count);
    this.arrivals = countdown(count, 120_000, what);
  }

  handle(payload: UserCreated): void {
    this.latenciesUs.push((now() - (this.sentAt[payload.n] as number)) * 1000);
    this.arrivals.tick();
  }
}

/**
 * The load driver of every scenario: `send(i)` for each event, at most `WINDOW` outstanding
 * (their promises, where the client returns one, awaited together), then a turn of I/O. Times
 * from the first publish to the last handler call.
 */
export async function drive(
  probe: Probe,
  send: (i: number) => Promise<unknown> | void,
): Promise<Measurement> {
  const stop = startTimer();
  let batch: Promise<unknown>[] = [];
  for (let i = 0; i < probe.count; i++) {
    probe.sentAt[i] = now();
    const sent = send(i);
    if (sent !== undefined) batch.push(sent);
    if (i % WINDOW === WINDOW - 1) {
      if (batch.length > 0) await Promise.all(batch);
      batch = [];
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  await Promise.all(batch);
  await probe.arrivals.done;
  const { elapsedMs, cpuUs } = stop();
  return { n: probe.count, elapsedMs, cpuUs, latenciesUs: probe.latenciesUs };
}

/**
 * The raw client with the one setting Watchtower gives its own connections: no stack captured
 * per request (`noAsyncTraces`), which otherwise costs the raw side several µs per JetStream
 * publish and would flatter the ratios.
 */
const rawConnect = (): Promise<NatsConnection> =>
  connect({ servers: NATS_URL, noAsyncTraces: true });

// ---- NATS -------------------------------------------------------------------------------

/** A `NatsSubscriber` as the README writes it; only the names are the run's own. */
function natsBus(mode: 'core' | 'jetstream', n: NatsNames, validated = false): NatsSubscriber {
  return new NatsSubscriber({
    servers: NATS_URL,
    mode,
    subjectPrefix: n.prefix,
    dlqPrefix: `${n.prefix}_dlq`,
    stream: { name: n.stream },
    dlq: { streamName: n.dlqStream },
    logger: quietLogger,
    ...(validated ? { events: catalog } : {}),
  });
}

async function rawNatsCore(count: number, validated: boolean): Promise<Measurement> {
  const n = natsNames();
  const [pub, sub] = await Promise.all([rawConnect(), rawConnect()]);
  const probe = new Probe(count, 'raw NATS core events');
  sub.subscribe(n.subject, {
    callback: (_error, msg: Msg) => {
      const payload = parse(msg.data);
      probe.handle((validated ? userSchema.parse(payload) : payload) as UserCreated);
    },
  });
  await sub.flush();
  const measured = await drive(probe, (i) => {
    const payload = userPayload(i);
    if (validated) userSchema.parse(payload);
    pub.publish(n.subject, encode(payload));
  });
  await Promise.all([pub.close(), sub.close()]);
  return measured;
}

async function watchtowerNatsCore(count: number, validated: boolean): Promise<Measurement> {
  const n = natsNames();
  const pub = natsBus('core', n, validated);
  const sub = natsBus('core', n, validated);
  const probe = new Probe(count, 'watchtower NATS core events');
  await sub.subscribe(TYPE, (event: Event) => probe.handle(event.payload as UserCreated));
  await pub.connect();
  const measured = await drive(probe, (i) => pub.publish(TYPE, userPayload(i)));
  await Promise.all([pub.close(), sub.close()]);
  return measured;
}

async function rawJetStream(count: number): Promise<Measurement> {
  const n = natsNames();
  const [pub, sub] = await Promise.all([rawConnect(), rawConnect()]);
  const jsm = await jetstreamManager(pub);
  await jsm.streams.add({ name: n.stream, subjects: [`${n.prefix}.>`] });
  await jsm.consumers.add(n.stream, {
    durable_name: 'bench',
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.New,
    filter_subject: n.subject,
  });
  const probe = new Probe(count, 'raw JetStream events');
  const consumer = await jetstream(sub).consumers.get(n.stream, 'bench');
  const messages = await consumer.consume({
    callback: (msg: JsMsg) => {
      probe.handle(parse(msg.data) as UserCreated);
      msg.ack();
    },
  });
  const js = jetstream(pub);
  // With a message id, as Watchtower publishes (the stream drops a republished one).
  const measured = await drive(probe, (i) =>
    js.publish(n.subject, encode(userPayload(i)), { msgID: randomUUID() }),
  );
  await messages.close();
  await Promise.all([pub.close(), sub.close()]);
  await dropStreams(n);
  return measured;
}

async function watchtowerJetStream(count: number): Promise<Measurement> {
  const n = natsNames();
  const pub = natsBus('jetstream', n);
  const sub = natsBus('jetstream', n);
  const probe = new Probe(count, 'watchtower JetStream events');
  await sub.subscribe(TYPE, (event: Event) => probe.handle(event.payload as UserCreated), {
    group: 'bench',
  });
  await pub.connect();
  const measured = await drive(probe, (i) => pub.publish(TYPE, userPayload(i)));
  await Promise.all([pub.close(), sub.close()]);
  await dropStreams(n);
  return measured;
}

// ---- RabbitMQ --------------------------------------------------------------------------------

/**
 * The bus's default `concurrency` is 1, so its prefetch is 1: the raw consumer takes the same.
 * The second row gives both sides the README's advice for throughput, `prefetch: 64`.
 */
const RABBITMQ_DEFAULT_PREFETCH = 1;

/**
 * Rounds per side of the RabbitMQ rows. Their CPU per event (the goal: at most 3 µs over
 * raw amqplib) moved by ±5 µs between runs of the same code on a shared 2-core machine running
 * the broker; the median of eight warm rounds is steadier than that of three.
 */
const RABBITMQ_USER_ROUNDS = 9;

async function rawRabbitMQ(count: number, prefetch: number): Promise<Measurement> {
  const exchange = exchangeName();
  const queue = `${exchange}.raw`;
  const { connection: pub, channel } = await rawPublisher(exchange);
  const { connection: sub, channel: subChannel } = await rawConsumer(exchange, queue, prefetch);
  const probe = new Probe(count, 'raw RabbitMQ events');
  await subChannel.consume(queue, (message) => {
    if (message === null) return;
    probe.handle(parse(message.content) as UserCreated);
    subChannel.ack(message);
  });
  const measured = await drive(
    probe,
    (i) =>
      new Promise<void>((resolve, reject) => {
        channel.publish(
          exchange,
          TYPE,
          encode(userPayload(i)),
          { persistent: true, contentType: 'application/json' },
          (error: unknown) =>
            error === null || error === undefined ? resolve() : reject(toError(error)),
        );
      }),
  );
  await Promise.all([pub.close(), sub.close()]);
  await dropTopology(exchange, [queue]);
  return measured;
}

async function watchtowerRabbitMQ(count: number, prefetch?: number): Promise<Measurement> {
  const exchange = exchangeName();
  const pub = new RabbitMQSubscriber({ url: AMQP_URL, exchange, logger: quietLogger });
  const sub = new RabbitMQSubscriber({
    url: AMQP_URL,
    exchange,
    logger: quietLogger,
    ...(prefetch === undefined ? {} : { prefetch }),
  });
  const probe = new Probe(count, 'watchtower RabbitMQ events');
  await sub.subscribe(TYPE, (event: Event) => probe.handle(event.payload as UserCreated), {
    group: 'bench',
  });
  await pub.connect();
  const measured = await drive(probe, (i) => pub.publish(TYPE, userPayload(i)));
  await Promise.all([pub.close(), sub.close()]);
  await dropTopology(exchange, [`${exchange}.group.bench:${TYPE}`]);
  return measured;
}

// ---- Redis Streams ------------------------------------------------------------------------

type ReadReply = Array<[string, Array<[string, string[]]>]> | null;

async function rawRedis(count: number): Promise<Measurement> {
  const names = redisNames();
  const { key } = names;
  const pub = new Redis(REDIS_URL);
  const sub = new Redis(REDIS_URL);
  await pub.xgroup('CREATE', key, 'bench', '$', 'MKSTREAM');
  const probe = new Probe(count, 'raw Redis events');
  let reading = true;
  const reader = (async () => {
    while (reading) {
      const reply = (await sub.xreadgroup(
        'GROUP',
        'bench',
        'c1',
        'COUNT',
        100,
        'BLOCK',
        100,
        'STREAMS',
        key,
        '>',
      )) as ReadReply;
      const entries = reply?.[0]?.[1];
      if (entries === undefined || entries.length === 0) continue;
      const ids: string[] = [];
      for (const [entryId, fields] of entries) {
        probe.handle(JSON.parse(fields[1] as string) as UserCreated);
        ids.push(entryId);
      }
      void sub.xack(key, 'bench', ...ids);
    }
  })();
  const measured = await drive(probe, (i) =>
    pub.xadd(key, 'MAXLEN', '~', REDIS_MAX_LEN, '*', 'event', JSON.stringify(userPayload(i))),
  );
  reading = false;
  await reader;
  await Promise.all([pub.quit(), sub.quit()]);
  await dropKeys(names);
  return measured;
}

async function watchtowerRedis(count: number): Promise<Measurement> {
  const names = redisNames();
  const { prefix } = names;
  const pub = new RedisSubscriber({ url: REDIS_URL, prefix, logger: quietLogger });
  const sub = new RedisSubscriber({ url: REDIS_URL, prefix, logger: quietLogger });
  const probe = new Probe(count, 'watchtower Redis events');
  await sub.subscribe(TYPE, (event: Event) => probe.handle(event.payload as UserCreated), {
    group: 'bench',
  });
  await pub.connect();
  const measured = await drive(probe, (i) => pub.publish(TYPE, userPayload(i)));
  await Promise.all([pub.close(), sub.close()]);
  await dropKeys(names);
  return measured;
}

// ---- WebSocket ----------------------------------------------------------------------------

/** Raw `ws`: a relay server, a client sending the payload's JSON, one parsing it. */
async function rawWebSocket(count: number): Promise<Measurement> {
  const relay = await startRawRelay();
  const [pub, sub] = await Promise.all([openSocket(relay.url), openSocket(relay.url)]);
  const probe = new Probe(count, 'raw WebSocket events');
  sub.on('message', (data) => probe.handle(JSON.parse(frameText(data)) as UserCreated));
  const measured = await drive(probe, (i) => {
    pub.send(JSON.stringify(userPayload(i)));
  });
  pub.terminate();
  sub.terminate();
  await relay.close();
  return measured;
}

/** The README's code: a `WebSocketHub` and two `WebSocketSubscriber`s with defaults. */
async function watchtowerWebSocket(count: number): Promise<Measurement> {
  const hub = new WebSocketHub({ port: 0 });
  await hub.start();
  const pub = new WebSocketSubscriber({ url: hub.url, logger: quietLogger });
  const sub = new WebSocketSubscriber({ url: hub.url, logger: quietLogger });
  const probe = new Probe(count, 'watchtower WebSocket events');
  await sub.subscribe(TYPE, (event: Event) => probe.handle(event.payload as UserCreated));
  await pub.connect();
  const measured = await drive(probe, (i) => pub.publish(TYPE, userPayload(i)));
  await Promise.all([pub.close(), sub.close()]);
  await hub.close({ timeoutMs: 2000 });
  return measured;
}

// ---- webhooks -----------------------------------------------------------------------------

/**
 * A probe whose arrivals are the receiver's (a child process): counted once the receiver has
 * them all, and timed afterwards from its arrival times (same monotonic clock), since a
 * webhook publish resolves before its POST is made. Rejects with the receiver's error.
 */
async function driveWebhook(
  receiver: Receiver,
  probe: Probe,
  send: (i: number) => Promise<unknown>,
): Promise<Measurement> {
  let failure: Error | undefined;
  void receiver.done.then(
    () => {
      for (let i = 0; i < probe.count; i++) probe.arrivals.tick();
    },
    (error: unknown) => {
      failure = error instanceof Error ? error : new Error(String(error));
      for (let i = 0; i < probe.count; i++) probe.arrivals.tick();
    },
  );
  const measured = await drive(probe, send);
  if (failure !== undefined) throw failure;
  const offsetMs = Number(process.hrtime.bigint()) / 1e6 - now();
  const arrivedAt = await receiver.arrivals();
  for (let n = 0; n < probe.count; n++) {
    probe.latenciesUs.push(
      ((arrivedAt[n] as number) - offsetMs - (probe.sentAt[n] as number)) * 1000,
    );
  }
  return measured;
}

/** Raw undici: the payload's JSON POSTed with a Standard Webhooks signature, awaited. */
async function rawWebhook(count: number): Promise<Measurement> {
  const receiver = await startReceiver(count);
  const agent = rawAgent();
  const probe = new Probe(count, 'raw webhook deliveries');
  const measured = await driveWebhook(receiver, probe, (i) =>
    rawPost(agent, receiver, randomUUID(), Buffer.from(JSON.stringify(userPayload(i)), 'utf8')),
  );
  await agent.close();
  await receiver.close();
  return measured;
}

/** The README's `WebhookSubscriber` with one endpoint; loopback allowed, defaults otherwise. */
async function watchtowerWebhook(count: number): Promise<Measurement> {
  const receiver = await startReceiver(count);
  const bus = new WebhookSubscriber({
    endpoints: [{ url: receiver.url, secret: receiver.secret }],
    allowPrivateAddresses: true,
    logger: quietLogger,
  });
  const probe = new Probe(count, 'watchtower webhook deliveries');
  await bus.connect();
  const measured = await driveWebhook(receiver, probe, (i) => bus.publish(TYPE, userPayload(i)));
  await bus.close();
  await receiver.close();
  return measured;
}

// ---- memory -------------------------------------------------------------------------------

/** The same hand-over on a bare EventEmitter: publish the payload, the handler gets it. */
function rawMemory(count: number): Promise<Measurement> {
  const emitter = new EventEmitter();
  const probe = new Probe(count, 'EventEmitter events');
  emitter.on(TYPE, (payload: UserCreated) => probe.handle(payload));
  return drive(probe, (i) => {
    emitter.emit(TYPE, userPayload(i));
  });
}

async function watchtowerMemory(
  count: number,
  copy: 'codec' | 'reference' | undefined,
): Promise<Measurement> {
  const bus = new EventBus({
    transport: new MemoryTransport(copy === undefined ? {} : { copy }),
    logger: quietLogger,
  });
  const probe = new Probe(count, 'memory events');
  await bus.subscribe(TYPE, (event: Event) => probe.handle(event.payload as UserCreated));
  const measured = await drive(probe, (i) => bus.publish(TYPE, userPayload(i)));
  await bus.close();
  return measured;
}

/** The zod schema alone, run as the bus runs it with a catalog: once on publish, once on consume. */
function safeParseAlone(count: number): Measurement {
  const stop = startTimer();
  let failed = 0;
  for (let i = 0; i < count; i++) {
    const payload = userPayload(i);
    if (!userSchema.safeParse(payload).success) failed++;
    if (!userSchema.safeParse(payload).success) failed++;
  }
  const { elapsedMs, cpuUs } = stop();
  if (failed > 0) throw new Error('the zod benchmark payload fails its schema');
  return { n: count, elapsedMs, cpuUs };
}

export function userLevelScenarios(scale: number): Scenario[] {
  const at = (count: number): number => Math.max(WINDOW, Math.round(count * scale));
  return [
    {
      name: 'user: NatsSubscriber core publish -> handler',
      transport: 'nats',
      raw: () => rawNatsCore(at(40_000), false),
      watchtower: () => watchtowerNatsCore(at(40_000), false),
    },
    {
      // The raw side runs the same zod schema on both ends, as the bus does with a catalog.
      name: 'user: NatsSubscriber core, zod catalog',
      transport: 'nats',
      raw: () => rawNatsCore(at(40_000), true),
      watchtower: () => watchtowerNatsCore(at(40_000), true),
    },
    {
      name: 'user: zod safeParse alone, twice per event',
      transport: 'zod',
      watchtower: () => Promise.resolve(safeParseAlone(at(200_000))),
    },
    {
      name: 'user: NatsSubscriber jetstream publish + consume + ack',
      transport: 'nats',
      raw: () => rawJetStream(at(15_000)),
      watchtower: () => watchtowerJetStream(at(15_000)),
    },
    {
      name: 'user: RedisSubscriber group publish + consume + XACK',
      transport: 'redis',
      raw: () => rawRedis(at(30_000)),
      watchtower: () => watchtowerRedis(at(30_000)),
    },
    {
      name: 'user: RabbitMQSubscriber group publish + consume + ack',
      transport: 'rabbitmq',
      rounds: RABBITMQ_USER_ROUNDS,
      // Prefetch 1 runs at a few thousand events a second: fewer events, the same rounds.
      raw: () => rawRabbitMQ(at(3000), RABBITMQ_DEFAULT_PREFETCH),
      watchtower: () => watchtowerRabbitMQ(at(3000)),
    },
    {
      name: 'user: RabbitMQSubscriber, prefetch: 64',
      transport: 'rabbitmq',
      rounds: RABBITMQ_USER_ROUNDS,
      raw: () => rawRabbitMQ(at(10_000), 64),
      watchtower: () => watchtowerRabbitMQ(at(10_000), 64),
    },
    {
      name: 'user: WebSocketSubscriber via WebSocketHub',
      transport: 'websocket',
      raw: () => rawWebSocket(at(30_000)),
      watchtower: () => watchtowerWebSocket(at(30_000)),
    },
    {
      // Latency: from publish to the receiver's arrival (publish resolves once accepted).
      name: 'user: WebhookSubscriber publish -> receiver',
      transport: 'webhook',
      raw: () => rawWebhook(at(4000)),
      watchtower: () => watchtowerWebhook(at(4000)),
    },
    {
      name: 'user: EventBus memory publish -> handler',
      transport: 'memory',
      raw: () => rawMemory(at(100_000)),
      watchtower: () => watchtowerMemory(at(100_000), undefined),
    },
    {
      name: "user: EventBus memory, copy: 'reference'",
      transport: 'memory',
      raw: () => rawMemory(at(400_000)),
      watchtower: () => watchtowerMemory(at(400_000), 'reference'),
    },
  ];
}
