import { ErrorCode, createEvent, type Delivery, type WatchtowerError } from '@watchtower/core';
import { waitFor } from '@watchtower/core/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { NatsMode } from '../src/index.js';
import { TestResources, drain, testNames } from './helpers.js';
import { PrivateNatsServer } from './nats-server.js';

let server: PrivateNatsServer;
const resources = new TestResources();

beforeAll(async () => {
  server = await PrivateNatsServer.start();
});
afterEach(async () => {
  // A test may leave the server down.
  if (!(await server.isUp())) await server.restart();
  await resources.cleanup(server.url);
});
afterAll(async () => {
  await server.stop();
});

function payloadN(delivery: Delivery): number | undefined {
  return delivery.kind === 'event' ? (delivery.event.payload as { n: number }).n : undefined;
}

describe.each<NatsMode>(['core', 'jetstream'])('reconnect (%s)', (mode) => {
  it('keeps a subscription receiving after the broker restarts, and health follows the connection', async () => {
    const names = testNames();
    const subscriber = resources.transport(mode, names, { servers: server.url });
    const publisher = resources.transport(mode, names, { servers: server.url });
    await Promise.all([subscriber.connect(), publisher.connect()]);
    const sub = await subscriber.subscribe('tick.*');
    const seen: number[] = [];
    const loop = drain(sub, async (d) => {
      const n = payloadN(d);
      if (n !== undefined) seen.push(n);
      await d.ack();
    });
    resources.onCleanup(async () => {
      await sub.unsubscribe();
      await loop;
    });
    await publisher.publish(createEvent('tick.tock', { n: 1 }));
    await waitFor(() => seen.includes(1));

    await server.kill();
    await waitFor(async () => !(await subscriber.healthCheck()).healthy, {
      message: 'unhealthy while down',
    });
    await waitFor(() => publisher.state !== 'connected');
    await expect(publisher.publish(createEvent('tick.tock', { n: 0 }))).rejects.toMatchObject({
      code: 'CONNECTION',
      retryable: true,
    });
    await server.restart();
    await waitFor(async () => (await subscriber.healthCheck()).healthy, {
      message: 'healthy after restart',
    });

    // Keep publishing until one sent after the restart arrives (core NATS drops what was
    // in flight during the outage).
    let n = 2;
    await waitFor(
      async () => {
        await publisher.publish(createEvent('tick.tock', { n: n++ })).catch(() => undefined);
        return seen.some((value) => value >= 2);
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    );
  });

  it('honours maxReconnectAttempts: gives the connection up, then connects afresh on the next call', async () => {
    const names = testNames();
    const transport = resources.transport(mode, names, {
      servers: server.url,
      maxReconnectAttempts: 2,
      reconnectTimeWaitMs: 50,
      reconnectJitterMs: 0,
    });
    await transport.connect();
    await server.kill();
    await waitFor(() => transport.state === 'closed', {
      message: 'the connection given up',
      timeoutMs: 10_000,
    });
    expect((await transport.healthCheck()).healthy).toBe(false);
    await expect(transport.publish(createEvent('a.b', {}))).rejects.toMatchObject({
      code: 'CONNECTION',
    });
    await server.restart();
    await transport.publish(createEvent('a.b', {}));
    expect((await transport.healthCheck()).healthy).toBe(true);
  });
});

describe.each<NatsMode>(['core', 'jetstream'])('reconnect attempts run out (%s)', (mode) => {
  it('ends a subscription with a CONNECTION error instead of silently, so the EventBus reports it', async () => {
    const names = testNames();
    const transport = resources.transport(mode, names, {
      servers: server.url,
      maxReconnectAttempts: 1,
      reconnectTimeWaitMs: 50,
      reconnectJitterMs: 0,
    });
    await transport.connect();
    const sub = await transport.subscribe('lost.*');
    const ended = drain(sub, (d) => d.ack()).then(
      () => 'ended quietly',
      (error: unknown) => error,
    );
    resources.onCleanup(() => sub.unsubscribe());
    await server.kill();
    await waitFor(() => transport.state === 'closed', { timeoutMs: 10_000 });
    await expect(ended).resolves.toMatchObject({ code: 'CONNECTION' });
  });
});

describe('reconnect (background errors)', () => {
  const quiet = { logger: { warn: () => undefined, error: () => undefined } };

  it('reports the connection given up and the dead-letter consumer it ended', async () => {
    const names = testNames();
    const bus = resources.subscriber('jetstream', names, {
      ...quiet,
      servers: server.url,
      maxReconnectAttempts: 1,
      reconnectTimeWaitMs: 50,
      reconnectJitterMs: 0,
    });
    const errors: WatchtowerError[] = [];
    bus.on('error', (error) => errors.push(error));
    await bus.transport.consumeDlq(() => undefined);
    await server.kill();
    await waitFor(() => errors.length === 2, { timeoutMs: 10_000 });
    expect(errors.map((error) => error.code)).toEqual([ErrorCode.CONNECTION, ErrorCode.CONNECTION]);
    expect(errors.some((error) => error.message.includes('given up'))).toBe(true);
    expect(errors.some((error) => error.message.includes(`${names.dlqPrefix}.>`))).toBe(true);
  });

  it('reports streams that cannot be put back after a reconnect', async () => {
    const names = testNames();
    const bus = resources.subscriber('jetstream', names, { ...quiet, servers: server.url });
    const errors: WatchtowerError[] = [];
    bus.on('error', (error) => errors.push(error));
    await bus.connect();
    resources.onCleanup(() => server.restart());
    await server.restart({ jetstream: false });
    await waitFor(() => errors.length > 0, { timeoutMs: 10_000 });
    expect(errors[0]).toMatchObject({ code: ErrorCode.TRANSPORT });
    expect(errors[0]?.message).toContain('recreate the streams');
    expect(errors[0]?.message).toContain('is JetStream enabled on the server?');
  });
});

describe('reconnect (jetstream durability)', () => {
  it('delivers events stored before a broker crash to a group that subscribes after it', async () => {
    const names = testNames();
    const transport = resources.transport('jetstream', names, { servers: server.url });
    await transport.connect();
    // Create the group consumer, then leave it.
    const first = await transport.subscribe('order.*', { group: 'shipping' });
    await first.unsubscribe();
    for (let n = 1; n <= 5; n++) await transport.publish(createEvent('order.placed', { n }));

    await server.restart();
    await waitFor(async () => (await transport.healthCheck()).healthy, { timeoutMs: 10_000 });

    const sub = await transport.subscribe('order.*', { group: 'shipping' });
    const seen: number[] = [];
    const loop = drain(sub, async (d) => {
      const n = payloadN(d);
      if (n !== undefined) seen.push(n);
      await d.ack();
    });
    resources.onCleanup(async () => {
      await sub.unsubscribe();
      await loop;
    });
    await waitFor(() => seen.length === 5);
    expect(seen).toEqual([1, 2, 3, 4, 5]);
  });

  it('recreates a consumer deleted under a running subscription and keeps delivering', async () => {
    const names = testNames();
    const transport = resources.transport('jetstream', names, { servers: server.url });
    await transport.connect();
    const sub = await transport.subscribe('job.*', { group: 'workers' });
    const seen: number[] = [];
    const loop = drain(sub, async (d) => {
      const n = payloadN(d);
      if (n !== undefined) seen.push(n);
      await d.ack();
    });
    resources.onCleanup(async () => {
      await sub.unsubscribe();
      await loop;
    });
    await transport.publish(createEvent('job.run', { n: 1 }));
    await waitFor(() => seen.includes(1));

    const nc = await resources.raw(server.url);
    const { jetstreamManager } = await import('@nats-io/jetstream');
    const jsm = await jetstreamManager(nc);
    const [consumer] = await jsm.consumers.list(names.stream).next();
    // nats-server 2.9 sometimes fails a delete racing its own state write ("directory not
    // empty"); the delete is repeated until the server confirms one.
    await waitFor(() =>
      jsm.consumers.delete(names.stream, consumer?.name ?? '').then(
        () => true,
        () => false,
      ),
    );

    let n = 2;
    await waitFor(
      async () => {
        await transport.publish(createEvent('job.run', { n: n++ }));
        return seen.some((value) => value >= 2);
      },
      { timeoutMs: 15_000, intervalMs: 250, message: 'an event after the consumer was recreated' },
    );
  });
});
