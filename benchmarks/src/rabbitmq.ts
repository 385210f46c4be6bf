/**
 * RabbitMQ scenarios: each does the same work twice, once with raw amqplib and once through
 * watchtower (RabbitMQSubscriber = EventBus + RabbitMQTransport).
 *
 * Transport level: both sides build the event with createEvent and write it with the core
 * codec, publish persistent messages on a confirm channel (resolved on the broker's ack) and
 * consume with manual acks at the same prefetch (64, given to the bus as `prefetch`), so the
 * difference is what the transport and the bus add. `group consume + ack, defaults` is the
 * consume rate a subscription gets with the bus's defaults: concurrency 1, so prefetch 1, beside
 * raw amqplib at prefetch 1. The user-level row (the README's code with defaults) is in the
 * user-level group (`user-level.ts`).
 *
 * RabbitMQ is broker-bound on this machine (it fsyncs persistent messages and shares the
 * cores), so throughput mostly measures the broker; CPU µs per event of this process is the
 * figure that shows what the client side costs. Every run uses its own exchange and deletes
 * the exchanges and queues it declared.
 */
import { randomBytes } from 'node:crypto';
import amqp, { type Channel, type ChannelModel, type ConfirmChannel } from 'amqplib';
import { createEvent, decodeEvent, encodeEvent, type Event } from '@watchtower/core';
import { RabbitMQSubscriber, type RabbitMQSubscriberOptions } from '@watchtower/rabbitmq';
import {
  countdown,
  now,
  runWindowed,
  startTimer,
  type Measurement,
  type Scenario,
} from './harness.js';

export const AMQP_URL = process.env['WATCHTOWER_AMQP_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
const URL = AMQP_URL;
const TYPE = 'user.created';
/** The prefetch of the transport-level scenarios, raw and watchtower (given as `prefetch`). */
const PREFETCH = 64;
/** Publishes outstanding at most in the windowed scenarios. */
const WINDOW = 100;
const quiet = { warn: () => undefined, error: () => undefined };

const payload = (n: number): { id: string; name: string; n: number } => ({
  id: `user-${n}`,
  name: 'Ada Lovelace',
  n,
});

/** amqplib's confirm callbacks pass an Error on a nack. */
export const toError = (error: unknown): Error =>
  error instanceof Error ? error : new Error(String(error));

export const exchangeName = (): string => `bench-${randomBytes(4).toString('hex')}`;

function bus(
  exchange: string,
  options: Partial<RabbitMQSubscriberOptions> = {},
): RabbitMQSubscriber {
  return new RabbitMQSubscriber({
    url: URL,
    exchange,
    logger: quiet,
    backpressure: { maxQueueSize: 20_000 },
    publishConcurrency: 10_000,
    prefetch: PREFETCH,
    ...options,
  });
}

/** Deletes the exchange, its DLX and the queues of a run. */
export async function dropTopology(exchange: string, queues: string[]): Promise<void> {
  const connection = await amqp.connect(URL);
  try {
    const channel = await connection.createChannel();
    for (const queue of [...queues, `${exchange}.dlq`]) await channel.deleteQueue(queue);
    await channel.deleteExchange(exchange);
    await channel.deleteExchange(`${exchange}.dlx`);
  } finally {
    await connection.close();
  }
}

/** A raw connection with a confirm channel and the exchange declared as the transport does. */
export async function rawPublisher(
  exchange: string,
): Promise<{ connection: ChannelModel; channel: ConfirmChannel }> {
  const connection = await amqp.connect(URL);
  const channel = await connection.createConfirmChannel();
  await channel.assertExchange(exchange, 'topic', { durable: true });
  return { connection, channel };
}

/** A raw consumer's connection and channel at `prefetch`, its durable queue bound to the type. */
export async function rawConsumer(
  exchange: string,
  queue: string,
  prefetch: number,
): Promise<{ connection: ChannelModel; channel: Channel }> {
  const connection = await amqp.connect(URL);
  const channel = await connection.createChannel();
  await channel.prefetch(prefetch);
  await channel.assertQueue(queue, { durable: true });
  await channel.bindQueue(queue, exchange, TYPE);
  return { connection, channel };
}

/** A persistent publish on a confirm channel, resolved on the broker's ack. */
function confirmedPublish(channel: ConfirmChannel, exchange: string, event: Event): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    channel.publish(
      exchange,
      event.type,
      Buffer.from(encodeEvent(event), 'utf8'),
      {
        persistent: true,
        messageId: event.id,
        contentType: 'application/json',
        headers: event.headers,
      },
      (error: unknown) =>
        error === null || error === undefined ? resolve() : reject(toError(error)),
    );
  });
}

// ---- publish --------------------------------------------------------------------------------

async function rawPublish(count: number, window: number): Promise<Measurement> {
  const exchange = exchangeName();
  const { connection, channel } = await rawPublisher(exchange);
  const measured = await runWindowed(
    count,
    window,
    (i) => confirmedPublish(channel, exchange, createEvent(TYPE, payload(i))),
    window === 1 ? 'each' : 'window',
  );
  await connection.close();
  await dropTopology(exchange, []);
  return measured;
}

async function watchtowerPublish(count: number, window: number): Promise<Measurement> {
  const exchange = exchangeName();
  const b = bus(exchange);
  await b.connect();
  const measured = await runWindowed(
    count,
    window,
    (i) => b.publish(TYPE, payload(i)),
    window === 1 ? 'each' : 'window',
  );
  await b.close();
  await dropTopology(exchange, []);
  return measured;
}

// ---- consume + ack --------------------------------------------------------------------------

/** Publishes `count` events with raw confirmed publishes (not measured). */
async function prefill(exchange: string, count: number): Promise<void> {
  const { connection, channel } = await rawPublisher(exchange);
  for (let i = 0; i < count; i += 1000) {
    for (let j = i; j < Math.min(count, i + 1000); j++) {
      channel.publish(exchange, TYPE, Buffer.from(encodeEvent(createEvent(TYPE, payload(j)))), {
        persistent: true,
      });
    }
    await channel.waitForConfirms();
  }
  await connection.close();
}

async function rawConsume(count: number, prefetch: number): Promise<Measurement> {
  const exchange = exchangeName();
  const queue = `${exchange}.raw`;
  {
    const { connection, channel } = await rawPublisher(exchange);
    await channel.assertQueue(queue, { durable: true });
    await channel.bindQueue(queue, exchange, TYPE);
    await connection.close();
  }
  await prefill(exchange, count);
  const connection = await amqp.connect(URL);
  const channel: Channel = await connection.createChannel();
  await channel.prefetch(prefetch);
  const arrivals = countdown(count, 120_000, 'raw RabbitMQ events');
  const stop = startTimer();
  await channel.consume(queue, (message) => {
    if (message === null) return;
    decodeEvent(message.content);
    channel.ack(message);
    arrivals.tick();
  });
  await arrivals.done;
  const { elapsedMs, cpuUs } = stop();
  await connection.close();
  await dropTopology(exchange, [queue]);
  return { n: count, elapsedMs, cpuUs };
}

async function watchtowerConsume(
  count: number,
  options: Partial<RabbitMQSubscriberOptions>,
): Promise<Measurement> {
  const exchange = exchangeName();
  const b = bus(exchange, options);
  // Declares and binds the group's queue, which then holds what is published.
  const declared = await b.subscribe(TYPE, () => undefined, { group: 'bench' });
  await declared.unsubscribe();
  await prefill(exchange, count);
  const arrivals = countdown(count, 120_000, 'watchtower RabbitMQ events');
  const stop = startTimer();
  await b.subscribe(
    TYPE,
    () => {
      arrivals.tick();
    },
    { group: 'bench' },
  );
  await arrivals.done;
  const { elapsedMs, cpuUs } = stop();
  await b.close();
  await dropTopology(exchange, [`${exchange}.group.bench:${TYPE}`]);
  return { n: count, elapsedMs, cpuUs };
}

// ---- end to end: publish -> handler, one at a time ----------------------------------------

async function rawLatency(count: number): Promise<Measurement> {
  const exchange = exchangeName();
  const queue = `${exchange}.raw`;
  const { connection: pub, channel } = await rawPublisher(exchange);
  const { connection: sub, channel: subChannel } = await rawConsumer(exchange, queue, PREFETCH);
  const latenciesUs: number[] = [];
  let arrived: (() => void) | undefined;
  await subChannel.consume(queue, (message) => {
    if (message === null) return;
    const event = decodeEvent(message.content);
    subChannel.ack(message);
    latenciesUs.push((now() - (event.payload as { sentAt: number }).sentAt) * 1000);
    arrived?.();
  });
  const stop = startTimer();
  for (let i = 0; i < count; i++) {
    const handled = new Promise<void>((resolve) => (arrived = resolve));
    await confirmedPublish(channel, exchange, createEvent(TYPE, { sentAt: now() }));
    await handled;
  }
  const { elapsedMs, cpuUs } = stop();
  await Promise.all([pub.close(), sub.close()]);
  await dropTopology(exchange, [queue]);
  return { n: count, elapsedMs, cpuUs, latenciesUs };
}

async function watchtowerLatency(count: number): Promise<Measurement> {
  const exchange = exchangeName();
  const pub = bus(exchange);
  const sub = bus(exchange);
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
  await dropTopology(exchange, [`${exchange}.group.bench:${TYPE}`]);
  return { n: count, elapsedMs, cpuUs, latenciesUs };
}

export function rabbitmqScenarios(scale: number): Scenario[] {
  const at = (count: number): number => Math.max(1, Math.round(count * scale));
  return [
    {
      name: 'rabbitmq confirmed publish, await each',
      transport: 'rabbitmq',
      raw: () => rawPublish(at(1000), 1),
      watchtower: () => watchtowerPublish(at(1000), 1),
    },
    {
      name: `rabbitmq confirmed publish, window ${WINDOW}`,
      transport: 'rabbitmq',
      raw: () => rawPublish(at(15_000), WINDOW),
      watchtower: () => watchtowerPublish(at(15_000), WINDOW),
    },
    {
      name: 'rabbitmq group consume + ack',
      transport: 'rabbitmq',
      raw: () => rawConsume(at(8000), PREFETCH),
      watchtower: () => watchtowerConsume(at(8000), {}),
    },
    {
      // The bus's default concurrency 1 gives prefetch 1: a round trip per event, both sides.
      name: 'rabbitmq group consume + ack, defaults (prefetch 1)',
      transport: 'rabbitmq',
      raw: () => rawConsume(at(2500), 1),
      watchtower: () => watchtowerConsume(at(2500), { prefetch: null }),
    },
    {
      name: 'rabbitmq latency publish -> handler (1 at a time)',
      transport: 'rabbitmq',
      raw: () => rawLatency(at(700)),
      watchtower: () => watchtowerLatency(at(700)),
    },
  ];
}
