/**
 * Reconnects against the real broker: the connection closed by the broker (`rabbitmqctl
 * close_connection`, this test's own connection only) and cut by a TCP proxy, mid-stream; what
 * publishes do while the connection is down; what `healthCheck` and `on('connection')` say;
 * and giving the connection up after `reconnectAttempts`.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createEvent, type ConnectionChange, type Delivery, type Event } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { RabbitMQSubscriber, RabbitMQTransport, type RabbitMQConfig } from '../src/index.js';
import {
  AMQP_URL,
  TcpProxy,
  closeConnectionsNamed,
  consumerPrefetches,
  deleteTopology,
  uniqueName,
  withRawChannel,
} from './helpers.js';

const FAST = { reconnectBaseMs: 20, reconnectMaxMs: 200 } as const;
const silent = { warn: () => undefined, error: () => undefined };

let proxy: TcpProxy;
let exchange: string;
const closers: (() => Promise<void>)[] = [];

beforeEach(async () => {
  proxy = await TcpProxy.start(AMQP_URL);
  exchange = uniqueName('rc');
});

afterEach(async () => {
  proxy.refusing = false;
  proxy.resume();
  await Promise.allSettled(closers.splice(0).map((close) => close()));
  await proxy.stop();
  await deleteTopology([exchange]);
});

function transport(config: RabbitMQConfig = {}): RabbitMQTransport {
  const t = new RabbitMQTransport({
    url: proxy.url(),
    exchange,
    connectionName: `${exchange}-t`,
    ...FAST,
    ...config,
  });
  closers.push(() => t.close({ timeoutMs: 2000 }));
  return t;
}

function bus(name: string, config: RabbitMQConfig = {}): RabbitMQSubscriber {
  const b = new RabbitMQSubscriber({
    url: proxy.url(),
    exchange,
    connectionName: `${exchange}-${name}`,
    logger: silent,
    ...FAST,
    ...config,
  });
  closers.push(() => b.close({ timeoutMs: 5000 }));
  return b;
}

/** Subscribes `b` to `type` in the group `g`, keeping the distinct payload numbers seen. */
async function collect(b: RabbitMQSubscriber, type: string): Promise<Set<number>> {
  const seen = new Set<number>();
  await b.subscribe(
    type,
    (event: Event) => {
      seen.add((event.payload as { n: number }).n);
    },
    { group: 'g', concurrency: 64 },
  );
  return seen;
}

describe('reconnect', () => {
  it('delivers all of 1 000 publishes made across a connection the broker closed, none lost', async () => {
    const consumer = bus('consumer', { url: AMQP_URL });
    const seen = await collect(consumer, 'load.item');
    const publisher = bus('publisher', { url: AMQP_URL });
    await publisher.connect();
    const publishes: Promise<void>[] = [];
    for (let n = 0; n < 1000; n++) {
      publishes.push(publisher.publish('load.item', { n }));
      if (n === 300) {
        // Closed by the broker, mid-stream: sent and not confirmed goes again after it.
        expect(await closeConnectionsNamed(`${exchange}-publisher`)).toBe(1);
      }
    }
    const outcomes = await Promise.allSettled(publishes);
    expect(outcomes.filter((o) => o.status === 'rejected')).toEqual([]);
    await waitFor(() => seen.size === 1000, { timeoutMs: 20_000, message: 'all 1000 events' });
  });

  it('restores a consumer with its prefetch (its concurrency) after the broker closed the connection', async () => {
    const consumer = bus('consumer', { url: AMQP_URL });
    await consumer.subscribe('fair.item', () => undefined, { group: 'g', concurrency: 5 });
    const queue = `${exchange}.group.g:fair.item`;
    expect(await consumerPrefetches(queue)).toEqual([5]);
    const changes: ConnectionChange['state'][] = [];
    consumer.transport.on('connection', (change) => changes.push(change.state));
    expect(await closeConnectionsNamed(`${exchange}-consumer`)).toBe(1);
    await waitFor(() => changes.includes('restored'), {
      timeoutMs: 20_000,
      message: 'the connection restored',
    });
    expect(await consumerPrefetches(queue)).toEqual([5]);
  });

  it('delivers all of 10 000 events with the connections cut twice mid-stream, none lost', async () => {
    const consumer = bus('consumer');
    const seen = await collect(consumer, 'stream.item');
    const publisher = bus('publisher');
    await publisher.connect();
    const publishes: Promise<void>[] = [];
    for (let n = 0; n < 10_000; n++) {
      publishes.push(publisher.publish('stream.item', { n }));
      if (n === 3000 || n === 7000) {
        // Mid-stream: a thousand are confirmed and more are in flight. Every proxied
        // connection goes, the consumer's too: acks not sent are delivered again.
        await publishes[n - 1000];
        proxy.cut();
      }
    }
    const outcomes = await Promise.allSettled(publishes);
    expect(outcomes.filter((o) => o.status === 'rejected')).toEqual([]);
    await waitFor(() => seen.size === 10_000, { timeoutMs: 60_000, message: 'all 10000 events' });
  }, 120_000);

  it('consumes again, from a queue declared anew, after the queue was deleted under it', async () => {
    const b = bus('consumer');
    const seen = await collect(b, 'deleted.queue');
    await b.publish('deleted.queue', { n: 1 });
    await waitFor(() => seen.has(1));
    await withRawChannel(async (channel) => {
      await channel.deleteQueue(`${exchange}.group.g:deleted.queue`);
    });
    // The broker cancels the consumer; the transport declares, binds and consumes again.
    await waitFor(
      async () => {
        await b.publish('deleted.queue', { n: 2 });
        return seen.has(2);
      },
      { timeoutMs: 10_000, intervalMs: 200, message: 'an event after the queue came back' },
    );
  });

  it('unsubscribes cleanly while the connection drops under the cancel', async () => {
    const t = transport({ unsubscribeTimeoutMs: 5000 });
    const errors: string[] = [];
    t.on('error', (error) => errors.push(`${error.code}: ${error.message}`));
    const sub = await t.subscribe('cut.cancel', { group: 'g' });
    proxy.pause();
    const unsubscribing = sub.unsubscribe();
    proxy.cut();
    await unsubscribing;
    // The lost connection is reported, and nothing about the unsubscribe.
    expect(errors.filter((e) => !e.startsWith('CONNECTION'))).toEqual([]);
  });

  it('takes a broker that stopped answering for lost after two heartbeats, and reconnects once it answers again', async () => {
    const t = transport({ heartbeatSeconds: 1, connectTimeoutMs: 1000 });
    const changes: ConnectionChange['state'][] = [];
    t.on('connection', (change) => changes.push(change.state));
    const sub = await t.subscribe('held.beat', { group: 'g' });
    proxy.pause();
    await waitFor(() => changes.includes('lost'), { timeoutMs: 10_000, message: 'lost' });
    expect((await t.healthCheck()).healthy).toBe(false);
    proxy.resume();
    await waitFor(() => changes.includes('restored'), { timeoutMs: 15_000, message: 'restored' });
    await t.publish(createEvent('held.beat', { n: 1 }));
    const delivery = (await sub[Symbol.asyncIterator]().next()).value as Delivery;
    expect(delivery.kind === 'event' && delivery.event.payload).toEqual({ n: 1 });
    await delivery.ack();
    await sub.unsubscribe();
  });

  it('holds publishes while the broker cannot be reached and confirms them once it is back; an aborted one rejects', async () => {
    const t = transport();
    const changes: ConnectionChange['state'][] = [];
    t.on('connection', (change) => changes.push(change.state));
    const sub = await t.subscribe('held.item', { group: 'g' });
    proxy.refusing = true;
    proxy.cut();
    await waitFor(() => changes.includes('lost'));
    const health = await t.healthCheck();
    expect(health).toMatchObject({ healthy: false, state: 'reconnecting' });
    const held = t.publish(createEvent('held.item', { n: 1 }));
    const controller = new AbortController();
    const aborted = t.publish(createEvent('held.item', { n: 2 }), { signal: controller.signal });
    controller.abort();
    await expect(aborted).rejects.toMatchObject({ code: 'ABORTED' });
    proxy.refusing = false;
    await held;
    expect(changes).toEqual(['lost', 'restored']);
    expect(await t.healthCheck()).toMatchObject({ healthy: true, state: 'connected' });
    // The consumer is back too, with the held event and not the aborted one.
    const iterator = sub[Symbol.asyncIterator]();
    const delivery = (await iterator.next()).value as Delivery;
    expect(delivery?.kind === 'event' && delivery.event.payload).toEqual({ n: 1 });
    await delivery?.ack();
    await sub.unsubscribe();
  });

  it('gives the connection up after reconnectAttempts: a waiting publish rejects with CONNECTION, and the next call connects afresh', async () => {
    const t = transport({ reconnectAttempts: 2 });
    const sub = await t.subscribe('lost.item', { group: 'g' });
    const ended = (async () => {
      for await (const delivery of sub) await delivery.ack();
    })().catch((e: unknown) => e);
    const errors: string[] = [];
    t.on('error', (error) => errors.push(error.code));
    let waiting: Promise<unknown> | undefined;
    t.on('connection', (change) => {
      // Made while the transport reconnects: it waits for the connection.
      if (change.state === 'lost')
        waiting = t.publish(createEvent('lost.item', {})).catch((e: unknown) => e);
    });
    proxy.refusing = true;
    proxy.cut();
    await waitFor(() => t.connectionState === 'failed', { message: 'given up' });
    expect(await waiting).toMatchObject({
      code: 'CONNECTION',
      message: expect.stringContaining('gave up') as unknown,
    });
    expect((await t.healthCheck()).healthy).toBe(false);
    expect(errors).toContain('CONNECTION');
    // The subscription ends with the same error.
    expect(await ended).toMatchObject({ code: 'CONNECTION' });
    // While the broker still cannot be reached a publish connects afresh and fails at once.
    await expect(t.publish(createEvent('lost.item', {}))).rejects.toMatchObject({
      code: 'CONNECTION',
    });
    proxy.refusing = false;
    await expect(t.publish(createEvent('lost.item', {}))).resolves.toBeUndefined();
    expect(t.connectionState).toBe('connected');
  });
});
